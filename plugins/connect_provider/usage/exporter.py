"""The streaming export of one usage file to Parquet: used by the operator, the DAG and the benchmark.

Flow, one page and one row group in memory at a time::

    hook.iter_usage_record_raw_pages (fetched one page ahead, in a thread)
      -> PageConverter.convert (Arrow JSON reader, vectorised checks; bad records aside)
      -> StagedParquetWriter (row groups of ``row_group_rows``) + quarantine writer
      -> checks: records received == Content-Range total, ids unique
      -> publish (one move per file) -> manifest entry

Nothing is published unless every check passed: a failed or killed export leaves the previous
version of the file (if any) in place and only a hidden ``_staging`` file behind.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from connect_provider.enums import UsageFileStatus
from connect_provider.exceptions import ConnectError, ConnectValidationError
from connect_provider.usage.manifest import ManifestEntry, usage_file_version, version_basis, write_entry
from connect_provider.usage.schema import (
    FILE_SCHEMA,
    QUARANTINE_SCHEMA,
    ExportContext,
    PageConverter,
    PageFormatError,
    quarantine_batch,
)
from connect_provider.usage.writer import (
    COMPRESSIONS,
    DEFAULT_ROW_GROUP_ROWS,
    DatasetLayout,
    StagedParquetWriter,
    UniqueIdCheck,
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
) -> None:
    """Local checks, before any call to Connect; each error names the argument and the fix."""
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
    exported_at: datetime | None = None,
    progress_interval: float = 10.0,
    logger: logging.Logger | None = None,
) -> ExportResult:
    """Write the records of ``usage_file`` arriving as ``pages`` to the dataset at ``destination``.

    The core of the export, with no hook: tests and the benchmark can feed pages from anywhere.
    ``usage_file`` is the usage file object (id, product, period, status, events...) fetched
    before the pages; it places the file in its partition and versions the manifest entry.
    Raises ConnectError (nothing published) when a check fails.
    """
    validate_export_options(
        row_group_rows=row_group_rows, compression=compression, on_bad_records=on_bad_records
    )
    logger = logger or log
    started = time.monotonic()
    try:
        context = ExportContext.from_usage_file(usage_file, exported_at)
    except PageFormatError as exc:
        raise ConnectError(str(exc)) from exc
    file_id = context.usage_file_id
    layout = DatasetLayout(destination)
    final = layout.data_path(context.product_id, context.period, file_id)
    quarantine_final = layout.quarantine_path(context.product_id, context.period, file_id)
    if layout.remove_stale_staging(file_id):
        logger.info("%s: removed files a previous, interrupted export left in staging", file_id)

    converter = PageConverter(context)
    data = StagedParquetWriter(
        layout.staging_path(file_id, "data"),
        FILE_SCHEMA,
        compression=compression,
        row_group_rows=row_group_rows,
    )
    quarantine: StagedParquetWriter | None = None
    ids = UniqueIdCheck()
    progress = _Progress(file_id, logger, progress_interval)
    total: int | None = None
    received = 0
    quarantined = 0
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
            if converted.bad:
                if on_bad_records == "fail":
                    first = converted.bad[0]
                    raise ConnectError(
                        f"{file_id}: record {first.record_id or '#' + str(first.record_index)} cannot be "
                        f"exported: {first.reason} ({len(converted.bad)} bad on this page). "
                        "on_bad_records='fail' stops the export; use 'quarantine' to set such records aside"
                    )
                if quarantine is None:
                    quarantine = StagedParquetWriter(
                        layout.staging_path(file_id, "quarantine"),
                        QUARANTINE_SCHEMA,
                        compression=compression,
                        row_group_rows=row_group_rows,
                    )
                quarantine.write(quarantine_batch(context, converted.bad, datetime.now(timezone.utc)))
                quarantined += len(converted.bad)
                logger.warning(
                    "%s: %d record(s) quarantined on the page at offset %d, first: %s",
                    file_id,
                    len(converted.bad),
                    page.offset,
                    converted.bad[0].reason,
                )
            ids.add(converted.batch.column(0))
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
        ),
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
    prefetch_pages: int = 2,
    progress_interval: float = 10.0,
    logger: logging.Logger | None = None,
) -> ExportResult:
    """Export every record of one usage file to ``destination`` (default ``data_dir()/usage_records``).

    One call to read the usage file (partition, version), then its record pages streamed through
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
    )
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
                    f"{usage_file_id}: the listing returned no records but Content-Range counts {total}; "
                    "nothing was published"
                )

    return export_usage_pages(
        prefetch(counted(), prefetch_pages),
        usage_file,
        destination,
        row_group_rows=row_group_rows,
        compression=compression,
        on_bad_records=on_bad_records,
        progress_interval=progress_interval,
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
