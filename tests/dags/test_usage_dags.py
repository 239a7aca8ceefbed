"""The usage DAGs: parsed without side effects, then run end to end with ``dag.test()``.

One export run against the sandbox's demo usage files, then one load run; the first ``dag.test``
of a process costs about 11 s, so there are only these two.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from connect_project import usage_pipeline as pipeline
from connect_provider.config import API_POOL
from connect_provider.usage.manifest import read_all
from connect_provider.usage.writer import DatasetLayout

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = {"UF-2026-10-0000000001": 50, "UF-2026-10-0000000002": 20, "UF-2026-09-0000000004": 30}


@pytest.fixture(scope="module")
def usage_dags(airflow_db) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return {k: v for k, v in bag.dags.items() if k in ("connect_usage_to_parquet", "connect_usage_load")}


def test_the_export_dag_runs_on_usage_file_events_without_catchup_and_maps_exports_in_the_api_pool(
    usage_dags,
) -> None:
    from connect_project import events

    dag = usage_dags["connect_usage_to_parquet"]
    assert dag.catchup is False and dag.max_active_runs == 1
    # Was "@daily": it now runs on the watched Asset's events (CONNECT_USAGE_SCHEDULE=@daily keeps it).
    assert [a.name for a in dag.schedule] == ["connect_usage_files"]
    assert dag.schedule == [events.USAGE_FILES_ASSET]
    assert set(dag.params) == {"usage_file_id", "statuses", "destination", "max_bad_record_ratio"}
    assert dag.params["max_bad_record_ratio"] == 0.01
    assert dag.params["usage_file_id"] is None
    export = dag.get_task("export_usage_file")
    assert export.pool == API_POOL and dag.get_task("plan").pool == API_POOL
    # One slot of the API pool per record page fetched side by side.
    assert export.partial_kwargs["concurrency"] == export.partial_kwargs["pool_slots"] == 4
    assert [o.name for o in dag.get_task("publish_dataset").outlets] == ["connect_usage_records"]


def test_the_load_dag_is_scheduled_on_the_usage_records_asset(usage_dags) -> None:
    dag = usage_dags["connect_usage_load"]
    assert [a.name for a in dag.schedule] == ["connect_usage_records"]
    assert dag.schedule == [pipeline.USAGE_RECORDS_ASSET]


def test_an_export_run_then_a_load_run_put_the_demo_usage_in_duckdb(
    usage_dags, sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "usage_records"
    database = tmp_path / "usage.duckdb"
    monkeypatch.setenv("AIRFLOW_VAR_CONNECT_USAGE_DESTINATION", str(dest))
    monkeypatch.setenv("AIRFLOW_VAR_CONNECT_USAGE_DUCKDB_PATH", str(database))

    run = usage_dags["connect_usage_to_parquet"].test()
    states = {f"{ti.task_id}[{ti.map_index}]": ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert sorted(k for k in states if k.startswith("export_usage_file")) == [
        "export_usage_file[0]",
        "export_usage_file[1]",
        "export_usage_file[2]",
    ]
    entries = {e.usage_file_id: e.rows for e in read_all(DatasetLayout(dest))}
    assert entries == EXPORTED  # the draft file is not in the exported statuses

    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        event = session.query(AssetEvent).filter(AssetEvent.source_run_id == run.run_id).one()
        assert event.extra["files"] == sorted(EXPORTED) and event.extra["rows"] == 100
        assert event.extra["destination"] == str(dest)

    # Nothing changed since: the next run would export nothing.
    from connect_provider.hooks.connect import ConnectHook

    assert pipeline.plan_exports(ConnectHook(), destination=str(dest)) == []
    again = usage_dags["connect_usage_to_parquet"].test()
    again_states = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert again.state == "success", again_states
    assert again_states["publish_dataset"] == "skipped"  # nothing exported: no dataset event
    with create_session() as session:
        assert session.query(AssetEvent).filter(AssetEvent.source_run_id == again.run_id).count() == 0

    load = usage_dags["connect_usage_load"].test()
    assert load.state == "success"
    con = duckdb.connect(str(database))
    try:
        rows = con.execute(
            "SELECT usage_file_id, count(*) FROM usage_records GROUP BY 1 ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert dict(rows) == EXPORTED
