"""Objects as Connect answers them: the store keeps ids pointing at each other, this renders them.

Every shape here is held to a real Connect document (``tests/fixtures/real/``, whose README
names each one's source); the evidence for each key is named where it is rendered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import seed
from .errors import not_found
from .state import DECIDED_STATUSES, State


def ref(obj: dict, *keys: str) -> dict:
    """The keys of ``obj`` by which another object names it (``{id, name, icon}`` and the like)."""
    return {key: obj[key] for key in keys}


class Rendering(State):
    """Connections, tier accounts, parameters, assets and requests in Connect's response shapes."""

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
            "hub": ref(hub, "id", "name"),
            "created_at": c["created_at"],
        }
        if in_asset:
            del out["status"], out["created_at"]
        elif not embedded:
            out["hub"]["instance"] = dict(hub["instance"])
            out["product"] = ref(self.products[c["product_id"]], "id", "name")
            out["events"] = {"created": {"at": c["created_at"], "by": dict(seed.SYSTEM_USER)}}
            out["note"] = None
        return out

    def _tier_ref(self, ta_id: str, *, in_asset: bool) -> dict:
        """A tier account as a request or an asset embeds it.

        Assets carry the tax id and a phone without an empty extension (microsoft_reports and
        adobe_reports asset fixtures); requests carry no tax id (connect-reports ff_request.json).
        """
        ta = self.tier_accounts[ta_id]
        out = ref(ta, "id", "external_id", "external_uid", "name", "contact_info")
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
            "product": ref(product, "id", "icon", "name", "status"),
            "connection": self.render_connection(a["connection_id"], embedded=True, in_asset=in_asset),
            "events": {"created": {"at": a["created"]}, "updated": {"at": a["updated"]}},
            "params": self._render_params(a),
            "tiers": tiers,
            "marketplace": ref(mp, "id", "name", "icon"),
            "contract": ref(seed.CONTRACT, "id", "name") if in_asset else dict(seed.CONTRACT),
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
                out["pending_request"] = ref(pending, "id", "type", "status")
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
            "marketplace": ref(mp, "id", "name", "icon"),
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


def _quantity_text(n: int) -> str:
    """A quantity as requests show it: a string of digits, ``"unlimited"`` for -1."""
    return "unlimited" if n == -1 else str(n)


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
