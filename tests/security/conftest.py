"""Fixtures of the key-leak tests: a hostile Connect that echoes the caller's API key back.

Some servers and gateways copy the request's ``Authorization`` header into their error answers (a
debug page, a WAF's block page, a proxy's 401). Whatever the provider does with such an answer -
raise it, log it, put it in a trigger event, write it to the outbox - the key must not come out.

:class:`EchoConnect` is a real HTTP server on 127.0.0.1. Each call is answered according to its
*mode*; every answer, good or bad, also echoes the key in response headers:

* ``400``, ``401``, ``500``: Connect's JSON error shape (``error_code``, ``errors``, ``params``),
  with the key echoed in every field, ``params`` nested included;
* ``html-500``, ``html-404``: an HTML error page quoting the key, as a gateway or a web server
  that is not the API would send;
* ``drop``: the connection is closed without an answer (a transport error);
* ``ok``: a well-formed answer (a pending request, a usage file, an empty page), so a caller can
  get past its first look before the errors begin.

``modes`` is a script consumed one call at a time; when it is empty, ``mode`` answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from local_http import LocalServer, QuietHandler

KEY_ID = "SU-411-522-633"
SECRET = "leak-canary-7f3e9a1c5b2d4e60"
BARE_KEY = f"{KEY_ID}:{SECRET}"
HEADER_VALUE = f"ApiKey {BARE_KEY}"
#: The forms of the key that must never appear: the header value, the key, its secret part.
FORMS = {"header value": HEADER_VALUE, "bare key": BARE_KEY, "secret part": SECRET}
CONN_ID = "cloudblue_connect_default"

ERROR_MODES = ("400", "401", "500", "html-500", "html-404")


def _json_error(status: int, auth: str) -> bytes:
    bare = auth.removeprefix("ApiKey ")
    return json.dumps(
        {
            "error_code": f"ECHO_{status} {auth}",
            "errors": [f"Authorization: {auth}", f"key={bare}", f"secret={bare.split(':')[-1]}"],
            "params": {
                "request_id": "PR-0000-0000-0000-001",
                "echo": auth,
                "nested": {"headers": [{"Authorization": auth}], "secret": bare.split(":")[-1]},
            },
        }
    ).encode()


def _html_page(status: int, auth: str) -> bytes:
    return (
        f"<html><head><title>{status} Error</title></head><body><h1>{status}</h1>"
        f"<p>Request headers:</p><pre>Authorization: {auth}\nUser-Agent: test</pre></body></html>"
    ).encode()


class EchoConnect(LocalServer):
    """A local HTTP server that answers like Connect and echoes the API key it was sent."""

    def __init__(self) -> None:
        self.mode = "500"
        self.modes: list[str] = []
        self.calls: list[tuple[str, str]] = []
        self.received: list[str] = []
        owner = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                self.read_body()
                auth = self.headers.get("Authorization") or ""
                owner.calls.append((self.command, self.path))
                owner.received.append(auth)
                mode = owner.modes.pop(0) if owner.modes else owner.mode
                if mode == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status, ctype, body, extra = owner._answer(mode, self.command, self.path, auth)
                echoed = {"X-Echo-Authorization": auth, "WWW-Authenticate": f'ApiKey realm="{auth}"'}
                self.reply(status, body, ctype, headers={**echoed, **extra})

            do_GET = do_POST = do_PUT = _answer

        super().__init__(Handler)

    @staticmethod
    def _answer(mode: str, method: str, path: str, auth: str) -> tuple[int, str, bytes, dict[str, str]]:
        if mode in ("400", "401", "500"):
            return int(mode), "application/json", _json_error(int(mode), auth), {}
        if mode.startswith("html-"):
            status = int(mode.removeprefix("html-"))
            return status, "text/html", _html_page(status, auth), {}
        assert mode == "ok", mode
        route = path.split("?", 1)[0].removeprefix("/public/v1")
        parts = route.strip("/").split("/")
        if parts[0] == "requests" and len(parts) == 2:
            body: Any = {
                "id": parts[1],
                "type": "purchase",
                "status": "pending",
                "asset": {"id": "AS-0000-0000-0001", "external_id": "leak-1"},
            }
            return 200, "application/json", json.dumps(body).encode(), {}
        if parts[:2] == ["usage", "files"] and len(parts) == 3:
            body = {
                "id": parts[2],
                "status": "ready",
                "product": {"id": "PRD-276-377-545"},
                "period": {"from": "2026-10-01T00:00:00+00:00", "to": "2026-11-01T00:00:00+00:00"},
                "currency": "USD",
                "schema": "qt",
                "name": "Leak check",
                "stats": {"uploaded": 1},
                "events": {"uploaded": {"at": "2026-11-01T00:00:00+00:00"}},
            }
            return 200, "application/json", json.dumps(body).encode(), {}
        return 200, "application/json", b"[]", {"Content-Range": "items 0-0/0"}

    def conn_json(self, **extra: Any) -> str:
        return self.connection_json(HEADER_VALUE, **{"max_retries": 1, "max_wait": 0, "timeout": 5, **extra})


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> Iterator[EchoConnect]:
    """An :class:`EchoConnect` behind the default Connect connection."""
    server = EchoConnect().start()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", server.conn_json())
    yield server
    assert all(r.startswith("ApiKey SU-") for r in server.received), "the server received no key"
    server.close()


@pytest.fixture
def raw_logs(log_events) -> Iterator[Callable[[], str]]:
    """``raw_logs()``: every log event of the test so far, DEBUG included, before any masking
    (the root ``log_events`` fixture: structlog events in place of the processors, so Airflow's
    secret masker never sees them, and standard-library records from caplog, unformatted)."""
    events, caplog = log_events

    def text() -> str:
        lines = [repr(e) for e in events]
        for record in caplog.records:
            lines.append(f"{record.levelname}: {record.getMessage()} {record.args!r} {record.exc_text}")
        return "\n".join(lines)

    yield text


class KeyScanner:
    """Finds the key in text: ``scanner.found(text)`` names the forms present (empty when clean)."""

    forms = FORMS
    header_value = HEADER_VALUE

    def found(self, *texts: str) -> list[str]:
        text = "\n".join(texts)
        return [name for name, form in FORMS.items() if form in text]

    @staticmethod
    def exception_text(error: BaseException) -> str:
        """Everything an exception carries as text: message, repr, args, attributes, chained causes.

        Walks ``__cause__`` and ``__context__`` whether suppressed or not (a chained exception is
        still reachable, and some error reporters print it), and the headers of any request or
        response object an exception holds (``requests`` keeps the sent request, Authorization
        included).
        """
        parts: list[str] = []
        seen: set[int] = set()
        stack: list[BaseException | None] = [error]
        while stack:
            current = stack.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            parts.extend([str(current), repr(current), repr(current.args)])
            for name, value in vars(current).items():
                parts.append(f"{name}={value!r}")
                for holder in (value, getattr(value, "request", None)):
                    headers = getattr(holder, "headers", None)
                    if headers is not None:
                        parts.append(repr(dict(headers)))
            stack.extend([current.__cause__, current.__context__])
        return "\n".join(parts)


@pytest.fixture
def scanner() -> KeyScanner:
    """Looks for the echoed key (header value, bare key, secret part) in text and exceptions."""
    return KeyScanner()
