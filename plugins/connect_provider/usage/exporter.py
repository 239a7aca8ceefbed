"""The streaming export of one usage file to Parquet: used by the operator, the DAG and the benchmark.

Flow, ``concurrency + 1`` pages and one row group in memory at a time::

    destination checked (before any API call) -> ExportLease (one export of a file at a time)
    hook.iter_usage_record_raw_pages (up to ``concurrency`` pages fetched side by side by the
    hook's worker threads, handed on in order)
      -> PageConverter.convert (Arrow JSON reader, vectorised checks; bad records aside,
         unknown fields kept in ``extra``)
      -> StagedParquetWriter (row groups of ``row_group_rows``) + quarantine writer
      -> checks: records received == Content-Range total, ids unique,
         set-aside records <= ``max_bad_record_ratio`` of the records
      -> publish (one move per file) -> manifest entry

Nothing is published unless every check passed: a failed or killed export leaves the previous
version of the file (if any) in place and only a hidden ``_staging`` file behind. In particular a
change of the records' shape on Connect never turns into a green task with an empty table: unknown
fields are kept, and records Arrow cannot read past ``max_bad_record_ratio`` (1 % by default) fail
the export with the counts and the first reasons.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol

from connect_provider.enums import UsageFileStatus
from connect_provider.exceptions import ConnectError, ConnectValidationError
from connect_provider.hooks.paging import DEFAULT_MAX_CONCURRENCY, MAX_CONCURRENCY
from connect_provider.usage.manifest import ManifestEntry, usage_file_version, version_basis, write_entry
from connect_provider.usage.schema import (
    FILE_SCHEMA,
    QUARANTINE_SCHEMA,
    BadRecord,
    ExportContext,
    PageConverter,
    PageFormatError,
    quarantine_batch,
)
from connect_provider.usage.writer import (
    COMPRESSIONS,
    DEFAULT_ROW_GROUP_ROWS,
    DEFAULT_WAIT_SECONDS,
    DatasetLayout,
    ExportLease,
    StagedParquetWriter,
    UniqueIdCheck,
    check_destination,
    check_partition_value,
    iter_parquet_column,
    publish,
    unlink_if_exists,
)

if TYPE_CHECKING:
    import os

    from airflow.sdk import ObjectStoragePath

    from connect_provider.hooks.connect import ConnectHook

log = logging.getLogger(__name__)

BAD_RECORD_MODES = ("quarantine", "fail")
#: The share of a file's records that may be set aside before the export fails instead (1 %).
DEFAULT_MAX_BAD_RECORD_RATIO = 0.01
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000
#: Record pages fetched side by side: at Connect's ~150 ms a page, the wait of a large file / 4.
DEFAULT_CONCURRENCY = DEFAULT_MAX_CONCURRENCY
DEFAULT_STATUSES = (
    UsageFileStatus.READY.value,
    UsageFileStatus.PENDING.value,
    UsageFileStatus.ACCEPTED.value,
    UsageFileStatus.CLOSED.value,
)
# Creation order, the id breaking ties: both are orderings GET /usage/files allows (spec v37).
USAGE_FILES_ORDERING = ("created.at", "id")


class PageLike(Protocol):
    """What the exporter needs of a page: the hook's ``RawPage`` (body, offset, count, total)."""

    body: bytes
    offset: int
    count: int
    total: int


@dataclass(frozen=True)
class ExportResult:
    """The outcome of one export; :meth:`to_xcom` is what the operator returns."""

    usage_file_id: str
    path: str
    rows: int
    bytes: int
    quarantined: int
    quarantine_path: str | None
    product_id: str
    period: str
    version: str
    exported_at: str
    seconds: float
    unknown_fields: tuple[str, ...] = ()

    def to_xcom(self) -> dict[str, Any]:
        """Counts, ids and paths only: XCom never carries record data."""
        return {
            "path": self.path,
            "rows": self.rows,
            "bytes": self.bytes,
            "usage_file_id": self.usage_file_id,
            "quarantined": self.quarantined,
        }


def validate_export_options(
    *,
    usage_file_id: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    concurrency: int | str = DEFAULT_CONCURRENCY,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    compression: str = "zstd",
    on_bad_records: str = "quarantine",
    max_bad_record_ratio: float | str = DEFAULT_MAX_BAD_RECORD_RATIO,
) -> None:
    """Local checks, before any call to Connect; each error names the argument and the fix."""
    bad_record_ratio(max_bad_record_ratio)
    export_concurrency(concurrency)
    if usage_file_id is not None:
        check_partition_value("usage_file_id", usage_file_id)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ConnectValidationError("page_size", f"{page_size!r}: give an integer from 1 to {MAX_PAGE_SIZE}")
    if isinstance(row_group_rows, bool) or not isinstance(row_group_rows, int) or row_group_rows < 1:
        raise ConnectValidationError(
            "row_group_rows", f"{row_group_rows!r}: give a positive integer (e.g. {DEFAULT_ROW_GROUP_ROWS})"
        )
    if compression not in COMPRESSIONS:
        raise ConnectValidationError(
            "compression", f"{compression!r}: choose one of {', '.join(COMPRESSIONS)}"
        )
    if on_bad_records not in BAD_RECORD_MODES:
        raise ConnectValidationError(
            "on_bad_records",
            f"{on_bad_records!r}: choose 'quarantine' (set aside) or 'fail' (stop the export)",
        )


def export_concurrency(value: int | str) -> int:
    """``concurrency`` as an int from 1 to 32; a rendered template (``"8"``) is accepted."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not 1 <= number <= MAX_CONCURRENCY:
        raise ConnectValidationError(
            "concurrency",
            f"{value!r}: give a whole number from 1 to {MAX_CONCURRENCY}, the record pages fetched side "
            f"by side (default {DEFAULT_CONCURRENCY}; the connection's max_concurrency caps it)",
        )
    return number


def bad_record_ratio(value: float | int | str | Decimal) -> float:
    """``max_bad_record_ratio`` as a float in [0, 1]; a rendered template (``"0.05"``) is accepted."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float, Decimal)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(Decimal(value.strip()))
        except InvalidOperation:
            number = None
    else:
        number = None
    if number is None or not 0.0 <= number <= 1.0:
        raise ConnectValidationError(
            "max_bad_record_ratio",
            f"{value!r}: give a number from 0 to 1, the share of a file's records that may be set aside "
            f"before the export fails (default {DEFAULT_MAX_BAD_RECORD_RATIO}, i.e. 1 %)",
        )
    return number


class _BadRecords:
    """Counts the records set aside and keeps the first few reasons for the error message."""

    def __init__(self, keep: int = 3) -> None:
        self.count = 0
        self.first: list[BadRecord] = []
        self.keep = keep

    def add(self, bad: list[BadRecord]) -> None:
        self.count += len(bad)
        seen = {b.reason for b in self.first}
        for record in bad:
            if len(self.first) >= self.keep:
                break
            if record.reason not in seen:
                self.first.append(record)
                seen.add(record.reason)

    def reasons(self) -> str:
        return "; ".join(f"record {b.record_id or '#' + str(b.record_index)}: {b.reason}" for b in self.first)


class _Progress:
    """Logs records done, rate and time left at most every ``interval`` seconds."""

    def __init__(self, usage_file_id: str, logger: logging.Logger, interval: float) -> None:
        self.usage_file_id = usage_file_id
        self.log = logger
        self.interval = interval
        self.started = time.monotonic()
        self._last = self.started

    def update(self, done: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        if total and total > 0:
            left = max(total - done, 0) / rate if rate > 0 else float("inf")
            self.log.info(
                "%s: %s/%s records (%.0f%%), %s records/s, about %.0f s left",
                self.usage_file_id,
                f"{done:,}",
                f"{total:,}",
                100.0 * done / total,
                f"{rate:,.0f}",
                left,
            )
        else:
            self.log.info("%s: %s records, %s records/s", self.usage_file_id, f"{done:,}", f"{rate:,.0f}")


class _Export:
    """One export in progress: each page checked, converted and written; then checked and published.

    Split out of :func:`export_usage_pages` so each step is short and named. Nothing is published
    before :meth:`finish` has passed every check; :meth:`discard` drops the staged files.
    """

    def __init__(
        self,
        context: ExportContext,
        layout: DatasetLayout,
        lease: ExportLease,
        *,
        row_group_rows: int,
        compression: str,
        on_bad_records: str,
        ratio: float,
        progress_interval: float,
        logger: logging.Logger,
    ) -> None:
        self.context, self.layout, self.lease, self.log = context, layout, lease, logger
        self.file_id = context.usage_file_id
        self.final = layout.data_path(context.product_id, context.period, self.file_id)
        self.quarantine_final = layout.quarantine_path(context.product_id, context.period, self.file_id)
        self.row_group_rows, self.compression = row_group_rows, compression
        self.on_bad_records, self.ratio = on_bad_records, ratio
        self.converter = PageConverter(context)
        self.data = self._writer("data", FILE_SCHEMA)
        self.quarantine: StagedParquetWriter | None = None
        self.ids = UniqueIdCheck()
        self.progress = _Progress(self.file_id, logger, progress_interval)
        self.total: int | None = None
        self.received = 0
        self.bad = _BadRecords()
        self.unknown: set[str] = set()

    def _writer(self, kind: str, schema: Any) -> StagedParquetWriter:
        return StagedParquetWriter(
            self.layout.staging_path(self.file_id, kind, token=self.lease.token),
            schema,
            compression=self.compression,
            row_group_rows=self.row_group_rows,
        )

    def add(self, page: PageLike) -> None:
        """Check where ``page`` sits in the listing, convert it, set its bad records aside, write it."""
        self._check_position(page)
        try:
            converted = self.converter.convert(page.body, page.offset)
        except PageFormatError as exc:
            raise ConnectError(f"{self.file_id}: page at offset {page.offset}: {exc}") from exc
        if converted.received != page.count:
            raise ConnectError(
                f"{self.file_id}: the page at offset {page.offset} holds {converted.received} records but "
                f"Content-Range announced {page.count}; nothing was published"
            )
        self.received += converted.received
        self._note_unknown(converted.unknown_fields)
        if converted.bad:
            self._set_aside(converted.bad, page.offset)
        self.ids.add(converted.batch.column("id"))
        self.data.write(converted.batch)
        self.progress.update(self.received, self.total)

    def _check_position(self, page: PageLike) -> None:
        """Pages of one listing: the same total on every page, in order, without gaps."""
        if self.total is None:
            self.total = page.total
        elif page.total != self.total:
            raise ConnectError(
                f"{self.file_id}: the record count changed during the export (Content-Range total "
                f"{self.total} then {page.total}); nothing was published, run the export again"
            )
        if page.offset != self.received:
            raise ConnectError(
                f"{self.file_id}: a page starts at offset {page.offset} after {self.received} records; "
                "pages must arrive in order without gaps (nothing was published)"
            )

    def _note_unknown(self, fields: set[str] | frozenset[str]) -> None:
        new_fields = set(fields) - self.unknown
        if new_fields:
            self.unknown |= new_fields
            self.log.warning(
                "%s: records carry fields this schema does not know (%s); they are kept in the "
                "'extra' column (a JSON object by path)",
                self.file_id,
                ", ".join(sorted(new_fields)),
            )

    def _set_aside(self, bad: list[BadRecord], offset: int) -> None:
        """Quarantine a page's bad records, or fail (``on_bad_records="fail"``, or past the cap)."""
        if self.on_bad_records == "fail":
            first = bad[0]
            raise ConnectError(
                f"{self.file_id}: record {first.record_id or '#' + str(first.record_index)} cannot be "
                f"exported: {first.reason} ({len(bad)} bad on this page). "
                "on_bad_records='fail' stops the export; use 'quarantine' to set such records aside"
            )
        self.bad.add(bad)
        if self.total is not None and self.total > 0 and self.bad.count > self.ratio * self.total:
            raise self._too_many(self.bad.count, self.total)  # past the cap whatever the other pages hold
        if self.quarantine is None:
            self.quarantine = self._writer("quarantine", QUARANTINE_SCHEMA)
        self.quarantine.write(quarantine_batch(self.context, bad, datetime.now(timezone.utc)))
        self.log.warning(
            "%s: %d record(s) quarantined on the page at offset %d, first: %s",
            self.file_id,
            len(bad),
            offset,
            bad[0].reason,
        )

    def _too_many(self, count: int, base: int) -> ConnectError:
        ratio = self.ratio
        return ConnectError(
            f"{self.file_id}: {count:,} of {base:,} records ({count / base:.2%}) cannot be exported, more "
            f"than max_bad_record_ratio={ratio:g} ({ratio:.2%}); nothing was published. First reasons: "
            f"{self.bad.reasons()}. So many usually means the records' shape changed on Connect: read the "
            "reasons, or raise max_bad_record_ratio (up to 1) to publish the good records and quarantine "
            "the rest"
        )

    def finish(self) -> int:
        """The checks of the whole file, then publish (one move per file); the data file's size."""
        total = 0 if self.total is None else self.total
        self.total = total
        if total >= 0 and self.received != total:
            raise ConnectError(
                f"{self.file_id}: received {self.received} records but Content-Range announced {total}; "
                "nothing was published"
            )
        if total < 0:
            self.log.warning(
                "%s: the server sent no Content-Range; the record count was not checked", self.file_id
            )
        if self.received and self.bad.count > self.ratio * self.received:
            raise self._too_many(self.bad.count, self.received)
        self.data.close()
        if self.quarantine is not None:
            self.quarantine.close()
        duplicates = self.ids.duplicates(lambda: iter_parquet_column(self.data.staged, "id"))
        if duplicates:
            raise ConnectError(
                f"{self.file_id}: record ids appear more than once ({', '.join(duplicates)}); the "
                "listing shifted while it was paged or the server repeats records. Nothing was "
                "published; run it again"
            )
        size = int(self.data.staged.stat().st_size)
        publish(self.data.staged, self.final)
        if self.quarantine is not None:
            publish(self.quarantine.staged, self.quarantine_final)
        else:
            unlink_if_exists(self.quarantine_final)
        return size

    def discard(self) -> None:
        self.data.discard()
        if self.quarantine is not None:
            self.quarantine.discard()

    def record(self, usage_file: dict[str, Any], size: int, started: float) -> ExportResult:
        """Write the manifest entry of the published file and log it; the result."""
        quarantine_path = str(self.quarantine_final) if self.quarantine is not None else None
        context, rows, quarantined = self.context, self.data.rows, self.bad.count
        version = usage_file_version(usage_file)
        entry = ManifestEntry(
            usage_file_id=self.file_id, version=version, status=usage_file.get("status"),
            product_id=context.product_id, period=context.period, rows=rows, quarantined=quarantined,
            bytes=size, path=str(self.final), quarantine_path=quarantine_path,
            exported_at=context.exported_at.isoformat(), basis=version_basis(usage_file),
            unknown_fields=sorted(self.unknown),
        )  # fmt: skip
        write_entry(self.layout, entry, token=self.lease.token)
        self.progress.update(self.received, self.total, force=True)
        elapsed = time.monotonic() - started
        self.log.info(
            "%s: published %s rows (%s quarantined, %s bytes) in %.1f s to %s",
            self.file_id, f"{rows:,}", f"{quarantined:,}", f"{size:,}", elapsed, self.final,
        )  # fmt: skip
        return ExportResult(
            usage_file_id=self.file_id, path=str(self.final), rows=rows, bytes=size,
            quarantined=quarantined, quarantine_path=quarantine_path, product_id=context.product_id,
            period=context.period, version=version, exported_at=entry.exported_at, seconds=elapsed,
            unknown_fields=tuple(sorted(self.unknown)),
        )  # fmt: skip


def export_usage_pages(
    pages: Iterable[PageLike],
    usage_file: dict[str, Any],
    destination: str | os.PathLike[str] | ObjectStoragePath | None = None,
    *,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    compression: str = "zstd",
    on_bad_records: str = "quarantine",
    max_bad_record_ratio: float | str = DEFAULT_MAX_BAD_RECORD_RATIO,
    exported_at: datetime | None = None,
    progress_interval: float = 10.0,
    wait_for_other_export: float = DEFAULT_WAIT_SECONDS,
    lease: ExportLease | None = None,
    logger: logging.Logger | None = None,
) -> ExportResult:
    """Write the records of ``usage_file`` arriving as ``pages`` to the dataset at ``destination``.

    The core of the export, with no hook: tests and the benchmark can feed pages from anywhere.
    ``usage_file`` is the usage file object (id, product, period, status, events...) fetched
    before the pages; it places the file in its partition and versions the manifest entry.
    ``lease`` is the caller's :class:`ExportLease` of this file (else one is taken here, waiting up
    to ``wait_for_other_export`` seconds for another export of the same file to finish).
    Raises ConnectError (nothing published) when a check fails.
    """
    validate_export_options(
        row_group_rows=row_group_rows,
        compression=compression,
        on_bad_records=on_bad_records,
        max_bad_record_ratio=max_bad_record_ratio,
    )
    ratio = bad_record_ratio(max_bad_record_ratio)
    logger = logger or log
    started = time.monotonic()
    try:
        context = ExportContext.from_usage_file(usage_file, exported_at)
    except PageFormatError as exc:
        raise ConnectError(str(exc)) from exc
    file_id = context.usage_file_id
    layout = DatasetLayout(check_destination(destination) if lease is None else lease.layout.root)
    if lease is not None and lease.usage_file_id != file_id:
        raise ConnectError(f"the export lease is for {lease.usage_file_id}, not for {file_id}")
    own = lease is None
    if lease is None:
        lease = ExportLease(layout, file_id, wait_seconds=wait_for_other_export, logger=logger)
        lease.acquire()
    try:
        export = _Export(
            context, layout, lease, row_group_rows=row_group_rows, compression=compression,
            on_bad_records=on_bad_records, ratio=ratio, progress_interval=progress_interval, logger=logger,
        )  # fmt: skip
        size = _write_all(export, pages)
        return export.record(usage_file, size, started)
    finally:
        if own:
            lease.release()


def _write_all(export: _Export, pages: Iterable[PageLike]) -> int:
    """Every page through ``export``, then publish; on any error the pages stop and nothing is published."""
    export.log.info("%s: exporting to %s", export.file_id, export.final)
    try:
        for page in pages:
            export.add(page)
        return export.finish()
    except BaseException:
        close = getattr(pages, "close", None)
        if close is not None:
            close()  # stops the hook's page workers now rather than when the generator is collected
        export.discard()
        raise


def export_usage_file(
    hook: ConnectHook,
    usage_file_id: str,
    destination: str | os.PathLike[str] | ObjectStoragePath | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    compression: str = "zstd",
    on_bad_records: str = "quarantine",
    max_bad_record_ratio: float | str = DEFAULT_MAX_BAD_RECORD_RATIO,
    progress_interval: float = 10.0,
    wait_for_other_export: float = DEFAULT_WAIT_SECONDS,
    logger: logging.Logger | None = None,
) -> ExportResult:
    """Export every record of one usage file to ``destination`` (default ``data_dir()/usage_records``).

    Everything that can be checked locally is, before any call to Connect: the options, the
    usage file id and the destination (a scheme with no filesystem here, or an existing file, is
    refused). Then the file's lease is taken (another export of the same file is waited for), one
    call reads the usage file (partition, version), and its record pages stream through
    :func:`export_usage_pages`, up to ``concurrency`` of them fetched side by side by the hook
    (capped by the connection's ``max_concurrency``) while this thread converts and writes. This
    is what ``ConnectUsageRecordsToParquetOperator`` runs and what the benchmark measures.
    """
    usage_file_id = usage_file_id.strip() if isinstance(usage_file_id, str) else usage_file_id
    validate_export_options(
        usage_file_id=usage_file_id,
        page_size=page_size,
        concurrency=concurrency,
        row_group_rows=row_group_rows,
        compression=compression,
        on_bad_records=on_bad_records,
        max_bad_record_ratio=max_bad_record_ratio,
    )
    layout = DatasetLayout(check_destination(destination))
    with ExportLease(layout, usage_file_id, wait_seconds=wait_for_other_export, logger=logger) as lease:
        usage_file = hook.get_usage_file(usage_file_id)
        pages = hook.iter_usage_record_raw_pages(usage_file_id, page_size=page_size, concurrency=concurrency)
        return export_usage_pages(
            _confirm_empty(hook, usage_file_id, pages),
            usage_file,
            layout.root,
            row_group_rows=row_group_rows,
            compression=compression,
            on_bad_records=on_bad_records,
            max_bad_record_ratio=max_bad_record_ratio,
            progress_interval=progress_interval,
            lease=lease,
            logger=logger,
        )


def _confirm_empty(hook: ConnectHook, usage_file_id: str, pages: Iterator[PageLike]) -> Iterator[PageLike]:
    """``pages`` as they come; when there is none, one ``limit=0`` call confirms the total is 0.

    The hook yields nothing for an empty listing, and an empty file is published as an empty
    table: a listing that comes back empty while Content-Range counts records must fail instead.
    """
    seen = 0
    try:
        for page in pages:
            seen += 1
            yield page
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()
    if seen == 0:
        total = hook.count("/usage/records", query=records_query(usage_file_id))
        if total:
            raise ConnectError(
                f"{usage_file_id}: the listing returned no records but Content-Range counts {total}; "
                "nothing was published"
            )


def records_query(usage_file_id: str) -> str:
    """RQL for the records of one usage file (the spec's filter key is ``usagefile.id``)."""
    return f"eq(usagefile.id,{check_partition_value('usage_file_id', usage_file_id)})"


def validate_statuses(statuses: Iterable[str] | str) -> list[str]:
    """Usage file statuses from a list or a comma-separated string, checked against the spec's enum."""
    if isinstance(statuses, str):
        statuses = [s for s in (part.strip() for part in statuses.split(",")) if s]
    known = {s.value for s in UsageFileStatus}
    result = [str(s).strip().lower() for s in statuses]
    unknown = [s for s in result if s not in known]
    if unknown or not result:
        raise ConnectValidationError(
            "statuses", f"{unknown or 'nothing'}: give usage file statuses among {', '.join(sorted(known))}"
        )
    return result


def list_usage_files(
    hook: ConnectHook, statuses: Iterable[str] | str = DEFAULT_STATUSES
) -> list[dict[str, Any]]:
    """Usage files in the given statuses (``GET /usage/files?in(status,(...))``), every page.

    Read in creation order with the id breaking ties (both orderings ``/usage/files`` allows), so
    offset pages neither skip nor repeat a file.
    """
    wanted = validate_statuses(statuses)
    query = f"in(status,({','.join(wanted)}))"
    return list(hook.iter_items("/usage/files", query=query, ordering=USAGE_FILES_ORDERING))
