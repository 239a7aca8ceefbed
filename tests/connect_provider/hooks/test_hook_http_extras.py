"""The hook stands on Airflow's public BaseHook and keeps the HTTP provider's extras on both paths.

Users of the HTTP provider put proxies, client certificates and extra headers in a connection's
extras; the hook owns its session and applies them itself, to the synchronous calls and to the
triggers' async read alike. A local server records what reaches it; a local forward proxy shows
that a call went through the proxy (an absolute URL in the request line, for a host that does not
even resolve).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import BaseHook
from connect_provider.hooks.connect import ConnectHook
from local_http import LocalServer, QuietHandler

CONN_ID = "connect_extras_test"
KEY = "ApiKey SU-1:extras-test-secret"
REQUEST = {"id": "PR-1", "status": "pending"}


class Recorder(LocalServer):
    """Answers every GET with :data:`REQUEST` and records the request line and headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                owner.seen.append((self.path, dict(self.headers.items())))
                self.reply(200, json.dumps(REQUEST).encode())

        super().__init__(Handler)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch):
    def _define(host: str, **extra: object) -> None:
        body = {"conn_type": "cloudblue_connect", "host": host, "password": KEY, "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(body))

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return _define


def read_sync() -> dict:
    return ConnectHook(CONN_ID).get_request("PR-1")


def read_async() -> dict:
    return asyncio.run(ConnectHook(CONN_ID).aget_request("PR-1"))


PATHS = [read_sync, read_async]
PATH_IDS = ["sync", "async"]


def test_the_hook_is_a_plain_airflow_hook_not_an_http_hook() -> None:
    # It owns its requests.Session instead of reaching into HttpHook's private session setup.
    assert issubclass(ConnectHook, BaseHook)
    assert not issubclass(ConnectHook, HttpHook)


class TestHttpProviderExtras:
    """proxies, extra headers and the hook's own extras mean the same on the sync and async path."""

    @pytest.mark.parametrize("read", PATHS, ids=PATH_IDS)
    def test_extra_headers_are_sent_and_the_hooks_own_extras_are_not(
        self, recorder, connection, read
    ) -> None:
        connection(
            recorder.api_url,
            **{"X-Correlation-Id": "corr-7", "X-Tenant": 42, "page_size": 10, "max_wait": 1, "timeout": 5},
        )
        assert read() == REQUEST
        [(path, headers)] = recorder.seen
        assert path == "/public/v1/requests/PR-1"
        assert headers["X-Correlation-Id"] == "corr-7" and headers["X-Tenant"] == "42"
        assert headers["Authorization"] == KEY and headers["Accept"] == "application/json"
        assert not {k.lower() for k in headers} & {"page_size", "max_wait", "timeout", "verify_ssl"}

    @pytest.mark.parametrize("read", PATHS, ids=PATH_IDS)
    @pytest.mark.parametrize("key", ["proxies", "proxy"], ids=["proxies", "proxy-alias"])
    def test_calls_go_through_the_configured_proxy(self, recorder, connection, read, key) -> None:
        # connect.invalid never resolves: only a call through the proxy can get an answer.
        connection("http://connect.invalid/public/v1", **{key: {"http": recorder.base_url}, "max_retries": 0})
        assert read() == REQUEST
        [(request_line, headers)] = recorder.seen
        assert request_line == "http://connect.invalid/public/v1/requests/PR-1"
        assert headers["Authorization"] == KEY

    def test_the_session_carries_the_client_certificate_and_redirect_limit(self, connection) -> None:
        connection(
            "https://api.connect.cloudblue.com/public/v1",
            cert=["/etc/ssl/client.pem", "/etc/ssl/client.key"],
            max_redirects=3,
            trust_env="false",
        )
        session = ConnectHook(CONN_ID).get_conn()
        assert session.cert == ("/etc/ssl/client.pem", "/etc/ssl/client.key")
        assert (session.max_redirects, session.trust_env) == (3, False)
        assert {"cert", "max_redirects", "trust_env"}.isdisjoint({k.lower() for k in session.headers})
