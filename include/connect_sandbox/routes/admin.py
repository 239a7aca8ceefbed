"""``/_sandbox``: the admin API, not part of Connect, that changes the sandbox while it runs.

Never fault-injected and never authenticated (the middleware guards ``/public/v1`` only). The
sandbox page (docs/sandbox.md, "Admin API") lists these routes; tests and benchmarks reach them through
:mod:`connect_sandbox.testing`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import ADMIN_PREFIX
from ..answers import body_of, json_response, object_body
from ..errors import ApiError
from ..faults import Faults, FaultSpec, parse_spec
from ..store import Store

USAGE_FILE_FIELDS = ("product_id", "status", "period_from", "period_to")


def router(store: Store, faults: Faults) -> APIRouter:
    api = APIRouter(prefix=ADMIN_PREFIX)

    @api.get("/health")
    def health() -> Response:
        return json_response({"status": "ok"})

    @api.post("/reset")
    async def reset(request: Request) -> Response:
        """Back to a seed (``{"seed": "demo"|"empty", "auto_approve_delay": seconds}``), faults off."""
        body = await object_body(request, "reset")
        delay = body.get("auto_approve_delay")
        if delay is not None and not isinstance(delay, int | float):
            raise ApiError(400, "VAL_001", "auto_approve_delay: must be a number of seconds")
        store.reset(body.get("seed"), delay)
        faults.set(FaultSpec())
        return json_response(
            {"status": "ok", "seed": store.seed_name, "auto_approve_delay": store.auto_approve_delay}
        )

    @api.get("/stats")
    def stats() -> Response:
        return json_response(store.stats())

    _fault_routes(api, faults)
    _usage_file_routes(api, store)
    return api


def _fault_routes(api: APIRouter, faults: Faults) -> None:
    """``GET``/``POST /_sandbox/faults``: the injected faults, ``{"spec": "429=0.1,drop=0.2"}``."""

    @api.get("/faults")
    def get_faults() -> Response:
        s = faults.spec
        return json_response(
            {"429": s.p429, "500": s.p500, "drop": s.pdrop, "latency_ms": s.latency_ms, "seed": s.seed}
        )

    @api.post("/faults")
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


def _usage_file_routes(api: APIRouter, store: Store) -> None:
    """Usage files added, and moved as Connect moves them, while the sandbox runs."""

    @api.post("/usage-files")
    async def add_usage_file(request: Request) -> Response:
        """A new usage file, created now: ``{"records": N, "product_id", "status", "period_from", ...}``."""
        body = await object_body(request, "usage-files")
        records = body.get("records", 0)
        if isinstance(records, bool) or not isinstance(records, int):
            raise ApiError(400, "VAL_001", "records: must be an integer >= 0")
        fields = {k: body[k] for k in USAGE_FILE_FIELDS if k in body}
        return json_response(store.add_usage_file(records, **fields), 201)

    @api.post("/usage-files/{file_id}/status")
    async def move_usage_file(file_id: str, request: Request) -> Response:
        """Move a file as Connect would (``{"status": "accepted", "note": "..."}``), events stamped now."""
        body = await object_body(request, "usage-files/status")
        if "status" not in body:
            raise ApiError(400, "VAL_001", "status: This field is required (the status to move the file to).")
        return json_response(store.move_usage_file(file_id, body["status"], body.get("note")))
