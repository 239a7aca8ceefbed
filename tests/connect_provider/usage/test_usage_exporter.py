"""The streaming export: partitions, atomic publish, quarantine, checks, reruns, readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from connect_provider.exceptions import ConnectError, ConnectValidationError
from connect_provider.usage.exporter import export_usage_pages
from connect_provider.usage.manifest import read_entry, select_for_export
from connect_provider.usage.schema import FILE_SCHEMA, QUARANTINE_SCHEMA
from connect_provider.usage.writer import DatasetLayout
from usage_factory import FILE_ID, PRODUCT_ID, Page, dumps_exact, pages, record, usage_file

DATA_REL = f"product_id={PRODUCT_ID}/period=2026-10/usage_file_id={FILE_ID}.parquet"


def visible_parquet(dest: Path) -> list[str]:
    """What a hive dataset reader sees (pyarrow skips names starting with '_' or '.')."""
    if not dest.exists():
        return []
    return sorted(str(Path(f).relative_to(dest)) for f in pads.dataset(str(dest), format="parquet").files)


def staged(dest: Path) -> list[Path]:
    """Files left in the hidden staging folder."""
    return list((dest / "_staging").iterdir()) if (dest / "_staging").exists() else []


def test_an_export_writes_one_typed_file_in_its_hive_partition(dest: Path) -> None:
    records = [record(i) for i in range(2500)]
    result = export_usage_pages(pages(records), usage_file(), dest)
    assert result.path == str(dest / DATA_REL)
    assert (result.rows, result.quarantined, result.usage_file_id) == (2500, 0, FILE_ID)
    assert result.bytes == (dest / DATA_REL).stat().st_size > 0
    assert result.to_xcom() == {
        "path": result.path,
        "rows": 2500,
        "bytes": result.bytes,
        "usage_file_id": FILE_ID,
        "quarantined": 0,
    }
    table = pq.read_table(dest / DATA_REL)
    assert table.schema.equals(FILE_SCHEMA)
    assert table.column("id").to_pylist() == [r["id"] for r in records]
    assert visible_parquet(dest) == [DATA_REL]
    assert not (dest / "_quarantine").exists()


def test_row_groups_are_bounded_by_row_group_rows(dest: Path) -> None:
    result = export_usage_pages(
        pages([record(i) for i in range(10)], page_size=4), usage_file(), dest, row_group_rows=3
    )
    metadata = pq.ParquetFile(result.path).metadata
    assert metadata.num_rows == 10
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [4, 4, 2]


def test_an_empty_usage_file_gives_an_empty_file_with_the_schema(dest: Path) -> None:
    result = export_usage_pages(iter([]), usage_file(), dest)
    assert result.rows == 0
    table = pq.read_table(result.path)
    assert table.num_rows == 0 and table.schema.equals(FILE_SCHEMA)


def test_a_single_record_file_is_exported(dest: Path) -> None:
    result = export_usage_pages(pages([record(0, usage=Decimal("123456789012.123456"))]), usage_file(), dest)
    assert pq.read_table(result.path).column("usage").to_pylist() == [Decimal("123456789012.123456")]


def test_bad_records_go_to_a_quarantine_file_with_raw_json_and_reason(dest: Path) -> None:
    records = [record(0), record(1, usage="n/a"), record(2, amount=Decimal("1" + "0" * 30)), record(3)]
    result = export_usage_pages(pages(records, page_size=2), usage_file(), dest, max_bad_record_ratio=1)
    assert (result.rows, result.quarantined) == (2, 2)
    assert result.quarantine_path is not None and "quarantine" in result.quarantine_path
    quarantine = pq.read_table(result.quarantine_path)
    assert quarantine.schema.equals(QUARANTINE_SCHEMA)
    rows = quarantine.to_pylist()
    assert [r["record_index"] for r in rows] == [1, 2]
    assert [r["raw_json"] for r in rows] == [dumps_exact(records[1]), dumps_exact(records[2])]
    assert "usage" in rows[0]["reason"] and "amount" in rows[1]["reason"]
    # The dataset of the data team does not include the quarantine.
    assert visible_parquet(dest) == [DATA_REL]
    assert read_entry(DatasetLayout(dest), FILE_ID).quarantined == 2


def test_on_bad_records_fail_stops_the_export_and_publishes_nothing(dest: Path) -> None:
    records = [record(0), record(1, tier="high")]
    with pytest.raises(
        ConnectError, match=r"0000001 cannot be exported: .*field tier.*on_bad_records=.fail."
    ):
        export_usage_pages(pages(records), usage_file(), dest, on_bad_records="fail")
    assert visible_parquet(dest) == []
    assert read_entry(DatasetLayout(dest), FILE_ID) is None
    assert staged(dest) == []


def test_a_row_count_below_the_content_range_total_fails_and_publishes_nothing(dest: Path) -> None:
    with pytest.raises(ConnectError, match="received 3 records but Content-Range announced 5"):
        export_usage_pages(pages([record(i) for i in range(3)], total=5), usage_file(), dest)
    assert visible_parquet(dest) == []


def test_duplicate_record_ids_fail_the_export_and_publish_nothing(dest: Path) -> None:
    records = [record(i) for i in range(1500)] + [record(7)]
    with pytest.raises(ConnectError, match=r"appear more than once \(UR-2026-10-0000000042-0000007\)"):
        export_usage_pages(pages(records), usage_file(), dest)
    assert visible_parquet(dest) == []
    assert read_entry(DatasetLayout(dest), FILE_ID) is None


def test_pages_out_of_order_fail_the_export(dest: Path) -> None:
    first, second = list(pages([record(i) for i in range(4)], page_size=2))
    with pytest.raises(ConnectError, match="offset 2 after 0 records"):
        export_usage_pages(iter([second, first]), usage_file(), dest)


def test_a_page_whose_record_count_differs_from_content_range_fails(dest: Path) -> None:
    body = dumps_exact([record(0)]).encode()
    with pytest.raises(ConnectError, match="holds 1 records but Content-Range announced 2"):
        export_usage_pages(iter([Page(body, 0, 2, 2)]), usage_file(), dest)


def test_bad_options_are_refused_before_anything_is_read(dest: Path) -> None:
    def never():
        raise AssertionError("read")
        yield

    with pytest.raises(ConnectValidationError, match="on_bad_records"):
        export_usage_pages(never(), usage_file(), dest, on_bad_records="drop")
    with pytest.raises(ConnectValidationError, match="compression"):
        export_usage_pages(never(), usage_file(), dest, compression="rar")
    with pytest.raises(ConnectValidationError, match="row_group_rows"):
        export_usage_pages(never(), usage_file(), dest, row_group_rows=0)
    with pytest.raises(ConnectValidationError, match="product_id"):
        export_usage_pages(never(), usage_file(product={"id": "../etc"}), dest)


def test_an_error_mid_export_leaves_the_previous_version_and_no_partial_file(dest: Path) -> None:
    first = export_usage_pages(pages([record(i) for i in range(10)]), usage_file(), dest)
    before = (dest / DATA_REL).read_bytes()

    def broken():
        yield from pages([record(i) for i in range(3000)])
        raise ConnectionError("network gone")

    with pytest.raises(ConnectionError):
        export_usage_pages(broken(), usage_file(status="accepted"), dest, row_group_rows=1000)
    assert (dest / DATA_REL).read_bytes() == before
    assert visible_parquet(dest) == [DATA_REL]
    assert staged(dest) == []
    assert read_entry(DatasetLayout(dest), FILE_ID).version == first.version


_KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.modules.pop("usage_factory", None)
    import importlib.util
    spec = importlib.util.spec_from_file_location("usage_factory", sys.argv[3])
    factory = importlib.util.module_from_spec(spec); spec.loader.exec_module(factory)
    from connect_provider.usage.exporter import export_usage_pages

    def slow_pages():
        for n, page in enumerate(factory.pages([factory.record(i) for i in range(5000)], page_size=1000)):
            if n == 2:
                Path(sys.argv[2]).write_text("two pages written")
                time.sleep(600)
            yield page

    export_usage_pages(slow_pages(), factory.usage_file(), sys.argv[1], row_group_rows=1000)
    """
)


def test_a_killed_export_leaves_no_file_a_reader_can_see_and_a_rerun_publishes(
    dest: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    factory = Path(__file__).with_name("usage_factory.py")
    child = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(dest), str(marker), str(factory)])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the export process ended before it was killed"
            assert time.monotonic() < deadline, "the export never reached its third page"
            time.sleep(0.1)
        leftover = staged(dest)
        assert leftover and leftover[0].stat().st_size > 0  # two row groups are on disk, unpublished
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert visible_parquet(dest) == []
    import duckdb

    [(count,)] = duckdb.sql(f"SELECT count(*) FROM glob('{dest}/product_id=*/period=*/*.parquet')").fetchall()
    assert count == 0
    result = export_usage_pages(pages([record(i) for i in range(20)]), usage_file(), dest)
    assert result.rows == 20 and visible_parquet(dest) == [DATA_REL]
    assert staged(dest) == []  # the killed run's leftover is gone


def test_a_rerun_replaces_the_file_and_clears_an_outdated_quarantine(dest: Path) -> None:
    export_usage_pages(pages([record(0), record(1, usage="x")]), usage_file(), dest, max_bad_record_ratio=1)
    quarantine = dest / "_quarantine" / DATA_REL
    assert quarantine.exists()
    again = export_usage_pages(pages([record(i) for i in range(5)]), usage_file(status="accepted"), dest)
    assert again.rows == 5 and again.quarantined == 0
    assert visible_parquet(dest) == [DATA_REL]
    assert pq.read_table(dest / DATA_REL).num_rows == 5
    assert not quarantine.exists()
    assert read_entry(DatasetLayout(dest), FILE_ID).status == "accepted"


def test_rerunning_the_same_version_gives_the_same_rows(dest: Path) -> None:
    records = [record(i) for i in range(300)]
    first = export_usage_pages(pages(records), usage_file(), dest)
    rows_first = pq.read_table(first.path).drop_columns(["exported_at"])
    second = export_usage_pages(pages(records), usage_file(), dest)
    assert pq.read_table(second.path).drop_columns(["exported_at"]).equals(rows_first)
    assert first.version == second.version
    assert visible_parquet(dest) == [DATA_REL]


def _two_files(dest: Path) -> None:
    export_usage_pages(pages([record(i) for i in range(3)]), usage_file(), dest)
    other = "UF-2026-09-0000000077"
    export_usage_pages(
        pages([record(i, file_id=other, product_id="PRD-684-920-001") for i in range(2)]),
        usage_file(
            other, product={"id": "PRD-684-920-001"}, period={"from": "2026-09-01", "to": "2026-09-30"}
        ),
        dest,
    )
    export_usage_pages(  # with a quarantine
        pages([record(0), record(1, usage="x")]), usage_file(), dest, max_bad_record_ratio=1
    )


def test_pyarrow_reads_the_dataset_with_its_partitions(dest: Path) -> None:
    _two_files(dest)
    table = pads.dataset(str(dest), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 3
    by_product = {(r["product_id"], r["period"]) for r in table.select(["product_id", "period"]).to_pylist()}
    assert by_product == {(PRODUCT_ID, "2026-10"), ("PRD-684-920-001", "2026-09")}


def test_duckdb_reads_the_dataset_with_its_partitions(dest: Path) -> None:
    import duckdb

    _two_files(dest)
    rows = duckdb.sql(
        f"SELECT product_id, period, count(*), sum(usage)::VARCHAR, typeof(any_value(usage)) "
        f"FROM read_parquet('{dest}/product_id=*/period=*/*.parquet', hive_partitioning = true) "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == [
        ("PRD-276-377-545", "2026-10", 1, "0.000000000000", "DECIMAL(38,12)"),
        ("PRD-684-920-001", "2026-09", 2, "1.000000000000", "DECIMAL(38,12)"),
    ]


def test_pandas_reads_the_dataset_with_its_partitions(dest: Path) -> None:
    import pandas as pd

    _two_files(dest)
    frame = pd.read_parquet(dest)
    assert len(frame) == 3
    assert set(frame["product_id"].astype(str)) == {PRODUCT_ID, "PRD-684-920-001"}
    assert str(frame["start_date"].dt.tz) == "UTC"
    assert frame["usage"].map(type).eq(Decimal).all()


def test_the_manifest_selects_new_and_changed_files_only(dest: Path) -> None:
    layout = DatasetLayout(dest)
    exported = usage_file()
    export_usage_pages(pages([record(0)]), exported, dest)
    new = usage_file("UF-2026-10-0000000099")
    changed = usage_file(
        status="accepted", events={**exported["events"], "accepted": {"at": "2026-11-20T00:00:00Z"}}
    )
    assert select_for_export(layout, [exported, new]) == [new["id"]]
    assert select_for_export(layout, [changed]) == [FILE_ID]
    entry = read_entry(layout, FILE_ID)
    assert (entry.rows, entry.status, entry.path) == (1, "ready", str(dest / DATA_REL))
    (dest / DATA_REL).unlink()
    assert select_for_export(layout, [exported]) == [FILE_ID]  # its data file is gone: export again
    assert json.loads((dest / "_manifest" / f"{FILE_ID}.json").read_text())["usage_file_id"] == FILE_ID


def test_records_listed_in_any_order_export_when_their_ids_are_unique(dest: Path) -> None:
    records = [record(i) for i in reversed(range(2500))]
    result = export_usage_pages(pages(records), usage_file(), dest, row_group_rows=1000)
    assert result.rows == 2500
    assert pq.read_table(result.path).column("id").to_pylist() == [r["id"] for r in records]


def test_an_object_store_destination_is_written_through_object_storage_path_alone() -> None:
    # Not a local folder: fsspec's in-memory filesystem attached to ObjectStoragePath stands in for
    # s3:// (the Amazon provider registers s3 the same way). The export must publish, write its
    # manifest and leave no staged file using only ObjectStoragePath operations.
    import uuid

    import fsspec
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import attach

    attach("memory", fs=fsspec.filesystem("memory"))
    root = f"memory://lake-{uuid.uuid4().hex[:8]}/usage"
    records = [record(i) for i in range(1200)]
    result = export_usage_pages(pages(records), usage_file(), ObjectStoragePath(root))
    assert result.path == f"{root}/{DATA_REL}"
    with ObjectStoragePath(result.path).open("rb") as f:
        table = pq.read_table(f)
    assert table.column("id").to_pylist() == [r["id"] for r in records]
    assert ObjectStoragePath(f"{root}/_manifest/{FILE_ID}.json").exists()
    staging = ObjectStoragePath(f"{root}/_staging")
    assert not staging.exists() or list(staging.iterdir()) == []


# ---------------------------------------------------------------------------------------------
def nothing_published(dest: Path) -> bool:
    """No data file, no quarantine file, no manifest entry, nothing left in staging."""
    quarantined = list((dest / "_quarantine").rglob("*.parquet")) if (dest / "_quarantine").exists() else []
    return (
        visible_parquet(dest) == []
        and quarantined == []
        and read_entry(DatasetLayout(dest), FILE_ID) is None
        and staged(dest) == []
    )


class TestMaxBadRecordRatio:
    @pytest.mark.parametrize(
        ("bad", "total", "ratio"),
        [(2, 100, 0.01), (1, 50, 0.01), (1, 1000, 0), (40, 1000, 0.03)],
        ids=["2-of-100-default", "1-of-50-default", "any-with-ratio-0", "4pct-with-3pct"],
    )
    def test_past_the_cap_the_export_fails_with_counts_and_reasons_and_publishes_nothing(
        self, dest: Path, bad: int, total: int, ratio: float
    ) -> None:
        records = [record(i, usage="n/a") if i % (total // bad) == 1 else record(i) for i in range(total)]
        assert sum(r["usage"] == "n/a" for r in records) == bad
        kwargs = {} if ratio == 0.01 else {"max_bad_record_ratio": ratio}
        with pytest.raises(ConnectError) as caught:
            export_usage_pages(pages(records, page_size=100), usage_file(), dest, **kwargs)
        message = str(caught.value)
        assert "nothing was published" in message and f"max_bad_record_ratio={ratio:g}" in message
        assert "field usage: The string 'n/a' is not a valid decimal128 number" in message
        assert "record UR-2026-10-0000000042-0000001" in message
        assert nothing_published(dest)

    def test_the_count_in_the_message_is_the_files(self, dest: Path) -> None:
        records = [record(i, usage="x") if i < 5 else record(i) for i in range(100)]
        with pytest.raises(ConnectError, match=r"5 of 100 records \(5\.00%\) cannot be exported"):
            export_usage_pages(pages(records, page_size=100), usage_file(), dest)

    def test_at_or_below_the_cap_bad_records_are_quarantined_as_before(self, dest: Path) -> None:
        records = [record(i, usage="x") if i == 7 else record(i) for i in range(100)]
        result = export_usage_pages(pages(records, page_size=30), usage_file(), dest)
        assert (result.rows, result.quarantined) == (99, 1)
        assert pq.read_table(result.quarantine_path).column("record_index").to_pylist() == [7]
        assert visible_parquet(dest) == [DATA_REL]

    def test_a_type_change_of_every_record_fails_loudly_instead_of_an_empty_table(self, dest: Path) -> None:
        # What the real API did to the old schema: every record set aside, a green task, 0 rows.
        records = [record(i, item=f"PRD-276-377-545-000{i % 2}") for i in range(500)]
        with pytest.raises(ConnectError, match=r"500 of 500 records \(100\.00%\).*field item"):
            export_usage_pages(pages(records), usage_file(), dest)
        assert nothing_published(dest)

    @pytest.mark.parametrize(
        "value",
        [-0.1, 1.5, "lots", True, None, "{{ params.x }}"],
        ids=["negative", "above-1", "text", "bool", "none", "unrendered"],
    )
    def test_a_bad_ratio_is_refused_before_anything_is_read(self, dest: Path, value: object) -> None:
        def never():
            raise AssertionError("read")
            yield

        with pytest.raises(
            ConnectValidationError, match=r"max_bad_record_ratio: .*give a number from 0 to 1"
        ):
            export_usage_pages(never(), usage_file(), dest, max_bad_record_ratio=value)

    def test_a_rendered_template_value_is_accepted(self, dest: Path) -> None:
        records = [record(i, usage="x") if i == 0 else record(i) for i in range(10)]
        result = export_usage_pages(pages(records), usage_file(), dest, max_bad_record_ratio="0.1")
        assert (result.rows, result.quarantined) == (9, 1)


class TestSchemaDriftInTheExport:
    def test_unknown_fields_are_exported_in_extra_and_named_in_the_manifest(self, dest: Path) -> None:
        records = [record(i) for i in range(1500)]
        records[1200] = record(1200, billing_cycle="monthly", asset={**record(0)["asset"], "tier_id": "T-9"})
        result = export_usage_pages(pages(records), usage_file(), dest)
        assert (result.rows, result.quarantined) == (1500, 0)
        extra = pq.read_table(result.path).column("extra").to_pylist()
        assert json.loads(extra[1200]) == {"asset.tier_id": "T-9", "billing_cycle": "monthly"}
        assert extra.count(None) == 1499
        assert read_entry(DatasetLayout(dest), FILE_ID).unknown_fields == ["asset.tier_id", "billing_cycle"]
        assert result.unknown_fields == ("asset.tier_id", "billing_cycle")

    def test_old_data_with_a_string_category_exports_with_the_string_as_the_id(self, dest: Path) -> None:
        result = export_usage_pages(
            pages([record(i, category="standard") for i in range(20)]), usage_file(), dest
        )
        assert result.quarantined == 0
        categories = pq.read_table(result.path).column("category").to_pylist()
        assert categories == [{"id": "standard", "name": None, "description": None}] * 20
