"""The streaming export of one usage file to Parquet: used by the operator, the DAG and the benchmark.

Flow, one page and one row group in memory at a time::

    destination checked (before any API call) -> ExportLease (one export of a file at a time)
    hook.iter_usage_record_raw_pages (fetched one page ahead, in a thread)
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
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol

from connect_provider.enums import UsageFileStatus
from connect_provider.exceptions import ConnectError, ConnectValidationError
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
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    compression: str = "zstd",
    on_bad_records: str = "quarantine",
    max_bad_record_ratio: float | str = DEFAULT_MAX_BAD_RECORD_RATIO,
) -> None:
    """Local checks, before any call to Connect; each error names the argument and the fix."""
    bad_record_ratio(max_bad_record_ratio)
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


def prefetch(pages: Iterable[PageLike], depth: int = 2) -> Iterator[PageLike]:
    """Fetch pages in a background thread, ``depth`` pages ahead, while the caller converts.

    The network wait of the next page overlaps the Arrow work on this one. Memory stays bounded
    (at most ``depth`` + 1 pages). An error of the fetch is raised in the caller; when the caller
    stops early, the thread stops after the page it is fetching.
    """
    if depth <= 0:
        yield from pages
        return
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        iterator = iter(pages)
        try:
            for page in iterator:
                if not put(("page", page)):
                    break
            else:
                put(("end", None))
        except BaseException as exc:
            put(("error", exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=fetch, name="usage-page-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "page":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        worker.join(timeout=30)


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
    final = layout.data_path(context.product_id, context.period, file_id)
    quarantine_final = layout.quarantine_path(context.product_id, context.period, file_id)
    if lease is not None and lease.usage_file_id != file_id:
        raise ConnectError(f"the export lease is for {lease.usage_file_id}, not for {file_id}")
    own = lease is None
    if lease is None:
        lease = ExportLease(layout, file_id, wait_seconds=wait_for_other_export, logger=logger)
        lease.acquire()
    try:
        return _export(
            pages, usage_file, context, layout, lease, final, quarantine_final,
            row_group_rows=row_group_rows, compression=compression, on_bad_records=on_bad_records,
            ratio=ratio, progress_interval=progress_interval, logger=logger, started=started,
        )  # fmt: skip
    finally:
        if own:
            lease.release()


def _export(
    pages: Iterable[PageLike],
    usage_file: dict[str, Any],
    context: ExportContext,
    layout: DatasetLayout,
    lease: ExportLease,
    final: ObjectStoragePath,
    quarantine_final: ObjectStoragePath,
    *,
    row_group_rows: int,
    compression: str,
    on_bad_records: str,
    ratio: float,
    progress_interval: float,
    logger: logging.Logger,
    started: float,
) -> ExportResult:
    file_id = context.usage_file_id
    converter = PageConverter(context)
    data = StagedParquetWriter(
        layout.staging_path(file_id, "data", token=lease.token),
        FILE_SCHEMA,
        compression=compression,
        row_group_rows=row_group_rows,
    )
    quarantine: StagedParquetWriter | None = None
    ids = UniqueIdCheck()
    progress = _Progress(file_id, logger, progress_interval)
    total: int | None = None
    received = 0
    bad = _BadRecords()
    unknown: set[str] = set()

    def too_many(count: int, base: int) -> ConnectError:
        return ConnectError(
            f"{file_id}: {count:,} of {base:,} records ({count / base:.2%}) cannot be exported, more than "
            f"max_bad_record_ratio={ratio:g} ({ratio:.2%}); nothing was published. First reasons: "
            f"{bad.reasons()}. So many usually means the records' shape changed on Connect: read the "
            "reasons, or raise max_bad_record_ratio (up to 1) to publish the good records and quarantine "
            "the rest"
        )

    logger.info("%s: exporting to %s", file_id, final)
    try:
        for page in pages:
            if total is None:
                total = page.total
            elif page.total != total:
                raise ConnectError(
                    f"{file_id}: the record count changed during the export (Content-Range total {total} "
                    f"then {page.total}); nothing was published, run the export again"
                )
            if page.offset != received:
                raise ConnectError(
                    f"{file_id}: a page starts at offset {page.offset} after {received} records; pages must "
                    "arrive in order without gaps (nothing was published)"
                )
            try:
                converted = converter.convert(page.body, page.offset)
            except PageFormatError as exc:
                raise ConnectError(f"{file_id}: page at offset {page.offset}: {exc}") from exc
            if converted.received != page.count:
                raise ConnectError(
                    f"{file_id}: the page at offset {page.offset} holds {converted.received} records but "
                    f"Content-Range announced {page.count}; nothing was published"
                )
            received += converted.received
            new_fields = converted.unknown_fields - unknown
            if new_fields:
                unknown |= new_fields
                logger.warning(
                    "%s: records carry fields this schema does not know (%s); they are kept in the "
                    "'extra' column (a JSON object by path)",
                    file_id,
                    ", ".join(sorted(new_fields)),
                )
            if converted.bad:
                if on_bad_records == "fail":
                    first = converted.bad[0]
                    raise ConnectError(
                        f"{file_id}: record {first.record_id or '#' + str(first.record_index)} cannot be "
                        f"exported: {first.reason} ({len(converted.bad)} bad on this page). "
                        "on_bad_records='fail' stops the export; use 'quarantine' to set such records aside"
                    )
                bad.add(converted.bad)
                if total is not None and total > 0 and bad.count > ratio * total:
                    raise too_many(bad.count, total)  # past the cap whatever the other pages hold
                if quarantine is None:
                    quarantine = StagedParquetWriter(
                        layout.staging_path(file_id, "quarantine", token=lease.token),
                        QUARANTINE_SCHEMA,
                        compression=compression,
                        row_group_rows=row_group_rows,
                    )
                quarantine.write(quarantine_batch(context, converted.bad, datetime.now(timezone.utc)))
                logger.warning(
                    "%s: %d record(s) quarantined on the page at offset %d, first: %s",
                    file_id,
                    len(converted.bad),
                    page.offset,
                    converted.bad[0].reason,
                )
            ids.add(converted.batch.column("id"))
            data.write(converted.batch)
            progress.update(received, total)

        if total is None:
            total = 0
        if total >= 0 and received != total:
            raise ConnectError(
                f"{file_id}: received {received} records but Content-Range announced {total}; "
                "nothing was published"
            )
        if total < 0:
            logger.warning("%s: the server sent no Content-Range; the record count was not checked", file_id)
        if received and bad.count > ratio * received:
            raise too_many(bad.count, received)
        data.close()
        if quarantine is not None:
            quarantine.close()
        duplicates = ids.duplicates(lambda: iter_parquet_column(data.staged, "id"))
        if duplicates:
            raise ConnectError(
                f"{file_id}: record ids appear more than once ({', '.join(duplicates)}); the listing shifted "
                "while it was paged or the server repeats records. Nothing was published; run it again"
            )
        size = int(data.staged.stat().st_size)
        publish(data.staged, final)
        if quarantine is not None:
            publish(quarantine.staged, quarantine_final)
        else:
            unlink_if_exists(quarantine_final)
    except BaseException:
        close = getattr(pages, "close", None)
        if close is not None:
            close()  # stops a prefetch thread now rather than when the generator is collected
        data.discard()
        if quarantine is not None:
            quarantine.discard()
        raise

    quarantined = bad.count
    elapsed = time.monotonic() - started
    version = usage_file_version(usage_file)
    write_entry(
        layout,
        ManifestEntry(
            usage_file_id=file_id,
            version=version,
            status=usage_file.get("status"),
            product_id=context.product_id,
            period=context.period,
            rows=data.rows,
            quarantined=quarantined,
            bytes=size,
            path=str(final),
            quarantine_path=str(quarantine_final) if quarantine is not None else None,
            exported_at=context.exported_at.isoformat(),
            basis=version_basis(usage_file),
            unknown_fields=sorted(unknown),
        ),
        token=lease.token,
    )
    progress.update(received, total, force=True)
    logger.info(
        "%s: published %s rows (%s quarantined, %s bytes) in %.1f s to %s",
        file_id,
        f"{data.rows:,}",
        f"{quarantined:,}",
        f"{size:,}",
        elapsed,
        final,
    )
    return ExportResult(
        usage_file_id=file_id,
        path=str(final),
        rows=data.rows,
        bytes=size,
        quarantined=quarantined,
        quarantine_path=str(quarantine_final) if quarantine is not None else None,
        product_id=context.product_id,
        period=context.period,
        version=version,
        exported_at=context.exported_at.isoformat(),
        seconds=elapsed,
        unknown_fields=tuple(sorted(unknown)),
    )


def export_usage_file(
    hook: ConnectHook,
    usage_file_id: str,
    destination: str | os.PathLike[str] | ObjectStoragePath | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    compression: str = "zstd",
    on_bad_records: str = "quarantine",
    max_bad_record_ratio: float | str = DEFAULT_MAX_BAD_RECORD_RATIO,
    prefetch_pages: int = 2,
    progress_interval: float = 10.0,
    wait_for_other_export: float = DEFAULT_WAIT_SECONDS,
    logger: logging.Logger | None = None,
) -> ExportResult:
    """Export every record of one usage file to ``destination`` (default ``data_dir()/usage_records``).

    Everything that can be checked locally is, before any call to Connect: the options, the
    usage file id and the destination (a scheme with no filesystem here, or an existing file, is
    refused). Then the file's lease is taken (another export of the same file is waited for), one
    call reads the usage file (partition, version), and its record pages stream through
    :func:`export_usage_pages`. This is what ``ConnectUsageRecordsToParquetOperator`` runs and what
    the benchmark measures.
    """
    usage_file_id = usage_file_id.strip() if isinstance(usage_file_id, str) else usage_file_id
    validate_export_options(
        usage_file_id=usage_file_id,
        page_size=page_size,
        row_group_rows=row_group_rows,
        compression=compression,
        on_bad_records=on_bad_records,
        max_bad_record_ratio=max_bad_record_ratio,
    )
    layout = DatasetLayout(check_destination(destination))
    with ExportLease(layout, usage_file_id, wait_seconds=wait_for_other_export, logger=logger) as lease:
        usage_file = hook.get_usage_file(usage_file_id)
        pages = hook.iter_usage_record_raw_pages(usage_file_id, page_size=page_size)
        seen_pages = 0

        def counted() -> Iterator[PageLike]:
            nonlocal seen_pages
            for page in pages:
                seen_pages += 1
                yield page
            if seen_pages == 0:
                # The hook yields nothing for an empty listing: confirm the total really is 0.
                total = hook.count("/usage/records", query=records_query(usage_file_id))
                if total:
                    raise ConnectError(
                        f"{usage_file_id}: the listing returned no records but Content-Range counts "
                        f"{total}; nothing was published"
                    )

        return export_usage_pages(
            prefetch(counted(), prefetch_pages),
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
