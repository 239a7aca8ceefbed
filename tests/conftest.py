"""Shared test set-up.

Airflow reads its configuration when first imported, so the environment is fixed here, at the top,
before any test module imports Airflow: a throw-away AIRFLOW_HOME, no example DAGs, and a data
folder per test session.

The ``sandbox`` fixture runs the Connect sandbox as a real server in a subprocess (the provider is
tested over real HTTP, never against mocks of itself) and points the default Connect connection at
it through ``AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT``. It is started by the project's one launcher,
:mod:`connect_sandbox.testing`, which the benchmarks and the scripts use too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from connect_sandbox.testing import Sandbox, running_sandbox

ROOT = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="connect-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow_home")
os.environ["CONNECT_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(_SESSION_DIR / "no_plugins"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__PARALLELISM", "4")

# Short retry waits and timeouts: a test of a fault must not wait out the production back-off.
SANDBOX_CONN_EXTRA = {"max_wait": 2, "timeout": 10}


@pytest.fixture(scope="session")
def start_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Sandbox]]:
    """Factory: ``start_sandbox("--usage-records", "1000")`` starts a sandbox with those CLI flags.

    Each one runs through :func:`connect_sandbox.testing.running_sandbox` (its own free port, its
    log in the session's temporary folder) and is stopped at the end of the session.
    """
    with contextlib.ExitStack() as started:

        def _start(*args: str) -> Sandbox:
            log = tmp_path_factory.mktemp("sandbox") / "sandbox.log"
            return started.enter_context(
                running_sandbox(*args, log_path=log, conn_extra=SANDBOX_CONN_EXTRA)
            )

        yield _start


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
