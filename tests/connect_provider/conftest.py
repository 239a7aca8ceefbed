"""Log capture, and a small local listing server with faults for concurrent paging (hook, exporter).

The sandbox answers every page in the order it was asked for and never moves a record between two
pages; concurrent paging must hold when Connect does neither. ``ListingServer`` serves one usage
file and its records as Connect pages them (``limit``/``offset``, ``Content-Range: items
first-last/total``, as django-rql's ``RQLContentRangeLimitOffsetPagination`` writes it,
cloudblue/django-rql @ 5e6ade3 : dj_rql/drf/paginations.py), over real HTTP on 127.0.0.1, and can:

* delay each answer (``delay(offset)``), e.g. later pages first and with jitter;
* answer 429 with ``Retry-After`` while more than ``max_in_flight`` calls are under way, as a
  concurrency-limiting gateway does;
* change the listing before it answers a given call (``mutate_before_call``);
* answer one offset with fewer records than asked (``short_pages``) or with an error (``fail_at``).

It records what happened: the offsets in the order asked and answered, the peak of calls in
flight, and the 429s sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from local_http import LocalServer, QuietHandler

API_KEY = "ApiKey SU-000-000-001:listing-test-key"


@pytest.fixture
def hook_logs(log_events) -> Iterator[Callable[[], list[str]]]:
    """``hook_logs()``: every log line emitted so far in the test, DEBUG included, as text
    (the events of the root ``log_events`` fixture, captured before any masking)."""
    events, caplog = log_events

    def lines() -> list[str]:
        rendered = [f"{e.get('log_level')}: {e.get('event')} {e}" for e in events]
        return rendered + [f"{r.levelname.lower()}: {r.getMessage()}" for r in caplog.records]

    yield lines


class ListingServer(LocalServer):
    """One usage file and its records behind ``/public/v1``; see the module docstring."""

    def __init__(
        self,
        records: list[dict[str, Any]],
        usage_file: dict[str, Any] | None = None,
        *,
        dumps: Callable[[Any], str] = json.dumps,
        max_limit: int = 1000,
    ) -> None:
        self.records = list(records)
        self.usage_file = usage_file or {"id": "UF-0000-00-0000000000"}
        self.dumps = dumps
        self.max_limit = max_limit
        self.delay: Callable[[int], float] = lambda offset: 0.0
        self.max_in_flight: int | None = None
        self.retry_after = "1"
        self.mutate_before_call: dict[int, Callable[[list[dict[str, Any]]], None]] = {}
        self.short_pages: dict[int, int] = {}
        self.fail_at: dict[int, int] = {}
        self.asked: list[int] = []
        self.answered: list[int] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.rate_limited = 0
        self.lock = threading.Lock()
        super().__init__(self._handler())

    def conn_json(self, **extra: Any) -> str:
        return self.connection_json(API_KEY, **extra)

    def wait_for_calls(self, n: int, timeout: float = 5.0) -> None:
        """Until ``n`` record pages have been asked for, then until none is under way."""
        deadline = time.monotonic() + timeout
        while len(self.asked) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        self.wait_idle(max(0.0, deadline - time.monotonic()))

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Until no call is under way (the planned pages have all been answered)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def _records_page(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        limit = min(int(query.get("limit", ["100"])[0]), self.max_limit)
        offset = int(query.get("offset", ["0"])[0])
        with self.lock:
            number = len(self.asked)
            self.asked.append(offset)
            mutate = self.mutate_before_call.get(number)
            if mutate is not None:
                mutate(self.records)
            if offset in self.fail_at:
                return self.fail_at[offset], {}, b'{"error_code": "VAL_001", "errors": ["broken page"]}'
            records = self.records
            chunk = records[offset : offset + min(limit, self.short_pages.pop(offset, limit))]
            total = len(records)
        last = offset + len(chunk) - 1 if chunk else 0
        headers = {"Content-Range": f"items {offset}-{last}/{total}"}
        return 200, headers, self.dumps(chunk).encode()

    def _answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        if path.endswith("/usage/records"):
            return self._records_page(query)
        if path.startswith("/public/v1/usage/files/"):
            return 200, {}, json.dumps(self.usage_file).encode()
        return 404, {}, b'{"error_code": "NOT_FOUND", "errors": ["no such route"]}'

    def _handler(self) -> type[QuietHandler]:
        owner = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query, keep_blank_values=True)
                with owner.lock:
                    owner.in_flight += 1
                    owner.peak_in_flight = max(owner.peak_in_flight, owner.in_flight)
                    limited = owner.max_in_flight is not None and owner.in_flight > owner.max_in_flight
                    if limited:
                        owner.rate_limited += 1
                try:
                    if limited:
                        status, headers, body = 429, {"Retry-After": owner.retry_after}, b"{}"
                    else:
                        offset = int(query.get("offset", ["0"])[0])
                        time.sleep(owner.delay(offset))
                        status, headers, body = owner._answer(parts.path, query)
                        if status == 200 and parts.path.endswith("/usage/records"):
                            with owner.lock:
                                owner.answered.append(offset)
                    self.reply(status, body, headers=headers)
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

        return Handler


@pytest.fixture
def listing_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ListingServer]]:
    """``listing_server(records, usage_file=None, **extra)``: a started server, and the default
    Connect connection pointing at it (``extra`` are the connection's extras)."""
    started: list[ListingServer] = []

    def start(
        records: list[dict[str, Any]],
        usage_file: dict[str, Any] | None = None,
        *,
        dumps: Callable[[Any], str] = json.dumps,
        max_limit: int = 1000,
        **extra: Any,
    ) -> ListingServer:
        server = ListingServer(records, usage_file, dumps=dumps, max_limit=max_limit).start()
        started.append(server)
        monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", server.conn_json(**extra))
        return server

    yield start
    for server in started:
        server.close()
