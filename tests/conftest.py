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
import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import structlog
from connect_sandbox.testing import Sandbox, running_sandbox
from structlog.testing import capture_logs

ROOT = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="connect-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow_home")
os.environ["CONNECT_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(_SESSION_DIR / "no_plugins"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__PARALLELISM", "4")



def _register_factory(name: str, path: Path) -> None:
    """Make a module of test builders importable as ``name`` from every test folder.

    Under ``--import-mode=importlib`` test modules cannot import their neighbours; the usage record
    builders serve the provider's usage tests and the project's load tests alike, the outbox
    builders the outbox's processing and follow tests, the purchase builders the trigger tests and
    the project's event tests, the local HTTP server the tests that need answers the sandbox never
    gives.
    """
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_register_factory("local_http", ROOT / "tests" / "local_http.py")  # before outbox_factory, which uses it
_register_factory("usage_factory", ROOT / "tests" / "connect_provider" / "usage" / "usage_factory.py")
_register_factory("outbox_factory", ROOT / "tests" / "connect_provider" / "outbox" / "outbox_factory.py")
_register_factory("purchase_factory", ROOT / "tests" / "connect_provider" / "purchase_factory.py")


@pytest.fixture
def log_events(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[tuple[list[dict], pytest.LogCaptureFixture]]:
    """Every log event of the test, DEBUG included, before any renderer or secret masker sees it.

    Airflow 3 hooks log through structlog, whose level filter sits in Airflow's logging module; the
    level is lowered to DEBUG for the test and the structlog events are captured in place of the
    processors (so a key formatted into a message is caught even where Airflow's masker would hide
    it in a task log); standard-library records (urllib3's) come from caplog, unformatted. Yields
    ``(structlog events, caplog)``; ``hook_logs`` and the security suite's ``raw_logs`` render them.
    """
    wrapper = structlog.get_config()["wrapper_class"]
    levels = getattr(sys.modules[wrapper.__module__], "PER_LOGGER_LEVELS", None)
    assert levels is not None, "Airflow's structlog level table moved; update this fixture"
    monkeypatch.setitem(levels, "", logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        yield events, caplog


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
            return started.enter_context(running_sandbox(*args, log_path=log, conn_extra=SANDBOX_CONN_EXTRA))

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


def _asks_for_distributed(config: pytest.Config) -> bool:
    """True when the run names the distributed test: ``-m distributed`` or a path into its folder."""
    if "distributed" in (config.getoption("markexpr") or ""):
        return True
    folder = ROOT / "tests" / "distributed"
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == folder or folder in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the distributed test out unless asked for, and run the browser tests last.

    The distributed test (``tests/distributed``, marker ``distributed``) starts a whole CeleryExecutor
    deployment for about 100 s and 2 GB: ``make distributed-test`` runs it, and ``make test`` (with
    any ``-m`` of its own) must not run it a second time, so it is deselected unless the run names
    it. Playwright's sync API leaves an asyncio event loop set on the main thread when it stops;
    tests that run ``asyncio.run`` afterwards would refuse to start. Keeping the browser tests at
    the end (stable order otherwise) makes the whole suite independent of that.
    """
    if not _asks_for_distributed(config):
        left_out = [item for item in items if item.get_closest_marker("distributed")]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if not item.get_closest_marker("distributed")]
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def unavailable() -> Callable[[str, object], NoReturn]:
    """``unavailable("Redis on 127.0.0.1:6379", exc)``: skip with the reason; under ``CI=true``, fail.

    A machine without a service is a reason to skip locally; CI provides every service, so there
    its absence is a failure and a test never goes quietly unrun.
    """

    def _unavailable(what: str, why: object) -> NoReturn:
        if _in_ci():
            pytest.fail(f"{what} is required under CI=true: {why}", pytrace=False)
        pytest.skip(f"{what} is not available (CI=true makes this a failure): {why}")

    return _unavailable


PG_SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


class PostgresDatabase(dict):
    """Keyword arguments of ``psycopg2.connect`` for one fresh database, plus its Airflow forms."""

    def sqlalchemy_url(self) -> str:
        """The database as Airflow's metadata DB (``[database] sql_alchemy_conn``) takes it."""
        return f"postgresql+psycopg2://{self['user']}@{self['host']}:{self['port']}/{self['dbname']}"

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
def fresh_postgres_database(unavailable: Callable[[str, object], NoReturn]) -> Iterator:
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
                unavailable("PostgreSQL on 127.0.0.1:5432", exc)
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
