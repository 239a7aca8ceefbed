"""Retries and ambiguous writes under injected faults, over real HTTP.

The sandbox injects 429 (with ``Retry-After: 1``), 500, dropped connections (for a POST: after
the write is committed) and latency. A few answers the sandbox never gives (gateway 502, an HTTP
date in ``Retry-After``, a list without ``Content-Range``) come from a tiny scripted server.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator

import pytest
from connect_provider.exceptions import (
    ConnectAmbiguousWriteError,
    ConnectAPIError,
    ConnectRateLimitError,
    ConnectTransportError,
)
from connect_provider.hooks.connect import ConnectHook
from local_http import LocalServer, QuietHandler

PENDING = "PR-0000-0000-0004-001"
READY_FILE = "UF-2026-10-0000000001"  # 50 records


def faults_of(stats, kind: str) -> int:
    return stats()["faults_injected"][kind]


def calls_of(stats, route: str) -> int:
    return stats()["calls_by_route"].get(route, 0)


def test_a_429_waits_for_retry_after_then_succeeds(sandbox, stats, hook_logs) -> None:
    sandbox.set_faults("429=0.5,seed=1")  # the first decision is a 429, the second is not
    assert ConnectHook().get_request(PENDING)["id"] == PENDING
    assert faults_of(stats, "429") == 1
    warnings = [line for line in hook_logs() if line.startswith("warning: 429 on GET /requests/")]
    assert len(warnings) == 1
    assert "retrying in 1.00 s (Retry-After)" in warnings[0]


def test_a_429_storm_still_pages_every_record(sandbox, stats) -> None:
    sandbox.set_faults("429=0.5,seed=1")
    hook = ConnectHook(max_wait=0.05)  # cap Retry-After so the storm stays quick
    # One page at a time, so the seeded faults fall on the same calls in every run (side by side,
    # which call draws which decision depends on thread timing; that case has its own storm test
    # in test_hook_concurrent_paging.py).
    pages = hook.iter_usage_record_pages(READY_FILE, page_size=5, concurrency=1)
    ids = [r["id"] for page in pages for r in page]
    assert len(ids) == len(set(ids)) == 50
    assert faults_of(stats, "429") >= 5


def test_a_burst_of_5xx_is_retried_with_backoff(sandbox, stats) -> None:
    sandbox.set_faults("500=0.5,seed=2")
    hook = ConnectHook(max_wait=0.05)
    pages = hook.iter_usage_record_pages(READY_FILE, page_size=5, concurrency=1)  # seeded: one at a time
    ids = [r["id"] for page in pages for r in page]
    assert len(ids) == len(set(ids)) == 50
    assert faults_of(stats, "500") >= 5


def test_dropped_reads_are_retried(sandbox, stats) -> None:
    sandbox.set_faults("drop=0.5,seed=1")  # the first call is dropped
    assert ConnectHook(max_wait=0.05).get_request(PENDING)["id"] == PENDING
    assert faults_of(stats, "drop") >= 1


def test_latency_only_slows_calls_down(sandbox) -> None:
    sandbox.set_faults("latency_ms=30")
    pages = list(ConnectHook().iter_usage_record_pages(READY_FILE, page_size=25))
    assert [len(p) for p in pages] == [25, 25]


def test_rate_limiting_past_the_attempts_raises_rate_limit_error(sandbox, stats) -> None:
    sandbox.set_faults("429=1")
    with pytest.raises(ConnectRateLimitError) as caught:
        ConnectHook(max_retries=2, max_wait=0).get_request(PENDING)
    error = caught.value
    assert str(error).startswith(
        f"429 on GET /requests/{PENDING}: Connect still rate-limited the call after 3"
    )
    assert "raise max_retries/max_wait of connection 'cloudblue_connect_default'" in str(error)
    assert (error.status, error.error_code) == (429, "RATE_LIMIT")
    assert calls_of(stats, "GET /requests/{request_id}") == 3


def test_server_errors_past_the_attempts_raise_with_connects_details(sandbox, stats) -> None:
    sandbox.set_faults("500=1")
    with pytest.raises(ConnectAPIError) as caught:
        ConnectHook(max_retries=1, max_wait=0).list_requests()
    error = caught.value
    assert str(error).startswith("500 on GET /requests: Connect failed 2 time(s) (SERVER_ERROR - ")
    assert (error.status, error.method, error.path) == (500, "GET", "/requests")
    assert calls_of(stats, "GET /requests") == 2


def test_a_post_refused_with_429_or_500_is_retried_and_creates_once(sandbox, stats, purchase) -> None:
    hook = ConnectHook(max_wait=0.05)
    sandbox.set_faults("429=0.5,seed=1")
    first = hook.create_request(purchase("retry-429"))
    sandbox.set_faults("500=0.5,seed=1")
    second = hook.create_request(purchase("retry-500"))
    assert first["id"] != second["id"]
    assert stats()["requests_created"] == 2
    assert calls_of(stats, "POST /requests") == 4


def test_a_post_whose_connection_drops_after_commit_is_ambiguous_and_not_resent(
    sandbox, stats, purchase
) -> None:
    sandbox.set_faults("drop=1")
    with pytest.raises(ConnectAmbiguousWriteError) as caught:
        ConnectHook().create_request(purchase("dropped-after-commit"))
    error = caught.value
    assert (error.method, error.path) == ("POST", "/requests")
    assert str(error).startswith("POST /requests: the connection was dropped before an answer came")
    assert "it was not resent" in str(error)
    assert calls_of(stats, "POST /requests") == 1
    sandbox.set_faults("")
    # The write did happen: exactly one asset, which is why the hook must not resend blindly.
    assert len(ConnectHook().find_assets(external_id="dropped-after-commit")) == 1


def test_a_read_timeout_fails_a_read_after_retries_and_makes_a_write_ambiguous(
    sandbox, stats, purchase
) -> None:
    sandbox.set_faults("latency_ms=800")
    hook = ConnectHook(timeout=0.2, max_retries=1, max_wait=0)
    with pytest.raises(ConnectTransportError) as read_error:
        hook.get_request(PENDING)
    assert "no answer within 0.2 s (read timeout)" in str(read_error.value)
    assert "after 2 attempt(s)" in str(read_error.value)
    with pytest.raises(ConnectAmbiguousWriteError) as write_error:
        hook.create_request(purchase("slow-create"))
    assert str(write_error.value).startswith("POST /requests: no answer within 0.2 s (read timeout)")
    # Whether the server went on with the create is unknown to the client: it was sent once only.
    assert calls_of(stats, "POST /requests") == 1


# ---------------------------------------------------------------- answers the sandbox never gives


class Scripted(LocalServer):
    """A local HTTP server answering from a script of (status, headers, body) per call.

    Only the script's headers are sent: no Content-Type unless a step names one.
    """

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.calls: list[tuple[str, str]] = []
        owner = self

        class Handler(QuietHandler):
            def _answer(self) -> None:
                self.read_body()
                owner.calls.append((self.command, self.path))
                status, headers, body = owner.script.pop(0) if owner.script else (500, {}, b"{}")
                self.reply(status, body, content_type=None, headers=headers)

            do_GET = do_POST = do_PUT = _answer

        super().__init__(Handler)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scripted]:
    server = Scripted().start()
    conn = server.connection_json("SU-000-000-000:scripted-key", max_wait=2)
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", conn)
    yield server
    server.close()


def test_a_gateway_error_on_a_post_is_ambiguous_and_not_resent(scripted) -> None:
    scripted.script = [(502, {}, b"bad gateway")]
    with pytest.raises(ConnectAmbiguousWriteError) as caught:
        ConnectHook().post("/requests", {"type": "purchase"})
    assert str(caught.value).startswith("POST /requests: a gateway answered 502")
    assert scripted.calls == [("POST", "/public/v1/requests")]


def test_a_gateway_error_on_a_read_is_retried(scripted) -> None:
    scripted.script = [(504, {}, b""), (200, {}, b'{"id": "PR-1"}')]
    assert ConnectHook(max_wait=0).get("/requests/PR-1") == {"id": "PR-1"}
    assert len(scripted.calls) == 2


def test_retry_after_as_an_http_date_is_honoured(scripted, hook_logs) -> None:
    later = email.utils.formatdate(time.time() + 2, usegmt=True)
    scripted.script = [(503, {"Retry-After": later}, b""), (200, {}, b'{"id": "PR-1"}')]
    assert ConnectHook().get("/requests/PR-1") == {"id": "PR-1"}
    waits = [line for line in hook_logs() if "(Retry-After)" in line]
    assert len(waits) == 1 and "503 on GET /requests/PR-1 (attempt 1 of 6)" in waits[0]


def test_a_list_without_content_range_is_paged_until_a_short_page(scripted) -> None:
    page = json.dumps([{"id": i} for i in range(3)]).encode()
    scripted.script = [(200, {}, page), (200, {}, b'[{"id": 3}]')]
    pages = list(ConnectHook().iter_raw_pages("/things", page_size=3))
    assert [(p.offset, p.count, p.total) for p in pages] == [(0, 3, -1), (3, 1, 4)]
    assert [path for _, path in scripted.calls] == [
        "/public/v1/things?limit=3&offset=0",
        "/public/v1/things?limit=3&offset=3",
    ]


def test_an_answer_that_is_not_json_says_to_check_the_host(scripted) -> None:
    scripted.script = [(200, {"Content-Type": "text/html"}, b"<html>login</html>")]
    with pytest.raises(ConnectAPIError) as caught:
        ConnectHook().get("/requests/PR-1")
    assert "not JSON; check that the host of the connection is the API base URL" in str(caught.value)
