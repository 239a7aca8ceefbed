"""What each list endpoint filters on, and where each filter's value lives in the served objects.

What an endpoint filters, looks up and orders by is Connect's spec (v37), read once into
:data:`connect_sandbox.filter_table.FILTERS` (see :mod:`connect_sandbox.spec_filters`). Here:
where a filter's value lives in the objects the sandbox serves, when that is not the filter's own
(dotted) name. A filter the spec does not declare is ignored, as django-rql ignores it; a lookup
or ordering it does not declare is a 400.
"""

from __future__ import annotations

from . import rql
from .filter_table import FILTERS


def endpoint(spec_path: str, paths: dict[str, str] | None = None) -> rql.Filterable:
    return rql.Filterable(FILTERS[spec_path], paths)


F_REQUESTS = endpoint(
    "/requests",
    {
        "asset.connection.environment": "asset.connection.type",
        "asset__connection__environment": "asset.connection.type",
        "asset.tier1_id": "asset.tiers.tier1.id",
        "asset.tier2_id": "asset.tiers.tier2.id",
        "asset_id": "asset.id",
        "product_id": "asset.product.id",
        "contract__id__exact": "contract.id",
    },
)
F_ASSETS = endpoint(
    "/assets",
    {
        "hub.id": "connection.hub.id",
        "hub.name": "connection.hub.name",
        "product.title": "product.name",
        "created": "events.created.at",
        "updated": "events.updated.at",
    },
)
F_TIER_ACCOUNTS = endpoint("/tier/accounts")
F_MARKETPLACES = endpoint("/marketplaces", {"hubs.id": "hubs.hub.id", "hubs.name": "hubs.hub.name"})
F_HUBS = endpoint("/hubs")
# The spec declares no `type` filter on product connections; Connect ignores `type=...` there.
F_CONNECTIONS = endpoint("/products/{product_product_id}/connections")
F_TEMPLATES = endpoint("/products/{product_product_id}/templates")
F_USAGE_FILES = endpoint(
    "/usage/files",
    {
        "created.at": "events.created.at",
        "distribution_contract_id": "contract.id",
        "marketplace_id": "marketplace.id",
        "product_id": "product.id",
        "provider_id": "provider.id",
        "vendor_id": "vendor.id",
    },
)
# ``created_time`` is the record's creation time, which Connect does not send: it is computed
# (RecordSource.created_time) where a filter reads it, never served.
F_USAGE_RECORDS = endpoint(
    "/usage/records",
    {
        "usage_file": "usagefile.id",
        "product.id": "product_id",
        "usage_start_time": "start_date",
    },
)
