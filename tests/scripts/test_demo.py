"""`make demo` (scripts/demo.py): every DAG in dags/ runs once against the sandbox and succeeds.

The README promises that `make demo` works on a fresh machine; a DAG that needs input it does not
get there (the vendor DAG, which runs on events) must not turn that promise red unnoticed. The demo
runs here as `make demo` runs it, in its own process, with its own Airflow home and data folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_runs_every_dag_to_success(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CONNECT_"))}
    env |= {"AIRFLOW_HOME": str(tmp_path / "airflow_home"), "CONNECT_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = re.search(r"Demo finished: (\d+) of (\d+) DAG runs succeeded\.", done.stdout)
    assert done.returncode == 0 and summary, done.stdout[-4000:] + done.stderr[-4000:]
    runs = dict(re.findall(r"^== (\S+): (\w+) in ", done.stdout, re.MULTILINE))
    assert set(runs.values()) == {"success"}
    assert set(runs) >= {
        "connect_request_examples",
        "connect_request_action",
        "connect_subscription_changes",
        "connect_usage_to_parquet",
        "connect_usage_load",
        "connect_vendor_purchases",
    }
    assert (tmp_path / "data" / "usage.duckdb").exists()
