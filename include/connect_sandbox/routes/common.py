"""What the routers share: a list endpoint over one kind of the store's objects."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import rql
from ..answers import list_page
from ..store import Store

Transform = Callable[[list[dict], rql.Query], list[dict]]


def add_list_route(
    api: APIRouter,
    path: str,
    store: Store,
    kind: str,
    filterable: rql.Filterable,
    max_limit: int,
    transform: Transform | None = None,
) -> None:
    """``GET <path>``: the store's objects of ``kind`` (of the path's ``product_id``, if it has one)."""

    def list_objects(request: Request) -> Response:
        product_id = request.path_params.get("product_id")
        objs = lambda: store.list_objects(kind, product_id)  # noqa: E731
        return list_page(request, objs, filterable, max_limit, transform)

    api.add_api_route(path, list_objects, methods=["GET"], name=f"list_{kind}")
