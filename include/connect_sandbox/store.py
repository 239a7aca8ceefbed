"""The sandbox's state and Connect's subscription-request lifecycle, behind one lock.

uvicorn runs sync endpoints in a thread pool, so every read and write goes through ``Store.lock``.
Objects are kept in an internal shape (ids pointing at each other) and rendered to Connect's
response shapes on the way out, so a change to an asset shows in every request that embeds it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from . import seed
from .usage import RECORD_STATUS_BY_FILE_STATUS, GeneratedRecords, RecordSource, StoredRecords

OPEN_REQUEST_STATUSES = ("draft", "tiers_setup", "pending", "inquiring", "scheduled", "revoking")
DECIDED_STATUSES = ("approved", "failed", "revoked")
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
ITEMS_EMPTY = "asset.items: This list may not be empty."
MARKETPLACE_REQUIRED = "Field 'marketplace.id' is required."
NO_LISTING = "There is no Listing for specified Product and Marketplace."
NO_HOLD_REASON = "The product doesn't support suspend/resume operations."
# No public source gives the column behind an item quantity; a signed 32-bit integer (PostgreSQL
# ``integer``, Django's IntegerField) is the narrowest a quantity could be stored in, so nothing
# above it is accepted (Django's MaxValueValidator wording).
MAX_QUANTITY = 2_147_483_647
VENDOR_FAIL_REASON = "Vendor refused: the demo marks fail-* assets"
# Purchases whose external id starts with this wait in ``tiers_setup`` (the reseller completes its
# tier configuration) for one decision delay before they are pending.
TIERS_SETUP_PREFIX = "setup-"
FIRST_GENERATED_FILE = 9000000001


class ApiError(Exception):
    """An answer in Connect's error shape: ``{"error_code": ..., "errors": [...]}``.

    A 409 adds ``params``, naming what already exists (``request_id``, ``asset_id``,
    ``request_status``, ``asset_status``): the shape connect-extension-for-cb-commerce reads from
    Connect's 409 answers (``error.additional_info['params']`` in
    cbcext/services/fulfillment/base.py and purchase.py).
    """

    def __init__(self, status: int, error_code: str, *errors: str, params: dict | None = None) -> None:
        super().__init__(f"{status} {error_code}: {'; '.join(errors)}")
        self.status = status
        self.error_code = error_code
        self.errors = list(errors)
        self.params = params

    def body(self) -> dict:
        out: dict[str, Any] = {"error_code": self.error_code, "errors": self.errors}
        if self.params is not None:
            out["params"] = self.params
        return out


def bad(*errors: str, code: str = "VAL_001") -> ApiError:
    return ApiError(400, code, *errors)


def conflict(*errors: str, code: str, params: dict) -> ApiError:
    return ApiError(409, code, *errors, params=params)


def not_found(kind: str, oid: str) -> ApiError:
    return ApiError(404, "NFND_001", f"{kind} {oid} not found.")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Store:
    def __init__(
        self,
        seed_name: str = "demo",
        auto_approve_delay: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.initial_seed = seed_name
        self.initial_delay = float(auto_approve_delay)
        self.usage_records_arg = 0
        self.reset()

    # ----------------------------------------------------------------------------- state
    def reset(self, seed_name: str | None = None, auto_approve_delay: float | None = None) -> None:
        """Back to a seed; what is not given comes from the start-up flags, not the last reset."""
        seed_name = self.initial_seed if seed_name is None else seed_name
        if seed_name not in ("demo", "empty"):
            raise bad(f"seed: unknown seed {seed_name!r}; use 'demo' or 'empty'.")
        with self.lock:
            self.seed_name = seed_name
            self.auto_approve_delay = (
                self.initial_delay if auto_approve_delay is None else float(auto_approve_delay)
            )
            cat = seed.catalogue()
            self.products: dict[str, dict] = cat["products"]
            self.hubs: dict[str, dict] = cat["hubs"]
            self.marketplaces: dict[str, dict] = cat["marketplaces"]
            self.connections: dict[str, dict] = cat["connections"]
            self.listings: set[tuple[str, str]] = cat["listings"]
            self.tier_accounts: dict[str, dict] = {}
            self.assets: dict[str, dict] = {}
            self.requests: dict[str, dict] = {}
            self.usage_files: dict[str, dict] = {}
            self.record_sources: dict[str, RecordSource] = {}
            self.asset_counter = itertools.count(1)
            self.tier_counter = itertools.count(1)
            self.file_counter = itertools.count(FIRST_GENERATED_FILE)
            self.stats_created: Counter[str] = Counter()
            self.calls: Counter[str] = Counter()
            self.faults: Counter[str] = Counter({"429": 0, "500": 0, "drop": 0})
            if self.seed_name == "demo":
                self._load_demo()
            if self.usage_records_arg:
                self.add_usage_file(self.usage_records_arg)

    def _load_demo(self) -> None:
        self.tier_accounts = seed.tier_accounts()
        self.tier_counter = itertools.count(len(self.tier_accounts) + 1)
        for a in seed.demo_assets():
            purchase_status = a.pop("purchase_status")
            self.assets[a["id"]] = a
            next(self.asset_counter)
            product = self.products[a["product_id"]]
            self._add_request(
                a,
                "purchase",
                [self._request_item(gid, q, 0) for gid, q in a["items"].items()],
                status=purchase_status,
                created=a["created"],
                updated=a["updated"],
                auto=False,
                template=None if purchase_status == "pending" else product["templates"][0],
            )
        for fid, product_id, status, pfrom, pto, count in seed.DEMO_USAGE_FILES:
            self._create_usage_file(
                fid, product_id, status, pfrom, pto, count, edge=(fid == seed.EDGE_FILE_ID)
            )

    # ----------------------------------------------------------------------------- usage files
    def add_usage_file(
        self,
        records: int,
        product_id: str = seed.DEMO_PRODUCT,
        status: str = "ready",
        period_from: str | date = "2026-10-01",
        period_to: str | date = "2026-10-31",
    ) -> dict:
        with self.lock:
            if product_id not in self.products:
                raise bad(f"product_id: product {product_id} does not exist.")
            if status not in RECORD_STATUS_BY_FILE_STATUS:
                raise bad(f"status: unknown usage file status {status!r}.")
            if not isinstance(records, int) or records < 0:
                raise bad("records: must be an integer >= 0.")
            try:
                pfrom = period_from if isinstance(period_from, date) else date.fromisoformat(period_from)
                pto = period_to if isinstance(period_to, date) else date.fromisoformat(period_to)
            except ValueError as exc:
                raise bad(f"period_from/period_to: {exc}") from exc
            if pto < pfrom:
                raise bad("period_to: must not be before period_from.")
            fid = f"UF-{pfrom.year:04d}-{pfrom.month:02d}-{next(self.file_counter):010d}"
            self._create_usage_file(fid, product_id, status, pfrom, pto, records, edge=False)
            return self.render_usage_file(fid, detail=True)

    def _create_usage_file(
        self, fid: str, product_id: str, status: str, pfrom: date, pto: date, count: int, edge: bool
    ) -> None:
        product = self.products[product_id]
        marketplace = self.marketplaces["MP-00001"]
        currency = marketplace["currency"]
        name = f"{product['name']} usage {pfrom.isoformat()}..{pto.isoformat()}"[:100]
        usagefile = {"id": fid, "name": name, "schema": "qt", "currency": currency}
        record_status = RECORD_STATUS_BY_FILE_STATUS[status]
        if edge:
            source: RecordSource = StoredRecords.of(seed.edge_records(usagefile, product["items"][0]))
        else:
            assets = [
                {
                    "id": aid,
                    "external_id": self.assets[aid]["external_id"] if aid in self.assets else aid,
                    "external_uid": self.assets[aid]["external_uid"]
                    if aid in self.assets
                    else seed.det_uuid(aid),
                    "recon_id": seed.recon_id(aid),
                }
                for aid in seed.RECORD_ASSETS.get(product_id, [])
            ] or seed.VAULT_RECORD_ASSETS
            source = GeneratedRecords(
                count=count,
                file_id=fid,
                items=product["items"],
                assets=assets,
                product_id=product_id,
                usagefile=usagefile,
                period_from=pfrom,
                period_days=(pto - pfrom).days + 1,
                status=record_status,
                categories=seed.USAGE_CATEGORIES,
            )
        n = len(self.usage_files)
        created = seed.seed_time(24 * 60 * 40 + n)
        events: dict[str, Any] = {
            "created": {"at": created, "by": {"id": seed.SYSTEM_USER["id"], "name": seed.SYSTEM_USER["name"]}}
        }
        if status not in ("draft",):
            events["uploaded"] = {"at": created, "by": {"id": seed.VENDOR["id"], "name": seed.VENDOR["name"]}}
        if status in ("pending", "accepted", "closed"):
            events["submitted"] = {
                "at": created,
                "by": {"id": seed.VENDOR["id"], "name": seed.VENDOR["name"]},
            }
        if status in ("accepted", "closed"):
            events["accepted"] = {
                "at": created,
                "by": {"id": seed.PROVIDER["id"], "name": seed.PROVIDER["name"]},
            }
        if status == "closed":
            events["closed"] = {
                "at": created,
                "by": {"id": seed.PROVIDER["id"], "name": seed.PROVIDER["name"]},
            }
        self.usage_files[fid] = {
            "id": fid,
            "name": name,
            "description": f"Usage of {product['name']} for {pfrom:%B %Y}",
            "note": "",
            "external_id": f"ext-{fid.lower()}",
            "status": status,
            "vendor": dict(seed.VENDOR),
            "provider": dict(seed.PROVIDER),
            "environment": "production",
            "marketplace": {
                "id": marketplace["id"],
                "name": marketplace["name"],
                "icon": marketplace["icon"],
            },
            "contract": {"id": seed.CONTRACT["id"], "name": seed.CONTRACT["name"]},
            "product": {"id": product_id, "name": product["name"], "icon": product["icon"]},
            "error_detail": None,
            "acceptance_note": "Accepted by the demo provider" if status in ("accepted", "closed") else None,
            "rejection_note": None,
            "schema": "qt",
            "currency": currency,
            "period": {"from": pfrom.isoformat(), "to": pto.isoformat()},
            "events": events,
            "_count": source.count,
            "_record_status": record_status,
        }
        self.record_sources[fid] = source

    def render_usage_file(self, fid: str, detail: bool = False) -> dict:
        f = self.usage_files.get(fid)
        if f is None:
            raise not_found("Usage file", fid)
        count = f["_count"]
        rs = f["_record_status"]
        out = {k: v for k, v in f.items() if not k.startswith("_")}
        out["stats"] = {
            "uploaded": count,
            "validated": count if rs in ("valid", "approved", "closed") else 0,
            "pending": count if f["status"] == "pending" else 0,
            "accepted": count if rs in ("approved", "closed") else 0,
            "closed": count if rs == "closed" else 0,
            "billed": count if rs == "closed" else 0,
        }
        if detail:
            if f["status"] != "draft":  # nullable in the spec, but null is not in its enum: omitted
                out["sub_status"] = "processed"
            out["usage_file_uri"] = f"/files/usage/{fid}/upload.xlsx"
            out["processed_file_uri"] = f"/files/usage/{fid}/processed.xlsx"
            out["reconciliation_file_uri"] = f"/files/usage/{fid}/reconciliation.xlsx"
            out["records"] = {
                "valid": count if rs in ("valid", "approved") else 0,
                "invalid": count if rs == "invalid" else 0,
                "closed": count if rs == "closed" else 0,
            }
            # start_datetime_utc / end_datetime_utc are writeOnly in usage.UsageFileDetail: not sent.
        return out

    # ----------------------------------------------------------------------------- rendering
    def render_connection(self, cid: str, embedded: bool = False, in_asset: bool = False) -> dict:
        """A connection: in full (product connections), embedded in a request, or in an asset.

        ``GET /assets`` embeds ``{id, hub, provider, vendor, type}`` (cloudblue/microsoft_reports
        and cloudblue/adobe_reports asset fixtures, see tests/fixtures/real/README.md); a request's
        asset adds ``status`` and ``created_at`` (cloudblue/connect-reports ff_request.json).
        """
        c = self.connections[cid]
        hub = self.hubs[c["hub_id"]]
        out = {
            "id": c["id"],
            "type": c["type"],
            "status": c["status"],
            "provider": dict(seed.PROVIDER),
            "vendor": dict(seed.VENDOR),
            "hub": {"id": hub["id"], "name": hub["name"]},
            "created_at": c["created_at"],
        }
        if in_asset:
            del out["status"], out["created_at"]
        elif not embedded:
            out["hub"]["instance"] = dict(hub["instance"])
            out["product"] = {"id": c["product_id"], "name": self.products[c["product_id"]]["name"]}
            out["events"] = {"created": {"at": c["created_at"], "by": dict(seed.SYSTEM_USER)}}
            out["note"] = None
        return out

    def _tier_ref(self, ta_id: str, *, in_asset: bool) -> dict:
        """A tier account as a request or an asset embeds it.

        Assets carry the tax id and a phone without an empty extension (microsoft_reports and
        adobe_reports asset fixtures); requests carry no tax id (connect-reports ff_request.json).
        """
        ta = self.tier_accounts[ta_id]
        out = {
            "id": ta["id"],
            "external_id": ta["external_id"],
            "external_uid": ta["external_uid"],
            "name": ta["name"],
            "contact_info": ta["contact_info"],
        }
        if in_asset:
            out["tax_id"] = ta["tax_id"]
            contact = dict(ta["contact_info"].get("contact") or {})
            phone = contact.get("phone_number")
            if isinstance(phone, dict) and not phone.get("extension"):
                contact["phone_number"] = {k: v for k, v in phone.items() if k != "extension"}
            out["contact_info"] = {**ta["contact_info"], "contact": contact}
        return out

    def _render_params(self, a: dict) -> list[dict]:
        """The asset's parameters: the product's definitions with the asset's values.

        Keys as real assets and requests carry them (adobe_reports active_assets.json,
        connect-reports ff_request.json): ``id, name, title, description, type, phase, value,
        value_error, constraints`` and, once an object parameter has one, ``structured_value``.
        """
        product = self.products[a["product_id"]]
        out = []
        for definition in product["params"]:
            held = a["params"].get(definition["id"], {})
            param = {
                "id": definition["id"],
                "name": definition["name"],
                "title": definition["title"],
                "description": definition["description"],
                "type": definition["type"],
                "phase": definition["phase"],
                "value": held.get("value", ""),
                "value_error": held.get("value_error", ""),
                "constraints": {**definition["constraints"], "meta": {}},
            }
            if "structured_value" in held:  # an unset object parameter has none (microsoft_reports)
                param["structured_value"] = dict(held["structured_value"])
            out.append(param)
        return out

    def _asset_common(self, a: dict, *, in_asset: bool) -> dict:
        product = self.products[a["product_id"]]
        mp = self.marketplaces[a["marketplace_id"]]
        tiers = {k: self._tier_ref(v, in_asset=in_asset) for k, v in a["tiers"].items()}
        tiers.setdefault("tier2", {})  # an absent tier 2 is an empty object (connect-reports ff_request.json)
        out = {
            "id": a["id"],
            "status": a["status"],
            "external_id": a["external_id"],
            "external_uid": a["external_uid"],
            "product": {
                "id": product["id"],
                "icon": product["icon"],
                "name": product["name"],
                "status": product["status"],
            },
            "connection": self.render_connection(a["connection_id"], embedded=True, in_asset=in_asset),
            "events": {"created": {"at": a["created"]}, "updated": {"at": a["updated"]}},
            "params": self._render_params(a),
            "tiers": tiers,
            "marketplace": {"id": mp["id"], "name": mp["name"], "icon": mp["icon"]},
            "contract": {"id": seed.CONTRACT["id"], "name": seed.CONTRACT["name"]}
            if in_asset
            else dict(seed.CONTRACT),
        }
        if not in_asset:
            out["configuration"] = {"params": []}
        return out

    def render_asset(self, aid: str, with_pending: bool = False) -> dict:
        """``GET /assets/{id}`` as Connect answers it.

        Items carry the product's *local* item id in ``id`` and the global one in ``global_id``,
        with quantities as numbers (``25.0``), the item type and period in lower case and the unit
        in ``type``: cloudblue/microsoft_reports @ 545863ad17b22f3e5f8cc6ad9fac9be1bf6104fd :
        tests/fixtures/assets_collection.json, cloudblue/adobe_reports @
        e5f4f9e7e51dc9315d637c318ace4a5cb88d2ed1 : tests/active_assets.json. Assets also carry
        ``billing`` (period, next date, anniversary) and no ``configuration``.
        """
        a = self.assets.get(aid)
        if a is None:
            raise not_found("Asset", aid)
        product = self.products[a["product_id"]]
        out = self._asset_common(a, in_asset=True)
        out["items"] = [
            {
                "id": it["local_id"],
                "global_id": it["id"],
                "display_name": it["display_name"],
                "mpn": it["mpn"],
                "item_type": it["item_type"].lower(),
                "period": it["period"].lower(),
                "quantity": float(a["items"][it["id"]]),
                "type": it["unit"],
            }
            for it in product["items"]
            if it["id"] in a["items"]
        ]
        out["billing"] = _billing(a["created"])
        if with_pending:
            pending = self._open_request_of(aid)
            if pending is not None:
                out["pending_request"] = {
                    "id": pending["id"],
                    "type": pending["type"],
                    "status": pending["status"],
                }
        return out

    def render_request(self, rid: str) -> dict:
        """A request as Connect answers it (cloudblue/connect-reports @ b408690 : ff_request.json).

        Item quantities are strings, ``"unlimited"`` for -1 (cloudblue/adobe_reports :
        tests/requests_asset.json); ``id`` is the local item id, ``type`` the unit.
        """
        r = self.requests.get(rid)
        if r is None:
            raise not_found("Request", rid)
        a = self.assets[r["asset_id"]]
        product = self.products[a["product_id"]]
        asset = self._asset_common(a, in_asset=False)
        asset["items"] = [self._render_request_item(product, it) for it in r["items"]]
        mp = self.marketplaces[r["marketplace_id"]]
        out: dict[str, Any] = {
            "id": r["id"],
            "type": r["type"],
            "note": r["note"],
            "reason": r["reason"],
            "created": r["created"],
            "updated": r["updated"],
            "effective_date": r["effective_date"],
            "planned_date": r.get("planned_date"),
            "answered": r["status"] in DECIDED_STATUSES,
            "assignee": "",
            "activation_key": r["activation_key"],
            "external_attributes": {},
            "marketplace": {"id": mp["id"], "name": mp["name"], "icon": mp["icon"]},
            "status": r["status"],
            "asset": asset,
            "contract": dict(seed.CONTRACT),
        }
        if r["template"] is not None:
            out["template"] = dict(r["template"])
        if r["previous_approved_request"]:
            out["previous_approved_request"] = {"id": r["previous_approved_request"]}
        return out

    def _render_request_item(self, product: dict, item: dict) -> dict:
        it = next(i for i in product["items"] if i["id"] == item["global_id"])
        return {
            "id": it["local_id"],
            "global_id": it["id"],
            "mpn": it["mpn"],
            "old_quantity": _quantity_text(item["old_quantity"]),
            "quantity": _quantity_text(item["quantity"]),
            "type": it["unit"],
            "display_name": it["display_name"],
            "period": it["period"],
            "item_type": it["item_type"],
        }

    def render_tier_account(self, ta: dict) -> dict:
        return ta

    # ----------------------------------------------------------------------------- listing
    def list_objects(self, kind: str, product_id: str | None = None) -> list[dict]:
        """Everything of one kind, rendered; filtering and paging happen in the app."""
        with self.lock:
            self.auto_decide()
            if kind == "requests":
                return [self.render_request(rid) for rid in self.requests]
            if kind == "assets":
                return [self.render_asset(aid) for aid in self.assets]
            if kind == "tier_accounts":
                return list(self.tier_accounts.values())
            if kind == "marketplaces":
                return list(self.marketplaces.values())
            if kind == "hubs":
                return list(self.hubs.values())
            if kind == "connections":
                self.product(product_id or "")
                return [
                    self.render_connection(c["id"])
                    for c in self.connections.values()
                    if c["product_id"] == product_id
                ]
            if kind == "templates":
                return list(self.product(product_id or "")["templates"])
            if kind == "usage_files":
                return [self.render_usage_file(fid) for fid in self.usage_files]
            raise KeyError(kind)

    def product(self, product_id: str) -> dict:
        p = self.products.get(product_id)
        if p is None:
            raise not_found("Product", product_id)
        return p

    def get(self, kind: str, oid: str, **kw: Any) -> dict:
        with self.lock:
            self.auto_decide()
            if kind == "requests":
                return self.render_request(oid)
            if kind == "assets":
                return self.render_asset(oid, **kw)
            if kind == "usage_files":
                return self.render_usage_file(oid, detail=True)
            raise KeyError(kind)

    # ----------------------------------------------------------------------------- requests
    def _next_request_id(self, a: dict) -> str:
        a["_requests"] = a.get("_requests", 0) + 1
        return f"PR-{a['id'].removeprefix('AS-')}-{a['_requests']:03d}"

    @staticmethod
    def _request_item(gid: str, quantity: int, old_quantity: int) -> dict:
        """A request's item, kept as numbers (rendered to Connect's strings on the way out)."""
        return {"global_id": gid, "quantity": quantity, "old_quantity": old_quantity}

    def _add_request(
        self,
        a: dict,
        rtype: str,
        items: list[dict],
        *,
        status: str = "pending",
        created: str | None = None,
        updated: str | None = None,
        auto: bool = True,
        template: dict | None = None,
        note: str = "",
        previous_status: str | None = None,
        reason: str = "",
    ) -> dict:
        rid = self._next_request_id(a)
        ts = created or now_iso()
        previous = self._latest_request_of(a["id"], ("approved",))
        r = {
            "id": rid,
            "type": rtype,
            "status": status,
            "asset_id": a["id"],
            "marketplace_id": a["marketplace_id"],
            "items": items,
            "note": note,
            "reason": reason,
            "created": ts,
            "updated": updated or ts,
            # Not nullable in the spec; Connect fills it from creation until a decision sets it.
            "effective_date": ts,
            "planned_date": None,
            "activation_key": template["body"] if template else "",
            "template": _template_ref(template) if template else None,
            "previous_approved_request": previous["id"] if previous else None,
            "auto": auto,
            "created_mono": self.clock(),
            "decided": not auto or status in DECIDED_STATUSES,
            "previous_asset_status": previous_status,
        }
        self.requests[rid] = r
        return r

    def _open_request_of(self, aid: str) -> dict | None:
        for r in self.requests.values():
            if r["asset_id"] == aid and r["status"] in OPEN_REQUEST_STATUSES:
                return r
        return None

    def _latest_request_of(
        self, aid: str, statuses: tuple[str, ...] | None = None, rtype: str | None = None
    ) -> dict | None:
        """The asset's most recent request (in creation order), optionally of these statuses/type."""
        for r in reversed(list(self.requests.values())):
            if r["asset_id"] != aid:
                continue
            if (statuses is None or r["status"] in statuses) and (rtype is None or r["type"] == rtype):
                return r
        return None

    def _existing_request_params(self, a: dict, r: dict) -> dict:
        """The ``params`` of a 409: the request that already exists, and its asset."""
        return {
            "request_id": r["id"],
            "asset_id": a["id"],
            "request_status": r["status"],
            "asset_status": a["status"],
        }

    def _state_request(self, a: dict) -> dict:
        """The request an asset's current state comes from: its open one, else its latest approved one."""
        found = (
            self._open_request_of(a["id"])
            or self._latest_request_of(a["id"], ("approved",))
            or self._latest_request_of(a["id"])
        )
        assert found is not None  # every asset is made by its purchase request
        return found

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

    # purchase --------------------------------------------------------------------------
    def _create_purchase(self, payload: dict, asset_in: dict) -> dict:
        """A purchase as Connect checks it; nothing required is inferred.

        ``marketplace.id`` and ``asset.connection.id`` are required; the product (the
        connection's) must be listed on the marketplace, which the connection's hub must serve.
        An ``external_uid`` that an asset already has makes the purchase a duplicate: 409 naming
        that asset and its purchase request (CBC re-sends a purchase with the same external_uid
        and reads the existing request from the 409: cloudblue/connect-extension-for-cb-commerce
        @ 584bcd9a351d1a9601c5d0ebb8bd1fb2dff0f503 : cbcext/services/fulfillment/purchase.py,
        which sends the APS resource id as external_uid). Assets may share an external_id (the
        seed's ``sub-dup``): the uid tells them apart, across products too.
        """
        external_id = asset_in.get("external_id")
        if not isinstance(external_id, str) or not external_id.strip():
            raise bad("asset.external_id: This field is required for a purchase.")
        if len(external_id) > 100:
            raise bad("asset.external_id: Ensure this field has no more than 100 characters.")
        external_uid = asset_in.get("external_uid")
        if external_uid is not None and (not isinstance(external_uid, str) or len(external_uid) > 100):
            raise bad("asset.external_uid: must be a string of at most 100 characters.")
        connection = self._required_connection(asset_in)
        marketplace = self._required_marketplace(payload)
        product = self.products[connection["product_id"]]
        product_in = asset_in.get("product")
        if product_in is not None:
            pid = product_in.get("id") if isinstance(product_in, dict) else None
            if pid not in self.products:
                raise bad(f"asset.product.id: product {pid} does not exist.")
            if pid != product["id"]:
                raise bad(
                    f"asset.connection.id: connection {connection['id']} is not a connection of "
                    f"product {pid}."
                )
        if (product["id"], marketplace["id"]) not in self.listings:
            raise bad(NO_LISTING)
        if not any(h["hub"]["id"] == connection["hub_id"] for h in marketplace["hubs"]):
            raise bad(
                f"marketplace.id: marketplace {marketplace['id']} is not served by hub "
                f"{connection['hub_id']} of connection {connection['id']}."
            )
        items = self._parse_items(asset_in.get("items"), product, purchase=True)
        params = self._parse_params(asset_in.get("params"), product)
        if external_uid:
            twin = next((x for x in self.assets.values() if x["external_uid"] == external_uid), None)
            if twin is not None:
                existing = self._latest_request_of(twin["id"], rtype="purchase") or self._state_request(twin)
                raise conflict(
                    f"asset.external_uid: asset {twin['id']} already has external_uid {external_uid}; "
                    f"its purchase request is {existing['id']} ({existing['status']}).",
                    code="REQ_004",
                    params=self._existing_request_params(twin, existing),
                )
        tiers = self._resolve_tiers(asset_in.get("tiers"), connection["hub_id"])
        n = next(self.asset_counter)
        aid = seed.asset_id(n)
        ts = now_iso()
        a = {
            "id": aid,
            "status": "processing",
            "external_id": external_id,
            "external_uid": external_uid or seed.det_uuid(f"asset-{aid}"),
            "product_id": product["id"],
            "connection_id": connection["id"],
            "marketplace_id": marketplace["id"],
            "items": dict(items),
            "params": params,
            "tiers": tiers,
            "created": ts,
            "updated": ts,
        }
        self.assets[aid] = a
        req_items = [self._request_item(gid, q, 0) for gid, q in items.items()]
        status = "tiers_setup" if external_id.startswith(TIERS_SETUP_PREFIX) else "pending"
        return self._add_request(a, "purchase", req_items, note=str(payload.get("note") or ""), status=status)

    def _required_marketplace(self, payload: dict) -> dict:
        mp_in = payload.get("marketplace")
        mp_id = mp_in.get("id") if isinstance(mp_in, dict) else None
        if not mp_id:
            raise bad(MARKETPLACE_REQUIRED)
        marketplace = self.marketplaces.get(mp_id) if isinstance(mp_id, str) else None
        if marketplace is None:
            raise bad(f"marketplace.id: marketplace {mp_id} does not exist.")
        return marketplace

    def _required_connection(self, asset_in: dict) -> dict:
        conn_in = asset_in.get("connection")
        if conn_in is not None and not isinstance(conn_in, dict):
            raise bad("asset.connection: must be an object.")
        cid = (conn_in or {}).get("id")
        if not cid:
            raise bad("asset.connection.id: This field is required.")
        connection = self.connections.get(cid) if isinstance(cid, str) else None
        if connection is None:
            raise bad(f"asset.connection.id: connection {cid} does not exist.")
        ctype = (conn_in or {}).get("type")
        if ctype and ctype != connection["type"]:
            raise bad(
                f"asset.connection.type: connection {cid} is a {connection['type']} connection, not {ctype}."
            )
        return connection

    def _resolve_tiers(self, tiers_in: Any, hub_id: str) -> dict:
        if not isinstance(tiers_in, dict):
            raise bad("asset.tiers: This field is required (tier1 and customer).")
        out = {}
        for level in ("customer", "tier1", "tier2"):
            t = tiers_in.get(level)
            if level in ("customer", "tier1") and not t:
                raise bad(f"asset.tiers.{level}: This field is required.")
            if not t:
                continue
            if not isinstance(t, dict):
                raise bad(f"asset.tiers.{level}: must be an object.")
            out[level] = self._tier_account_for(level, t, hub_id)
        return out

    def _tier_account_for(self, level: str, t: dict, hub_id: str) -> str:
        """The tier account ``t`` names on the purchase's hub; a new one when it names none.

        Tier accounts belong to a hub (``hub`` of cloudblue/connect-reports
        tests/fixtures/ta_account.json): an external id is looked up within the hub, as the Zapier
        app does (``external_id`` + ``hub.id``: cloudblue/connect-fulfillment-zapier-app @
        d6b7645a0e854f7d3dcab017211da4dada6fe62f : lib/connect/api/helpers/lookups.js).
        """
        if t.get("id"):
            ta = self.tier_accounts.get(t["id"])
            if ta is None:
                raise bad(f"asset.tiers.{level}.id: tier account {t['id']} does not exist.")
            if ta["hub"]["id"] != hub_id:
                raise bad(
                    f"asset.tiers.{level}.id: tier account {t['id']} belongs to hub {ta['hub']['id']}, "
                    f"not to {hub_id} of the purchase's connection."
                )
            return t["id"]
        ext_uid, ext_id = t.get("external_uid"), t.get("external_id")
        if not ext_id and not ext_uid:
            raise bad(f"asset.tiers.{level}: give id, or external_id (and optionally external_uid).")
        for ta in self.tier_accounts.values():
            if ta["hub"]["id"] != hub_id:
                continue
            if (ext_uid and ta["external_uid"] == ext_uid) or (
                not ext_uid and ext_id and ta["external_id"] == ext_id
            ):
                return ta["id"]
        if not t.get("name"):
            raise bad(f"asset.tiers.{level}.name: This field is required for a new tier account.")
        contact = t.get("contact_info")
        if not isinstance(contact, dict):
            raise bad(f"asset.tiers.{level}.contact_info: This field is required for a new tier account.")
        tid = f"TA-0000-0000-{next(self.tier_counter):04d}"
        hub = self.hubs[hub_id]
        ts = now_iso()
        self.tier_accounts[tid] = {
            "id": tid,
            "version": 1,
            "name": str(t["name"]),
            "type": "customer" if level == "customer" else "reseller",
            "db": "EU",
            "external_id": ext_id,
            "external_uid": ext_uid or seed.det_uuid(f"tier-{tid}"),
            "parent": {},
            "owner": {
                "id": seed.PROVIDER["id"],
                "name": seed.PROVIDER["name"],
                "icon": seed.PROVIDER["icon"],
            },
            "scopes": ["customer" if level == "customer" else level],
            "hub": {"id": hub["id"], "name": hub["name"]},
            "tax_id": str(t.get("tax_id") or ""),
            "events": {
                "created": {"at": ts, "by": dict(seed.ACTOR)},
                "updated": {"at": ts, "by": dict(seed.ACTOR)},
            },
            "environment": "production",
            "contact_info": _stored_contact_info(contact),
        }
        return tid

    def _parse_params(self, params_in: Any, product: dict) -> dict[str, dict]:
        """Ordering parameters of a purchase: ``{id, value}`` or ``{id, structured_value}``.

        Only the product's parameters exist; object parameters take a ``structured_value`` (the
        Zapier app sends JSON objects so: connect-fulfillment-zapier-app @ d6b7645 :
        lib/connect/api/helpers/data.js processStructuredParams).
        """
        if params_in is None:
            return {}
        if not isinstance(params_in, list):
            raise bad("asset.params: must be a list of {id, value}.")
        known = {d["id"] for d in product["params"]}
        out: dict[str, dict] = {}
        for n, p in enumerate(params_in):
            if not isinstance(p, dict) or not p.get("id"):
                raise bad(f"asset.params[{n}].id: This field is required.")
            pid = str(p["id"])
            if pid not in known:
                raise bad(f"asset.params[{n}].id: {pid} is not a parameter of product {product['id']}.")
            out[pid] = self._param_values(p, n, allow_error=False)
        return out

    @staticmethod
    def _param_values(p: dict, n: int, *, allow_error: bool) -> dict:
        held: dict[str, Any] = {}
        if "value" in p:
            value = p["value"]
            if (value is not None and not isinstance(value, str | int | float)) or isinstance(value, bool):
                raise bad(f"asset.params[{n}].value: must be a string.")
            held["value"] = "" if value is None else str(value)
        if "structured_value" in p:
            if not isinstance(p["structured_value"], dict):
                raise bad(f"asset.params[{n}].structured_value: must be an object.")
            held["structured_value"] = dict(p["structured_value"])
        if allow_error and "value_error" in p:
            if not isinstance(p["value_error"], str):
                raise bad(f"asset.params[{n}].value_error: must be a string.")
            held["value_error"] = p["value_error"]
        return held

    def _parse_items(self, items_in: Any, product: dict, *, purchase: bool) -> dict[str, int]:
        """``{global id: quantity}`` of ``asset.items`` (items by id, local id or global_id).

        A purchase leaves out items of quantity 0 and refuses a list that is then empty with
        Connect's words (connect-extension-for-cb-commerce : base.py _handle_400_errors).
        """
        if items_in is None:
            raise bad("asset.items: This field is required.")
        if not isinstance(items_in, list):
            raise bad("asset.items: must be a list of {id or global_id, quantity}.")
        if not items_in:
            raise bad(ITEMS_EMPTY)
        by_key = {}
        for it in product["items"]:
            by_key[it["id"]] = it["id"]
            by_key[it["local_id"]] = it["id"]
        out: dict[str, int] = {}
        for n, it in enumerate(items_in):
            if not isinstance(it, dict):
                raise bad(f"asset.items[{n}]: must be an object.")
            key = it.get("id") or it.get("global_id")
            if not key:
                raise bad(f"asset.items[{n}].id: This field is required (id or global_id).")
            gid = by_key.get(str(key))
            if gid is None:
                raise bad(f"asset.items[{n}].id: item {key} does not belong to product {product['id']}.")
            if gid in out:
                raise bad(f"asset.items[{n}].id: item {key} is listed more than once.")
            out[gid] = _quantity(it.get("quantity"), f"asset.items[{n}].quantity")
        if purchase:
            out = {gid: q for gid, q in out.items() if q != 0}
            if not out:
                raise bad(ITEMS_EMPTY)
        return out

    # change / suspend / resume / cancel ------------------------------------------------------
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
        product = self.products[a["product_id"]]
        if rtype == "change":
            changes = self._parse_items(asset_in.get("items"), product, purchase=False)
            if all(a["items"].get(gid, 0) == q for gid, q in changes.items()):
                raise bad(ITEMS_UNCHANGED)
            target = dict(a["items"])
            target.update(changes)
            items = [
                self._request_item(gid, target[gid], a["items"].get(gid, 0))
                for gid in (i["id"] for i in product["items"])
                if gid in target
            ]
        else:
            items = [self._request_item(gid, q, q) for gid, q in a["items"].items()]
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

    # actions -------------------------------------------------------------------------------
    def _product_template(self, r: dict, template_id: Any) -> dict:
        """The template ``template_id`` of the request's product; 400 naming the field otherwise."""
        product = self.products[self.assets[r["asset_id"]]["product_id"]]
        template = next((t for t in product["templates"] if t["id"] == template_id), None)
        if template is None:
            raise bad(f"template_id: template {template_id} is not a template of product {product['id']}.")
        return template

    def approve(self, rid: str, body: Any) -> dict:
        with self.lock:
            self.auto_decide()
            r = self._request_for_action(rid)
            body = body if isinstance(body, dict) else {}
            if r["status"] not in ("pending", "scheduled"):
                raise bad(
                    f"Request {rid} is {r['status']}; only pending or scheduled requests can be approved.",
                    code="REQ_001",
                )
            template_id = body.get("template_id")
            tile = body.get("activation_tile")
            template = self._product_template(r, template_id) if template_id else None
            if not template_id and not tile:
                raise bad("template_id: you must provide either a template_id or an activation_tile.")
            effective = body.get("effective_date")
            self._approve(r, template, str(tile) if tile else None, effective)
            return self.render_request(rid)

    def fail(self, rid: str, body: Any) -> dict:
        with self.lock:
            self.auto_decide()
            r = self._request_for_action(rid)
            body = body if isinstance(body, dict) else {}
            reason = body.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise bad("reason: This field is required.")
            if r["status"] not in ("pending", "inquiring"):
                raise bad(
                    f"Request {rid} is {r['status']}; only pending or inquiring requests can be failed.",
                    code="REQ_001",
                )
            self._fail(r, reason)
            return self.render_request(rid)

    def inquire(self, rid: str, body: Any) -> dict:
        with self.lock:
            self.auto_decide()
            r = self._request_for_action(rid)
            body = body if isinstance(body, dict) else {}
            if r["status"] != "pending":
                raise bad(
                    f"Request {rid} is {r['status']}; only pending requests can be inquired.", code="REQ_001"
                )
            template_id = body.get("template_id")
            if template_id:
                r["template"] = _template_ref(self._product_template(r, template_id))
            self._inquire(r)
            return self.render_request(rid)

    def pend(self, rid: str) -> dict:
        with self.lock:
            self.auto_decide()
            r = self._request_for_action(rid)
            if r["status"] != "inquiring":
                raise bad(
                    f"Request {rid} is {r['status']}; only inquiring requests can be set to pending.",
                    code="REQ_001",
                )
            r["status"] = "pending"
            r["updated"] = now_iso()
            return self.render_request(rid)

    def schedule(self, rid: str, body: Any) -> dict:
        """``POST /requests/{id}/schedule`` ``{planned_date}``: a pending request waits for its date."""
        with self.lock:
            self.auto_decide()
            r = self._request_for_action(rid)
            body = body if isinstance(body, dict) else {}
            planned = body.get("planned_date")
            if not isinstance(planned, str) or not planned.strip():
                raise bad("planned_date: This field is required.")
            try:
                datetime.fromisoformat(planned.strip().replace("Z", "+00:00"))
            except ValueError:
                raise bad(f"planned_date: {planned!r} is not an ISO 8601 date-time.") from None
            if r["status"] != "pending":
                raise bad(
                    f"Request {rid} is {r['status']}; only pending requests can be scheduled.", code="REQ_001"
                )
            r["status"] = "scheduled"
            r["planned_date"] = planned.strip()
            r["decided"] = True  # the vendor decided when; it approves or revokes later
            r["updated"] = now_iso()
            return self.render_request(rid)

    def revoke(self, rid: str, body: Any) -> dict:
        """``POST /requests/{id}/revoke`` ``{reason}``: final, like a failure.

        Connect passes through ``revoking``; the sandbox completes the revocation at once.
        """
        with self.lock:
            self.auto_decide()
            r = self._request_for_action(rid)
            body = body if isinstance(body, dict) else {}
            reason = body.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise bad("reason: This field is required.")
            if r["status"] not in ("pending", "scheduled"):
                raise bad(
                    f"Request {rid} is {r['status']}; only pending or scheduled requests can be revoked.",
                    code="REQ_001",
                )
            self._fail(r, reason, status="revoked")
            return self.render_request(rid)

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
            asset_in = body.get("asset", {})
            if not isinstance(asset_in, dict):
                raise bad("asset: must be an object.")
            unknown = sorted(set(asset_in) - {"params"})
            if unknown:
                raise bad(f"asset.{unknown[0]}: only asset.params can be updated.")
            params_in = asset_in.get("params", [])
            if not isinstance(params_in, list):
                raise bad("asset.params: must be a list of {id, value, structured_value, value_error}.")
            a = self.assets[r["asset_id"]]
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
            note = body.get("note")
            if note is not None and not isinstance(note, str):
                raise bad("note: must be a string.")
            for pid, values in updates:
                a["params"].setdefault(pid, {}).update(values)
            if note is not None:
                r["note"] = note
            r["updated"] = now_iso()
            return self.render_request(rid)

    def _request_for_action(self, rid: str) -> dict:
        r = self.requests.get(rid)
        if r is None:
            raise not_found("Request", rid)
        return r

    def _approve(self, r: dict, template: dict | None, tile: str | None, effective: Any) -> None:
        a = self.assets[r["asset_id"]]
        ts = now_iso()
        if r["type"] in ("purchase", "change"):
            a["items"] = {it["global_id"]: it["quantity"] for it in r["items"]}
        if r["type"] == "purchase":
            a["status"] = "active"
        elif r["type"] == "suspend":
            a["status"] = "suspended"
        elif r["type"] == "resume":
            a["status"] = "active"
        elif r["type"] == "cancel":
            a["status"] = "terminated"
        a["updated"] = ts
        r["status"] = "approved"
        r["decided"] = True
        r["updated"] = ts
        r["effective_date"] = str(effective) if effective else ts
        if template is not None:
            r["template"] = _template_ref(template)
            r["activation_key"] = template["body"]
        else:
            r["activation_key"] = tile or ""

    def _fail(self, r: dict, reason: str, status: str = "failed") -> None:
        a = self.assets[r["asset_id"]]
        ts = now_iso()
        if r["type"] == "purchase":
            a["status"] = "terminated"
        elif r["type"] == "cancel" and r["previous_asset_status"]:
            a["status"] = r["previous_asset_status"]
        a["updated"] = ts
        r["status"] = status
        r["decided"] = True
        r["reason"] = reason
        r["updated"] = ts

    def _inquire(self, r: dict) -> None:
        r["status"] = "inquiring"
        r["updated"] = now_iso()

    def auto_decide(self) -> None:
        """The vendor's decision on requests made through the API, once their delay has passed.

        A ``tiers_setup`` purchase becomes ``pending`` after one delay (the reseller finished its
        tier set-up) and is decided after another.
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
                r["status"] = "pending"
                r["created_mono"] = now
                r["updated"] = now_iso()
                continue
            r["decided"] = True
            a = self.assets[r["asset_id"]]
            ext = a["external_id"] or ""
            if ext.startswith("fail-"):
                self._fail(r, VENDOR_FAIL_REASON)
            elif ext.startswith("inquire-"):
                self._inquire(r)
            else:
                product = self.products[a["product_id"]]
                template = next((t for t in product["templates"] if t["type"] == "fulfillment"), None)
                self._approve(r, template, None, None)

    # ----------------------------------------------------------------------------- stats
    def stats(self) -> dict:
        with self.lock:
            return {
                "requests_created": sum(self.stats_created.values()),
                "requests_by_type": dict(self.stats_created),
                "calls": sum(self.calls.values()),
                "calls_by_route": dict(self.calls),
                "faults_injected": dict(self.faults),
            }

    def count_call(self, route: str) -> None:
        with self.lock:
            self.calls[route] += 1

    def count_fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] += 1


def _describe(ext_id: str | None, ext_uid: str | None) -> str:
    parts = []
    if ext_id:
        parts.append(f"external_id {ext_id}")
    if ext_uid:
        parts.append(f"external_uid {ext_uid}")
    return " and ".join(parts)


def _quantity(value: Any, field: str) -> int:
    """Connect takes quantities as numbers or strings; reservation quantities are whole, -1 = unlimited.

    ``"unlimited"`` is -1 (how requests show it: cloudblue/adobe_reports tests/requests_asset.json);
    above ``MAX_QUANTITY`` is refused.
    """
    if value is None or isinstance(value, bool):
        raise bad(f"{field}: This field is required (an integer >= 0, or -1 for unlimited).")
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return -1
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise bad(f"{field}: {value!r} is not a number.") from None
    if not d.is_finite() or d != d.to_integral_value():
        raise bad(f"{field}: {value!r} is not a whole number.")
    n = int(d)
    if n < -1:
        raise bad(f"{field}: {value!r} is negative; use an integer >= 0, or -1 for unlimited.")
    if n > MAX_QUANTITY:
        raise bad(f"{field}: Ensure this value is less than or equal to {MAX_QUANTITY}.")
    return n


def _stored_contact_info(contact: dict) -> dict:
    """Contact info as Connect keeps it: every address field present (``""`` when not given).

    Tier accounts always carry ``address_line2`` and ``state`` (cloudblue/connect-reports
    tests/fixtures/ta_account.json, ta_list.json).
    """
    out = {"address_line2": "", "state": "", **contact}
    person = out.get("contact")
    if isinstance(person, dict) and isinstance(person.get("phone_number"), dict):
        out["contact"] = {**person, "phone_number": {"extension": "", **person["phone_number"]}}
    return out


def _quantity_text(n: int) -> str:
    """A quantity as requests show it: a string of digits, ``"unlimited"`` for -1."""
    return "unlimited" if n == -1 else str(n)


def _template_ref(template: dict) -> dict:
    """A template as a request embeds it: ``{id, name, message}`` (connect-reports ff_request.json)."""
    return {"id": template["id"], "name": template["name"], "message": template["body"]}


def _billing(created: str) -> dict:
    """An asset's ``billing``: monthly from its creation (microsoft_reports assets_collection.json)."""
    start = datetime.fromisoformat(created)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    day = min(start.day, 28)
    nxt = start.replace(year=year, month=month, day=day)
    return {
        "period": {"delta": 1.0, "uom": "monthly"},
        "next_date": nxt.isoformat(),
        "anniversary": {"day": start.day},
    }
