"""Builders shared by the outbox tests: tier accounts, purchase payloads, rows in a given state.

Registered as the module ``outbox_factory`` by ``tests/conftest.py`` (``--import-mode=importlib``
keeps test modules from importing their neighbours).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from connect_provider.hooks.connect import ConnectHook
from connect_provider.outbox import TABLE, Outbox, processing
from local_http import LocalServer, QuietHandler

TIER = {
    "name": "Demo Reseller",
    "external_id": "reseller-1",
    "contact_info": {
        "address_line1": "1 Demo Street",
        "city": "Springfield",
        "postal_code": "10001",
        "country": "US",
        "contact": {
            "first_name": "Rita",
            "last_name": "Reseller",
            "email": "rita@example.com",
            "phone_number": "+1 2015550123",
        },
    },
}

CUSTOMER = {**TIER, "name": "Demo Customer", "external_id": "customer-1"}

def purchase_payload(**overrides) -> dict:
    return {
        "hub_id": "HB-0000-0001",
        "marketplace": "MP-00001",
        "item_id": "PRD-276-377-545-0001",
        "quantity": 3,
        "tier1": TIER,
        "customer": CUSTOMER,
        **overrides,
    }

def _stats(sandbox) -> dict:
    return sandbox.admin("GET", "stats")

def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"

def _submitted_purchases(outbox: Outbox, n: int, prefix: str) -> list[int]:
    ids = outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"{prefix}-{i}", "payload": purchase_payload()}
        for i in range(n)
    )
    claimed = outbox.claim("run-0", n)
    processing.submit_chunk(outbox, ConnectHook(), "run-0", claimed, retry_delays=())
    assert {row.status for row in outbox.get(ids)} == {"submitted"}
    return ids

def _submitted_row(outbox: Outbox, request_id: str | None) -> int:
    """A row the application (or a hand edit) left submitted with this request id."""
    value = "NULL" if request_id is None else _sql_text(request_id)
    outbox.execute_script(
        f"INSERT INTO {TABLE} (change_type, asset_external_id, payload, status, connect_request_id) "
        f"VALUES ('suspend', 'sub-1002', '{{}}', 'submitted', {value})"
    )
    return max(row.id for row in outbox.all())

def _changes_db_json(outbox: Outbox) -> str:
    if outbox.dialect == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": outbox.description.removeprefix("sqlite:")})
    dbname = outbox.description.rsplit("/", 1)[1]
    return json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": dbname}
    )


class FaultProxy(LocalServer):
    """A small HTTP server in front of the sandbox, for the faults the sandbox cannot make on demand.

    Every call is forwarded, except that ``answer(method, target)`` may answer one itself
    (``(status, json body)``), and one gated call (``gate = (method, path, when)``) is held until
    :attr:`release` is set: ``when="before"`` holds it before it reaches the sandbox (a create
    still in flight), ``"after"`` holds the sandbox's answer (a read that has gone stale).
    :attr:`held` is set when the gated call arrives. Only the first matching call is gated.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.answer: Callable[[str, str], tuple[int, Any] | None] = lambda method, target: None
        self.gate: tuple[str, str, str] | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        proxy = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                body = self.read_body() or None
                answered = proxy.answer(self.command, self.path)
                if answered is not None:
                    status, payload = answered
                    self.reply(status, json.dumps(payload).encode())
                    return
                gated = proxy._gated(self.command, self.path)
                if gated == "before":
                    proxy._hold()
                status, headers, content = proxy._forward(self.command, self.path, body, self.headers)
                if gated == "after":
                    proxy._hold()
                # The upstream's own headers only: no Content-Type where the sandbox sent none.
                self.reply(status, content, content_type=None, headers=headers)

            do_GET = do_POST = do_PUT = _handle

        self._lock = threading.Lock()
        super().__init__(Handler)

    def _gated(self, method: str, target: str) -> str | None:
        with self._lock:
            if self.gate is None or self.held.is_set():
                return None
            gate_method, path, when = self.gate
            if method != gate_method or target.split("?")[0] != path:
                return None
            self.held.set()
            return when

    def _hold(self) -> None:
        if not self.release.wait(60):
            raise RuntimeError("the gated call was never released")

    def _forward(self, method: str, target: str, body: bytes | None, headers: Any) -> tuple[int, dict, bytes]:
        sent = {k: headers[k] for k in ("Authorization", "Content-Type", "Accept") if headers.get(k)}
        request = urllib.request.Request(self.upstream + target, data=body, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, got, content = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, got, content = error.code, error.headers, error.read()
        kept = {k: got[k] for k in ("Content-Type", "Content-Range", "Retry-After") if got.get(k)}
        return status, kept, content

    def conn_json(self, sandbox, **extra: Any) -> str:
        conn = json.loads(sandbox.conn_uri_json())
        conn["host"] = self.api_url
        conn["extra"] = {**conn["extra"], **extra}
        return json.dumps(conn)

    def close(self) -> None:
        """Let a held call go first, so the serving thread can stop."""
        self.release.set()
        super().close()
