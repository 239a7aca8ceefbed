"""Fixtures of the outbox tests: outboxes on SQLite and PostgreSQL, the sandbox's instant vendor, and a
fault proxy in front of the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from connect_provider.outbox import TABLE, Outbox
from outbox_factory import FaultProxy


@pytest.fixture
def outbox(tmp_path: Path):
    box = Outbox.sqlite(tmp_path / "changes.sqlite")
    box.create_schema()
    yield box
    box.close()

@pytest.fixture
def instant_vendor(sandbox):
    """The sandbox's vendor decides a request on the first read after its creation."""
    sandbox.admin("POST", "reset", {"seed": "demo", "auto_approve_delay": 0})
    return sandbox

@pytest.fixture
def proxy(sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` before the sandbox, as the connection ``connect_via_proxy``."""
    made = FaultProxy(sandbox.url).start()
    monkeypatch.setenv("AIRFLOW_CONN_CONNECT_VIA_PROXY", made.conn_json(sandbox, timeout=60))
    yield made
    made.close()

@pytest.fixture(scope="module")
def pg_outbox_database(fresh_postgres_database) -> dict:
    return fresh_postgres_database("changes")

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outboxes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Outbox]]:
    """A factory of :class:`Outbox` instances (one per thread) on one fresh table, on each database."""
    if request.param == "sqlite":

        def make() -> Outbox:
            return Outbox.sqlite(tmp_path / "changes.sqlite")
    else:
        kwargs = request.getfixturevalue("pg_outbox_database")

        def make() -> Outbox:
            return Outbox.postgres(**kwargs)

    made: list[Outbox] = []

    def factory() -> Outbox:
        made.append(make())
        return made[-1]

    setup = factory()
    setup.execute_script(f"DROP TABLE IF EXISTS {TABLE}")
    setup.create_schema()
    yield factory
    for box in made:
        box.close()
