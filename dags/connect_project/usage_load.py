"""Load exported usage Parquet into a table the data team queries: DuckDB by default, or PostgreSQL.

This project's downstream step, not the provider's: the provider's job ends with a published,
typed Parquet dataset and its manifest, which any reader takes (DuckDB, Spark, pandas, a
warehouse loader); which database the data team queries, and its table, are this project's
choice. So this module, DuckDB (the ``duckdb`` extra) and the PostgreSQL loading live beside the
DAGs.

What to load comes from the manifest (``<dest>/_manifest/*.json``): a usage file is loaded when
the target has not loaded that export yet (its ``version`` and ``exported_at`` differ from the
target's bookkeeping table ``usage_record_loads``). Loading one file is one transaction: delete
its rows (``WHERE usage_file_id = ...``), insert the file row group by row group, record the load.
Reloading a file therefore replaces its rows and never duplicates them, and a failed load leaves
the previous rows in place.

DuckDB (``data_dir()/usage.duckdb``) needs the ``duckdb`` package; PostgreSQL needs
``psycopg2`` and an Airflow connection of type ``postgres``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from connect_provider.config import data_dir
from connect_provider.exceptions import ConnectValidationError
from connect_provider.usage.manifest import ManifestEntry, read_all
from connect_provider.usage.schema import FILE_SCHEMA, SCHEMA_VERSION, USAGE_RECORD_SCHEMA
from connect_provider.usage.writer import DatasetLayout

log = logging.getLogger(__name__)

USAGE_TABLE = "usage_records"
LOADS_TABLE = "usage_record_loads"
COLUMNS = USAGE_RECORD_SCHEMA.names


def default_duckdb_path() -> Path:
    return data_dir() / "usage.duckdb"


def _sql_type(type_: pa.DataType, dialect: str) -> str:
    if pa.types.is_string(type_):
        return "VARCHAR" if dialect == "duckdb" else "TEXT"
    if pa.types.is_decimal(type_):
        return (
            f"DECIMAL({type_.precision}, {type_.scale})"
            if dialect == "duckdb"
            else (f"NUMERIC({type_.precision}, {type_.scale})")
        )
    if pa.types.is_timestamp(type_):
        return "TIMESTAMPTZ"
    if pa.types.is_int64(type_):
        return "BIGINT"
    if pa.types.is_struct(type_):
        if dialect != "duckdb":
            return "JSONB"
        return "STRUCT(" + ", ".join(f"{f.name} {_sql_type(f.type, dialect)}" for f in type_) + ")"
    if pa.types.is_list(type_):
        return f"{_sql_type(type_.value_type, dialect)}[]" if dialect == "duckdb" else "JSONB"
    raise TypeError(f"no SQL type for {type_}")


def _nested(type_: pa.DataType) -> bool:
    return pa.types.is_struct(type_) or pa.types.is_list(type_)


def check_table_columns(dialect: str, existing: list[tuple[str, str]]) -> None:
    """Refuse a records table of another schema version, naming the difference and the fix.

    ``existing`` is ``(column, SQL type)`` as the database reports it. The table is derived data
    (every row comes back from the dataset on the next load), so the fix is to drop it; nothing
    here drops a table the data team may have built on.
    """
    if not existing:
        return
    expected = {f.name: _sql_type(f.type, dialect) for f in USAGE_RECORD_SCHEMA}
    have = {name: type_ for name, type_ in existing}
    missing = [n for n in expected if n not in have]
    unknown = [n for n in have if n not in expected]

    def canonical(type_: str) -> str:
        text = type_.upper().replace('"', "").replace(" ", "").replace("TIMESTAMPTZ", "TIMESTAMPWITHTIMEZONE")
        # PostgreSQL's information_schema reports NUMERIC without its precision.
        return re.sub(r"^NUMERIC\(.*\)$", "NUMERIC", text) if dialect != "duckdb" else text

    def same(name: str) -> bool:
        return canonical(have[name]) == canonical(expected[name])

    changed = [n for n in expected if n in have and not same(n)]
    if missing or unknown or changed:
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("missing", missing),
                ("not in the schema", unknown),
                ("of another type", changed),
            )
            if names
        ]
        raise ConnectValidationError(
            USAGE_TABLE,
            f"the table was made for another version of the usage schema ({'; '.join(parts)}; this is "
            f"schema version {SCHEMA_VERSION}). Drop {USAGE_TABLE} and {LOADS_TABLE}: the next load "
            "fills them again from the dataset",
        )


def create_table_sql(dialect: str) -> list[str]:
    """DDL of the records table and the bookkeeping table (idempotent)."""
    columns = ",\n  ".join(
        f'"{f.name}" {_sql_type(f.type, dialect)}{"" if f.nullable else " NOT NULL"}'
        for f in USAGE_RECORD_SCHEMA
    )
    text = _sql_type(pa.string(), dialect)
    return [
        f"CREATE TABLE IF NOT EXISTS {USAGE_TABLE} (\n  {columns}\n)",
        f"CREATE TABLE IF NOT EXISTS {LOADS_TABLE} (usage_file_id {text} PRIMARY KEY, version {text}, "
        f"exported_at {text}, rows BIGINT, path {text}, loaded_at TIMESTAMPTZ)",
    ]


def iter_row_groups(entry: ManifestEntry) -> Iterator[pa.Table]:
    """The data file of an export, one row group at a time (any ObjectStoragePath location), with
    the partition keys (``product_id``, ``period``, kept in the path) added back as columns."""
    from airflow.sdk import ObjectStoragePath

    with ObjectStoragePath(entry.path).open("rb") as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=FILE_SCHEMA.names)
            n = table.num_rows
            table = table.append_column("product_id", pa.repeat(pa.scalar(entry.product_id, pa.string()), n))
            table = table.append_column("period", pa.repeat(pa.scalar(entry.period, pa.string()), n))
            yield table.select(COLUMNS)


class LoadTarget:
    """A database the exports are loaded into."""

    dialect = ""

    def loaded_versions(self) -> dict[str, tuple[str, str]]:
        raise NotImplementedError

    def replace_file(self, entry: ManifestEntry, tables: Iterator[pa.Table]) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class DuckDBTarget(LoadTarget):
    """A DuckDB file (default ``data_dir()/usage.duckdb``)."""

    dialect = "duckdb"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        import duckdb

        self.path = Path(path) if path else default_duckdb_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.path))
        existing = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [USAGE_TABLE],
        ).fetchall()
        check_table_columns(self.dialect, existing)
        for statement in create_table_sql(self.dialect):
            self.con.execute(statement)

    def loaded_versions(self) -> dict[str, tuple[str, str]]:
        rows = self.con.execute(f"SELECT usage_file_id, version, exported_at FROM {LOADS_TABLE}").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def replace_file(self, entry: ManifestEntry, tables: Iterator[pa.Table]) -> int:
        columns = ", ".join(f'"{c}"' for c in COLUMNS)
        rows = 0
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute(f"DELETE FROM {USAGE_TABLE} WHERE usage_file_id = ?", [entry.usage_file_id])
            for table in tables:
                self.con.register("_usage_batch", table)
                try:
                    self.con.execute(
                        f"INSERT INTO {USAGE_TABLE} ({columns}) SELECT {columns} FROM _usage_batch"
                    )
                finally:
                    self.con.unregister("_usage_batch")
                rows += table.num_rows
            self.con.execute(f"DELETE FROM {LOADS_TABLE} WHERE usage_file_id = ?", [entry.usage_file_id])
            self.con.execute(
                f"INSERT INTO {LOADS_TABLE} VALUES (?, ?, ?, ?, ?, now())",
                [entry.usage_file_id, entry.version, entry.exported_at, rows, entry.path],
            )
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return rows

    def close(self) -> None:
        self.con.close()


class PostgresTarget(LoadTarget):
    """A PostgreSQL database named by an Airflow connection (type ``postgres``)."""

    dialect = "postgres"

    def __init__(self, conn_id: str) -> None:
        import psycopg2
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        if conn.conn_type not in ("postgres", "postgresql"):
            raise ConnectValidationError(
                "conn_id", f"connection {conn_id!r} is of type {conn.conn_type!r}; give a postgres connection"
            )
        self.con = psycopg2.connect(
            host=conn.host or "localhost",
            port=conn.port or 5432,
            user=conn.login or None,
            password=conn.password or None,
            dbname=conn.schema or None,
        )
        with self.con, self.con.cursor() as cur:
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
                "AND table_schema = current_schema() ORDER BY ordinal_position",
                (USAGE_TABLE,),
            )
            check_table_columns(self.dialect, cur.fetchall())
            for statement in create_table_sql(self.dialect):
                cur.execute(statement)

    def loaded_versions(self) -> dict[str, tuple[str, str]]:
        with self.con, self.con.cursor() as cur:
            cur.execute(f"SELECT usage_file_id, version, exported_at FROM {LOADS_TABLE}")
            return {r[0]: (r[1], r[2]) for r in cur.fetchall()}

    @staticmethod
    def _csv(table: pa.Table) -> io.StringIO:
        """Rows as CSV text for COPY: decimals as exact text, timestamps ISO, params and category as JSON."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        columns = [table.column(c).to_pylist() for c in COLUMNS]
        as_json = {i for i, c in enumerate(COLUMNS) if _nested(USAGE_RECORD_SCHEMA.field(c).type)}
        for row in zip(*columns, strict=True):
            values: list[Any] = []
            for i, value in enumerate(row):
                if value is None:
                    values.append(r"\N")
                elif i in as_json:
                    values.append(json.dumps(value, ensure_ascii=False))
                elif hasattr(value, "isoformat"):
                    values.append(value.isoformat())
                else:
                    values.append(str(value))
            writer.writerow(values)
        out.seek(0)
        return out

    def replace_file(self, entry: ManifestEntry, tables: Iterator[pa.Table]) -> int:
        columns = ", ".join(f'"{c}"' for c in COLUMNS)
        rows = 0
        with self.con, self.con.cursor() as cur:  # one transaction: commit on success, rollback on error
            cur.execute(f"DELETE FROM {USAGE_TABLE} WHERE usage_file_id = %s", (entry.usage_file_id,))
            for table in tables:
                cur.copy_expert(
                    f"COPY {USAGE_TABLE} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')",
                    self._csv(table),
                )
                rows += table.num_rows
            cur.execute(f"DELETE FROM {LOADS_TABLE} WHERE usage_file_id = %s", (entry.usage_file_id,))
            cur.execute(
                f"INSERT INTO {LOADS_TABLE} VALUES (%s, %s, %s, %s, %s, now())",
                (entry.usage_file_id, entry.version, entry.exported_at, rows, entry.path),
            )
        return rows

    def close(self) -> None:
        self.con.close()


def make_target(conn_id: str | None = None, duckdb_path: str | os.PathLike[str] | None = None) -> LoadTarget:
    """PostgreSQL when a connection id is given, else the DuckDB file."""
    if conn_id:
        return PostgresTarget(conn_id)
    return DuckDBTarget(duckdb_path)


@dataclass
class LoadSummary:
    loaded: list[str] = field(default_factory=list)
    rows: int = 0
    unchanged: int = 0
    stale: int = 0  # exports of another schema version, waiting to be exported again

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loaded": self.loaded, "rows": self.rows, "unchanged": self.unchanged}
        if self.stale:
            out["stale"] = self.stale
        return out


def load_exports(
    target: LoadTarget,
    destination: str | os.PathLike[str] | None = None,
    *,
    usage_file_ids: list[str] | None = None,
    force: bool = False,
) -> LoadSummary:
    """Load every export of the manifest the target has not loaded yet (or ``force``: all of them)."""
    layout = DatasetLayout(destination)
    entries = read_all(layout)
    if usage_file_ids is not None:
        wanted = set(usage_file_ids)
        entries = [e for e in entries if e.usage_file_id in wanted]
    done = target.loaded_versions()
    summary = LoadSummary()
    for entry in entries:
        if entry.schema_version != SCHEMA_VERSION:
            # Its data file has the columns of another schema version; the export DAG exports it
            # again (needs_export), and the load after that takes it.
            log.warning(
                "%s: exported with usage schema version %s, not %s; it is loaded once it is exported again",
                entry.usage_file_id,
                entry.schema_version,
                SCHEMA_VERSION,
            )
            summary.stale += 1
            continue
        if not force and done.get(entry.usage_file_id) == (entry.version, entry.exported_at):
            summary.unchanged += 1
            continue
        rows = target.replace_file(entry, iter_row_groups(entry))
        log.info("loaded %s: %d rows into %s (%s)", entry.usage_file_id, rows, USAGE_TABLE, target.dialect)
        summary.loaded.append(entry.usage_file_id)
        summary.rows += rows
    return summary
