"""One small local HTTP server for the tests that need answers the sandbox never gives.

Several tests stand up a plain-HTTP server on 127.0.0.1 of their own: a scripted Connect, a
recorder of what reached it, a fault proxy, a hostile server that echoes the API key. What differs
is how each one routes and answers; what is the same - a quiet handler, writing a reply, a free
port, a serving thread, shutting it all down - lives here once, so each test keeps only its own
behaviour. Registered as the module ``local_http`` by ``tests/conftest.py`` (test modules cannot
import their neighbours under importlib mode).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

HOST = "127.0.0.1"
API_PATH = "/public/v1"


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing (a test's output stays its own) and replies in one call."""

    def log_message(self, *args: object) -> None:
        """Silence the per-request line ``BaseHTTPRequestHandler`` writes to stderr."""

    def read_body(self) -> bytes:
        """The request body (``b""`` when there is none), read so the client's write completes."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(
        self,
        status: int,
        body: bytes,
        content_type: str | None = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send ``status``, ``Content-Type`` (none when ``content_type`` is None), ``Content-Length``,
        then ``headers`` in their order, and ``body``: the shape every local server answers in."""
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class LocalServer:
    """A ``ThreadingHTTPServer`` on 127.0.0.1 at a free port, served by a daemon thread.

    The port is bound at construction, so a URL can be handed out before :meth:`start`; serving
    polls for shutdown every 0.05 s so :meth:`close` is quick. Use it as a context manager, or call
    :meth:`start` and :meth:`close` (a fixture's set-up and tear-down). A test's own server class
    may subclass it, passing the handler class it builds.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer((HOST, 0), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def netloc(self) -> str:
        """``127.0.0.1:PORT``, for a test that writes the scheme (or leaves it out) itself."""
        return f"{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.netloc}"

    @property
    def api_url(self) -> str:
        """The base URL with Connect's API path, what a connection's host is set to."""
        return self.base_url + API_PATH

    def connection_json(self, password: str, **extra: object) -> str:
        """A Connect connection to this server (for ``AIRFLOW_CONN_...``), with these extras."""
        return json.dumps(
            {"conn_type": "cloudblue_connect", "host": self.api_url, "password": password, "extra": extra}
        )

    def start(self) -> Self:
        """Serve in a daemon thread (a test that hangs must not keep the run alive)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (only if started: ``shutdown`` would wait forever otherwise) and free the port."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(10)
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released), for a refused call."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]
