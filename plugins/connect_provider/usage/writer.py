"""The dataset on storage: partition layout, staged Parquet files published by one rename.

Layout under the destination (a local path or any URI ``ObjectStoragePath`` knows: ``file://``,
``s3://`` with the Amazon provider, ...)::

    <dest>/product_id=<PRD-...>/period=<YYYY-MM>/usage_file_id=<UF-...>.parquet   the data
    <dest>/_quarantine/product_id=.../period=.../usage_file_id=<UF-...>.parquet  set-aside records
    <dest>/_manifest/<UF-...>.json                                               what was exported
    <dest>/_staging/<UF-...>.<kind>.<token>.parquet                               being written
    <dest>/_staging/<UF-...>.owner.<token>.json                                   a running export

Everything that is not data sits under a name starting with ``_``: pyarrow/pandas dataset
discovery skips such directories, and the documented DuckDB/Spark glob
``<dest>/product_id=*/period=*/*.parquet`` cannot match them.

Atomic publish: a file is written whole under ``_staging`` and moved onto its final name only
after it was closed and checked, so a reader sees the old file or the new one, never a part. On
a local disk the move is a ``rename`` (atomic, replaces the target); on S3 the object appears
whole when its copy completes. A killed export leaves only a ``_staging`` file, which no reader
sees and the next export of the same usage file removes. Only ``ObjectStoragePath``/fsspec
operations are used, never ``os.*``, so the same code runs against any store.

One export of a usage file at a time (:class:`ExportLease`). Every export has an owner token;
everything it stages carries it, and while it runs it keeps ``<UF>.owner.<token>.json`` fresh
(a heartbeat thread rewrites it every ``HEARTBEAT_SECONDS``). A second export of the same file
waits while an earlier owner is alive, then goes on; after ``wait_seconds`` it stops with
"another export of UF-... is running". Cleanup removes only staged files whose owner is not alive:
its heartbeat is older than ``STALE_AFTER_SECONDS`` or, on the same host, its process is gone.
The marker is an ordinary object written by a move, so the same rules hold on an object store.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from connect_provider.config import data_dir
from connect_provider.exceptions import ConnectError, ConnectValidationError
from connect_provider.usage.schema import MEMORY_POOL

log = logging.getLogger(__name__)

STAGING_DIR = "_staging"
QUARANTINE_DIR = "_quarantine"
MANIFEST_DIR = "_manifest"
# Rows buffered before a row group is written: the exporter's peak memory. Measured at 1,000,000
# records (BENCHMARKS.md): 32,768 rows peaked at 251-256 MB, 25,000 at 235 MB for 0.6 % more bytes.
# The real record shape (schema 2: category struct, asset_recon_id, extra) is wider: at 25,000 rows
# it peaked at 235-238 MB against 225-228 MB before; 20,000 rows bring it back to 226-228 MB for
# 0.5 % more bytes (200,000 records, BENCHMARKS.md).
DEFAULT_ROW_GROUP_ROWS = 20_000
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

    def staging_dir(self) -> ObjectStoragePath:
        return self.root / STAGING_DIR

    def staging_path(
        self, usage_file_id: str, kind: str, suffix: str = "parquet", token: str | None = None
    ) -> ObjectStoragePath:
        """A staged file of one export: ``<UF>.<kind>.<token>.<suffix>`` (a fresh token if none)."""
        check_partition_value("usage_file_id", usage_file_id)
        return self.staging_dir() / f"{usage_file_id}.{kind}.{token or new_token()}.{suffix}"

    def remove_stale_staging(self, usage_file_id: str, live_tokens: Iterable[str] = ()) -> int:
        """Delete what dead exports of this usage file left in ``_staging``; returns the count.

        A file whose owner token is in ``live_tokens`` belongs to a running export and is kept.
        """
        staging = self.staging_dir()
        if not staging.exists():
            return 0
        keep = set(live_tokens)
        removed = 0
        prefix = f"{check_partition_value('usage_file_id', usage_file_id)}."
        for leftover in staging.iterdir():
            name = leftover.name
            parts = name[len(prefix) :].split(".") if name.startswith(prefix) else []
            if len(parts) == 3 and parts[1] not in keep:  # <kind>.<token>.<suffix> of this file
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed


def new_token() -> str:
    """An export's owner token: unique, and a single path segment."""
    return uuid.uuid4().hex


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


_PROVIDERS = {
    "s3": "apache-airflow-providers-amazon",
    "s3a": "apache-airflow-providers-amazon",
    "gs": "apache-airflow-providers-google",
    "gcs": "apache-airflow-providers-google",
    "abfs": "apache-airflow-providers-microsoft-azure",
    "abfss": "apache-airflow-providers-microsoft-azure",
    "adl": "apache-airflow-providers-microsoft-azure",
    "az": "apache-airflow-providers-microsoft-azure",
    "sftp": "apache-airflow-providers-sftp",
    "ftp": "apache-airflow-providers-ftp",
    "hdfs": "apache-airflow-providers-apache-hdfs",
    "webhdfs": "apache-airflow-providers-apache-hdfs",
}


def check_destination(destination: str | os.PathLike[str] | ObjectStoragePath | None) -> ObjectStoragePath:
    """The destination as ObjectStoragePath, refused (naming ``destination`` and the fix) when its
    scheme has no filesystem here or when it is an existing file. Called before any API call, so
    a typo costs nothing on Connect."""
    shown = str(destination)
    try:
        root = as_storage_path(destination)
    except (ValueError, TypeError) as exc:
        raise ConnectValidationError(
            "destination",
            f"{shown!r} cannot be written: {exc}. Give a local folder, a file:// URI, or a URI whose "
            "filesystem is installed (e.g. s3:// with apache-airflow-providers-amazon)",
        ) from None
    try:
        root.fs  # noqa: B018 - resolving the filesystem is the check
    except (ValueError, ImportError, KeyError) as exc:
        scheme = root.protocol or "file"
        provider = _PROVIDERS.get(scheme)
        fix = (
            f"install {provider} (it registers the {scheme}:// filesystem)"
            if provider
            else "use a local folder, file://, or a scheme whose Airflow provider is installed"
        )
        raise ConnectValidationError(
            "destination", f"{shown!r}: no filesystem for the scheme {scheme!r} here ({exc}); {fix}"
        ) from None
    try:
        is_file = root.is_file()
    except Exception as exc:  # the store answers with its own errors (credentials, network)
        raise ConnectValidationError(
            "destination", f"{shown!r} cannot be reached: {type(exc).__name__}: {exc}"
        ) from None
    if is_file:
        raise ConnectValidationError(
            "destination",
            f"{shown!r} is an existing file; give the folder the dataset lives in "
            f"(e.g. {str(root.parent / 'usage_records')!r})",
        )
    return root


# ---------------------------------------------------------------------------------------------
# One export of a usage file at a time (see the module docstring).
HEARTBEAT_SECONDS = 15.0
STALE_AFTER_SECONDS = 120.0
DEFAULT_WAIT_SECONDS = 900.0
_OWNER_KIND = "owner"


def _host_identity() -> str:
    """This host, as far as process ids mean anything: the host name and, on Linux, the pid
    namespace (two containers may share a host name, never a pid namespace)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}{'/' + namespace if namespace else ''}"


_HOST = _host_identity()


@dataclass(frozen=True)
class Owner:
    """What an export's owner marker says about it."""

    token: str
    usage_file_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    path: str

    def alive(self, now: float, stale_after: float) -> bool:
        """Alive: a fresh heartbeat, and (on this host) a process that still exists."""
        if self.host == _HOST and self.pid != os.getpid() and not _pid_exists(self.pid):
            return False
        return now - self.heartbeat_at <= stale_after

    def describe(self, now: float) -> str:
        running = max(now - self.started_at, 0)
        beat = max(now - self.heartbeat_at, 0)
        return (
            f"owner {self.token[:8]} on {self.host} (pid {self.pid}), running for {running:.0f} s, "
            f"last heartbeat {beat:.0f} s ago"
        )


def _pid_exists(pid: int) -> bool:
    """Whether a process of this host exists (a liveness shortcut only; the lease itself is the file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


class ExportLease:
    """Ownership of one usage file's export under one destination, as an owner marker in ``_staging``.

    ``acquire()`` writes the marker, waits (up to ``wait_seconds``) while an earlier live owner
    exists, starts the heartbeat and removes what dead owners left. ``release()`` stops the
    heartbeat and deletes the marker. Use it as a context manager.
    """

    def __init__(
        self,
        layout: DatasetLayout,
        usage_file_id: str,
        *,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_after_seconds: float = STALE_AFTER_SECONDS,
        poll_seconds: float = 1.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.layout = layout
        self.usage_file_id = check_partition_value("usage_file_id", usage_file_id)
        self.token = new_token()
        self.wait_seconds = wait_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after_seconds = stale_after_seconds
        self.poll_seconds = poll_seconds
        self.log = logger or log
        self.started_at = 0.0
        self.marker = layout.staging_path(self.usage_file_id, _OWNER_KIND, "json", token=self.token)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.acquired = False

    def __enter__(self) -> ExportLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _write_marker(self) -> None:
        body = {
            "token": self.token,
            "usage_file_id": self.usage_file_id,
            "host": _HOST,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
        }
        tmp = self.layout.staging_path(self.usage_file_id, "heartbeat", "json", token=self.token)
        write_bytes_atomically(self.marker, json.dumps(body).encode(), tmp)

    def owners(self) -> list[Owner]:
        """Every owner marker of this usage file (ours included)."""
        staging = self.layout.staging_dir()
        if not staging.exists():
            return []
        prefix = f"{self.usage_file_id}.{_OWNER_KIND}."
        found = []
        for path in staging.iterdir():
            name = path.name
            parts = name[len(prefix) :].split(".") if name.startswith(prefix) else []
            if len(parts) != 2 or parts[1] != "json":
                continue
            token = parts[0]
            try:
                raw = json.loads(path.read_bytes())
                found.append(
                    Owner(
                        token=token,
                        usage_file_id=self.usage_file_id,
                        host=str(raw["host"]),
                        pid=int(raw["pid"]),
                        started_at=float(raw["started_at"]),
                        heartbeat_at=float(raw["heartbeat_at"]),
                        path=str(path),
                    )
                )
            except FileNotFoundError:
                continue  # released while we listed
            except (ValueError, KeyError, TypeError):
                # Unreadable (markers are written by a move, so this is not a half-written one):
                # treated as alive, so that nothing of a running export is ever deleted.
                now = time.time()
                found.append(Owner(token, self.usage_file_id, "?", -1, now, now, str(path)))
        return found

    def acquire(self) -> None:
        self.started_at = time.time()
        self._write_marker()
        self.acquired = True
        deadline = time.monotonic() + self.wait_seconds
        me = (self.started_at, self.token)
        told = False
        beat = time.monotonic()
        try:
            while True:
                now = time.time()
                others = [o for o in self.owners() if o.token != self.token]
                live = [o for o in others if o.alive(now, self.stale_after_seconds)]
                earlier = [o for o in live if (o.started_at, o.token) < me]
                if not earlier:
                    break
                if time.monotonic() >= deadline:
                    first = min(earlier, key=lambda o: (o.started_at, o.token))
                    raise ConnectError(
                        f"another export of {self.usage_file_id} is running ({first.describe(now)}) into "
                        f"{self.layout.root}; this one waited {self.wait_seconds:.0f} s and stops without "
                        "changing anything. Run it again when that export has finished; if that export is "
                        f"dead, delete {first.path}"
                    )
                if not told:
                    self.log.info(
                        "%s: another export is running (%s); waiting for it to finish",
                        self.usage_file_id,
                        earlier[0].describe(now),
                    )
                    told = True
                if time.monotonic() - beat >= self.heartbeat_seconds:
                    self._write_marker()  # still waiting: not stale
                    beat = time.monotonic()
                time.sleep(self.poll_seconds)
            self._thread = threading.Thread(
                target=self._beat, name=f"usage-export-lease-{self.usage_file_id}", daemon=True
            )
            self._thread.start()
            live_tokens = {o.token for o in self.owners() if o.alive(time.time(), self.stale_after_seconds)}
            live_tokens.add(self.token)
            if self.layout.remove_stale_staging(self.usage_file_id, live_tokens):
                self.log.info("%s: removed files an interrupted export left in staging", self.usage_file_id)
        except BaseException:
            self.release()
            raise

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._write_marker()
            except Exception as exc:  # a transient store error: the next beat tries again
                self.log.warning("%s: heartbeat not written: %s", self.usage_file_id, exc)

    def release(self) -> None:
        """Stop the heartbeat and delete the marker (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self.acquired:
            self.acquired = False
            try:
                self.marker.unlink(missing_ok=True)
            except Exception as exc:  # it goes stale on its own
                self.log.warning("%s: owner marker %s not removed: %s", self.usage_file_id, self.marker, exc)


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
