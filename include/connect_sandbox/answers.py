"""How the sandbox answers: JSON bodies, Connect's error shape, and a query read as Connect reads it.

Responses are serialised by hand (``Response(content=bytes)``) rather than through response
models: the objects already have Connect's shapes, and the usage-record route is a hot path that
the benchmarks measure exporters against.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from . import rql
from .errors import ApiError

DEFAULT_LIMIT = 100


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=dumps(obj), status_code=status, media_type="application/json", headers=headers)


def error_response(
    status: int, error_code: str, *errors: str, headers: dict[str, str] | None = None
) -> Response:
    return json_response({"error_code": error_code, "errors": list(errors)}, status, headers)


def parse_json(raw: bytes) -> Any:
    """A request body: None when empty, else its JSON (400 when it is not JSON)."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "VAL_001", f"The request body is not valid JSON: {exc}") from exc


async def body_of(request: Request) -> Any:
    return parse_json(await request.body())


async def object_body(request: Request, what: str) -> dict:
    """The body of an admin call: a JSON object, ``{}`` when empty."""
    body = await body_of(request) or {}
    if not isinstance(body, dict):
        raise ApiError(400, "VAL_001", f"{what}: the body must be an object")
    return body


def query_of(request: Request) -> rql.Query:
    raw = request.scope.get("query_string", b"").decode("utf-8", "replace")
    try:
        return rql.parse(raw)
    except rql.RQLError as exc:
        raise ApiError(400, "INVALID_RQL", f"Invalid RQL query: {exc}") from exc


def allowed(q: rql.Query, filterable: rql.Filterable) -> rql.Query:
    """``q`` if the endpoint takes its lookups and ordering; else Connect's 400.

    The texts are django-rql's: "Bad ordering filter: <field>." (its details['error'], which
    Connect sends in ``errors`` as it sends "Bad filter query." for a parsing error:
    cloudblue/connect-python-sdk issue #115) and "RQL Lookup error" with the filter, lookup and
    value django-rql reports. No public source shows Connect's error_code for these, so the
    sandbox uses its own code for every RQL refusal, INVALID_RQL.
    """
    try:
        filterable.check(q)
    except rql.RQLError as exc:
        raise ApiError(400, "INVALID_RQL", str(exc)) from exc
    return q


def list_page(
    request: Request,
    objs_fn: Callable[[], list[dict]],
    filterable: rql.Filterable,
    max_limit: int,
    transform: Callable[[list[dict], rql.Query], list[dict]] | None = None,
) -> Response:
    """One page of a list endpoint: filtered, ordered, sliced and selected as django-rql does it."""
    q = allowed(query_of(request), filterable)
    pred = rql.compile_filter(q.filter, filterable)
    matched = [o for o in objs_fn() if pred(o)]
    if q.ordering:
        matched = rql.apply_ordering(matched, q.ordering, filterable)
    limit, offset = rql.parse_page(q, DEFAULT_LIMIT, max_limit)
    if limit == 0:
        offset, chunk = 0, []
    else:
        chunk = matched[offset : offset + limit]
    if transform is not None:
        chunk = transform(chunk, q)
    if q.select:
        chunk = [rql.apply_select(o, q.select) for o in chunk]
    headers = {"Content-Range": rql.content_range(offset, len(chunk), len(matched))}
    return json_response(chunk, headers=headers)
