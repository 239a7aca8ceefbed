"""The one retry policy: what it decides for an answer or an exception, and that both paths obey it.

:class:`RetryPolicy` is a pure decision; it is checked on its own with real exceptions (raised by
``requests`` and ``aiohttp`` against a local server that refuses, stalls, drops or speaks plain
HTTP under https), then the synchronous calls and the triggers' async read are run against the
same scripted answers and must behave, log and fail alike.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import time
from collections.abc import Callable, Iterator

import aiohttp
import pytest
import requests
from connect_provider.exceptions import (
    ConnectAmbiguousWriteError,
    ConnectAPIError,
    ConnectAuthError,
    ConnectConflictError,
    ConnectError,
    ConnectNotFoundError,
    ConnectRateLimitError,
    ConnectTransportError,
    ConnectValidationError,
)
from connect_provider.hooks.connect import ConnectHook
from connect_provider.hooks.retry import (
    AMBIGUOUS,
    DONE,
    RAISE,
    RETRY,
    RetryPolicy,
    transport_failure_kind,
)
from local_http import LocalServer, QuietHandler, closed_port

CONN_ID = "connect_retry_test"
NOW = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.timezone.utc)

Script = list[tuple[int, dict[str, str], bytes]]


class FaultServer(LocalServer):
    """127.0.0.1 server: ``/slow`` stalls, ``/drop`` closes without answering, else the script.

    Only the script's headers are sent: no Content-Type unless a step names one.
    """

    def __init__(self) -> None:
        self.script: Script = []
        self.calls: list[str] = []
        owner = self

        class Handler(QuietHandler):
            def _answer(self) -> None:
                self.read_body()
                owner.calls.append(f"{self.command} {self.path}")
                if self.path.endswith("/slow"):
                    time.sleep(1.0)
                if self.path.endswith("/drop"):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, headers, body = owner.script.pop(0) if owner.script else (200, {}, b"{}")
                self.reply(status, body, content_type=None, headers=headers)

            do_GET = do_POST = _answer

        super().__init__(Handler)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def requests_error(url: str) -> BaseException:
    try:
        requests.post(url, json={}, timeout=(1, 0.2))
    except requests.RequestException as exc:
        return exc
    raise AssertionError(f"no error from {url}")


def aiohttp_error(url: str) -> BaseException:
    async def call() -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=1, sock_read=0.2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url) as response:
                await response.read()

    try:
        asyncio.run(call())
    except Exception as exc:
        return exc
    raise AssertionError(f"no error from {url}")


FAULT_URLS: dict[str, Callable[[FaultServer], str]] = {
    "refused": lambda s: f"http://127.0.0.1:{closed_port()}/x",
    "read-timeout": lambda s: f"http://{s.netloc}/slow",
    "dropped": lambda s: f"http://{s.netloc}/drop",
    "plain-http-under-https": lambda s: f"https://{s.netloc}/x",
}
EXPECTED_KIND = {
    "refused": "unsent",
    "read-timeout": "timeout",
    "dropped": "dropped",
    "plain-http-under-https": "tls",
}


class TestTransportFailureKind:
    """Real exceptions of both HTTP clients are read the same way."""

    @pytest.mark.parametrize("client", [requests_error, aiohttp_error], ids=["requests", "aiohttp"])
    @pytest.mark.parametrize("fault", list(FAULT_URLS), ids=list(FAULT_URLS))
    def test_each_failure_has_the_same_kind_whichever_client_raised_it(self, server, client, fault) -> None:
        assert transport_failure_kind(client(FAULT_URLS[fault](server))) == EXPECTED_KIND[fault]

    def test_an_error_raised_while_building_the_call_is_invalid(self) -> None:
        assert transport_failure_kind(UnicodeEncodeError("latin-1", "ключ", 0, 1, "x")) == "invalid"
        assert transport_failure_kind(requests.exceptions.InvalidHeader("bad")) == "invalid"


class TestDecideOnAnswers:
    """429 and 5xx are retried, Retry-After honoured and capped, 502/504 to a write never resent."""

    POLICY = RetryPolicy(max_retries=2, max_wait=5.0)

    @pytest.mark.parametrize(
        ("method", "status", "attempt", "headers", "action", "why"),
        [
            ("GET", 200, 1, {}, DONE, ""),
            ("POST", 201, 1, {}, DONE, ""),
            ("GET", 304, 1, {}, DONE, ""),
            ("GET", 400, 1, {}, RAISE, "400"),
            ("GET", 401, 1, {}, RAISE, "401"),
            ("GET", 404, 1, {}, RAISE, "404"),
            ("POST", 409, 1, {}, RAISE, "409"),
            ("GET", 408, 1, {}, RAISE, "408"),
            ("GET", 429, 1, {"Retry-After": "3"}, RETRY, "Retry-After"),
            ("GET", 503, 1, {"Retry-After": "Sat, 28 Nov 2026 12:00:02 GMT"}, RETRY, "Retry-After"),
            ("GET", 500, 1, {}, RETRY, "back-off"),
            ("GET", 502, 2, {}, RETRY, "back-off"),
            ("GET", 500, 3, {}, RAISE, "500"),
            ("GET", 429, 3, {"Retry-After": "1"}, RAISE, "429"),
            ("POST", 500, 1, {}, RETRY, "back-off"),
            ("POST", 429, 1, {}, RETRY, "back-off"),
            ("POST", 502, 1, {}, AMBIGUOUS, "a gateway answered 502"),
            ("PUT", 504, 1, {}, AMBIGUOUS, "a gateway answered 504"),
        ],
        ids=[
            "200",
            "201-post",
            "304",
            "400",
            "401",
            "404",
            "409",
            "408",
            "429-retry-after",
            "503-http-date",
            "500",
            "502-read",
            "500-last-attempt",
            "429-last-attempt",
            "500-post",
            "429-post",
            "502-post",
            "504-put",
        ],
    )
    def test_an_answer_is_done_retried_raised_or_ambiguous(
        self, method, status, attempt, headers, action, why
    ) -> None:
        decision = self.POLICY.decide(method, attempt, status=status, headers=headers, now=NOW)
        assert (decision.action, decision.why) == (action, why)

    def test_retry_after_is_followed_in_seconds_or_as_a_date(self) -> None:
        seconds = self.POLICY.decide("GET", 1, status=429, headers={"Retry-After": "3"})
        date = self.POLICY.decide(
            "GET", 1, status=503, headers={"Retry-After": "Sat, 28 Nov 2026 12:00:02 GMT"}, now=NOW
        )
        assert (seconds.delay, date.delay) == (3.0, 2.0)

    def test_retry_after_is_capped_by_max_wait(self) -> None:
        decision = self.POLICY.decide("GET", 1, status=429, headers={"Retry-After": "3600"})
        assert (decision.action, decision.delay) == (RETRY, 5.0)

    @pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5], ids=lambda a: f"retry-{a}")
    def test_backoff_is_full_jitter_under_a_doubling_ceiling(self, attempt: int) -> None:
        policy = RetryPolicy(max_retries=5, max_wait=60.0)
        delays = [policy.decide("GET", attempt, status=503).delay for _ in range(200)]
        ceiling = 0.5 * 2 ** (attempt - 1)
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not a fixed sleep

    def test_no_retries_means_one_attempt(self) -> None:
        assert RetryPolicy(max_retries=0).decide("GET", 1, status=503).action == RAISE
        assert RetryPolicy(max_retries=0).attempts == 1


class TestDecideOnExceptions:
    """Nothing sent: retried (a write too). Sent, no answer: a read is retried, a write ambiguous."""

    POLICY = RetryPolicy(max_retries=2, max_wait=0.0)

    @pytest.mark.parametrize(
        ("fault", "method", "action"),
        [
            ("refused", "GET", RETRY),
            ("refused", "POST", RETRY),
            ("read-timeout", "GET", RETRY),
            ("read-timeout", "POST", AMBIGUOUS),
            ("dropped", "GET", RETRY),
            ("dropped", "POST", AMBIGUOUS),
            ("plain-http-under-https", "GET", RAISE),
            ("plain-http-under-https", "POST", RAISE),
        ],
        ids=[
            "refused-get",
            "refused-post",
            "timeout-get",
            "timeout-post",
            "dropped-get",
            "dropped-post",
            "tls-get",
            "tls-post",
        ],
    )
    @pytest.mark.parametrize("client", [requests_error, aiohttp_error], ids=["requests", "aiohttp"])
    def test_a_failure_is_retried_raised_or_ambiguous(self, server, client, fault, method, action) -> None:
        error = client(FAULT_URLS[fault](server))
        assert self.POLICY.decide(method, 1, error=error).action == action

    def test_a_failure_on_the_last_attempt_is_raised(self, server) -> None:
        error = requests_error(FAULT_URLS["refused"](server))
        assert self.POLICY.decide("GET", 3, error=error).action == RAISE

    def test_a_decision_needs_an_answer_or_an_error(self) -> None:
        with pytest.raises(ValueError, match="status of an answer or the error"):
            self.POLICY.decide("GET", 1)


# ---------------------------------------------------------------- both paths, one policy


@pytest.fixture
def connect_at(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def _define(host: str, **extra: object) -> None:
        body = {
            "conn_type": "cloudblue_connect",
            "host": host,
            "password": "ApiKey SU-1:retry-test-secret",
            "extra": {"max_wait": 0, "max_retries": 2, "timeout": 0.3, **extra},
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(body))

    return _define


def sync_read(path: str = "/requests/PR-1") -> object:
    return ConnectHook(CONN_ID).get(path)


def async_read(path: str = "/requests/PR-1") -> object:
    assert path.startswith("/requests/")
    return asyncio.run(ConnectHook(CONN_ID).aget_request(path.removeprefix("/requests/")))


READS = [sync_read, async_read]
READ_IDS = ["sync", "async"]


class TestBothPathsFollowThePolicy:
    """The synchronous calls and the triggers' async read retry, wait, log and fail the same way."""

    @pytest.mark.parametrize("read", READS, ids=READ_IDS)
    def test_a_503_with_retry_after_then_an_answer(self, server, connect_at, hook_logs, read) -> None:
        connect_at(f"http://{server.netloc}/public/v1", max_wait=5)
        server.script = [(503, {"Retry-After": "0.2"}, b""), (200, {}, b'{"id": "PR-1"}')]
        assert read() == {"id": "PR-1"}
        assert len(server.calls) == 2
        warnings = [line for line in hook_logs() if line.startswith("warning: ")]
        assert len(warnings) == 1
        assert "503 on GET /requests/PR-1 (attempt 1 of 3): retrying in 0.20 s (Retry-After)" in warnings[0]

    @pytest.mark.parametrize("read", READS, ids=READ_IDS)
    def test_rate_limiting_past_the_attempts(self, server, connect_at, read) -> None:
        connect_at(f"http://{server.netloc}/public/v1")
        server.script = [(429, {}, b'{"error_code": "RATE", "errors": ["slow down"]}')] * 3
        with pytest.raises(ConnectRateLimitError) as caught:
            read()
        assert str(caught.value).startswith(
            "429 on GET /requests/PR-1: Connect still rate-limited the call after 3 attempts"
        )
        assert caught.value.retryable is True and len(server.calls) == 3

    @pytest.mark.parametrize("read", READS, ids=READ_IDS)
    def test_an_unreachable_host_is_the_same_transport_error(self, connect_at, read) -> None:
        port = closed_port()
        connect_at(f"http://127.0.0.1:{port}/public/v1")
        with pytest.raises(ConnectTransportError) as caught:
            read()
        assert str(caught.value) == (
            f"GET /requests/PR-1: could not reach Connect at http://127.0.0.1:{port}/public/v1 after 3 "
            "attempt(s) (last: could not connect ([Errno 111] Connection refused)); check the host of "
            f"connection {CONN_ID!r} and the network, or raise its timeout/max_retries"
        )
        assert caught.value.retryable is True

    @pytest.mark.parametrize("read", READS, ids=READ_IDS)
    def test_a_stalled_answer_is_a_read_timeout_after_the_retries(self, server, connect_at, read) -> None:
        connect_at(f"http://{server.netloc}/public/v1")
        with pytest.raises(ConnectTransportError) as caught:
            read("/requests/slow")
        assert "after 3 attempt(s) (last: no answer within 0.3 s (read timeout))" in str(caught.value)
        assert len(server.calls) == 3

    @pytest.mark.parametrize("read", READS, ids=READ_IDS)
    def test_tls_to_a_plain_http_server_is_raised_at_once(self, server, connect_at, read) -> None:
        connect_at(f"https://{server.netloc}/public/v1")
        with pytest.raises(ConnectTransportError) as caught:
            read()
        assert "does not speak TLS" in str(caught.value)
        assert caught.value.retryable is False


class TestRetryableAttribute:
    """Code above the hook can decide by ``error.retryable`` instead of by class."""

    @pytest.mark.parametrize(
        ("status", "cls", "retryable"),
        [
            (400, ConnectAPIError, False),
            (401, ConnectAuthError, False),
            (403, ConnectAuthError, False),
            (404, ConnectNotFoundError, False),
            (409, ConnectConflictError, False),
            (422, ConnectAPIError, False),
            (429, ConnectRateLimitError, True),
            (500, ConnectAPIError, True),
            (503, ConnectAPIError, True),
        ],
        ids=["400", "401", "403", "404", "409", "422", "429", "500", "503"],
    )
    def test_an_answer_that_was_given_up_on_says_whether_a_later_try_may_work(
        self, server, connect_at, status, cls, retryable
    ) -> None:
        connect_at(f"http://{server.netloc}/public/v1", max_retries=0)
        server.script = [(status, {}, b'{"error_code": "X", "errors": ["x"]}')]
        with pytest.raises(ConnectError) as caught:
            ConnectHook(CONN_ID).get("/requests/PR-1")
        assert type(caught.value) is cls
        assert caught.value.retryable is retryable

    def test_an_ambiguous_write_is_not_retryable(self, server, connect_at) -> None:
        connect_at(f"http://{server.netloc}/public/v1")
        server.script = [(502, {}, b"bad gateway")]
        with pytest.raises(ConnectAmbiguousWriteError) as caught:
            ConnectHook(CONN_ID).post("/requests", {"type": "purchase"})
        assert caught.value.retryable is False and len(server.calls) == 1

    def test_local_input_is_not_retryable(self, server, connect_at) -> None:
        connect_at(f"http://{server.netloc}/public/v1")
        with pytest.raises(ConnectValidationError) as caught:
            ConnectHook(CONN_ID).post("/requests", {"quantity": float("nan")})
        assert caught.value.field == "json" and caught.value.retryable is False
        assert server.calls == []
