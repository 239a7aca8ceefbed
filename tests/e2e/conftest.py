"""Fixtures of the end-to-end DAG runs: the changes DAGs parsed once, and outbox databases.

The first ``dag.test()`` of a process costs about 11 s: every test here shares the session's
migrated metadata DB (``airflow_db``) and the DAG objects parsed once per session.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from connect_provider.outbox import TABLE, Outbox

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dags(airflow_db) -> dict:
    """Every DAG of dags/, parsed once, with a 1 s follow poke so runs finish quickly."""
    from airflow.dag_processing.dagbag import DagBag

    previous = os.environ.get("CONNECT_CHANGES_FOLLOW_POKE_SECONDS")
    os.environ["CONNECT_CHANGES_FOLLOW_POKE_SECONDS"] = "1"
    try:
        bag = DagBag(dag_folder=str(ROOT / "dags"))
    finally:
        if previous is None:
            os.environ.pop("CONNECT_CHANGES_FOLLOW_POKE_SECONDS", None)
        else:
            os.environ["CONNECT_CHANGES_FOLLOW_POKE_SECONDS"] = previous
    assert bag.import_errors == {}
    return bag.dags


@pytest.fixture(scope="session")
def pg_server(fresh_postgres_database) -> dict:
    """A fresh PostgreSQL database for this session's e2e tests."""
    return fresh_postgres_database("e2e")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def changes_db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """An empty outbox table, with ``AIRFLOW_CONN_CONNECT_CHANGES_DB`` pointing at it.

    Yields a factory of :class:`Outbox` instances (one per thread) on that database.
    """
    if request.param == "sqlite":
        path = tmp_path / "changes.sqlite"
        conn = {"conn_type": "sqlite", "host": str(path)}

        def make() -> Outbox:
            return Outbox.sqlite(path)
    else:
        pg = request.getfixturevalue("pg_server")
        conn = json.loads(pg.airflow_conn_json())

        def make() -> Outbox:
            return Outbox.postgres(**pg)

    monkeypatch.setenv("AIRFLOW_CONN_CONNECT_CHANGES_DB", json.dumps(conn))
    opened: list[Outbox] = []

    def factory() -> Outbox:
        box = make()
        opened.append(box)
        return box

    setup = factory()
    setup.execute_script(f"DROP TABLE IF EXISTS {TABLE}")
    setup.create_schema()
    yield factory
    for box in opened:
        box.close()


OutboxFactory = Callable[[], Outbox]
