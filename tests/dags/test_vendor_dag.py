"""The vendor DAG: scheduled on the pending-purchases Asset; a manual run decides the requests named."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vendor_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "connect_vendor_purchases.py"))
    assert bag.import_errors == {}
    return bag.dags["connect_vendor_purchases"]


def test_the_vendor_dag_runs_on_new_pending_purchases(vendor_dag) -> None:
    from connect_project import events

    assert vendor_dag.schedule == [events.PENDING_PURCHASES_ASSET]
    assert vendor_dag.get_task("decide").pool == "cloudblue_connect_api"


def test_a_manual_run_decides_the_requests_it_names_and_fails_naming_the_one_it_could_not(
    vendor_dag, sandbox
) -> None:
    from connect_provider.hooks.connect import ConnectHook

    # Seeded, left pending by the demo vendor: PR-0000-0000-0004-001 (a small purchase).
    run = vendor_dag.test(run_conf={"request_ids": ["PR-0000-0000-0004-001", "PR-9999-9999-9999-001"]})
    assert run.state == "failed"
    assert ConnectHook().get_request("PR-0000-0000-0004-001")["status"] == "approved"  # quantity 7
