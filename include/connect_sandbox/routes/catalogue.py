"""Assets, tier accounts, marketplaces, hubs, and a product's connections and templates."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import API_PREFIX, rql
from ..answers import json_response, query_of
from ..endpoints import F_ASSETS, F_CONNECTIONS, F_HUBS, F_MARKETPLACES, F_TEMPLATES, F_TIER_ACCOUNTS
from ..store import Store
from .common import add_list_route

LISTS = (
    ("/tier/accounts", "tier_accounts", F_TIER_ACCOUNTS),
    ("/marketplaces", "marketplaces", F_MARKETPLACES),
    ("/hubs", "hubs", F_HUBS),
    ("/products/{product_id}/connections", "connections", F_CONNECTIONS),
    ("/products/{product_id}/templates", "templates", F_TEMPLATES),
)


def router(store: Store, max_limit: int) -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)

    def with_pending(chunk: list[dict], q: rql.Query) -> list[dict]:
        """``select(pending_request)``: each asset with its open request, when it has one."""
        if "pending_request" not in q.select:
            return chunk
        with store.lock:
            return [store.render_asset(a["id"], with_pending=True) for a in chunk]

    add_list_route(api, "/assets", store, "assets", F_ASSETS, max_limit, with_pending)

    @api.get("/assets/{asset_id}")
    def get_asset(asset_id: str, request: Request) -> Response:
        with_pending = "pending_request" in query_of(request).select
        return json_response(store.get("assets", asset_id, with_pending=with_pending))

    for path, kind, filterable in LISTS:
        add_list_route(api, path, store, kind, filterable, max_limit)
    return api
