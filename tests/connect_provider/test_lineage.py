"""OpenLineage: what the usage export and the request operators tell the data platform.

The end-to-end test runs a DAG with ``dag.test()`` in a fresh process (Airflow loads the
OpenLineage listener at start-up, from its configuration) with OpenLineage's ``file`` transport,
against the sandbox, and reads the events the listener wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from connect_provider.lineage import connect_namespace, storage_dataset_id

pytest.importorskip("airflow.providers.openlineage")

DAG_FILE = textwrap.dedent(
    """
    import os
    from datetime import datetime, timezone
    from airflow.sdk import dag
    from connect_provider.operators.requests import ConnectApproveRequestOperator
    from connect_provider.operators.usage import ConnectUsageRecordsToParquetOperator

    @dag(dag_id="lineage_probe", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc))
    def lineage_probe():
        ConnectUsageRecordsToParquetOperator(
            task_id="export", usage_file_id="UF-2026-10-0000000001", destination=os.environ["PROBE_DEST"]
        )
        ConnectApproveRequestOperator(
            task_id="approve", request_id="PR-0000-0000-0004-001", template_id="TL-276-377-545-0001"
        )

    probe = lineage_probe()
    if __name__ == "__main__":
        from airflow.utils import db

        db.resetdb()
        print("STATE", probe.test().state)
    """
)


class TestNaming:
    @pytest.mark.parametrize(
        ("base_url", "namespace"),
        [
            ("https://api.connect.cloudblue.com/public/v1", "cloudblue-connect://api.connect.cloudblue.com"),
            (
                "https://api.connect.cloudblue.com:443/public/v1",
                "cloudblue-connect://api.connect.cloudblue.com",
            ),
            ("http://127.0.0.1:8765/public/v1", "cloudblue-connect://127.0.0.1:8765"),
        ],
        ids=["connect", "default-port-dropped", "sandbox-port-kept"],
    )
    def test_a_connect_object_is_named_after_the_connect_host(self, base_url, namespace):
        assert connect_namespace(base_url) == namespace

    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("/data/usage_records/x.parquet", ("file", "/data/usage_records/x.parquet")),
            ("file:///data/x.parquet", ("file", "/data/x.parquet")),
            ("s3://billing-lake/connect/x.parquet", ("s3://billing-lake", "connect/x.parquet")),
            ("s3://aws_conn@billing-lake/connect/x.parquet", ("s3://billing-lake", "connect/x.parquet")),
        ],
        ids=["local-path", "file-uri", "s3", "s3-with-connection"],
    )
    def test_a_file_is_named_by_openlineage_naming(self, path, expected):
        assert storage_dataset_id(path) == expected


@pytest.mark.slow
def test_a_dag_run_sends_the_usage_file_in_the_parquet_file_out_and_the_asset_acted_on(
    sandbox, tmp_path: Path
):
    dag_dir = tmp_path / "dags"
    dag_dir.mkdir()
    (dag_dir / "lineage_probe.py").write_text(DAG_FILE)
    events_file = tmp_path / "openlineage" / "events.jsonl"
    events_file.parent.mkdir()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dag_dir),
        "PROBE_DEST": str(tmp_path / "usage_records"),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "connect-tests",
    }
    done = subprocess.run(
        [sys.executable, str(dag_dir / "lineage_probe.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "STATE success" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    complete = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}
    connect = connect_namespace(sandbox.api_url)

    export = complete["lineage_probe.export"]
    assert [(d["namespace"], d["name"]) for d in export["inputs"]] == [
        (connect, "usage/files/UF-2026-10-0000000001")
    ]
    (parquet,) = export["outputs"]
    assert parquet["namespace"] == "file"
    partition = "product_id=PRD-276-377-545/period=2026-10"
    assert parquet["name"] == str(
        tmp_path / "usage_records" / partition / "usage_file_id=UF-2026-10-0000000001.parquet"
    )
    fields = {f["name"]: f["type"] for f in parquet["facets"]["schema"]["fields"]}
    assert fields["usage"] == "decimal128(38, 12)" and fields["id"] == "string"
    assert parquet["outputFacets"]["outputStatistics"]["rowCount"] == 50
    assert parquet["outputFacets"]["outputStatistics"]["size"] > 0

    approve = complete["lineage_probe.approve"]
    assert [(d["namespace"], d["name"]) for d in approve["outputs"]] == [
        (connect, "assets/AS-0000-0000-0004")
    ]
    assert sandbox.admin("GET", "stats")["calls"] > 0
    assert "sandbox-demo-key" not in events_file.read_text()  # the key never reaches lineage
