"""The hook's connection handling, checked without any HTTP call.

Connections come from ``AIRFLOW_CONN_*`` environment variables through Airflow's own lookup, as in
a task. Hosts point at a closed port where a call would be made by mistake: a test that expects a
local refusal fails loudly if the hook tried the network first.
"""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest
from connect_provider import CONNECT_API_BASE_URL
from connect_provider.exceptions import (
    ConnectAPIError,
    ConnectAuthError,
    ConnectNotFoundError,
    ConnectRateLimitError,
    ConnectTransportError,
    ConnectValidationError,
)
from connect_provider.hooks.connect import DEFAULT_TIMEOUT, ConnectHook, parse_content_range
from connect_provider.hooks.retry import (
    BACKOFF_BASE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_WAIT,
    RetryPolicy,
    parse_retry_after,
)
from hypothesis import given
from hypothesis import strategies as st

CONN_ID = "connect_settings_test"
SECRET = "settings-test-secret-0123456789"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch):
    """Define the test connection: ``connection(host=..., password=..., extra={...})``."""

    def _define(**fields) -> None:
        body = {"conn_type": "cloudblue_connect", "password": f"ApiKey SU-123-456-789:{SECRET}"}
        body.update(fields)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(body))

    return _define


def test_the_hook_declares_the_connect_connection_type() -> None:
    assert ConnectHook.conn_name_attr == "connect_conn_id"
    assert ConnectHook.default_conn_name == "cloudblue_connect_default"
    assert ConnectHook.conn_type == "cloudblue_connect"
    assert ConnectHook.hook_name == "CloudBlue Connect"
    # The form is declared only in get_provider_info() (Airflow 3.2+): the deprecated hook methods
    # would make ProvidersManager warn and are not defined here.
    assert "get_ui_field_behaviour" not in ConnectHook.__dict__
    assert "get_connection_form_widgets" not in ConnectHook.__dict__


@pytest.mark.parametrize("password", [f"ApiKey SU-123-456-789:{SECRET}", f"SU-123-456-789:{SECRET}"])
def test_the_api_key_is_sent_as_apikey_with_or_without_the_prefix(connection, password: str) -> None:
    connection(host="http://127.0.0.1:9/public/v1", password=password)
    session = ConnectHook(CONN_ID).get_conn()
    assert session.headers["Authorization"] == f"ApiKey SU-123-456-789:{SECRET}"
    assert session.auth is None


def test_a_connection_without_a_key_is_refused_before_any_call(connection) -> None:
    connection(host=f"http://127.0.0.1:{closed_port()}", password="")
    with pytest.raises(ConnectValidationError) as caught:
        ConnectHook(CONN_ID).get("/requests")
    assert caught.value.field == "password"
    assert CONN_ID in str(caught.value)


def test_the_host_defaults_to_the_public_api(connection) -> None:
    connection()
    assert ConnectHook(CONN_ID).settings.base_url == CONNECT_API_BASE_URL


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("api.connect.cloudblue.com", None, "https://api.connect.cloudblue.com/public/v1"),
        ("http://127.0.0.1:8765", None, "http://127.0.0.1:8765/public/v1"),
        ("http://127.0.0.1/public/v1/", 8765, "http://127.0.0.1:8765/public/v1"),
        ("https://example.test/custom/base", None, "https://example.test/custom/base"),
    ],
)
def test_the_base_url_is_built_from_host_and_port(
    connection, host: str, port: int | None, expected: str
) -> None:
    fields = {"host": host}
    if port:
        fields["port"] = port
    connection(**fields)
    assert ConnectHook(CONN_ID).settings.base_url == expected


def test_settings_have_documented_defaults_and_tls_is_verified(connection) -> None:
    connection(host="http://127.0.0.1:9")
    hook = ConnectHook(CONN_ID)
    settings = hook.settings
    assert (settings.timeout, settings.max_retries, settings.max_wait, settings.page_size) == (
        DEFAULT_TIMEOUT,
        DEFAULT_MAX_RETRIES,
        DEFAULT_MAX_WAIT,
        None,
    )
    assert settings.verify_ssl is True
    assert hook.get_conn().verify is True


def test_extras_are_read_and_never_sent_as_headers(connection) -> None:
    connection(
        host="http://127.0.0.1:9",
        extra={
            "page_size": "250",
            "timeout": 5,
            "max_retries": 2,
            "max_wait": "1.5",
            "verify_ssl": "false",
            "X-Correlation-Id": "kept",
        },
    )
    hook = ConnectHook(CONN_ID)
    session = hook.get_conn()
    settings = hook.settings
    assert (settings.page_size, settings.timeout, settings.max_retries, settings.max_wait) == (
        250,
        5.0,
        2,
        1.5,
    )
    assert settings.verify_ssl is False
    assert session.verify is False
    lowered = {k.lower() for k in session.headers}
    assert not lowered & {"page_size", "timeout", "max_retries", "max_wait", "verify_ssl"}
    # Other extras keep the HTTP provider's meaning: extra headers.
    assert session.headers["X-Correlation-Id"] == "kept"


def test_one_session_is_kept_per_hook(connection) -> None:
    connection(host="http://127.0.0.1:9")
    hook = ConnectHook(CONN_ID)
    assert hook.get_conn() is hook.get_conn()


def test_constructor_arguments_override_the_connection(connection) -> None:
    connection(
        host="http://127.0.0.1:9", extra={"page_size": 10, "timeout": 5, "max_retries": 2, "max_wait": 9}
    )
    settings = ConnectHook(CONN_ID, page_size=3, timeout=1, max_retries=0, max_wait=0).settings
    assert (settings.page_size, settings.timeout, settings.max_retries, settings.max_wait) == (3, 1.0, 0, 0.0)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"page_size": "abc"}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 5000}, "page_size"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 2.5}, "max_retries"),
        ({"max_wait": -3}, "max_wait"),
        ({"verify_ssl": "maybe"}, "verify_ssl"),
    ],
)
def test_a_bad_extra_is_refused_naming_it_before_any_call(connection, extra: dict, field: str) -> None:
    connection(host=f"http://127.0.0.1:{closed_port()}", extra=extra)
    with pytest.raises(ConnectValidationError) as caught:
        ConnectHook(CONN_ID).get("/requests")
    assert caught.value.field == field
    assert f"the extra {field!r} of connection {CONN_ID!r}" in str(caught.value)


@pytest.mark.parametrize(
    "kwargs", [{"page_size": 0}, {"timeout": -1}, {"max_retries": 21}, {"max_wait": float("nan")}]
)
def test_bad_constructor_arguments_are_refused_at_once(kwargs: dict) -> None:
    with pytest.raises(ConnectValidationError) as caught:
        ConnectHook(CONN_ID, **kwargs)
    assert caught.value.field == next(iter(kwargs))


@pytest.mark.parametrize("path", ["https://evil.test/x", "/requests?limit=1", "", "   "])
def test_paths_must_be_relative_to_the_api_base(connection, path: str) -> None:
    connection(host=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ConnectValidationError) as caught:
        ConnectHook(CONN_ID).get(path)
    assert caught.value.field == "path"


@pytest.mark.parametrize("bad_id", ["", "../assets", "PR-1/approve", None, "PR 1"])
def test_ids_that_could_reach_another_path_are_refused(connection, bad_id) -> None:
    connection(host=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ConnectValidationError) as caught:
        ConnectHook(CONN_ID).get_request(bad_id)
    assert caught.value.field == "request_id"


def test_local_checks_of_domain_calls_come_before_any_call(connection) -> None:
    connection(host=f"http://127.0.0.1:{closed_port()}")
    hook = ConnectHook(CONN_ID)
    with pytest.raises(ConnectValidationError):
        hook.find_assets()
    with pytest.raises(ConnectValidationError):
        hook.create_request({"asset": {}})
    with pytest.raises(ConnectValidationError):
        hook.fail_request("PR-1", "  ")
    with pytest.raises(ConnectValidationError):
        hook.find_marketplace("")


def test_an_unreachable_host_is_a_transport_error_naming_the_connection(connection) -> None:
    connection(host=f"http://127.0.0.1:{closed_port()}", extra={"max_retries": 1, "max_wait": 0})
    with pytest.raises(ConnectTransportError) as caught:
        ConnectHook(CONN_ID).get("/requests")
    message = str(caught.value)
    assert message.startswith("GET /requests: could not reach Connect")
    assert "after 2 attempt(s)" in message and CONN_ID in message
    assert (caught.value.method, caught.value.path) == ("GET", "/requests")


def test_a_write_that_never_left_is_retried_and_not_ambiguous(connection) -> None:
    # Connection refused means nothing was sent: safe to retry, and the error says unreachable.
    connection(host=f"http://127.0.0.1:{closed_port()}", extra={"max_retries": 2, "max_wait": 0})
    with pytest.raises(ConnectTransportError) as caught:
        ConnectHook(CONN_ID).post("/requests", {"type": "purchase"})
    assert "after 3 attempt(s)" in str(caught.value)


def test_test_connection_reports_what_is_wrong_without_raising(connection) -> None:
    connection(host=f"http://127.0.0.1:{closed_port()}")  # default retries: the test still tries once
    ok, message = ConnectHook(CONN_ID).test_connection()
    assert ok is False
    assert message.startswith("GET /marketplaces: could not reach Connect")
    assert "after 1 attempt(s)" in message
    connection(host="http://127.0.0.1:9", extra={"page_size": "many"})
    ok, message = ConnectHook(CONN_ID).test_connection()
    assert ok is False and "page_size" in message


@pytest.mark.parametrize(
    ("status", "cls", "start"),
    [
        (401, ConnectAuthError, "401 on GET /x: the API key of connection"),
        (403, ConnectAuthError, "403 on GET /x: the API key of connection"),
        (404, ConnectNotFoundError, "404 on GET /x: not found"),
        (400, ConnectAPIError, "400 on GET /x: Connect refused the call: VAL_001 - bad"),
        (429, ConnectRateLimitError, "429 on GET /x: Connect still rate-limited the call after 3 attempts"),
        (503, ConnectAPIError, "503 on GET /x: Connect failed 3 time(s)"),
    ],
)
def test_each_status_maps_to_its_exception_with_connects_details(status, cls, start) -> None:
    body = json.dumps({"error_code": "VAL_001", "errors": ["bad"]}).encode()
    error = ConnectHook(CONN_ID)._status_error(status, body, "GET", "/x", 3)
    assert type(error) is cls
    assert str(error).startswith(start)
    assert (error.status, error.error_code, error.errors, error.method, error.path) == (
        status,
        "VAL_001",
        ["bad"],
        "GET",
        "/x",
    )


def test_content_range_is_parsed_or_rejected() -> None:
    assert parse_content_range("items 0-99/1234") == (0, 99, 1234)
    assert parse_content_range("items 0-0/0") == (0, 0, 0)
    assert parse_content_range(None) is None
    assert parse_content_range("bytes 0-99/1234") is None
    assert parse_content_range("items */10") is None


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sat, 28 Nov 2026 11:59:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


@given(retry=st.integers(min_value=1, max_value=40), cap=st.floats(min_value=0, max_value=120))
def test_backoff_is_full_jitter_under_the_exponential_ceiling_and_the_cap(retry: int, cap: float) -> None:
    delay = RetryPolicy(max_wait=cap).backoff(retry)
    assert 0.0 <= delay <= min(cap, BACKOFF_BASE * 2 ** (retry - 1))


def test_the_hook_repr_names_only_the_connection(connection) -> None:
    connection(host="http://127.0.0.1:9")
    hook = ConnectHook(CONN_ID)
    hook.get_conn()
    assert repr(hook) == f"ConnectHook(connect_conn_id={CONN_ID!r})"
    assert SECRET not in repr(hook.settings)
