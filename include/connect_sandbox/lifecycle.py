"""Subscription requests after the purchase: change, suspend, resume and cancel, and the vendor's
decisions (approve, fail, inquire, pend, schedule, revoke, parameter updates), refused as Connect
refuses them.

The demo vendor decides requests made through the API on its own after the store's delay
(:meth:`Lifecycle.auto_decide`); the requests of ``manual-...`` assets and seeded requests are left
to whoever calls the vendor actions (see :mod:`connect_sandbox.seed`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from .errors import bad, conflict, not_found
from .purchases import Purchases
from .rendering import Rendering
from .state import DECIDED_STATUSES, template_ref

REQUEST_TYPES = ("purchase", "change", "suspend", "resume", "cancel")
# Asset statuses a request type may start from.
ALLOWED_FROM = {
    "change": ("active",),
    "suspend": ("active",),
    "resume": ("suspended",),
    "cancel": ("active", "suspended"),
}
# Where Connect answers 409 (not 400) because the asset already is where the request would take it:
# connect-extension-for-cb-commerce reads these 409s' params.asset_status and treats the request as
# done (cloudblue/connect-extension-for-cb-commerce @ 584bcd9a351d1a9601c5d0ebb8bd1fb2dff0f503 :
# cbcext/services/client/apsconnectclient/base.py ASSET_STATUS_IGNORE_REQUEST_TYPES, read by
# cbcext/services/fulfillment/simple.py _request_exists_response).
ALREADY_THERE = {
    "active": ("resume",),
    "terminating": ("cancel", "suspend"),
    "terminated": ("cancel", "suspend"),
    "suspended": ("suspend",),
}
# A change of a suspended asset is a 409 too, with this text (same repo : change.py).
CHANGE_WHEN_SUSPENDED = "Request type change is not allowed when asset state is suspended"
# Connect's texts that integrations match on (same repo : cbcext/services/fulfillment/base.py
# _handle_400_errors, simple_tracker.py).
ITEMS_UNCHANGED = "asset.items: Item quantities are not changed."
NO_HOLD_REASON = "The product doesn't support suspend/resume operations."
VENDOR_FAIL_REASON = "Vendor refused: the demo marks fail-* assets"
# The vendor actions (``POST /requests/{id}/<action>``): the statuses each starts from, and how
# its refusal names what it does.
ACTIONS = {
    "approve": (("pending", "scheduled"), "approved"),
    "fail": (("pending", "inquiring"), "failed"),
    "inquire": (("pending",), "inquired"),
    "pend": (("inquiring",), "set to pending"),
    "schedule": (("pending",), "scheduled"),
    "revoke": (("pending", "scheduled"), "revoked"),
}
# Asset status once a request of each type is approved.
APPROVED_ASSET_STATUS = {
    "purchase": "active",
    "suspend": "suspended",
    "resume": "active",
    "cancel": "terminated",
}


class Lifecycle(Purchases, Rendering):
    """``POST /requests`` and the vendor's actions on requests."""

    def create_request(self, payload: Any) -> dict:
        with self.lock:
            self.auto_decide()
            if not isinstance(payload, dict):
                raise bad("The request body must be a JSON object.")
            rtype = payload.get("type")
            if rtype not in REQUEST_TYPES:
                raise bad(f"type: must be one of {', '.join(REQUEST_TYPES)} (got {rtype!r}).")
            asset_in = payload.get("asset")
            if not isinstance(asset_in, dict):
                raise bad("asset: This field is required and must be an object.")
            if rtype == "purchase":
                r = self._create_purchase(payload, asset_in)
            else:
                r = self._create_on_existing(rtype, payload, asset_in)
            self.stats_created[rtype] += 1
            return self.render_request(r["id"])

    # change / suspend / resume / cancel ------------------------------------------------------
    def _create_on_existing(self, rtype: str, payload: dict, asset_in: dict) -> dict:
        """A change, suspend, resume or cancel of an existing asset, refused as Connect refuses it.

        * 409 ``REQ_003`` when the asset already is where the request would take it (resume of an
          active asset, suspend of a suspended one, cancel or suspend of a terminating or
          terminated one), and for a change of a suspended asset; ``params`` name the request the
          asset's state comes from (``ALREADY_THERE``, ``CHANGE_WHEN_SUSPENDED``);
        * 400 ``REQ_003`` for the other states a request cannot start from;
        * 409 ``REQ_004`` when the asset has an open request (Connect keeps one per asset), with
          ``params`` naming it;
        * 400 ``asset.items: Item quantities are not changed.`` for a change that changes nothing;
        * a suspend or resume of a product without administrative hold is created ``failed``.
        """
        a = self._find_asset(asset_in)
        status = a["status"]
        self._refuse_from_state(rtype, a)
        product = self.products[a["product_id"]]
        items = self._items_for(rtype, a, asset_in.get("items"), product)
        note = str(payload.get("note") or "")
        if rtype in ("suspend", "resume") and not product["capabilities"]["subscription"]["hold"]:
            # Connect refuses at once, creating the request failed; the asset stays as it is.
            return self._add_request(
                a, rtype, items, status="failed", auto=False, note=note, reason=NO_HOLD_REASON
            )
        r = self._add_request(a, rtype, items, note=note, previous_status=status)
        if rtype == "cancel":
            a["status"] = "terminating"
        a["updated"] = r["created"]
        return r

    def _refuse_from_state(self, rtype: str, a: dict) -> None:
        """Connect's 409 or 400 when the asset's state or its open request rules ``rtype`` out."""
        status = a["status"]
        if rtype in ALREADY_THERE.get(status, ()):
            r = self._state_request(a)
            raise conflict(
                f"asset: asset {a['id']} is {status} already; a {rtype} request would change nothing "
                f"(its state comes from request {r['id']}, {r['type']}, {r['status']}).",
                code="REQ_003",
                params=self._existing_request_params(a, r),
            )
        if rtype == "change" and status == "suspended":
            r = self._state_request(a)
            raise conflict(CHANGE_WHEN_SUSPENDED, code="REQ_003", params=self._existing_request_params(a, r))
        allowed = ALLOWED_FROM[rtype]
        if status not in allowed:
            raise bad(
                f"asset: a {rtype} request needs an asset in status {' or '.join(allowed)}; "
                f"asset {a['id']} is {status}.",
                code="REQ_003",
            )
        pending = self._open_request_of(a["id"])
        if pending is not None:
            raise conflict(
                f"asset: asset {a['id']} already has the open request {pending['id']} "
                f"({pending['type']}, {pending['status']}).",
                code="REQ_004",
                params=self._existing_request_params(a, pending),
            )

    def _items_for(self, rtype: str, a: dict, items_in: Any, product: dict) -> list[dict]:
        """The request's items: a change's new quantities (400 when none changes), else the asset's."""
        if rtype != "change":
            return [self._request_item(gid, q, q) for gid, q in a["items"].items()]
        changes = self._parse_items(items_in, product, purchase=False)
        if all(a["items"].get(gid, 0) == q for gid, q in changes.items()):
            raise bad(ITEMS_UNCHANGED)
        target = {**a["items"], **changes}
        return [
            self._request_item(gid, target[gid], a["items"].get(gid, 0))
            for gid in (i["id"] for i in product["items"])
            if gid in target
        ]

    def _find_asset(self, asset_in: dict) -> dict:
        aid = asset_in.get("id")
        ext_id = asset_in.get("external_id")
        ext_uid = asset_in.get("external_uid")
        product_in = asset_in.get("product")
        product_id = product_in.get("id") if isinstance(product_in, dict) else None
        if aid:
            a = self.assets.get(aid)
            if a is None:
                raise bad(f"asset.id: asset {aid} does not exist.")
            if ext_id and a["external_id"] != ext_id:
                raise bad(f"asset.external_id: asset {aid} has external_id {a['external_id']}, not {ext_id}.")
            if ext_uid and a["external_uid"] != ext_uid:
                raise bad(
                    f"asset.external_uid: asset {aid} has external_uid {a['external_uid']}, not {ext_uid}."
                )
            return a
        if not ext_id and not ext_uid:
            raise bad("asset.id: This field is required (or asset.external_id / asset.external_uid).")
        found = [
            a
            for a in self.assets.values()
            if (not ext_id or a["external_id"] == ext_id)
            and (not ext_uid or a["external_uid"] == ext_uid)
            and (not product_id or a["product_id"] == product_id)
        ]
        if not found:
            raise bad("asset: no asset with " + _describe(ext_id, ext_uid) + ".")
        live = [a for a in found if a["status"] != "terminated"] if len(found) > 1 else found
        if len(live) > 1:
            raise bad(
                "asset: several assets match "
                + _describe(ext_id, ext_uid)
                + " ("
                + ", ".join(a["id"] for a in live)
                + "); give asset.id or asset.external_uid."
            )
        return (live or found)[0]

    # the vendor's actions ---------------------------------------------------------------------
    def act(self, action: str, rid: str, body: Any) -> dict:
        """``POST /requests/{id}/<action>``: the body checked, then the request's status, then done.

        The checks run in that order, as Connect answers: a body without what the action needs is
        refused whatever the request's status.
        """
        statuses, done = ACTIONS[action]
        check, apply = self._action_steps()[action]
        with self.lock:
            self.auto_decide()
            r = self._request_for_action(rid)
            body = body if isinstance(body, dict) else {}
            if check is not None:
                check(body)
            if r["status"] not in statuses:
                raise bad(
                    f"Request {rid} is {r['status']}; only {' or '.join(statuses)} requests can be {done}.",
                    code="REQ_001",
                )
            apply(r, body)
            return self.render_request(rid)

    def _action_steps(
        self,
    ) -> dict[str, tuple[Callable[[dict], None] | None, Callable[[dict, dict], None]]]:
        return {
            "approve": (None, self._approve_with),
            "fail": (_required_reason, lambda r, body: self._fail(r, body["reason"])),
            "inquire": (None, self._inquire_with),
            "pend": (None, lambda r, _body: self._set_status(r, "pending")),
            "schedule": (_required_planned_date, self._schedule_with),
            "revoke": (_required_reason, lambda r, body: self._fail(r, body["reason"], status="revoked")),
        }

    def _approve_with(self, r: dict, body: dict) -> None:
        template_id = body.get("template_id")
        tile = body.get("activation_tile")
        template = self._product_template(r, template_id) if template_id else None
        if not template_id and not tile:
            raise bad("template_id: you must provide either a template_id or an activation_tile.")
        self._approve(r, template, str(tile) if tile else None, body.get("effective_date"))

    def _inquire_with(self, r: dict, body: dict) -> None:
        template_id = body.get("template_id")
        if template_id:
            r["template"] = template_ref(self._product_template(r, template_id))
        self._set_status(r, "inquiring")

    def _schedule_with(self, r: dict, body: dict) -> None:
        """A pending request waits for its ``planned_date``; the vendor decided when and approves or
        revokes later."""
        r["planned_date"] = body["planned_date"].strip()
        r["decided"] = True
        self._set_status(r, "scheduled")

    def _product_template(self, r: dict, template_id: Any) -> dict:
        """The template ``template_id`` of the request's product; 400 naming the field otherwise."""
        product = self.products[self.assets[r["asset_id"]]["product_id"]]
        template = next((t for t in product["templates"] if t["id"] == template_id), None)
        if template is None:
            raise bad(f"template_id: template {template_id} is not a template of product {product['id']}.")
        return template

    def _request_for_action(self, rid: str) -> dict:
        r = self.requests.get(rid)
        if r is None:
            raise not_found("Request", rid)
        return r

    def _set_status(self, r: dict, status: str) -> None:
        r["status"] = status
        r["updated"] = self.now()

    def _approve(self, r: dict, template: dict | None, tile: str | None, effective: Any) -> None:
        a = self.assets[r["asset_id"]]
        ts = self.now()
        if r["type"] in ("purchase", "change"):
            a["items"] = {it["global_id"]: it["quantity"] for it in r["items"]}
        a["status"] = APPROVED_ASSET_STATUS.get(r["type"], a["status"])
        a["updated"] = ts
        r.update(
            status="approved", decided=True, updated=ts, effective_date=str(effective) if effective else ts
        )
        if template is not None:
            r["template"] = template_ref(template)
            r["activation_key"] = template["body"]
        else:
            r["activation_key"] = tile or ""

    def _fail(self, r: dict, reason: str, status: str = "failed") -> None:
        a = self.assets[r["asset_id"]]
        ts = self.now()
        if r["type"] == "purchase":
            a["status"] = "terminated"
        elif r["type"] == "cancel" and r["previous_asset_status"]:
            a["status"] = r["previous_asset_status"]
        a["updated"] = ts
        r.update(status=status, decided=True, reason=reason, updated=ts)

    # PUT /requests/{id} ----------------------------------------------------------------------
    def update(self, rid: str, body: Any) -> dict:
        """``PUT /requests/{id}``: parameter values and errors of an open request (and its note).

        The spec: "Updates parameters on the request, only value, structured_value or value_error
        can be modified"; the JavaScript SDK also updates ``note`` this way and writes
        ``value_error`` before inquiring (cloudblue/connect-javascript-sdk @
        78b3ba3c9d7855cbca427e4667de1fab86abfe7b : lib/connect/ops/fulfillment.js). Unknown
        parameter ids and other fields are refused, naming them; nothing is applied then.
        """
        with self.lock:
            self.auto_decide()
            r = self._request_for_action(rid)
            if not isinstance(body, dict):
                raise bad("The request body must be a JSON object.")
            unknown = sorted(set(body) - {"asset", "note"})
            if unknown:
                raise bad(f"{unknown[0]}: only asset.params and note of a request can be updated.")
            if r["status"] in DECIDED_STATUSES:
                raise bad(
                    f"Request {rid} is {r['status']}; only open requests can be updated.", code="REQ_001"
                )
            a = self.assets[r["asset_id"]]
            updates = self._param_updates(body.get("asset", {}), a, rid)
            note = body.get("note")
            if note is not None and not isinstance(note, str):
                raise bad("note: must be a string.")
            for pid, values in updates:
                a["params"].setdefault(pid, {}).update(values)
            if note is not None:
                r["note"] = note
            r["updated"] = self.now()
            return self.render_request(rid)

    def _param_updates(self, asset_in: Any, a: dict, rid: str) -> list[tuple[str, dict]]:
        """``asset.params`` of a ``PUT /requests/{id}``, checked whole before anything is applied."""
        if not isinstance(asset_in, dict):
            raise bad("asset: must be an object.")
        unknown = sorted(set(asset_in) - {"params"})
        if unknown:
            raise bad(f"asset.{unknown[0]}: only asset.params can be updated.")
        params_in = asset_in.get("params", [])
        if not isinstance(params_in, list):
            raise bad("asset.params: must be a list of {id, value, structured_value, value_error}.")
        known = {d["id"] for d in self.products[a["product_id"]]["params"]}
        updates: list[tuple[str, dict]] = []
        for n, p in enumerate(params_in):
            if not isinstance(p, dict) or not p.get("id"):
                raise bad(f"asset.params[{n}].id: This field is required.")
            if p["id"] not in known:
                raise bad(f"asset.params[{n}].id: {p['id']} is not a parameter of request {rid}.")
            extra = sorted(set(p) - {"id", "value", "structured_value", "value_error"})
            if extra:
                raise bad(
                    f"asset.params[{n}].{extra[0]}: only value, structured_value or value_error can be "
                    "modified."
                )
            updates.append((str(p["id"]), self._param_values(p, n, allow_error=True)))
        return updates

    # the demo vendor ---------------------------------------------------------------------------
    def auto_decide(self) -> None:
        """The vendor's decision on requests made through the API, once their delay has passed.

        A ``tiers_setup`` purchase becomes ``pending`` after one delay (the reseller finished its
        tier set-up) and is decided after another. ``fail-...`` assets are failed, ``inquire-...``
        ones inquired, the rest approved with the product's fulfillment template.
        """
        if self.auto_approve_delay < 0:
            return
        now = self.clock()
        for r in self.requests.values():
            if r["decided"] or r["status"] not in ("pending", "tiers_setup"):
                continue
            if now - r["created_mono"] < self.auto_approve_delay:
                continue
            if r["status"] == "tiers_setup":
                r["created_mono"] = now
                self._set_status(r, "pending")
                continue
            self._decide_as_the_vendor(r)

    def _decide_as_the_vendor(self, r: dict) -> None:
        r["decided"] = True
        a = self.assets[r["asset_id"]]
        ext = a["external_id"] or ""
        if ext.startswith("fail-"):
            self._fail(r, VENDOR_FAIL_REASON)
        elif ext.startswith("inquire-"):
            self._set_status(r, "inquiring")
        else:
            product = self.products[a["product_id"]]
            template = next((t for t in product["templates"] if t["type"] == "fulfillment"), None)
            self._approve(r, template, None, None)


def _required_reason(body: dict) -> None:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise bad("reason: This field is required.")


def _required_planned_date(body: dict) -> None:
    planned = body.get("planned_date")
    if not isinstance(planned, str) or not planned.strip():
        raise bad("planned_date: This field is required.")
    try:
        datetime.fromisoformat(planned.strip().replace("Z", "+00:00"))
    except ValueError:
        raise bad(f"planned_date: {planned!r} is not an ISO 8601 date-time.") from None


def _describe(ext_id: str | None, ext_uid: str | None) -> str:
    parts = []
    if ext_id:
        parts.append(f"external_id {ext_id}")
    if ext_uid:
        parts.append(f"external_uid {ext_uid}")
    return " and ".join(parts)
