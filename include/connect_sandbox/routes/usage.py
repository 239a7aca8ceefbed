"""``/usage/files`` and ``/usage/records`` (the records' query planning is :mod:`connect_sandbox.records`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import API_PREFIX
from ..answers import json_response, query_of
from ..endpoints import F_USAGE_FILES
from ..records import records_page
from ..store import Store
from .common import add_list_route


def router(store: Store, max_limit: int) -> APIRouter:
    api = APIRouter(prefix=API_PREFIX + "/usage")

    add_list_route(api, "/files", store, "usage_files", F_USAGE_FILES, max_limit)

    @api.get("/files/{file_id}")
    def get_usage_file(file_id: str) -> Response:
        return json_response(store.get("usage_files", file_id))

    @api.get("/records")
    def list_usage_records(request: Request) -> Response:
        return records_page(store, query_of(request), max_limit)

    return api
