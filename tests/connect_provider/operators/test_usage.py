"""The usage operators against the sandbox, called as a task calls them (``op.execute({})``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from connect_provider.exceptions import ConnectError, ConnectNotFoundError, ConnectValidationError
from connect_provider.operators.usage import (
    ConnectGetUsageRecordsOperator,
    ConnectUsageRecordsToParquetOperator,
)
from connect_provider.usage.manifest import read_entry
from connect_provider.usage.writer import DatasetLayout

READY_FILE = "UF-2026-10-0000000001"  # 50 records
EDGE_FILE = "UF-2026-09-0000000004"  # 30 records with edge values, product PRD-684-920-001
DRAFT_FILE = "UF-2026-11-0000000003"  # no records


def record_calls(sandbox) -> int:
    return sandbox.admin("GET", "stats")["calls_by_route"].get("GET /usage/records", 0)


def test_get_usage_records_returns_every_record_of_a_small_file(sandbox) -> None:
    records = ConnectGetUsageRecordsOperator(task_id="get", usage_file_id=READY_FILE).execute({})
    assert len(records) == 50 and len({r["id"] for r in records}) == 50
    assert all(r["usagefile"]["id"] == READY_FILE for r in records)


def test_get_usage_records_refuses_a_file_above_max_records_before_reading_any(sandbox) -> None:
    op = ConnectGetUsageRecordsOperator(task_id="get", usage_file_id=READY_FILE, max_records=10)
    with pytest.raises(
        ConnectError, match=r"50 records, more than max_records=10.*ConnectUsageRecordsToParquetOperator"
    ):
        op.execute({})
    assert record_calls(sandbox) == 1  # only the count (limit=0)


def test_parquet_export_of_the_edge_value_file_keeps_every_value_exact(sandbox, tmp_path: Path) -> None:
    dest = tmp_path / "usage"
    result = ConnectUsageRecordsToParquetOperator(
        task_id="export", usage_file_id=EDGE_FILE, destination=str(dest), page_size=7
    ).execute({})
    assert set(result) == {"path", "rows", "bytes", "usage_file_id", "quarantined"}
    assert (result["rows"], result["quarantined"], result["usage_file_id"]) == (30, 0, EDGE_FILE)
    assert result["path"].endswith(
        f"product_id=PRD-684-920-001/period=2026-09/usage_file_id={EDGE_FILE}.parquet"
    )
    table = pq.read_table(result["path"])
    by_id = {r["id"]: r for r in table.to_pylist()}
    first = by_id["UR-2026-09-0000000004-0000000"]
    assert first["usage"] == Decimal("123456789012.123456") and first["amount"] is None
    assert first["item_name"] == "Vault Térabyte — 保管庫 ☁"
    assert first["params"] == [{"name": "région", "value": "Zürich — 東京 ✓"}]
    assert by_id["UR-2026-09-0000000004-0000001"]["usage"] == Decimal("0.000001")
    assert by_id["UR-2026-09-0000000004-0000004"]["params"] == []
    assert read_entry(DatasetLayout(dest), EDGE_FILE).status == "closed"


def test_parquet_export_defaults_to_the_data_folder(
    sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECT_DATA_DIR", str(tmp_path / "data"))
    result = ConnectUsageRecordsToParquetOperator(task_id="export", usage_file_id=READY_FILE).execute({})
    assert result["path"].startswith(str(tmp_path / "data" / "usage_records" / "product_id=PRD-276-377-545"))
    assert pads.dataset(str(tmp_path / "data" / "usage_records"), partitioning="hive").count_rows() == 50


def test_parquet_export_of_an_empty_file_publishes_an_empty_file(sandbox, tmp_path: Path) -> None:
    result = ConnectUsageRecordsToParquetOperator(
        task_id="export", usage_file_id=DRAFT_FILE, destination=str(tmp_path)
    ).execute({})
    assert result["rows"] == 0 and pq.read_table(result["path"]).num_rows == 0


def test_parquet_export_of_an_unknown_file_fails_with_not_found(sandbox, tmp_path: Path) -> None:
    op = ConnectUsageRecordsToParquetOperator(
        task_id="export", usage_file_id="UF-2026-10-0000009999", destination=str(tmp_path)
    )
    with pytest.raises(ConnectNotFoundError):
        op.execute({})


def test_bad_operator_arguments_are_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(ConnectValidationError, match="on_bad_records"):
        ConnectUsageRecordsToParquetOperator(task_id="x", usage_file_id=READY_FILE, on_bad_records="skip")
    with pytest.raises(ConnectValidationError, match="page_size"):
        ConnectUsageRecordsToParquetOperator(task_id="x", usage_file_id=READY_FILE, page_size=5000)
    with pytest.raises(ConnectValidationError, match="max_records"):
        ConnectGetUsageRecordsOperator(task_id="x", usage_file_id=READY_FILE, max_records=-1)


def test_a_bad_usage_file_id_is_refused_before_any_call(tmp_path: Path) -> None:
    op = ConnectUsageRecordsToParquetOperator(task_id="x", usage_file_id="../UF-1", destination=str(tmp_path))
    with pytest.raises(ConnectValidationError, match="usage_file_id"):
        op.execute({})


def api_calls(sandbox) -> int:
    return sandbox.admin("GET", "stats")["calls"]


class TestTheDestinationIsCheckedBeforeAnyCall:
    @pytest.mark.parametrize(
        ("destination", "fix"),
        [
            ("foo://bucket/usage", r"Give a local folder, a file:// URI"),
            ("s3://billing-lake/usage", r"install apache-airflow-providers-amazon"),
            ("gs://billing-lake/usage", r"install apache-airflow-providers-google"),
            ("abfs://lake/usage", r"install apache-airflow-providers-microsoft-azure"),
            ("http://example.com/usage", r"a scheme whose Airflow provider is installed"),
        ],
        ids=["unknown-scheme", "s3-without-provider", "gs-without-provider", "abfs-without-provider", "http"],
    )
    def test_a_destination_without_a_filesystem_here_is_refused_naming_it_and_the_fix(
        self, sandbox, destination: str, fix: str
    ) -> None:
        op = ConnectUsageRecordsToParquetOperator(
            task_id="x", usage_file_id=READY_FILE, destination=destination
        )
        with pytest.raises(ConnectValidationError, match=rf"^destination: '{destination}'.*{fix}"):
            op.execute({})
        assert api_calls(sandbox) == 0

    def test_a_destination_that_is_an_existing_file_is_refused(self, sandbox, tmp_path: Path) -> None:
        existing = tmp_path / "usage.parquet"
        existing.write_bytes(b"PAR1")
        op = ConnectUsageRecordsToParquetOperator(
            task_id="x", usage_file_id=READY_FILE, destination=str(existing)
        )
        with pytest.raises(
            ConnectValidationError, match=r"^destination: .*is an existing file; give the folder"
        ):
            op.execute({})
        assert api_calls(sandbox) == 0
        assert existing.read_bytes() == b"PAR1"

    def test_the_export_dag_plan_refuses_it_before_listing_usage_files(self, sandbox) -> None:
        from connect_project import usage_pipeline as pipeline
        from connect_provider.hooks.connect import ConnectHook

        with pytest.raises(ConnectValidationError, match=r"^destination: 's3://lake/u'"):
            pipeline.plan_exports(ConnectHook(), destination="s3://lake/u")
        assert api_calls(sandbox) == 0


class TestMaxBadRecordRatioOfTheOperator:
    def test_it_is_a_templated_field_validated_once_rendered(self, sandbox, tmp_path: Path) -> None:
        op = ConnectUsageRecordsToParquetOperator(
            task_id="x",
            usage_file_id=READY_FILE,
            destination=str(tmp_path),
            max_bad_record_ratio="{{ params.max_bad_record_ratio }}",
        )
        assert "max_bad_record_ratio" in op.template_fields
        op.max_bad_record_ratio = "0.05"  # what rendering leaves
        assert op.execute({})["rows"] == 50
        op.max_bad_record_ratio = "5%"
        with pytest.raises(ConnectValidationError, match="max_bad_record_ratio"):
            op.execute({})

    @pytest.mark.parametrize("value", [2, -1, "x"], ids=["above-1", "negative", "text"])
    def test_a_bad_value_is_refused_when_the_dag_is_parsed(self, value: object) -> None:
        with pytest.raises(ConnectValidationError, match="max_bad_record_ratio"):
            ConnectUsageRecordsToParquetOperator(
                task_id="x", usage_file_id=READY_FILE, max_bad_record_ratio=value
            )

    def test_the_sandboxs_edge_file_exports_whole_in_the_real_shape(self, sandbox, tmp_path: Path) -> None:
        result = ConnectUsageRecordsToParquetOperator(
            task_id="x", usage_file_id=EDGE_FILE, destination=str(tmp_path), max_bad_record_ratio=0
        ).execute({})
        assert (result["rows"], result["quarantined"]) == (30, 0)
        table = pq.read_table(result["path"])
        assert set(table.column("extra").to_pylist()) == {None}
        first = table.slice(0, 1).to_pylist()[0]
        assert first["category"] == {
            "id": "backup_storage",
            "name": "Backup storage — 保管庫",
            "description": None,
        }
        assert first["asset_recon_id"] and first["external_billing_id"] == "INV-2026-09-0000"
