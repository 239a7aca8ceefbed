"""Every DAG file imports cleanly, and without touching the network or a database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter so that the provider modules the DAG files import are imported there
# too, under the same guard: any connect() during the import of Airflow, the provider or a DAG file
# raises, and DagBag records it as an import error.
PROBE = r"""
import json, socket, sqlite3, sys

calls = []

def refuse(what):
    def blocked(*args, **kwargs):
        calls.append(what)
        raise RuntimeError(f"{what} at DAG import time")
    return blocked

socket.socket.connect = refuse("socket.connect")
socket.socket.connect_ex = refuse("socket.connect_ex")
socket.create_connection = refuse("socket.create_connection")
sqlite3.connect = refuse("sqlite3.connect")
try:
    import psycopg2
    psycopg2.connect = refuse("psycopg2.connect")
except ImportError:
    pass

from pathlib import Path

from airflow.dag_processing.dagbag import BundleDagBag

# As the DAG processor parses a bundle: the DAG folder on sys.path, so the DAG files import the
# project's glue beside them (dags/connect_project).
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1]))
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": sorted(bag.dag_ids), "calls": calls}))
"""


def _import_dags(folder: Path = ROOT / "dags") -> dict:
    env = {**os.environ, "CONNECT_CHANGES_SCHEDULE": "*/5 * * * *"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_dag_file_imports_without_errors_network_or_database() -> None:
    result = _import_dags()
    assert result["errors"] == {}
    assert result["calls"] == []
    assert {"connect_subscription_changes", "connect_request_action"} <= set(result["dags"])


def test_the_import_guard_catches_a_dag_file_that_opens_a_database(tmp_path: Path) -> None:
    (tmp_path / "greedy_dag.py").write_text(
        "import sqlite3\nfrom airflow.sdk import dag\nsqlite3.connect(':memory:')\n"
        "@dag(schedule=None)\ndef greedy():\n    pass\ngreedy()\n"
    )
    result = _import_dags(tmp_path)
    assert result["calls"] == ["sqlite3.connect"]
    assert "sqlite3.connect at DAG import time" in next(iter(result["errors"].values()))


def test_the_changes_dag_is_wired_as_documented(dags) -> None:
    dag = dags["connect_subscription_changes"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert [t.task_id for t in dag.topological_sort()] == ["claim", "split", "submit_chunk", "follow"]
    submit, follow = dag.task_dict["submit_chunk"], dag.task_dict["follow"]
    assert submit.pool == follow.pool == "cloudblue_connect_api"
    assert follow.mode == "reschedule" and follow.trigger_rule == "none_failed"
    assert dag.timetable.expression == "*/5 * * * *"


def test_the_action_form_offers_the_five_actions_with_titled_fields(dags) -> None:
    params = dags["connect_request_action"].params
    action = params.get_param("action")
    assert action.schema["enum"] == ["purchase", "change", "suspend", "resume", "cancel"]
    assert action.schema["title"] == "Action" and action.description
    for name in (
        "asset_external_id",
        "asset_id",
        "hub_id",
        "marketplace",
        "item_id",
        "quantity",
        "tier1_email",
        "tier1_country",
        "customer_name",
    ):
        param = params.get_param(name)
        assert param.schema.get("title") and param.description, name


def test_each_chunk_takes_as_many_pool_slots_as_rows_it_submits_side_by_side(dags) -> None:
    submit = dags["connect_subscription_changes"].task_dict["submit_chunk"]
    assert submit.pool == "cloudblue_connect_api"
    assert submit.partial_kwargs["pool_slots"] == 4
    assert submit.partial_kwargs["op_kwargs"]["concurrency"] == 4
