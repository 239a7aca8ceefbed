"""The sandbox's HTTP face: Connect's public routes under ``/public/v1`` and the ``/_sandbox`` admin API.

The routes are in :mod:`connect_sandbox.routes`, one router per resource; here they are put
together behind the middleware that authenticates, counts calls, and injects faults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from . import ADMIN_PREFIX, API_PREFIX, DEMO_API_KEY
from .answers import error_response, json_response
from .errors import ApiError
from .faults import Faults, drop_connection
from .routes import routers
from .store import Store

__all__ = ["ADMIN_PREFIX", "API_PREFIX", "DEMO_API_KEY", "SandboxMiddleware", "create_app"]


def create_app(store: Store, faults: Faults | None = None, max_limit: int = 1000) -> Callable:
    """The ASGI application: FastAPI routes wrapped in the auth / faults / stats middleware."""
    faults = faults or Faults()
    api = FastAPI(title="CloudBlue Connect sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    _answer_errors_as_connect(api)
    for router in routers(store, faults, max_limit):
        api.include_router(router)
    return SandboxMiddleware(api, store, faults)


def _answer_errors_as_connect(api: FastAPI) -> None:
    """Every refusal in Connect's shape: ``{"error_code", "errors"}`` (and ``params`` on a 409)."""

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
        self.store.call_started()
        try:
            await self._serve(scope, receive, send)
        finally:
            self.store.call_finished()

    async def _serve(
        self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]
    ) -> None:
        refusal = _unauthorized(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if self.faults.spec.latency_ms:
            await asyncio.sleep(self.faults.spec.latency_ms / 1000.0)
        fault = self.faults.decide()
        if fault is None:
            await self.app(scope, receive, send)
            return
        self.store.count_fault(fault)
        if fault == "drop":
            await self._drop(scope, receive)
        else:
            await FAULT_ANSWERS[fault]()(scope, receive, send)

    async def _drop(self, scope: dict, receive: Callable[[], Awaitable[dict]]) -> None:
        """Close the connection without an answer; a POST is handled first (committed, then lost)."""
        if scope.get("method") == "POST":

            async def swallow(_message: dict) -> None:
                return None

            await self.app(scope, receive, swallow)
        if not drop_connection(scope.get("client")):
            # Not served by DroppingProtocol (e.g. an in-process test client): fail loudly instead.
            raise ConnectionAbortedError("sandbox: drop fault injected")


FAULT_ANSWERS: dict[str, Callable[[], Response]] = {
    "429": lambda: error_response(
        429, "RATE_LIMIT", "Too many requests: retry after 1 second.", headers={"Retry-After": "1"}
    ),
    "500": lambda: error_response(500, "SERVER_ERROR", "Injected server error."),
}


def _unauthorized(scope: dict) -> Response | None:
    """Connect's 401 unless the call carries the demo key."""
    auth = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), None)
    if auth == DEMO_API_KEY:
        return None
    reason = (
        "Authorization header is missing."
        if auth is None
        else "Authorization header must be 'ApiKey <key>' with a valid key."
    )
    return error_response(401, "AUTH_001", f"Unauthorized: {reason}")
