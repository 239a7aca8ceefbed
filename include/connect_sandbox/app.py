"""The sandbox's HTTP face: Connect's public routes under ``/public/v1`` and the ``/_sandbox`` admin API.

Responses are serialised by hand (``Response(content=bytes)``) rather than through response
models: the objects already have Connect's shapes, and the usage-record route is a hot path that
the benchmarks measure exporters against.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from . import ADMIN_PREFIX, API_PREFIX, DEMO_API_KEY, rql
from .faults import Faults, FaultSpec, drop_connection, parse_spec
from .filter_table import FILTERS
from .store import ApiError, Store
from .usage import RecordSource, class_view, join_page

DEFAULT_LIMIT = 100

# What each list endpoint filters, looks up and orders by is Connect's spec (v37), read once into
# filter_table.FILTERS (see spec_filters). Here: where a filter's value lives in the objects the
# sandbox serves, when that is not the filter's own (dotted) name. A filter the spec does not
# declare is ignored, as django-rql ignores it; a lookup or ordering it does not declare is a 400.
def _endpoint(spec_path: str, paths: dict[str, str] | None = None) -> rql.Filterable:
    return rql.Filterable(FILTERS[spec_path], paths)


F_REQUESTS = _endpoint(
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
F_ASSETS = _endpoint(
    "/assets",
    {
        "hub.id": "connection.hub.id",
        "hub.name": "connection.hub.name",
        "product.title": "product.name",
        "created": "events.created.at",
        "updated": "events.updated.at",
    },
)
F_TIER_ACCOUNTS = _endpoint("/tier/accounts")
F_MARKETPLACES = _endpoint("/marketplaces", {"hubs.id": "hubs.hub.id", "hubs.name": "hubs.hub.name"})
F_HUBS = _endpoint("/hubs")
# The spec declares no `type` filter on product connections; Connect ignores `type=...` there.
F_CONNECTIONS = _endpoint("/products/{product_product_id}/connections")
F_TEMPLATES = _endpoint("/products/{product_product_id}/templates")
F_USAGE_FILES = _endpoint(
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
USAGE_FILE_KEYS = ("usagefile.id", "usage_file")
CREATION_ORDER = "created_time"  # the records' ordering filter that is creation order
# Records carry no creation time, so a filter on created_time reads start_date (an approximation);
# ORDERING by created_time is creation order, modelled exactly in usage_records_page.
F_USAGE_RECORDS = _endpoint(
    "/usage/records",
    {
        "usage_file": "usagefile.id",
        "product.id": "product_id",
        "created_time": "start_date",
        "usage_start_time": "start_date",
    },
)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=dumps(obj), status_code=status, media_type="application/json", headers=headers)


def error_response(
    status: int, error_code: str, *errors: str, headers: dict[str, str] | None = None
) -> Response:
    return json_response({"error_code": error_code, "errors": list(errors)}, status, headers)


def _query(request: Request) -> rql.Query:
    raw = request.scope.get("query_string", b"").decode("utf-8", "replace")
    try:
        return rql.parse(raw)
    except rql.RQLError as exc:
        raise ApiError(400, "INVALID_RQL", f"Invalid RQL query: {exc}") from exc


def _allowed(q: rql.Query, filterable: rql.Filterable) -> rql.Query:
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


def create_app(store: Store, faults: Faults | None = None, max_limit: int = 1000) -> Callable:
    """The ASGI application: FastAPI routes wrapped in the auth / faults / stats middleware."""
    faults = faults or Faults()
    api = FastAPI(title="CloudBlue Connect sandbox", docs_url=None, redoc_url=None, openapi_url=None)

    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return json_response(exc.body(), exc.status)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "NFND_001", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, f"HTTP_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "VAL_001", *(str(e.get("msg")) for e in exc.errors()))

    def page(
        request: Request,
        objs_fn: Callable[[], list[dict]],
        filterable: rql.Filterable,
        transform: Callable[[list[dict], rql.Query], list[dict]] | None = None,
    ) -> Response:
        q = _allowed(_query(request), filterable)
        objs = objs_fn()
        pred = rql.compile_filter(q.filter, filterable)
        matched = [o for o in objs if pred(o)]
        if q.ordering:
            matched = rql.apply_ordering(matched, q.ordering, filterable)
        total = len(matched)
        limit, offset = rql.parse_page(q, DEFAULT_LIMIT, max_limit)
        if limit == 0:
            offset, chunk = 0, []
        else:
            chunk = matched[offset : offset + limit]
        if transform is not None:
            chunk = transform(chunk, q)
        if q.select:
            chunk = [rql.apply_select(o, q.select) for o in chunk]
        return json_response(chunk, headers={"Content-Range": rql.content_range(offset, len(chunk), total)})

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "VAL_001", f"The request body is not valid JSON: {exc}") from exc

    # ---------------------------------------------------------------------------- requests
    @api.get(API_PREFIX + "/requests")
    def list_requests(request: Request) -> Response:
        return page(request, lambda: store.list_objects("requests"), F_REQUESTS)

    @api.post(API_PREFIX + "/requests")
    async def create_request(request: Request) -> Response:
        payload = await body_of(request)
        return json_response(store.create_request(payload), 201)

    @api.get(API_PREFIX + "/requests/{request_id}")
    def get_request(request_id: str) -> Response:
        return json_response(store.get("requests", request_id))

    @api.put(API_PREFIX + "/requests/{request_id}")
    async def update_request(request_id: str, request: Request) -> Response:
        return json_response(store.update(request_id, await body_of(request)))

    @api.post(API_PREFIX + "/requests/{request_id}/approve")
    async def approve_request(request_id: str, request: Request) -> Response:
        return json_response(store.approve(request_id, await body_of(request)))

    @api.post(API_PREFIX + "/requests/{request_id}/fail")
    async def fail_request(request_id: str, request: Request) -> Response:
        return json_response(store.fail(request_id, await body_of(request)))

    @api.post(API_PREFIX + "/requests/{request_id}/inquire")
    async def inquire_request(request_id: str, request: Request) -> Response:
        return json_response(store.inquire(request_id, await body_of(request)))

    @api.post(API_PREFIX + "/requests/{request_id}/pend")
    async def pend_request(request_id: str, request: Request) -> Response:
        await request.body()
        return json_response(store.pend(request_id))

    @api.post(API_PREFIX + "/requests/{request_id}/schedule")
    async def schedule_request(request_id: str, request: Request) -> Response:
        return json_response(store.schedule(request_id, await body_of(request)))

    @api.post(API_PREFIX + "/requests/{request_id}/revoke")
    async def revoke_request(request_id: str, request: Request) -> Response:
        return json_response(store.revoke(request_id, await body_of(request)))

    # ---------------------------------------------------------------------------- assets etc.
    def _with_pending(chunk: list[dict], q: rql.Query) -> list[dict]:
        if "pending_request" not in q.select:
            return chunk
        with store.lock:
            return [store.render_asset(a["id"], with_pending=True) for a in chunk]

    @api.get(API_PREFIX + "/assets")
    def list_assets(request: Request) -> Response:
        return page(request, lambda: store.list_objects("assets"), F_ASSETS, _with_pending)

    @api.get(API_PREFIX + "/assets/{asset_id}")
    def get_asset(asset_id: str, request: Request) -> Response:
        q = _query(request)
        return json_response(store.get("assets", asset_id, with_pending="pending_request" in q.select))

    @api.get(API_PREFIX + "/tier/accounts")
    def list_tier_accounts(request: Request) -> Response:
        return page(request, lambda: store.list_objects("tier_accounts"), F_TIER_ACCOUNTS)

    @api.get(API_PREFIX + "/marketplaces")
    def list_marketplaces(request: Request) -> Response:
        return page(request, lambda: store.list_objects("marketplaces"), F_MARKETPLACES)

    @api.get(API_PREFIX + "/hubs")
    def list_hubs(request: Request) -> Response:
        return page(request, lambda: store.list_objects("hubs"), F_HUBS)

    @api.get(API_PREFIX + "/products/{product_id}/connections")
    def list_connections(product_id: str, request: Request) -> Response:
        return page(request, lambda: store.list_objects("connections", product_id), F_CONNECTIONS)

    @api.get(API_PREFIX + "/products/{product_id}/templates")
    def list_templates(product_id: str, request: Request) -> Response:
        return page(request, lambda: store.list_objects("templates", product_id), F_TEMPLATES)

    # ---------------------------------------------------------------------------- usage
    @api.get(API_PREFIX + "/usage/files")
    def list_usage_files(request: Request) -> Response:
        return page(request, lambda: store.list_objects("usage_files"), F_USAGE_FILES)

    @api.get(API_PREFIX + "/usage/files/{file_id}")
    def get_usage_file(file_id: str) -> Response:
        return json_response(store.get("usage_files", file_id))

    @api.get(API_PREFIX + "/usage/records")
    def list_usage_records(request: Request) -> Response:
        return usage_records_page(store, _query(request), max_limit)

    # ---------------------------------------------------------------------------- admin
    @api.get(ADMIN_PREFIX + "/health")
    def health() -> Response:
        return json_response({"status": "ok"})

    @api.post(ADMIN_PREFIX + "/reset")
    async def reset(request: Request) -> Response:
        body = await body_of(request) or {}
        if not isinstance(body, dict):
            raise ApiError(400, "VAL_001", "reset: the body must be an object")
        delay = body.get("auto_approve_delay")
        if delay is not None and not isinstance(delay, int | float):
            raise ApiError(400, "VAL_001", "auto_approve_delay: must be a number of seconds")
        store.reset(body.get("seed"), delay)
        faults.set(FaultSpec())
        return json_response(
            {"status": "ok", "seed": store.seed_name, "auto_approve_delay": store.auto_approve_delay}
        )

    @api.get(ADMIN_PREFIX + "/faults")
    def get_faults() -> Response:
        s = faults.spec
        return json_response(
            {"429": s.p429, "500": s.p500, "drop": s.pdrop, "latency_ms": s.latency_ms, "seed": s.seed}
        )

    @api.post(ADMIN_PREFIX + "/faults")
    async def set_faults(request: Request) -> Response:
        body = await body_of(request) or {}
        spec_text = body.get("spec", "") if isinstance(body, dict) else None
        if not isinstance(spec_text, str):
            raise ApiError(400, "VAL_001", 'faults: send {"spec": "429=0.1,drop=0.2"}')
        try:
            faults.set(parse_spec(spec_text))
        except ValueError as exc:
            raise ApiError(400, "VAL_001", str(exc)) from exc
        return json_response({"status": "ok", "spec": spec_text})

    @api.get(ADMIN_PREFIX + "/stats")
    def stats() -> Response:
        return json_response(store.stats())

    @api.post(ADMIN_PREFIX + "/usage-files")
    async def add_usage_file(request: Request) -> Response:
        body = await body_of(request) or {}
        if not isinstance(body, dict):
            raise ApiError(400, "VAL_001", "usage-files: the body must be an object")
        records = body.get("records", 0)
        if isinstance(records, bool) or not isinstance(records, int):
            raise ApiError(400, "VAL_001", "records: must be an integer >= 0")
        kwargs = {k: body[k] for k in ("product_id", "status", "period_from", "period_to") if k in body}
        return json_response(store.add_usage_file(records, **kwargs), 201)

    return SandboxMiddleware(api, store, faults)


# -------------------------------------------------------------------------------- usage records
def _file_ids_of(node: rql.Node | None) -> tuple[list[str] | None, rql.Node | None]:
    """Split ``usagefile.id = X`` (or ``in``) off an and-ed filter: (file ids or None, the rest)."""
    if node is None:
        return None, None
    conjuncts = list(node.children) if isinstance(node, rql.Logical) and node.op == "and" else [node]
    files: list[str] | None = None
    rest: list[rql.Node] = []
    for c in conjuncts:
        if (
            files is None
            and isinstance(c, rql.Comparison)
            and c.prop in USAGE_FILE_KEYS
            and c.op in ("eq", "in")
        ):
            values = c.value if c.op == "in" else (c.value,)
            if all(isinstance(v, str) for v in values):
                files = list(dict.fromkeys(values))
                continue
        rest.append(c)
    residual = None if not rest else rest[0] if len(rest) == 1 else rql.Logical("and", tuple(rest))
    return files, residual


def usage_records_page(store: Store, q: rql.Query, max_limit: int) -> Response:
    """A page of usage records, in creation order unless ``ordering()`` says otherwise.

    The records of a file are created in row order when the file is processed, so creation order
    (what ``ordering(created_time)`` asks for, and the order without an ``ordering()``) is: files
    in the order they were created, then each file's rows. That order is served by index
    arithmetic; any other ordering sorts the matches (stably: ties keep creation order).
    """
    _allowed(q, F_USAGE_RECORDS)
    file_ids, residual = _file_ids_of(q.filter)
    with store.lock:
        store.auto_decide()
        wanted = None if file_ids is None else set(file_ids)
        ids = [f for f in store.usage_files if wanted is None or f in wanted]
        sources = [store.record_sources[f] for f in ids]
    limit, offset = rql.parse_page(q, DEFAULT_LIMIT, max_limit)
    exclusions = [s for s in q.select if s.startswith("-")]
    by_index = q.ordering in ([], [CREATION_ORDER])
    if residual is not None and _ignored(residual):
        residual = None  # django-rql ignores filters on undeclared properties
    pred = rql.compile_filter(residual, F_USAGE_RECORDS)
    paths = rql.paths_of(residual, F_USAGE_RECORDS)
    if by_index:
        # Per file, the matching indexes as a sequence that is cheap to index: the whole file,
        # an arithmetic class view, or (other filters) the indexes found by a scan.
        views: list[tuple[RecordSource, Sequence[int]]] = []
        for s in sources:
            if residual is None:
                views.append((s, range(s.count)))
                continue
            view = class_view(s, pred, paths)
            if view is None:
                view = [i for i in range(s.count) if pred(s.record(i))]
            views.append((s, view))
        total = sum(len(v) for _, v in views)
        rendered: list[str] = []
        if limit == 0:
            offset = 0
        else:
            start, stop = offset, min(offset + limit, total)
            base = 0
            for s, v in views:
                lo, hi = max(start - base, 0), min(stop - base, len(v))
                if lo < hi:
                    if isinstance(v, range):
                        rendered.extend(s.render_range(v[lo], v[lo] + (hi - lo)))
                    else:
                        rendered.extend(s.render(v[k]) for k in range(lo, hi))
                base += len(v)
                if base >= stop:
                    break
    else:
        matches: list[tuple[RecordSource, int, dict]] = []
        for s in sources:
            for i in range(s.count):
                rec = s.record(i)
                if pred(rec):
                    matches.append((s, i, rec))
        _order_records(matches, q.ordering, {id(s): n for n, s in enumerate(sources)})
        total = len(matches)
        if limit == 0:
            offset, chunk = 0, []
        else:
            chunk = matches[offset : offset + limit]
        rendered = [s.render(i) for s, i, _ in chunk]
    if exclusions:
        rendered = [dumps(rql.apply_select(json.loads(r), exclusions)).decode() for r in rendered]
    return Response(
        content=join_page(rendered),
        media_type="application/json",
        headers={"Content-Range": rql.content_range(offset, len(rendered), total)},
    )


def _order_records(
    matches: list[tuple[RecordSource, int, dict]], ordering: list[str], file_position: dict[int, int]
) -> None:
    """Sort (source, index, record) triples in place by ``ordering``; ties keep creation order."""
    for item in reversed(ordering):
        descending = item.startswith("-")
        name = item.lstrip("-")
        if name == CREATION_ORDER:
            matches.sort(key=lambda m: (file_position[id(m[0])], m[1]), reverse=descending)
        else:
            key = rql.sort_key_for(F_USAGE_RECORDS.path_of(name) or name)
            matches.sort(key=lambda m, key=key: key(m[2]), reverse=descending)


def _ignored(node: rql.Node) -> bool:
    """True when every comparison in ``node`` is on a property records do not declare."""
    if isinstance(node, rql.Logical):
        return all(_ignored(c) for c in node.children)
    return F_USAGE_RECORDS.path_of(node.prop) is None


# -------------------------------------------------------------------------------- middleware
class SandboxMiddleware:
    """Auth, call counting, injected faults and the vendor's lazy decisions for ``/public/v1``."""

    def __init__(self, app: FastAPI, store: Store, faults: Faults) -> None:
        self.app = app
        self.store = store
        self.faults = faults

    def _route_label(self, scope: dict) -> str:
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        for route in self.app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return f"{method} {route.path.removeprefix(API_PREFIX)}"  # type: ignore[attr-defined]
        return f"{method} {path.removeprefix(API_PREFIX)}"

    async def __call__(
        self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        self.store.count_call(self._route_label(scope))
        auth = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                auth = value.decode("latin-1")
                break
        if auth != DEMO_API_KEY:
            reason = (
                "Authorization header is missing."
                if auth is None
                else "Authorization header must be 'ApiKey <key>' with a valid key."
            )
            await error_response(401, "AUTH_001", f"Unauthorized: {reason}")(scope, receive, send)
            return
        spec = self.faults.spec
        if spec.latency_ms:
            await asyncio.sleep(spec.latency_ms / 1000.0)
        fault = self.faults.decide()
        if fault == "429":
            self.store.count_fault("429")
            await error_response(
                429, "RATE_LIMIT", "Too many requests: retry after 1 second.", headers={"Retry-After": "1"}
            )(scope, receive, send)
            return
        if fault == "500":
            self.store.count_fault("500")
            await error_response(500, "SERVER_ERROR", "Injected server error.")(scope, receive, send)
            return
        if fault == "drop":
            self.store.count_fault("drop")
            if scope.get("method") == "POST":
                # Commit first, then vanish: the client never learns whether the write happened.
                async def swallow(_message: dict) -> None:
                    return None

                await self.app(scope, receive, swallow)
            if drop_connection(scope.get("client")):
                return
            # Not served by DroppingProtocol (e.g. an in-process test client): fail loudly instead.
            raise ConnectionAbortedError("sandbox: drop fault injected")
        await self.app(scope, receive, send)
