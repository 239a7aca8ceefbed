"""Loading exports into DuckDB (default) or PostgreSQL: new exports only, a reload replaces rows."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from connect_project.usage_load import DuckDBTarget, PostgresTarget, load_exports
from connect_provider.exceptions import ConnectValidationError
from connect_provider.usage.exporter import export_usage_pages
from usage_factory import FILE_ID, PRODUCT_ID, pages, record, usage_file


def test_exports_load_into_duckdb_and_a_reload_replaces_the_rows(dest: Path, tmp_path: Path) -> None:
    export_usage_pages(pages([record(i, usage=Decimal("0.000001")) for i in range(5)]), usage_file(), dest)
    target = DuckDBTarget(tmp_path / "usage.duckdb")
    try:
        first = load_exports(target, dest)
        assert (first.loaded, first.rows, first.unchanged) == ([FILE_ID], 5, 0)
        # Nothing new: nothing loaded.
        assert load_exports(target, dest).to_dict() == {"loaded": [], "rows": 0, "unchanged": 1}
        # The file changes and is exported again with fewer records: its rows are replaced.
        export_usage_pages(pages([record(i) for i in range(3)]), usage_file(status="accepted"), dest)
        again = load_exports(target, dest)
        assert (again.loaded, again.rows) == ([FILE_ID], 3)
        rows = target.con.execute(
            "SELECT count(*), count(DISTINCT id), any_value(product_id), any_value(period), "
            "typeof(any_value(usage)) FROM usage_records"
        ).fetchall()
        assert rows == [(3, 3, PRODUCT_ID, "2026-10", "DECIMAL(38,12)")]
    finally:
        target.close()


def test_a_failed_load_keeps_the_previous_rows(
    dest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connect_project import usage_load as load

    export_usage_pages(pages([record(i) for i in range(4)]), usage_file(), dest)
    target = DuckDBTarget(tmp_path / "usage.duckdb")
    try:
        load_exports(target, dest)
        export_usage_pages(pages([record(i) for i in range(2)]), usage_file(status="closed"), dest)

        original = load.iter_row_groups

        def broken(entry):
            yield from original(entry)
            raise OSError("disk gone")

        monkeypatch.setattr(load, "iter_row_groups", broken)
        with pytest.raises(OSError, match="disk gone"):
            load_exports(target, dest)
        assert target.con.execute("SELECT count(*) FROM usage_records").fetchall() == [(4,)]
    finally:
        target.close()


@pytest.fixture
def pg_conn_id(monkeypatch: pytest.MonkeyPatch, fresh_postgres_database) -> str:
    """An Airflow connection ``usage_pg`` to a fresh PostgreSQL database."""
    monkeypatch.setenv("AIRFLOW_CONN_USAGE_PG", fresh_postgres_database("usage_load").airflow_conn_json())
    return "usage_pg"


@pytest.mark.postgres
def test_exports_load_into_postgresql_exactly_and_a_reload_replaces_the_rows(
    dest: Path, pg_conn_id: str
) -> None:
    params = [{"parameter_name": "région", "parameter_value": "Zürich"}]
    export_usage_pages(
        pages([record(0, usage=Decimal("123456789012.123456"), amount=None, params=params), record(1)]),
        usage_file(),
        dest,
    )
    target = PostgresTarget(pg_conn_id)
    try:
        assert load_exports(target, dest).rows == 2
        export_usage_pages(
            pages([record(0, usage=Decimal("123456789012.123456"), amount=None, params=params)]),
            usage_file(status="accepted"),
            dest,
        )
        assert load_exports(target, dest).rows == 1
        with target.con.cursor() as cur:
            cur.execute("SELECT id, usage, amount, params, start_date, period FROM usage_records")
            [(rid, usage, amount, stored_params, start, period)] = cur.fetchall()
        assert rid.endswith("-0000000") and period == "2026-10"
        assert usage == Decimal("123456789012.123456") and amount is None
        assert stored_params == [{"name": "région", "value": "Zürich"}]
        assert start.utcoffset().total_seconds() == 0 and start.day == 1
    finally:
        target.close()


class TestTheRealShapeInTheDatabase:
    def test_category_recon_id_and_extra_are_queryable_in_duckdb(self, dest: Path, tmp_path: Path) -> None:
        export_usage_pages(pages([record(0), record(1, brand_new="x")]), usage_file(), dest)
        target = DuckDBTarget(tmp_path / "usage.duckdb")
        try:
            assert load_exports(target, dest).rows == 2
            rows = target.con.execute(
                "SELECT category.id, category.name, asset_recon_id, extra->>'brand_new' "
                "FROM usage_records ORDER BY id"
            ).fetchall()
        finally:
            target.close()
        assert rows == [("compute", "Compute", "98547985", None), ("compute", "Compute", "98547985", "x")]

    @pytest.mark.postgres
    def test_category_is_jsonb_in_postgresql(self, dest: Path, pg_conn_id: str) -> None:
        export_usage_pages(pages([record(0, category="legacy"), record(1)]), usage_file(), dest)
        target = PostgresTarget(pg_conn_id)
        try:
            load_exports(target, dest)
            with target.con.cursor() as cur:
                cur.execute(
                    "SELECT category->>'id', category->>'name', asset_recon_id FROM usage_records ORDER BY id"
                )
                rows = cur.fetchall()
        finally:
            target.close()
        assert rows == [("legacy", None, "98547985"), ("compute", "Compute", "98547985")]


class TestAnotherSchemaVersion:
    def test_a_table_made_for_the_previous_schema_is_refused_naming_the_columns_and_the_fix(
        self, tmp_path: Path
    ) -> None:
        import duckdb

        path = tmp_path / "usage.duckdb"
        con = duckdb.connect(str(path))
        con.execute(
            "CREATE TABLE usage_records (id VARCHAR NOT NULL, category VARCHAR, usage DECIMAL(38, 12))"
        )
        con.close()
        with pytest.raises(ConnectValidationError) as caught:
            DuckDBTarget(path)
        message = str(caught.value)
        assert message.startswith("usage_records: the table was made for another version of the usage schema")
        assert "missing: usage_file_id" in message and "asset_recon_id" in message
        assert "of another type: category" in message
        assert "Drop usage_records and usage_record_loads: the next load fills them again" in message

    def test_exports_of_an_older_schema_version_wait_for_their_re_export(
        self, dest: Path, tmp_path: Path
    ) -> None:
        from connect_provider.usage.manifest import read_entry, write_entry
        from connect_provider.usage.writer import DatasetLayout

        export_usage_pages(pages([record(0)]), usage_file(), dest)
        layout = DatasetLayout(dest)
        entry = read_entry(layout, FILE_ID)
        write_entry(layout, type(entry)(**{**entry.__dict__, "schema_version": 1}))
        target = DuckDBTarget(tmp_path / "usage.duckdb")
        try:
            summary = load_exports(target, dest)
        finally:
            target.close()
        assert summary.to_dict() == {"loaded": [], "rows": 0, "unchanged": 0, "stale": 1}
