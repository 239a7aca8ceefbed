"""The dataset on storage: partition layout, staged Parquet files published by one rename.

Layout under the destination (a local path or any URI ``ObjectStoragePath`` knows: ``file://``,
``s3://`` with the Amazon provider, ...)::

    <dest>/product_id=<PRD-...>/period=<YYYY-MM>/usage_file_id=<UF-...>.parquet   the data
    <dest>/_quarantine/product_id=.../period=.../usage_file_id=<UF-...>.parquet  set-aside records
    <dest>/_manifest/<UF-...>.json                                               what was exported
    <dest>/_staging/<UF-...>.<kind>.<uuid>.parquet                                being written

Everything that is not data sits under a name starting with ``_``: pyarrow/pandas dataset
discovery skips such directories, and the documented DuckDB/Spark glob
``<dest>/product_id=*/period=*/*.parquet`` cannot match them.

Atomic publish: a file is written whole under ``_staging`` and moved onto its final name only
after it was closed and checked, so a reader sees the old file or the new one, never a part. On
a local disk the move is a ``rename`` (atomic, replaces the target); on S3 the object appears
whole when its copy completes. A killed export leaves only a ``_staging`` file, which no reader
sees and the next export of the same usage file removes. Only ``ObjectStoragePath``/fsspec
operations are used, never ``os.*``, so the same code runs against any store.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import PurePath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from connect_provider.config import data_dir
from connect_provider.exceptions import ConnectValidationError
from connect_provider.usage.schema import MEMORY_POOL

STAGING_DIR = "_staging"
QUARANTINE_DIR = "_quarantine"
MANIFEST_DIR = "_manifest"
# Rows buffered before a row group is written: the exporter's peak memory. Measured at 1,000,000
# records (BENCHMARKS.md): 32,768 rows peaked at 251-256 MB, 25,000 at 235 MB for 0.6 % more bytes.
DEFAULT_ROW_GROUP_ROWS = 25_000
COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def default_destination() -> ObjectStoragePath:
    """``<data_dir()>/usage_records``: the local dataset when no destination is given."""
    return ObjectStoragePath(str(data_dir() / "usage_records"))


def as_storage_path(destination: str | os.PathLike[str] | ObjectStoragePath | None) -> ObjectStoragePath:
    """A destination (path, URI or ``ObjectStoragePath``; ``None`` = default) as ObjectStoragePath."""
    if destination is None or destination == "":
        return default_destination()
    if isinstance(destination, ObjectStoragePath):
        return destination
    if isinstance(destination, PurePath):
        return ObjectStoragePath(str(destination))
    return ObjectStoragePath(os.fspath(destination))


def check_partition_value(field: str, value: str) -> str:
    """Ids become path segments: refuse anything that could escape or confuse the layout."""
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value):
        raise ConnectValidationError(
            field, f"{value!r} is not a Connect id (letters, digits, '-', '_', '.'); it names a path segment"
        )
    return value


class DatasetLayout:
    """Where each file of the dataset lives under one destination."""

    def __init__(self, destination: str | os.PathLike[str] | ObjectStoragePath | None = None) -> None:
        self.root = as_storage_path(destination)

    def __repr__(self) -> str:
        return f"DatasetLayout({str(self.root)!r})"

    @staticmethod
    def _relative(product_id: str, period: str, usage_file_id: str) -> str:
        check_partition_value("product_id", product_id)
        check_partition_value("usage_file_id", usage_file_id)
        if not re.fullmatch(r"\d{4}-\d{2}", period):
            raise ConnectValidationError("period", f"{period!r} is not YYYY-MM")
        return f"product_id={product_id}/period={period}/usage_file_id={usage_file_id}.parquet"

    def data_path(self, product_id: str, period: str, usage_file_id: str) -> ObjectStoragePath:
        return self.root / self._relative(product_id, period, usage_file_id)

    def quarantine_path(self, product_id: str, period: str, usage_file_id: str) -> ObjectStoragePath:
        return self.root / QUARANTINE_DIR / self._relative(product_id, period, usage_file_id)

    def manifest_dir(self) -> ObjectStoragePath:
        return self.root / MANIFEST_DIR

    def manifest_path(self, usage_file_id: str) -> ObjectStoragePath:
        return self.manifest_dir() / f"{check_partition_value('usage_file_id', usage_file_id)}.json"

    def staging_path(self, usage_file_id: str, kind: str, suffix: str = "parquet") -> ObjectStoragePath:
        check_partition_value("usage_file_id", usage_file_id)
        return self.root / STAGING_DIR / f"{usage_file_id}.{kind}.{uuid.uuid4().hex}.{suffix}"

    def remove_stale_staging(self, usage_file_id: str) -> int:
        """Delete what a killed export of this usage file left in ``_staging``; returns the count."""
        staging = self.root / STAGING_DIR
        if not staging.exists():
            return 0
        removed = 0
        prefix = f"{check_partition_value('usage_file_id', usage_file_id)}."
        for leftover in staging.iterdir():
            if leftover.name.startswith(prefix):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed


def publish(staged: ObjectStoragePath, final: ObjectStoragePath) -> None:
    """Move a finished staged file onto its final name in one step (replacing an older one)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staged.fs.mv(staged.path, final.path)


def unlink_if_exists(path: ObjectStoragePath) -> None:
    if path.exists():
        path.unlink(missing_ok=True)


def write_bytes_atomically(final: ObjectStoragePath, data: bytes, staged: ObjectStoragePath) -> None:
    """Small files (the manifest): write beside under a staging name, then move into place."""
    staged.parent.mkdir(parents=True, exist_ok=True)
    with staged.open("wb") as handle:
        handle.write(data)
    publish(staged, final)


class StagedParquetWriter:
    """Parquet written to a staging name, row group by row group, then published or discarded.

    Batches are buffered until ``row_group_rows`` rows, then written as one row group: memory
    holds at most one row group of Arrow data, whatever the size of the file.
    """

    def __init__(
        self,
        staged: ObjectStoragePath,
        schema: pa.Schema,
        *,
        compression: str = "zstd",
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    ) -> None:
        self.staged = staged
        self.schema = schema
        self.compression = compression
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._handle: Any = None
        self._writer: pq.ParquetWriter | None = None

    def _open(self) -> None:
        self.staged.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.staged.open("wb")
        self._writer = pq.ParquetWriter(
            self._handle,
            self.schema,
            compression=self.compression,
            write_statistics=True,
            memory_pool=MEMORY_POOL,
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._writer is None:
            self._open()
        if self._pending:
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            assert self._writer is not None
            self._writer.write_table(table, row_group_size=max(self.row_group_rows, table.num_rows))
            self.rows += table.num_rows
            self._pending = []
            self._pending_rows = 0

    def close(self) -> None:
        """Write what is buffered and close; an empty file still gets the schema (0 rows)."""
        self._flush()
        assert self._writer is not None
        self._writer.close()
        self._handle.close()
        self._writer = None

    def discard(self) -> None:
        """Abandon the staged file (best effort: a killed process cannot, and needs not)."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._handle is not None:
                self._handle.close()
        except Exception:  # noqa: S110 - the file is being thrown away; its close error does not matter
            pass
        self._writer = None
        self._pending = []
        unlink_if_exists(self.staged)


# ---------------------------------------------------------------------------------------------
# Unique ids in bounded memory (see UniqueIdCheck).
_MULTIPLIERS = np.random.default_rng(0x5EED_C0DE).integers(1, 2**63, size=256, dtype=np.uint64) * 2 + 1
_EMPTY_HASH = np.uint64(0x9E3779B97F4A7C15)


def _multipliers(length: int) -> np.ndarray:
    global _MULTIPLIERS
    if length > len(_MULTIPLIERS):
        extra = np.random.default_rng(length).integers(1, 2**63, size=length, dtype=np.uint64) * 2 + 1
        _MULTIPLIERS = np.concatenate([_MULTIPLIERS, extra[len(_MULTIPLIERS) :]])
    return _MULTIPLIERS[:length]


def hash_strings(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of a string array, vectorised (no Python per value).

    Each string is a random linear combination of its bytes mod 2^64 (strings of equal length
    are grouped), mixed with its length: two different ids collide with probability about 2^-57.
    Only used to find candidate duplicates, which are then compared exactly.
    """
    if isinstance(array, pa.ChunkedArray):
        parts = [hash_strings(chunk) for chunk in array.chunks]
        return np.concatenate(parts) if parts else np.empty(0, np.uint64)
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    n = len(array)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[array.offset : array.offset + n + 1].astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    with np.errstate(over="ignore"):  # wrapping arithmetic mod 2^64 is the point
        _hash_groups(data, starts, lengths, out)
    return out


def _hash_groups(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        if length == 0:
            out[rows] = _EMPTY_HASH
            continue
        chars = data[starts[rows, None] + np.arange(length)].astype(np.uint64)
        h = (chars * _multipliers(int(length))).sum(axis=1, dtype=np.uint64)
        out[rows] = h ^ (np.uint64(length) * _EMPTY_HASH)


class UniqueIdCheck:
    """Are the record ids of one export unique? In bounded memory, whatever the file's size.

    While ids arrive in strictly increasing order (how Connect and the sandbox list records) that
    alone proves them unique and nothing is kept but the last id. Once the order breaks, the check
    is made at the end over the written file's id column: a 64-bit hash per id in one numpy array
    (8 bytes a record), sorted; only ids whose hashes are equal are compared exactly, in a second
    pass.
    """

    def __init__(self) -> None:
        self._count = 0
        self._ordered = True
        self._last: str | None = None

    @property
    def ordered(self) -> bool:
        return self._ordered

    def add(self, ids: pa.Array) -> None:
        n = len(ids)
        if n == 0:
            return
        self._count += n
        if not self._ordered:
            return
        if n > 1 and not pc.all(pc.less(ids.slice(0, n - 1), ids.slice(1))).as_py():
            self._ordered = False
        elif self._last is not None and not self._last < ids[0].as_py():
            self._ordered = False
        self._last = ids[n - 1].as_py()

    def duplicates(self, reread: Callable[[], Iterable[pa.Array]], limit: int = 10) -> list[str]:
        """Ids present more than once (at most ``limit``); ``reread()`` yields the id column again."""
        if self._ordered:
            return []
        hashes = np.empty(self._count, dtype=np.uint64)
        filled = 0
        for chunk in reread():
            values = hash_strings(chunk)
            hashes[filled : filled + len(values)] = values
            filled += len(values)
        hashes = hashes[:filled]
        hashes.sort()
        same = hashes[1:] == hashes[:-1]
        if not same.any():
            return []
        candidates = np.unique(hashes[1:][same])
        del hashes, same
        seen: set[str] = set()
        found: list[str] = []
        for chunk in reread():
            for row in np.flatnonzero(np.isin(hash_strings(chunk), candidates)):
                value = chunk[int(row)].as_py()
                if value in seen and value not in found:
                    found.append(value)
                    if len(found) >= limit:
                        return found
                seen.add(value)
        return found


def iter_parquet_column(path: ObjectStoragePath, column: str) -> Iterator[pa.Array]:
    """One column of a Parquet file, row group by row group (bounded memory)."""
    with path.open("rb") as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group, columns=[column]).column(0).chunks
