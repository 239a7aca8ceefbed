"""Event-driven scheduling in the stack ``make airflow`` runs: the real triggerer, scheduler, SQLite.

A usage file that appears in the sandbox (``POST /_sandbox/usage-files``) starts the export DAG
through the ``connect_usage_files`` watcher, with no one triggering it; one added while the
triggerer is stopped starts it once the triggerer is back (the watermark is in the watched
asset's state store, in the metadata DB). Both files end up in the Parquet dataset.

Uses the browser tests' ``stack`` fixture (started once for the session); no browser is driven.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DAG_ID = "connect_usage_to_parquet"
#: The watcher polls every 2 s in this stack; the rest is the scheduler and a LocalExecutor task.
WITHIN = 120.0
PERIOD = {
    "product_id": "PRD-276-377-545",
    "status": "ready",
    "period_from": "2026-11-01",
    "period_to": "2026-11-30",
}


def wait_until(what: str, probe: Any, timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def runs(stack: Any) -> list[dict]:
    return stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]


def asset_run_after(stack: Any, known: set[str]) -> dict:
    """The first asset-triggered run not in ``known``, once it has finished."""
    new = wait_until(
        "an asset-triggered export run",
        lambda: [
            r for r in runs(stack) if r["dag_run_id"] not in known and r["run_type"] == "asset_triggered"
        ],
        WITHIN,
    )
    run_id = new[0]["dag_run_id"]
    return wait_until(
        f"{run_id} finished",
        lambda: next(
            (r for r in runs(stack) if r["dag_run_id"] == run_id and r["state"] in ("success", "failed")),
            None,
        ),
        240,
        2,
    )


def test_usage_files_start_the_export_dag_through_the_triggerer_and_a_restart_loses_none(stack) -> None:
    stack.wait_for_dag(DAG_ID)
    polls = lambda: stack.sandbox.stats()["calls_by_route"].get("GET /usage/files", 0)  # noqa: E731
    stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    before = polls()
    # Unpaused, the DAG's watcher is registered at the next parse and starts polling.
    wait_until("the usage-file watcher polling", lambda: polls() >= before + 3, 120)
    known = {r["dag_run_id"] for r in runs(stack)}

    first = stack.sandbox.add_usage_file(25, **PERIOD)
    started = time.monotonic()
    run_a = asset_run_after(stack, known)
    assert run_a["state"] == "success", run_a
    print(f"{run_a['dag_run_id']} for {first['id']}: {time.monotonic() - started:.0f}s to finish")
    known |= {r["dag_run_id"] for r in runs(stack)}

    stack.restart("triggerer")  # stopped, then started again: the new file is added meanwhile below
    second = stack.sandbox.add_usage_file(15, **PERIOD)
    run_b = asset_run_after(stack, known)
    assert run_b["state"] == "success", run_b

    import pyarrow.parquet as pq

    root = stack.settings.data_dir / "usage_records"
    for usage_file, count in ((first, 25), (second, 15)):
        (path,) = [
            p for p in root.rglob(f"usage_file_id={usage_file['id']}.parquet") if "_" not in p.parts[-4][:1]
        ]
        assert pq.read_metadata(path).num_rows == count
