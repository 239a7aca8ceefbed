"""The deterministic demo data set (ids are part of the team contract; tests rely on them).

``demo``: the catalogue (products, items, templates, parameters, hubs, marketplaces, listings,
connections), two tier accounts, six assets in several states with their purchase requests, and
four usage files. ``empty``: the catalogue only, so purchases can still be placed, with no
accounts, assets, requests or usage files.

What the catalogue says about Connect's rules (the store enforces them):

* **Listings** (``LISTINGS``): a product can be bought only on a marketplace it is listed on
  (Connect: "There is no Listing for specified Product and Marketplace.", which
  connect-extension-for-cb-commerce handles in ``cbcext/services/fulfillment/base.py``). Cloud
  Seats is listed on both marketplaces, Backup Vault only on the EU one.
* **Administrative hold**: Cloud Seats can be suspended and resumed; **Backup Vault cannot**
  (``capabilities.subscription.hold`` false, the spec's ``dp.VCSubscriptionSerializer.hold``), so
  Connect creates its suspend and resume requests already ``failed`` with the reason "The
  product doesn't support suspend/resume operations." (cloudblue/connect-extension-for-cb-commerce
  @ 584bcd9a351d1a9601c5d0ebb8bd1fb2dff0f503 : ``cbcext/services/fulfillment/simple.py`` and
  ``simple_tracker.py``).
* **Parameters** (``params`` of a product): the only parameter ids a request may carry or a
  ``PUT /requests/{id}`` may touch; ``object`` parameters hold a ``structured_value``.

Who decides requests. The demo vendor decides the requests made through the API once the
store's delay (``--auto-approve-delay``, or ``auto_approve_delay`` of ``POST /_sandbox/reset``)
has passed, by the asset's external id: ``fail-...`` are failed, ``inquire-...`` inquired,
``setup-...`` purchases wait in ``tiers_setup`` for one more delay, the rest approved. It never
decides:

* requests of assets whose external id starts with ``manual-`` (``state.MANUAL_PREFIX``):
  per request, for a vendor-side DAG or test that decides them itself through the public API
  (``POST /requests/{id}/approve`` and the other actions);
* the seeded requests (the pending purchase ``PR-0000-0000-0004-001`` stays pending);
* anything, when the delay is negative (per seed: ``reset`` with ``auto_approve_delay: -1``).
"""

from __future__ import annotations

import uuid
import zlib
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from connect_sandbox.usage import record_asset, record_item

PROVIDER = {"id": "PA-000-000", "name": "Demo Provider", "icon": "/media/PA-000-000/icon.png"}
VENDOR = {"id": "VA-000-000", "name": "Demo Vendor", "icon": "/media/VA-000-000/icon.png"}
CONTRACT = {"id": "CRD-00000-00000-00001", "type": "distribution", "name": "Demo Distribution Contract"}
SYSTEM_USER = {"id": "SU-000-000-000", "name": "Sandbox Automation", "icon": "/media/SU-000-000-000/icon.png"}
#: Who made or changed an account, as tier accounts name it: ``{id, name}`` (cloudblue/connect-reports
#: @ b408690c8d3d168372c271e81f79d9bdf82d2401 : tests/fixtures/ta_account.json).
ACTOR = {"id": SYSTEM_USER["id"], "name": SYSTEM_USER["name"]}
SEED_EPOCH = datetime(2026, 9, 1, 10, 0, 0, tzinfo=timezone.utc)

_UUID_NS = uuid.UUID("6f1c1f5e-3c0e-4d5a-9a55-0c0ecb1e5a11")

DEMO_PRODUCT = "PRD-276-377-545"
VAULT_PRODUCT = "PRD-684-920-001"


def det_uuid(name: str) -> str:
    """A UUID that is the same on every run for the same name."""
    return str(uuid.uuid5(_UUID_NS, name))


def seed_time(minutes: int) -> str:
    return (SEED_EPOCH + timedelta(minutes=minutes)).isoformat()


def contact_info(first: str, last: str, email: str, city: str, country: str) -> dict:
    return {
        "address_line1": "1 Demo Street",
        "address_line2": "Floor 2",
        "city": city,
        "state": "Demo State",
        "postal_code": "10001",
        "country": country,
        "contact": {
            "first_name": first,
            "last_name": last,
            "email": email,
            "phone_number": {
                "country_code": "+1",
                "area_code": "201",
                "phone_number": "5550123",
                "extension": "",
            },
        },
    }


def _item(
    product_id: str, n: int, local_id: str, mpn: str, name: str, unit: str, item_type: str, precision: str
) -> dict:
    return {
        "id": f"{product_id}-{n:04d}",
        "local_id": local_id,
        "mpn": mpn,
        "name": name,
        "display_name": name,
        "unit": unit,
        "item_type": item_type,  # Reservation | PPU
        "type": item_type.lower(),
        "period": "Monthly",
        "precision": precision,
    }


def catalogue() -> dict:
    products = {
        DEMO_PRODUCT: {
            "id": DEMO_PRODUCT,
            "name": "Cloud Seats",
            "icon": f"/media/VA-000-000/{DEMO_PRODUCT}/media/icon.png",
            "status": "published",
            "items": [
                _item(DEMO_PRODUCT, 1, "SEATS", "SEATS", "Seats", "seat", "Reservation", "integer"),
                _item(DEMO_PRODUCT, 2, "STORAGE_GB", "STORAGE-GB", "Storage (GB)", "GB", "PPU", "decimal(2)"),
            ],
            "capabilities": {"subscription": {"hold": True}},
            "params": [
                _param("seats_note", "Seats note", "A note kept with the subscription", "text", "ordering"),
                _param("admin_email", "Administrator e-mail", "Who manages the seats", "email", "ordering"),
                _param("billing_address", "Billing address", "Where invoices are sent", "object", "ordering"),
                _param("tenant_id", "Tenant id", "The tenant the vendor created", "text", "fulfillment"),
            ],
            "templates": [
                _template(
                    DEMO_PRODUCT,
                    1,
                    "Activation",
                    "asset",
                    "fulfillment",
                    "# Welcome\n\nYour Cloud Seats subscription is active.",
                ),
                _template(
                    DEMO_PRODUCT,
                    2,
                    "More information needed",
                    "asset",
                    "inquire",
                    "# We need more information\n\nPlease complete the highlighted parameters.",
                ),
            ],
        },
        VAULT_PRODUCT: {
            "id": VAULT_PRODUCT,
            "name": "Backup Vault",
            "icon": f"/media/VA-000-000/{VAULT_PRODUCT}/media/icon.png",
            "status": "published",
            "items": [
                _item(
                    VAULT_PRODUCT,
                    1,
                    "VAULT_TB",
                    "VAULT-TB",
                    "Vault Térabyte — 保管庫 ☁",
                    "TB",
                    "PPU",
                    "decimal(6)",
                ),
            ],
            # No administrative hold: suspend and resume requests are created failed (see above).
            "capabilities": {"subscription": {"hold": False}},
            "params": [_param("vault_region", "Vault region", "Where the vault lives", "text", "ordering")],
            "templates": [
                _template(VAULT_PRODUCT, 1, "Vault ready", "asset", "fulfillment", "# Your vault is ready"),
            ],
        },
    }
    hubs = {
        "HB-0000-0001": _hub("HB-0000-0001", "EU Hub", 0),
        "HB-0000-0002": _hub("HB-0000-0002", "US Hub", 1),
    }
    marketplaces = {
        "MP-00001": _marketplace(
            "MP-00001",
            "EU Marketplace",
            "HB-0000-0001",
            "EU Hub",
            "EUR",
            "EU",
            [{"id": "DE", "name": "Germany"}, {"id": "ES", "name": "Spain"}],
        ),
        "MP-00002": _marketplace(
            "MP-00002",
            "US Marketplace",
            "HB-0000-0002",
            "US Hub",
            "USD",
            "NA",
            [{"id": "US", "name": "United States"}],
        ),
    }
    connections = {}
    for n, (product, hub, ctype) in enumerate(
        [
            (DEMO_PRODUCT, "HB-0000-0001", "production"),
            (DEMO_PRODUCT, "HB-0000-0002", "production"),
            (DEMO_PRODUCT, "HB-0000-0001", "test"),
            (VAULT_PRODUCT, "HB-0000-0001", "production"),
            (VAULT_PRODUCT, "HB-0000-0001", "production"),
        ],
        start=1,
    ):
        cid = f"CT-0000-0000-{n:04d}"
        connections[cid] = {
            "id": cid,
            "product_id": product,
            "hub_id": hub,
            "type": ctype,
            "status": "approved",
            "created_at": seed_time(n),
        }
    for hub in hubs.values():
        hub["stats"]["connections"] = sum(1 for c in connections.values() if c["hub_id"] == hub["id"])
        hub["stats"]["marketplaces"] = sum(
            1 for m in marketplaces.values() if any(h["hub"]["id"] == hub["id"] for h in m["hubs"])
        )
    return {
        "products": products,
        "hubs": hubs,
        "marketplaces": marketplaces,
        "connections": connections,
        "listings": set(LISTINGS),
    }


#: (product, marketplace) pairs a purchase may combine (Connect's listings).
LISTINGS = (
    (DEMO_PRODUCT, "MP-00001"),
    (DEMO_PRODUCT, "MP-00002"),
    (VAULT_PRODUCT, "MP-00001"),
)


def _param(pid: str, name: str, description: str, ptype: str, phase: str) -> dict:
    """A product parameter definition (the keys a request's ``asset.params[]`` entries carry)."""
    return {
        "id": pid,
        "name": name,
        "title": name,
        "description": description,
        "type": ptype,
        "scope": "asset",
        "phase": phase,
        # The keys real parameters' constraints carry (connect-reports ff_request.json,
        # adobe_reports active_assets.json); ``meta`` is added when rendered.
        "constraints": {"required": False, "hidden": False, "readonly": False, "reconciliation": False},
    }


def _template(product_id: str, n: int, name: str, scope: str, ttype: str, body: str) -> dict:
    tid = f"TL-{product_id.removeprefix('PRD-')}-{n:04d}"
    return {
        "id": tid,
        "title": name,
        "name": name,
        "body": body,
        "scope": scope,
        "type": ttype,
        "position": n,
        "events": events(seed_time(n), SYSTEM_USER),
    }


def _hub(hid: str, name: str, n: int) -> dict:
    instance_id = det_uuid(f"hub-instance-{hid}")
    return {
        "id": hid,
        "name": name,
        "description": f"{name}: the sandbox's demo distribution hub",
        "company": dict(PROVIDER),
        "events": events(seed_time(n), SYSTEM_USER),
        "stats": {"connections": 0, "marketplaces": 0},
        "instance": {"id": instance_id, "type": "API"},
        "version": "1.0",
        "extension_version": "1.0",
        "last_health_check": seed_time(60),
    }


def _marketplace(
    mid: str, name: str, hub_id: str, hub_name: str, currency: str, zone: str, countries: list[dict]
) -> dict:
    return {
        "id": mid,
        "name": name,
        "description": f"{name} of the sandbox",
        "owner": dict(PROVIDER),
        "icon": f"/media/PA-000-000/marketplaces/{mid}/icon.png",
        "zone": zone,
        "hubs": [{"hub": {"id": hub_id, "name": hub_name}, "external_id": hub_id.lower()}],
        "active_contracts": 1,
        "countries": countries,
        "currency": currency,
        "capabilities": {
            "listing": {"referral_auto": False},
            "price_list": {"commerce_compatibility": False},
        },
        "attributes": {},
        "stats": {"hubs": 1, "contracts": 1},
        "events": events(seed_time(10), SYSTEM_USER),
        "locales": [{"id": "EN", "name": "English"}],
    }


# The demo's tier accounts on the EU hub: (id, name, type, scope, external id, tax id, minute of
# creation, contact); each account's parent is the one before it (the customer's, the reseller).
DEMO_TIERS = (
    ("TA-0000-0000-0001", "Demo Reseller", "reseller", "tier1", "reseller-1", "ESB00000001", 20,
     ("Rita", "Reseller", "rita@reseller.example", "Madrid", "ES")),
    ("TA-0000-0000-0002", "Demo Customer", "customer", "customer", "customer-1", "ESB00000002", 21,
     ("Carl", "Customer", "carl@customer.example", "Berlin", "DE")),
)  # fmt: skip


def tier_accounts() -> dict:
    """The demo reseller (tier 1) and its customer."""
    out: dict[str, dict] = {}
    parent = None
    for tid, name, kind, scope, external_id, tax_id, minute, contact in DEMO_TIERS:
        out[tid] = tier_account(
            tid,
            name,
            kind=kind,
            scope=scope,
            external_id=external_id,
            external_uid=det_uuid(f"tier-{external_id}"),
            hub={"id": "HB-0000-0001", "name": "EU Hub"},
            tax_id=tax_id,
            at=seed_time(minute),
            contact=contact_info(*contact),
            parent=parent,
        )
        parent = {key: out[tid][key] for key in ("id", "name", "external_id")}
    return out


def tier_account(
    tid: str,
    name: str,
    *,
    kind: str,
    scope: str,
    external_id: str | None,
    external_uid: str,
    hub: dict,
    tax_id: str,
    at: str,
    contact: dict,
    parent: dict | None = None,
) -> dict:
    """A tier account as ``GET /tier/accounts`` serves it (cloudblue/connect-reports @
    b408690c8d3d168372c271e81f79d9bdf82d2401 : tests/fixtures/ta_account.json): seeded, or made by
    a purchase that names a new one."""
    return {
        "id": tid,
        "version": 1,
        "name": name,
        "type": kind,
        "db": "EU",
        "external_id": external_id,
        "external_uid": external_uid,
        "parent": parent or {},
        "owner": dict(PROVIDER),
        "scopes": [scope],
        "hub": {"id": hub["id"], "name": hub["name"]},
        "tax_id": tax_id,
        "events": events(at, ACTOR),
        "environment": "production",
        "contact_info": contact,
    }


def events(at: str, by: dict) -> dict:
    """``events`` of an object created and last updated at ``at`` by ``by``."""
    return {"created": {"at": at, "by": dict(by)}, "updated": {"at": at, "by": dict(by)}}


# (asset number, status, external_id, seats, purchase request status)
DEMO_ASSETS = [
    (1, "active", "sub-1001", 10, "approved"),
    (2, "suspended", "sub-1002", 5, "approved"),
    (3, "terminated", "sub-1003", 3, "approved"),
    (4, "processing", "sub-1004", 7, "pending"),
    (5, "active", "sub-dup", 2, "approved"),
    (6, "active", "sub-dup", 4, "approved"),
]


def asset_id(n: int) -> str:
    return f"AS-0000-0000-{n:04d}"


def demo_assets() -> list[dict]:
    """Seeded assets in the store's internal shape (see store.Store)."""
    out = []
    for n, status, ext_id, seats, req_status in DEMO_ASSETS:
        aid = asset_id(n)
        out.append(
            {
                "id": aid,
                "status": status,
                "external_id": ext_id,
                "external_uid": det_uuid(f"asset-{aid}"),
                "product_id": DEMO_PRODUCT,
                "connection_id": "CT-0000-0000-0001",
                "marketplace_id": "MP-00001",
                "items": {f"{DEMO_PRODUCT}-0001": seats},
                # Values by parameter id (the product's definitions give the rest of each parameter).
                "params": {"seats_note": {"value": f"seeded {ext_id}"}},
                "tiers": {"customer": "TA-0000-0000-0002", "tier1": "TA-0000-0000-0001"},
                "created": seed_time(30 + n),
                "updated": seed_time(30 + n + (0 if req_status == "pending" else 5)),
                "purchase_status": req_status,
            }
        )
    return out


# Records in generated files cycle over these assets of the file's product.
RECORD_ASSETS = {
    DEMO_PRODUCT: [asset_id(1), asset_id(5), asset_id(6), asset_id(2)],
}


def recon_id(asset: str) -> str:
    """An asset's reconciliation id as usage records carry it (``asset.recon_id``, digits in
    connect-reports' real record), the same on every run."""
    return str(zlib.crc32(asset.encode()) % 100_000_000).zfill(8)


# The Backup Vault product has no seeded asset; its (closed, historical) usage records refer to
# assets that are no longer listed, as old files do in Connect.
def record_asset_of(aid: str, external_id: str, uid_name: str) -> dict:
    """An asset as usage records name it: ids and its reconciliation id."""
    return {
        "id": aid,
        "external_id": external_id,
        "external_uid": det_uuid(uid_name),
        "recon_id": recon_id(aid),
    }


VAULT_RECORD_ASSETS = [
    record_asset_of("AS-0000-0009-0001", "vault-1", "vault-1"),
    record_asset_of("AS-0000-0009-0002", "vault-ü-2", "vault-2"),
]
# The usage category of each item's records (an object {id, name}, as in connect-reports' record).
USAGE_CATEGORIES = {
    f"{DEMO_PRODUCT}-0001": {"id": "licenses", "name": "Licenses"},
    f"{DEMO_PRODUCT}-0002": {"id": "storage", "name": "Storage"},
    f"{VAULT_PRODUCT}-0001": {"id": "backup_storage", "name": "Backup storage — 保管庫"},
}

# (id, product, status, period_from, period_to, records)
DEMO_USAGE_FILES = [
    ("UF-2026-10-0000000001", DEMO_PRODUCT, "ready", date(2026, 10, 1), date(2026, 10, 31), 50),
    ("UF-2026-10-0000000002", DEMO_PRODUCT, "accepted", date(2026, 10, 1), date(2026, 10, 31), 20),
    ("UF-2026-11-0000000003", DEMO_PRODUCT, "draft", date(2026, 11, 1), date(2026, 11, 30), 0),
    ("UF-2026-09-0000000004", VAULT_PRODUCT, "closed", date(2026, 9, 1), date(2026, 9, 30), 30),
]
EDGE_FILE_ID = "UF-2026-09-0000000004"


def edge_records(usagefile: dict, item: dict) -> list[dict]:
    """30 closed records with the values exporters get wrong: nulls, unicode, extreme decimals."""
    records = []
    usages = [Decimal("123456789012.123456"), Decimal("0.000001"), Decimal("0"), Decimal("1.5")]
    for i in range(30):
        asset = VAULT_RECORD_ASSETS[i % 2]
        day = date(2026, 9, 1) + timedelta(days=i % 30)
        usage = usages[i] if i < len(usages) else Decimal(i) / Decimal(4)
        if i == 0:
            params: list[dict] = [{"parameter_name": "région", "parameter_value": "Zürich — 東京 ✓"}]
        elif i == 4:
            params = []
        elif i == 5:
            params = [{"parameter_name": "note", "parameter_value": None}]
        else:
            params = [{"parameter_name": "region", "parameter_value": "eu-west-1"}]
        # The real record's shape (connect-reports' fixture), closed: with what closing sets.
        records.append(
            {
                "id": f"UR-{usagefile['id'].removeprefix('UF-')}-{i:07d}",
                "start_date": f"{day.isoformat()}T00:00:00+00:00",
                "end_date": f"{(day + timedelta(days=1)).isoformat()}T00:00:00+00:00",
                "product_id": VAULT_PRODUCT,
                "external_billing_id": f"INV-2026-09-{i:04d}",
                "external_billing_note": "billed in the September invoice",
                "item": record_item(item),
                "asset": record_asset(asset),
                "category": dict(USAGE_CATEGORIES[item["id"]]),
                "tier": 1,
                "amount": None if i in (0, 2, 7) else (usage * Decimal("0.25")).quantize(Decimal("0.000001")),
                "multiplier": 1,
                "usage": usage,
                "status": "closed",
                "closed_at": "2026-10-02T08:00:00+00:00",
                "closed_by": "SU-000-000-000",
                "params": params,
                "item_id": item["id"],
                "asset_id": asset["id"],
                "usagefile": dict(usagefile),
                "resource_local_id": f"vault-res-{i:03d}",
                "asset_external_id": asset["external_id"],
                "asset_external_uid": asset["external_uid"],
            }
        )
    return records
