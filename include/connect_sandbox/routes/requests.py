"""``/requests``: list, create, read, update, and the vendor's actions on a request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import API_PREFIX
from ..answers import body_of, json_response, parse_json
from ..endpoints import F_REQUESTS
from ..lifecycle import ACTIONS
from ..store import Store
from .common import add_list_route


def router(store: Store, max_limit: int) -> APIRouter:
    api = APIRouter(prefix=API_PREFIX + "/requests")

    add_list_route(api, "", store, "requests", F_REQUESTS, max_limit)

    @api.post("")
    async def create_request(request: Request) -> Response:
        return json_response(store.create_request(await body_of(request)), 201)

    @api.get("/{request_id}")
    def get_request(request_id: str) -> Response:
        return json_response(store.get("requests", request_id))

    @api.put("/{request_id}")
    async def update_request(request_id: str, request: Request) -> Response:
        return json_response(store.update(request_id, await body_of(request)))

    for action in ACTIONS:
        api.add_api_route(f"/{{request_id}}/{action}", _action_route(store, action), methods=["POST"])
    return api


def _action_route(store: Store, action: str) -> Callable[[str, Request], Awaitable[Response]]:
    """``POST /requests/{id}/<action>``; ``pend`` takes no body, so any it gets is not read as JSON."""

    async def act(request_id: str, request: Request) -> Response:
        raw = await request.body()
        body = None if action == "pend" else parse_json(raw)
        return json_response(store.act(action, request_id, body))

    act.__name__ = f"{action}_request"
    return act
