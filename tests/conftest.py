"""Shared test set-up.

Airflow reads its configuration when first imported, so the environment is fixed here, at the top,
before any test module imports Airflow: a throw-away AIRFLOW_HOME, no example DAGs, and a data
folder per test session.

The ``sandbox`` fixture runs the Connect sandbox as a real server in a subprocess (the provider is
tested over real HTTP, never against mocks of itself) and points the default Connect connection at
it through ``AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="connect-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow_home")
os.environ["CONNECT_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(_SESSION_DIR / "no_plugins"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__PARALLELISM", "4")

SANDBOX_API_KEY = "ApiKey SU-000-000-000:sandbox-demo-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sandbox:
    """A running ``connect-sandbox`` process and the handles tests need."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/public/v1"
        self.api_key = SANDBOX_API_KEY
        self.log_path = log_path
        cmd = [sys.executable, "-m", "connect_sandbox.cli", "--host", "127.0.0.1", "--port", str(self.port)]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([*cmd, *args], stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandbox exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/_sandbox/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sandbox did not answer within {timeout}s; log: {self.log_path}")

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        """Call the sandbox's own admin API (``/_sandbox/...``; not part of Connect)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/_sandbox/{path.lstrip('/')}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else {}

    def reset(self) -> None:
        """Back to the deterministic demo seed, with faults off."""
        self.admin("POST", "reset")

    def set_faults(self, spec: str) -> None:
        self.admin("POST", "faults", {"spec": spec})

    def conn_uri_json(self, api_key: str | None = None) -> str:
        return json.dumps(
            {
                "conn_type": "cloudblue_connect",
                "host": self.api_url,
                "password": api_key or self.api_key,
                "extra": {"max_wait": 2, "timeout": 10},
            }
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="session")
def start_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory: ``start_sandbox("--usage-records", "1000")`` starts a sandbox with those CLI flags."""
    started: list[Sandbox] = []

    def _start(*args: str) -> Sandbox:
        log = tmp_path_factory.mktemp("sandbox") / "sandbox.log"
        sb = Sandbox(list(args), log)
        started.append(sb)
        return sb

    yield _start
    for sb in started:
        sb.stop()


@pytest.fixture(scope="session")
def _session_sandbox(start_sandbox) -> Sandbox:
    return start_sandbox("--seed", "demo", "--auto-approve-delay", "0.5")


@pytest.fixture
def sandbox(_session_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The shared sandbox, reset to the demo seed, with the default connection pointing at it."""
    _session_sandbox.reset()
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", _session_sandbox.conn_uri_json())
    return _session_sandbox


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated metadata DB (SQLite in the session's AIRFLOW_HOME), created once per session."""
    from airflow.utils import db

    db.resetdb()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the browser tests last.

    Playwright's sync API leaves an asyncio event loop set on the main thread when it stops; tests
    that run ``asyncio.run`` afterwards would refuse to start. Keeping the browser tests at the end
    (stable order otherwise) makes the whole suite independent of that.
    """
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


PG_SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


class PostgresDatabase(dict):
    """Keyword arguments of ``psycopg2.connect`` for one fresh database, plus its Airflow form."""

    def airflow_conn_json(self) -> str:
        return json.dumps(
            {
                "conn_type": "postgres",
                "host": self["host"],
                "port": self["port"],
                "login": self["user"],
                "schema": self["dbname"],
            }
        )


@pytest.fixture(scope="session")
def fresh_postgres_database() -> Iterator:
    """Factory: ``fresh_postgres_database("outbox")`` creates an empty database on the local server.

    Every database it made is dropped at the end of the session. Without a server the test is
    skipped with the reason, except under ``CI=true``, where PostgreSQL must be there and its absence
    is a failure.
    """
    psycopg2 = pytest.importorskip("psycopg2")
    made: list[str] = []
    admin = None

    def _create(purpose: str) -> PostgresDatabase:
        nonlocal admin
        if admin is None:
            try:
                admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG_SERVER)
            except psycopg2.OperationalError as exc:
                if os.environ.get("CI") == "true":
                    pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required in CI: {exc}")
                pytest.skip(f"no PostgreSQL server on 127.0.0.1:5432 (CI=true makes this a failure): {exc}")
            admin.autocommit = True
        name = f"connect_test_{os.getpid()}_{purpose}"
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return PostgresDatabase(PG_SERVER, dbname=name)

    yield _create
    if admin is not None:
        with admin.cursor() as cur:
            for name in made:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
