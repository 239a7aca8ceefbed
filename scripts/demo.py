"""`make demo`: the project's main job on the embedded defaults.

Starts the Connect sandbox, runs every DAG in ``dags/`` once against it (SQLite metadata DB under
the git-ignored ``airflow_home/``, the local data folder ``data/``), prints a short summary of what
each run did, and stops what it started. Each demo starts from a clean slate (a fresh metadata DB,
fresh demo data) so it can be run again and again with the same outcome. Airflow's own task logs go
to ``airflow_home/demo.log``; the terminal shows only the summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connect_sandbox.testing import SandboxStartError, start_sandbox

ROOT = Path(__file__).resolve().parent.parent
# The DAGs' glue (dags/connect_project) is importable as Airflow makes it: the DAG folder on sys.path.
sys.path.append(str(ROOT / "dags"))
AIRFLOW_HOME = Path(os.environ.get("AIRFLOW_HOME") or ROOT / "airflow_home")
DATA_DIR = Path(os.environ.get("CONNECT_DATA_DIR") or ROOT / "data")

# DAGs that feed others run first; any DAG not listed runs afterwards, in name order.
ORDER = [
    "connect_request_examples",
    "connect_request_action",
    "connect_subscription_changes",
    "connect_usage_to_parquet",
    "connect_usage_load",
]


def _configure_environment(sandbox_conn: str) -> None:
    """Fix Airflow's configuration before Airflow is imported (it reads it once, at import)."""
    os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
    os.environ["CONNECT_DATA_DIR"] = str(DATA_DIR)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
    # Never the project's plugins/: Airflow would import plugins/connect_provider/operators/requests.py
    # as a top-level module called "requests".
    os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(AIRFLOW_HOME / "plugins")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__PARALLELISM"] = "4"
    os.environ["AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT"] = sandbox_conn


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (Airflow's task logs) to a file for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main() -> int:
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    DATA_DIR.mkdir(parents=True)
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    log_path = AIRFLOW_HOME / "demo.log"
    log_path.write_text("")
    sandbox_log = AIRFLOW_HOME / "sandbox.log"
    sandbox_log.write_text("")
    print(f"Airflow home: {AIRFLOW_HOME}\nData folder:  {DATA_DIR}\nFull log:     {log_path}\n")

    try:
        sandbox = start_sandbox("--seed", "demo", "--auto-approve-delay", "1", log_path=sandbox_log)
    except SandboxStartError as exc:
        raise SystemExit(f"make demo: the Connect sandbox did not start: {exc}") from None
    with sandbox:  # stopped however the demo ends
        _configure_environment(sandbox.conn_json())
        print(f"Connect sandbox: {sandbox.api_url}")
        with _output_to(log_path):
            from airflow.dag_processing.dagbag import BundleDagBag
            from airflow.utils import db

            db.resetdb()
            _prepare_demo_data()
            bag = BundleDagBag(dag_folder=str(ROOT / "dags"), bundle_path=ROOT / "dags")
        if bag.import_errors:
            for path, err in bag.import_errors.items():
                print(f"IMPORT ERROR {path}: {err}")
            return 1
        dag_ids = sorted(bag.dag_ids, key=lambda d: (ORDER.index(d) if d in ORDER else len(ORDER), d))
        failed = 0
        for dag_id in dag_ids:
            started = time.monotonic()
            with _output_to(log_path):
                run = bag.get_dag(dag_id).test(run_conf=_run_conf(dag_id))
            elapsed = time.monotonic() - started
            print(f"\n== {dag_id}: {run.state} in {elapsed:.1f}s")
            failed += run.state != "success"
            with _output_to(log_path):  # the summary's own look-ups log too
                lines = _task_summary(run.dag_id, run.run_id) + _dag_specific_summary(dag_id)
            for line in lines:
                print(f"   {line}")
    print(f"\nDemo finished: {len(dag_ids) - failed} of {len(dag_ids)} DAG runs succeeded.")
    return 1 if failed else 0


def _run_conf(dag_id: str) -> dict[str, Any] | None:
    """What a DAG that needs input gets in its demo run (the others run on their defaults).

    The vendor DAG runs on events from the triggerer, which ``dag.test()`` does not run; its manual
    run decides the requests it names, so the demo names what a vendor would see: the purchases
    still pending (the seeded ones the demo vendor leaves to a DAG).
    """
    if dag_id != "connect_vendor_purchases":
        return None
    from connect_provider.hooks.connect import ConnectHook
    from connect_provider.rql import R

    pending = ConnectHook().list_requests(R().n("type").eq("purchase") & R().n("status").eq("pending"))
    return {"request_ids": [r["id"] for r in pending]}


def _prepare_demo_data() -> None:
    """The outbox of the target application, with demo rows, and the API pool."""
    from airflow.models.pool import Pool
    from connect_project.demo import seed_demo_changes
    from connect_provider.config import API_POOL
    from connect_provider.outbox import Outbox

    Pool.create_or_update_pool(
        API_POOL, slots=4, description="Bounds concurrent calls to Connect", include_deferred=False
    )
    with Outbox.from_airflow() as outbox:
        seed_demo_changes(outbox)


def _task_summary(dag_id: str, run_id: str) -> list[str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    lines = []
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id).all()
        xcoms = {
            (x.task_id, x.map_index): x.value
            for x in session.query(XComModel).filter_by(dag_id=dag_id, run_id=run_id, key="return_value")
        }
        for ti in sorted(tis, key=lambda t: (t.start_date or t.end_date or 0, t.task_id, t.map_index)):
            label = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            value = xcoms.get((ti.task_id, ti.map_index))
            lines.append(f"{label:<40} {ti.state!s:<10} {_short(value) if value is not None else ''}")
    return lines


def _dag_specific_summary(dag_id: str) -> list[str]:
    if dag_id == "connect_subscription_changes":
        from connect_provider.outbox import Outbox

        with Outbox.from_airflow() as outbox:
            rows = outbox.all()
        out = [f"{'change':<7} {'type':<9} {'asset':<22} {'status':<10} request / reason"]
        for row in rows:
            detail = " ".join(part for part in (row.connect_request_id, row.error) if part)
            payload = row.payload if isinstance(row.payload, dict) else {}
            asset = row.asset_external_id or payload.get("asset_id") or "-"
            out.append(
                f"{row.id:<7} {row.change_type:<9} {asset:<22} {row.status:<10} "
                f"{_short(detail, 90)}"
            )
        return out
    if dag_id == "connect_usage_load":
        import duckdb

        db_path = DATA_DIR / "usage.duckdb"
        if not db_path.exists():
            return ["(no DuckDB file was written)"]
        con = duckdb.connect(str(db_path), read_only=True)
        try:
            result = con.execute(
                "SELECT usage_file_id, count(*) AS records, sum(usage) AS usage, sum(amount) AS amount "
                "FROM usage_records GROUP BY 1 ORDER BY 1"
            ).fetchall()
        finally:
            con.close()
        return ["sample query: SELECT usage_file_id, count(*), sum(usage), sum(amount) ... GROUP BY 1"] + [
            f"{r[0]:<24} {r[1]:>6} records  usage={r[2]}  amount={r[3]}" for r in result
        ]
    return []


if __name__ == "__main__":
    sys.exit(main())
