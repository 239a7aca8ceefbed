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
