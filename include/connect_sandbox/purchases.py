"""Purchases as Connect checks them: nothing required is inferred, every refusal names its field.

``marketplace.id`` and ``asset.connection.id`` are required; the product (the connection's) must
be listed on the marketplace, which the connection's hub must serve; tier accounts belong to that
hub; only the product's parameters and items exist. Connect's own texts are used where
integrations match on them (cloudblue/connect-extension-for-cb-commerce @
584bcd9a351d1a9601c5d0ebb8bd1fb2dff0f503 : cbcext/services/fulfillment/base.py
``_handle_400_errors``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from . import seed
from .errors import bad, conflict
from .state import State

ITEMS_EMPTY = "asset.items: This list may not be empty."
MARKETPLACE_REQUIRED = "Field 'marketplace.id' is required."
NO_LISTING = "There is no Listing for specified Product and Marketplace."
# No public source gives the column behind an item quantity; a signed 32-bit integer (PostgreSQL
# ``integer``, Django's IntegerField) is the narrowest a quantity could be stored in, so nothing
# above it is accepted (Django's MaxValueValidator wording).
MAX_QUANTITY = 2_147_483_647
# Purchases whose external id starts with this wait in ``tiers_setup`` (the reseller completes its
# tier configuration) for one decision delay before they are pending.
TIERS_SETUP_PREFIX = "setup-"
MAX_EXTERNAL_ID = 100


class Purchases(State):
    """``POST /requests`` of type purchase: a new asset and its pending purchase request."""

    def _create_purchase(self, payload: dict, asset_in: dict) -> dict:
        """A purchase as Connect checks it; nothing required is inferred.

        An ``external_uid`` that an asset already has makes the purchase a duplicate: 409 naming
        that asset and its purchase request (CBC re-sends a purchase with the same external_uid
        and reads the existing request from the 409: cloudblue/connect-extension-for-cb-commerce
        @ 584bcd9a351d1a9601c5d0ebb8bd1fb2dff0f503 : cbcext/services/fulfillment/purchase.py,
        which sends the APS resource id as external_uid). Assets may share an external_id (the
        seed's ``sub-dup``): the uid tells them apart, across products too.
        """
        external_id, external_uid = _purchase_identity(asset_in)
        connection, marketplace, product = self._purchase_place(payload, asset_in)
        items = self._parse_items(asset_in.get("items"), product, purchase=True)
        params = self._parse_params(asset_in.get("params"), product)
        if external_uid:
            self._refuse_taken_uid(external_uid)
        tiers = self._resolve_tiers(asset_in.get("tiers"), connection["hub_id"])
        aid = seed.asset_id(next(self.asset_counter))
        ts = self.now()
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

    def _purchase_place(self, payload: dict, asset_in: dict) -> tuple[dict, dict, dict]:
        """The purchase's connection, marketplace and product, once they fit together."""
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
        return connection, marketplace, product

    def _refuse_taken_uid(self, external_uid: str) -> None:
        """409 naming the asset that has ``external_uid`` already, and its purchase request."""
        twin = next((x for x in self.assets.values() if x["external_uid"] == external_uid), None)
        if twin is None:
            return
        existing = self._latest_request_of(twin["id"], rtype="purchase") or self._state_request(twin)
        raise conflict(
            f"asset.external_uid: asset {twin['id']} already has external_uid {external_uid}; "
            f"its purchase request is {existing['id']} ({existing['status']}).",
            code="REQ_004",
            params=self._existing_request_params(twin, existing),
        )

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
            return self._tier_account_by_id(level, t["id"], hub_id)
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
        return self._new_tier_account(level, t, hub_id)

    def _tier_account_by_id(self, level: str, tid: Any, hub_id: str) -> str:
        ta = self.tier_accounts.get(tid)
        if ta is None:
            raise bad(f"asset.tiers.{level}.id: tier account {tid} does not exist.")
        if ta["hub"]["id"] != hub_id:
            raise bad(
                f"asset.tiers.{level}.id: tier account {tid} belongs to hub {ta['hub']['id']}, "
                f"not to {hub_id} of the purchase's connection."
            )
        return tid

    def _new_tier_account(self, level: str, t: dict, hub_id: str) -> str:
        """A tier account made from the purchase's ``asset.tiers.<level>``, on the purchase's hub."""
        if not t.get("name"):
            raise bad(f"asset.tiers.{level}.name: This field is required for a new tier account.")
        contact = t.get("contact_info")
        if not isinstance(contact, dict):
            raise bad(f"asset.tiers.{level}.contact_info: This field is required for a new tier account.")
        tid = f"TA-0000-0000-{next(self.tier_counter):04d}"
        self.tier_accounts[tid] = seed.tier_account(
            tid,
            str(t["name"]),
            kind="customer" if level == "customer" else "reseller",
            scope=level,
            external_id=t.get("external_id"),
            external_uid=t.get("external_uid") or seed.det_uuid(f"tier-{tid}"),
            hub=self.hubs[hub_id],
            tax_id=str(t.get("tax_id") or ""),
            at=self.now(),
            contact=_stored_contact_info(contact),
        )
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


def _purchase_identity(asset_in: dict) -> tuple[str, str | None]:
    """The purchase's ``asset.external_id`` (required) and ``asset.external_uid`` (optional)."""
    external_id = asset_in.get("external_id")
    if not isinstance(external_id, str) or not external_id.strip():
        raise bad("asset.external_id: This field is required for a purchase.")
    if len(external_id) > MAX_EXTERNAL_ID:
        raise bad(f"asset.external_id: Ensure this field has no more than {MAX_EXTERNAL_ID} characters.")
    external_uid = asset_in.get("external_uid")
    if external_uid is not None and (
        not isinstance(external_uid, str) or len(external_uid) > MAX_EXTERNAL_ID
    ):
        raise bad(f"asset.external_uid: must be a string of at most {MAX_EXTERNAL_ID} characters.")
    return external_id, external_uid
