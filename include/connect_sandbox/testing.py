"""The one launcher of the sandbox, for the tests, the benchmarks and the scripts.

Every client of the sandbox needs the same thing: the server on a free port, answering before the
first call, its output in a log file, its admin API (``/_sandbox``) at hand, and stopped for sure
afterwards. This module is that, once::

    from connect_sandbox.testing import running_sandbox

    with running_sandbox("--seed", "demo", "--faults", "429=0.1,seed=7") as sandbox:
        hook_env = sandbox.conn_json()          # AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT
        sandbox.set_faults("")                  # admin calls: reset, set_faults, stats, ...

Why a subprocess: the server is started as ``python -m connect_sandbox.cli``, exactly as a user
runs ``connect-sandbox``, and is reached over HTTP only. The provider is therefore tested the way
it meets Connect, a server it shares no memory with; and a benchmark can measure the server's CPU
apart from the client's.

This module imports only the standard library (not FastAPI, not the server), so a test session or
a benchmark's parent process pays nothing for it. The provider never imports it (design rule 3):
only ``tests/``, ``bench/`` and ``scripts/`` do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ADMIN_PREFIX, API_PREFIX, DEMO_API_KEY

__all__ = [
    "DEMO_API_KEY",
    "HOST",
    "Sandbox",
    "SandboxStartError",
    "admin_call",
    "free_port",
    "running_sandbox",
    "start_sandbox",
]

HOST = "127.0.0.1"


class SandboxStartError(RuntimeError):
    """The sandbox exited or did not answer in time; the message holds its log's tail."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def admin_call(url: str, method: str, path: str, body: Any = None, *, timeout: float = 30.0) -> Any:
    """Call the admin API of the sandbox at ``url`` (``http://host:port``); the decoded JSON answer.

    For a process that knows only the server's address (a benchmark's child); with a
    :class:`Sandbox` at hand, use its methods. The admin API is never fault-injected and is not
    part of Connect. An HTTP error raises ``urllib.error.HTTPError``.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url: the sandbox's http:// address, got {url!r}")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{url}{ADMIN_PREFIX}/{path.lstrip('/')}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else {}


@dataclass
class Sandbox:
    """A running sandbox process started by :func:`start_sandbox`, and the handles its clients need."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)
    host: str = HOST
    api_key: str = DEMO_API_KEY
    #: Extras of the Airflow connection :meth:`conn_json` hands out (e.g. short retry waits in tests).
    conn_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Connect's API base on this server (what a connection's host is)."""
        return self.url + API_PREFIX

    @property
    def pid(self) -> int:
        return self.process.pid

    # -- admin API ---------------------------------------------------------------------------------
    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Call the sandbox's own admin API (``/_sandbox/<path>``); the decoded JSON answer."""
        return admin_call(self.url, method, path, body)

    def healthy(self) -> bool:
        """True when the server answers its health route now."""
        try:
            with urllib.request.urlopen(f"{self.url}{ADMIN_PREFIX}/health", timeout=1) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def reset(self, seed: str | None = None, auto_approve_delay: float | None = None) -> dict:
        """Back to a fresh seed (the one it started with unless named), with faults off."""
        body: dict[str, Any] = {}
        if seed is not None:
            body["seed"] = seed
        if auto_approve_delay is not None:
            body["auto_approve_delay"] = auto_approve_delay
        return self.admin("POST", "reset", body)

    def set_faults(self, spec: str) -> dict:
        """Inject faults from now on (``"429=0.1,drop=0.05,seed=7"``); ``""`` turns them off."""
        return self.admin("POST", "faults", {"spec": spec})

    def stats(self) -> dict:
        """The server's counters: requests created, faults injected, calls per route."""
        return self.admin("GET", "stats")

    def add_usage_file(self, records: int, **fields: Any) -> dict:
        """A new usage file with ``records`` generated records (``product_id``, ``status``, periods)."""
        return self.admin("POST", "usage-files", {"records": records, **fields})

    # -- clients -----------------------------------------------------------------------------------
    def conn_json(self, api_key: str | None = None, **extra: Any) -> str:
        """This server as an Airflow connection, in the JSON form of ``AIRFLOW_CONN_<ID>``.

        The extras are :attr:`conn_extra` updated with ``extra``; ``api_key`` replaces the demo key
        (to be refused, say).
        """
        conn: dict[str, Any] = {
            "conn_type": "cloudblue_connect",
            "host": self.api_url,
            "password": api_key or self.api_key,
        }
        extras = {**self.conn_extra, **extra}
        if extras:
            conn["extra"] = extras
        return json.dumps(conn)

    #: The name the test suite uses for :meth:`conn_json`.
    conn_uri_json = conn_json

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- life cycle --------------------------------------------------------------------------------
    def _wait_ready(self, timeout: float) -> None:
        """Wait for the health route; raise :class:`SandboxStartError` if the server exits or is late."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            code = self.process.poll()
            if code is not None:
                raise SandboxStartError(
                    f"the sandbox exited with code {code} (log {self.log_path}): {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise SandboxStartError(
                    f"the sandbox did not answer within {timeout:.0f} s (log {self.log_path}): "
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds; a no-op once stopped."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sandbox(
    *cli_args: str,
    host: str = HOST,
    port: int | None = None,
    timeout: float = 60.0,
    log_path: str | os.PathLike[str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    wrapper: Sequence[str] = (),
    new_session: bool = False,
    conn_extra: dict[str, Any] | None = None,
) -> Sandbox:
    """Start ``python -m connect_sandbox.cli --host H --port P *cli_args``; return once it answers.

    - ``port``: a free one when not given.
    - ``log_path``: the server's stdout and stderr (appended); else ``sandbox-<port>.log`` in
      ``log_dir``, else in a new temporary folder.
    - ``wrapper`` prefixes the command (e.g. ``["py-spy", "record", "-o", "out", "--"]``).
    - ``new_session``: a process group of its own, so a Ctrl-C in the terminal reaches only the
      caller, which then stops the server with everything else it started.
    - ``conn_extra``: the extras of :meth:`Sandbox.conn_json`.

    Raises :class:`SandboxStartError` (with the server's log) when it exits or does not answer within
    ``timeout`` seconds; it is stopped then.
    """
    port = port or free_port(host)
    if log_path is None:
        folder = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="connect-sandbox-"))
        log_path = folder / f"sandbox-{port}.log"
    log_path = Path(log_path)
    args = [*wrapper, sys.executable, "-m", "connect_sandbox.cli", "--host", host, "--port", str(port)]
    args += cli_args
    with open(log_path, "ab") as log:  # the child holds its own descriptor
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=new_session,
        )
    sandbox = Sandbox(process, port, log_path, args, host=host, conn_extra=dict(conn_extra or {}))
    try:
        sandbox._wait_ready(timeout)
    except BaseException:  # late, exited, or interrupted: never leave a server behind
        sandbox.stop()
        raise
    return sandbox


@contextlib.contextmanager
def running_sandbox(*cli_args: str, **kwargs: Any) -> Iterator[Sandbox]:
    """:func:`start_sandbox` as a context manager that always stops the server."""
    sandbox = start_sandbox(*cli_args, **kwargs)
    try:
        yield sandbox
    finally:
        sandbox.stop()
