"""A badly filled connection gets an error naming the field and the fix, before any call if it can.

Each case is what a user types into the connection form. The local server records every call it
receives, so "refused before any call" is checked by the server itself, not assumed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from connect_provider.exceptions import (
    ConnectError,
    ConnectNotFoundError,
    ConnectTransportError,
    ConnectValidationError,
)
from connect_provider.hooks.connect import ConnectHook
from local_http import LocalServer, QuietHandler, closed_port

CONN_ID = "connect_messages_test"
KEY = "ApiKey SU-123-456-789:messages-test-secret-4b1d"
API_BASE = "https://api.connect.cloudblue.com/public/v1"

Answer = tuple[int, str, bytes]


class AnsweringServer(LocalServer):
    """A plain-HTTP server on 127.0.0.1 answering every call with ``answer(path)``, recording it."""

    def __init__(self, answer: Callable[[str], Answer]) -> None:
        self.calls: list[str] = []
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                owner.calls.append(self.path)
                status, ctype, body = answer(self.path)
                self.reply(status, body, ctype)

        super().__init__(Handler)


def _html_404(_path: str) -> Answer:
    return 404, "text/html", b"<html><body><h1>Not Found</h1></body></html>"


def _connect_404(_path: str) -> Answer:
    return 404, "application/json", b'{"error_code": "NFND_001", "errors": ["Not Found"]}'


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[str], Answer]], AnsweringServer]]:
    started: list[AnsweringServer] = []

    def _serve(answer: Callable[[str], Answer]) -> AnsweringServer:
        server = AnsweringServer(answer).start()
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.close()


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def _define(**fields: object) -> None:
        body = {"conn_type": "cloudblue_connect", "password": KEY, "extra": {"max_wait": 0}}
        body.update(fields)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(body))

    return _define


class TestHostWithoutScheme:
    """A host without ``https://`` (or ``http://``) is read as https; the errors say to add the scheme."""

    def test_a_plain_http_server_behind_a_bare_host_says_to_add_the_scheme_not_to_turn_off_tls(
        self, connection, serve
    ) -> None:
        server = serve(_html_404)
        connection(host=f"{server.netloc}/public/v1")
        with pytest.raises(ConnectTransportError) as caught:
            ConnectHook(CONN_ID).get_request("PR-1")
        message = str(caught.value)
        assert "has no scheme" in message and "add https://" in message and "http://" in message
        assert "verify_ssl" not in message
        assert caught.value.retryable is False  # the same host fails the same way: no retry storm

    def test_turning_off_tls_verification_would_not_have_helped(self, connection, serve) -> None:
        server = serve(_html_404)
        connection(host=f"{server.netloc}/public/v1", extra={"max_wait": 0, "verify_ssl": False})
        ok, message = ConnectHook(CONN_ID).test_connection()
        assert ok is False
        assert "does not speak TLS" in message and "add https://" in message

    def test_an_explicit_https_to_a_plain_http_server_says_to_write_http(self, connection, serve) -> None:
        server = serve(_html_404)
        connection(host=f"https://{server.netloc}/public/v1")
        ok, message = ConnectHook(CONN_ID).test_connection()
        assert ok is False
        assert "does not speak TLS" in message and "write http://" in message
        assert "verify_ssl" not in message

    def test_an_unreachable_bare_host_says_https_was_assumed(self, connection) -> None:
        connection(host=f"127.0.0.1:{closed_port()}/public/v1")
        ok, message = ConnectHook(CONN_ID).test_connection()
        assert ok is False
        assert message.startswith("GET /marketplaces: could not reach Connect at https://127.0.0.1:")
        assert "no scheme, so https was assumed" in message and "add https://" in message


class TestHostThatIsNotTheApiBase:
    """A server that is not Connect's API (a web page, a wrong path) is named as the host's fault."""

    @pytest.mark.parametrize("answer", [_html_404, _connect_404], ids=["html-page", "connect-shaped-404"])
    def test_test_connection_says_the_host_must_be_the_api_base_url(self, connection, serve, answer) -> None:
        server = serve(answer)
        connection(host=f"http://{server.netloc}/wrong/base")
        ok, message = ConnectHook(CONN_ID).test_connection()
        assert ok is False
        assert message.startswith("404 on GET /marketplaces: ")
        assert f"http://{server.netloc}/wrong/base/marketplaces does not exist" in message
        assert f"set the host to the API base URL, e.g. {API_BASE}" in message
        assert server.calls == ["/wrong/base/marketplaces?limit=0"]

    def test_a_404_on_the_collection_of_a_missing_object_blames_the_id(self, connection, serve) -> None:
        server = serve(_connect_404)
        connection(host=f"http://{server.netloc}/public/v1")
        with pytest.raises(ConnectNotFoundError) as caught:
            ConnectHook(CONN_ID).find_connection("PRD-999-999-999", "HB-0000-0001")
        assert str(caught.value).startswith(
            "404 on GET /products/PRD-999-999-999/connections: not found (NFND_001 - Not Found); "
            "check the id or path"
        )

    def test_an_html_404_on_a_first_object_read_names_the_host(self, connection, serve) -> None:
        server = serve(_html_404)
        connection(host=f"http://{server.netloc}")
        with pytest.raises(ConnectNotFoundError) as caught:
            ConnectHook(CONN_ID).get_request("PR-0000-0000-0004-001")
        assert "is not Connect's API base URL" in str(caught.value)
        assert f"e.g. {API_BASE}" in str(caught.value)

    def test_a_web_page_answered_with_200_names_the_host(self, connection, serve) -> None:
        server = serve(lambda _path: (200, "text/html", b"<html>Sign in</html>"))
        connection(host=f"http://{server.netloc}/public/v1")
        ok, message = ConnectHook(CONN_ID).test_connection()
        assert ok is False
        assert "not JSON; check that the host of the connection is the API base URL" in message
        assert f"e.g. {API_BASE}" in message


class TestCredentialsInTheHost:
    """``user:password@`` in the host is refused before any call and never printed."""

    @pytest.mark.parametrize(
        "host",
        [
            "https://alice:hunter2-pw@api.connect.cloudblue.com/public/v1",
            "alice:hunter2-pw@127.0.0.1:{port}/public/v1",
            "http://alice@127.0.0.1:{port}",
        ],
        ids=["user-and-password", "without-scheme", "user-only"],
    )
    def test_userinfo_in_the_host_is_refused_without_showing_it(
        self, connection, serve, hook_logs, host
    ) -> None:
        server = serve(_html_404)
        connection(host=host.format(port=server.port))
        with pytest.raises(ConnectValidationError) as caught:
            ConnectHook(CONN_ID).get("/requests")
        assert caught.value.field == "host"
        assert "user name or password" in str(caught.value)
        ok, message = ConnectHook(CONN_ID).test_connection()
        assert ok is False and "user name or password" in message
        shown = "\n".join([str(caught.value), repr(caught.value.args), message, *hook_logs()])
        assert "alice" not in shown and "hunter2" not in shown
        assert server.calls == []


class TestApiKeyInThePassword:
    """A key that cannot work is refused locally, naming the password, never showing it, not retried."""

    @pytest.mark.parametrize(
        ("password", "says"),
        [
            ("ApiKey ", "only the 'ApiKey' prefix"),
            ("apikey", "only the 'ApiKey' prefix"),
            ("  \t ", "has no API key"),
            ("ApiKey SU-123-456-789:abc\r\nX-Injected: 1", "line break (CR or LF)"),
            ("ApiKey SU-123-456-789:abc\ndef", "line break (CR or LF)"),
            ("ApiKey SU-123-456-789:abc\x00def", "NUL character"),
            ("ApiKey SU-123-456-789:abc\x7fdef", "control character"),
            ("ApiKey SU-123-456-789:ключ-secret", "outside Latin-1"),
            ("ApiKey SU-123-456-789:\u201csecret\u201d", "outside Latin-1"),
        ],
        ids=[
            "prefix-only",
            "prefix-only-no-space",
            "whitespace-only",
            "crlf",
            "lf",
            "nul",
            "del",
            "cyrillic",
            "typographic-quotes",
        ],
    )
    def test_a_key_that_cannot_be_sent_is_a_local_error_naming_the_password(
        self, connection, serve, password, says
    ) -> None:
        server = serve(_connect_404)
        connection(
            host=f"http://{server.netloc}/public/v1",
            password=password,
            extra={"max_wait": 0, "max_retries": 5},
        )
        with pytest.raises(ConnectValidationError) as caught:
            ConnectHook(CONN_ID).get_request("PR-1")
        error = caught.value
        assert error.field == "password" and says in str(error)
        assert CONN_ID in str(error) and error.retryable is False
        secret = password.strip().removeprefix("ApiKey").strip()
        assert not secret or secret not in str(error)
        assert server.calls == []  # refused before any call, so never retried either

    def test_test_connection_reports_the_bad_key_without_calling(self, connection, serve) -> None:
        server = serve(_connect_404)
        connection(host=f"http://{server.netloc}/public/v1", password="ApiKey ")
        ok, message = ConnectHook(CONN_ID).test_connection()
        assert (ok, message.startswith("password: ")) == (False, True)
        assert server.calls == []


class TestExtras:
    """The HTTP provider's extras are checked like the hook's own: a bad one is named before any call."""

    @pytest.mark.parametrize(
        ("extra", "field", "says"),
        [
            ({"Authorization": "Bearer x"}, "Authorization", "would replace the API key's header"),
            ({"X-Team": {"a": 1}}, "X-Team", "must be text, got dict"),
            ({"X-Team": "a\r\nb"}, "X-Team", "line break"),
            ({"proxies": ["http://p:3128"]}, "proxies", "must map schemes to proxy URLs"),
            ({"cert": 5}, "cert", "path of a client certificate"),
            ({"trust_env": "sometimes"}, "trust_env", "true or false"),
        ],
        ids=["authorization-header", "non-text-header", "header-line-break", "proxies", "cert", "trust-env"],
    )
    def test_a_bad_http_extra_is_refused_naming_it(self, connection, serve, extra, field, says) -> None:
        server = serve(_connect_404)
        connection(host=f"http://{server.netloc}/public/v1", extra=extra)
        with pytest.raises(ConnectValidationError) as caught:
            ConnectHook(CONN_ID).get("/requests")
        assert caught.value.field == field and says in str(caught.value)
        assert server.calls == []


def test_every_local_refusal_is_a_connect_error_that_is_not_retryable(connection) -> None:
    connection(host="https://u:p@example.test")
    with pytest.raises(ConnectError) as caught:
        ConnectHook(CONN_ID).count("/requests")
    assert isinstance(caught.value, ConnectValidationError) and caught.value.retryable is False
