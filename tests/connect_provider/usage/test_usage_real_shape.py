"""The usage records and the usage file in the shapes CloudBlue's own sources show (tests/fixtures/real).

They go through the exporter whole, and the sandbox's answers must keep their keys and JSON types,
so that the sandbox cannot drift from the real API again (sources: tests/fixtures/real/README.md).
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests
from connect_provider.usage.exporter import ExportResult, export_usage_pages
from usage_factory import Page

REAL = Path(__file__).resolve().parents[2] / "fixtures" / "real"
RECORDS = json.loads((REAL / "usage_records_response.json").read_text(), parse_float=Decimal)
USAGE_FILE = json.loads((REAL / "usage_file.json").read_text())
APPROVED, CLOSED = RECORDS


def page_of(text: str) -> Page:
    count = len(json.loads(text))
    return Page(text.encode(), 0, count, count)


APPROVED_COLUMNS = [
    ("category", {"id": "compute", "name": "compute", "description": None}),
    ("asset_recon_id", "98547985"),
    ("asset_id", "AS-4859-1912-5063"),
    ("asset_external_id", "2009295"),
    ("asset_external_uid", "65da4d1e-935e-4da3-8ced-c36643392460"),
    ("item_id", "PRD-736-723-721-0329"),
    ("item_local_id", "PRD_736_723_721_0329"),
    ("item_mpn", "MPN"),
    ("item_name", "name"),
    ("resource_local_id", "PRD_736_723_721_0329"),
    ("usagefile_name", "NAME"),
    ("usagefile_schema", "tr"),
    ("currency", "USD"),
    ("multiplier", 1),
    ("tier", 0),
    ("usage", Decimal("1")),
    ("amount", Decimal("0")),
    ("status", "approved"),
    ("start_date", datetime(2028, 9, 1, tzinfo=timezone.utc)),
    ("end_date", datetime(2028, 9, 30, tzinfo=timezone.utc)),
    ("params", [{"name": "PARAM", "value": "1234"}]),
    ("closed_at", None),
    ("external_billing_id", None),
]


class TestTheRealRecordsThroughTheExporter:
    @pytest.fixture
    def exported(self, dest: Path) -> ExportResult:
        body = (REAL / "usage_records_response.json").read_text()
        return export_usage_pages(iter([page_of(body)]), USAGE_FILE, dest)

    @pytest.fixture
    def rows(self, exported: ExportResult) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in pq.read_table(exported.path).to_pylist()}

    def test_every_record_is_exported_and_none_is_quarantined(
        self, exported: ExportResult, rows: dict
    ) -> None:
        assert (exported.rows, exported.quarantined) == (2, 0)
        assert exported.unknown_fields == ()
        assert all(row["extra"] is None for row in rows.values())

    def test_the_file_lands_in_the_partition_of_its_period_although_period_from_is_a_date_time(
        self, exported: ExportResult
    ) -> None:
        assert USAGE_FILE["period"]["from"] == "2028-09-01T00:00:00+00:00"
        assert exported.path.endswith(
            "/product_id=PRD-736-723-721/period=2028-09/usage_file_id=UF-2021-01-3453-7567.parquet"
        )

    @pytest.mark.parametrize(("column", "value"), [pytest.param(c, v, id=c) for c, v in APPROVED_COLUMNS])
    def test_what_a_data_team_uses_of_an_approved_record_is_exported(
        self, rows: dict, column: str, value: Any
    ) -> None:
        assert rows[APPROVED["id"]][column] == value

    def test_a_closed_record_carries_what_closing_set(self, rows: dict) -> None:
        row = rows[CLOSED["id"]]
        assert (row["status"], row["closed_by"]) == ("closed", "SU-972-245-745")
        assert row["closed_at"] == datetime(2028, 10, 3, 8, 15, tzinfo=timezone.utc)
        assert (row["external_billing_id"], row["external_billing_note"]) == (
            "INV-2028-09-000417",
            "Billed in the September invoice",
        )
        assert (row["usage"], row["amount"]) == (Decimal("250"), Decimal("12.5"))


# ---------------------------------------------------------------------------------------------
def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, (float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_differences(
    real: Any, ours: Any, nullable: frozenset[str] = frozenset(), path: str = ""
) -> list[str]:
    """Where ``ours`` differs from ``real`` in keys or JSON types, recursively (empty: same shape).

    An integer matches a number (JSON Schema's rule: ``1`` is a number); a null matches anything
    only at a path in ``nullable``; arrays compare each element with the real one's first element.
    """
    where = path or "<root>"
    real_type, our_type = json_type(real), json_type(ours)
    if "null" in (real_type, our_type) and real_type != our_type:
        return [] if path in nullable else [f"{where}: {real_type} in the real answer, {our_type} in ours"]
    if real_type != our_type and not (real_type == "number" and our_type == "integer"):
        return [f"{where}: {real_type} in the real answer, {our_type} in ours"]
    out: list[str] = []
    if real_type == "object":
        for key in sorted(set(real) - set(ours)):
            out.append(f"{path}.{key}".lstrip(".") + ": missing in ours")
        for key in sorted(set(ours) - set(real)):
            out.append(f"{path}.{key}".lstrip(".") + ": not in the real answer")
        for key in sorted(set(real) & set(ours)):
            out += shape_differences(real[key], ours[key], nullable, f"{path}.{key}".lstrip("."))
    elif real_type == "array" and real and ours:
        for element in ours:
            out += shape_differences(real[0], element, nullable, f"{path}[]")
    return out


RECORD_NULLABLE = frozenset({"amount", "params[].parameter_value"})
FILE_NULLABLE = frozenset({"error_detail", "rejection_note", "acceptance_note"})


def get(sandbox, path: str, query: str = "") -> Any:
    r = requests.get(
        f"{sandbox.api_url}{path}" + (f"?{query}" if query else ""),
        headers={"Authorization": sandbox.api_key},
        timeout=60,
    )
    r.raise_for_status()
    return json.loads(r.content, parse_float=Decimal)


class TestTheSandboxAnswersInTheRealShape:
    @pytest.mark.parametrize(
        ("file_id", "real"),
        [
            ("UF-2026-10-0000000001", APPROVED),  # ready: valid records
            ("UF-2026-10-0000000002", APPROVED),  # accepted: approved records
            ("UF-2026-09-0000000004", CLOSED),  # the seed's hand-written edge-value file, closed
        ],
        ids=["generated-valid", "generated-approved", "edge-file-closed"],
    )
    def test_usage_records_have_the_real_records_keys_and_types(
        self, sandbox, file_id: str, real: dict
    ) -> None:
        records = get(sandbox, "/usage/records", f"usagefile.id={file_id}&limit=100")
        assert records
        problems = sorted({p for rec in records for p in shape_differences(real, rec, RECORD_NULLABLE)})
        assert problems == []

    def test_a_generated_closed_file_has_the_real_closed_records_shape(self, sandbox) -> None:
        created = sandbox.admin("POST", "usage-files", {"records": 40, "status": "closed"})
        records = get(sandbox, "/usage/records", f"usagefile.id={created['id']}&limit=100")
        assert len(records) == 40
        problems = sorted({p for rec in records for p in shape_differences(CLOSED, rec, RECORD_NULLABLE)})
        assert problems == []

    def test_a_usage_file_has_the_real_usage_files_keys_and_types(self, sandbox) -> None:
        ours = get(sandbox, "/usage/files/UF-2026-09-0000000004")
        assert ours["status"] == USAGE_FILE["status"] == "closed"
        assert shape_differences(USAGE_FILE, ours, FILE_NULLABLE) == []

    def test_the_comparison_sees_a_string_category_and_a_missing_recon_id(self) -> None:
        old = copy.deepcopy(APPROVED)
        old["category"] = "compute"
        del old["asset"]["recon_id"]
        assert shape_differences(APPROVED, old) == [
            "asset.recon_id: missing in ours",
            "category: object in the real answer, string in ours",
        ]
