"""Operators over usage records: "Get Usage Records" for small files, and the Parquet export.

Both are thin: the export lives in :mod:`connect_provider.usage.exporter`, which the DAG and the
benchmark use as well. ``execute(context)`` reads nothing from the context, so ``op.execute({})``
behaves as in a DAG run.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from connect_provider.config import DEFAULT_CONN_ID
from connect_provider.exceptions import ConnectError, ConnectValidationError
from connect_provider.lineage import ConnectLineageMixin
from connect_provider.usage.exporter import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_BAD_RECORD_RATIO,
    DEFAULT_PAGE_SIZE,
    bad_record_ratio,
    export_concurrency,
    export_usage_file,
    records_query,
    validate_export_options,
)
from connect_provider.usage.writer import DEFAULT_ROW_GROUP_ROWS, check_partition_value

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from connect_provider.hooks.connect import ConnectHook

#: XCom is for ids, counts and paths: above this many records, use the Parquet operator.
DEFAULT_MAX_RECORDS = 10_000


class _UsageOperator(BaseOperator):
    def __init__(self, *, usage_file_id: str, connect_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.usage_file_id = usage_file_id
        self.connect_conn_id = connect_conn_id

    @cached_property
    def hook(self) -> ConnectHook:
        from connect_provider.hooks.connect import ConnectHook

        return ConnectHook(connect_conn_id=self.connect_conn_id)

    def _file_id(self) -> str:
        value = self.usage_file_id.strip() if isinstance(self.usage_file_id, str) else self.usage_file_id
        return check_partition_value("usage_file_id", value)


class ConnectGetUsageRecordsOperator(_UsageOperator):
    """The connector action "Get Usage Records": every record of a small usage file, as Connect sends them.

    The records are returned (so pushed to XCom). XCom is no place for bulk data: the file's size
    is counted first (one ``limit=0`` call) and a file above ``max_records`` fails the task with a
    pointer to :class:`ConnectUsageRecordsToParquetOperator`, before any record is read.

    :param usage_file_id: the usage file (``UF-...``); templated.
    :param max_records: the most records this operator returns (default 10,000).
    :param connect_conn_id: the Connect connection (default ``cloudblue_connect_default``).
    """

    template_fields: Sequence[str] = ("connect_conn_id", "usage_file_id")

    def __init__(self, *, usage_file_id: str, max_records: int = DEFAULT_MAX_RECORDS, **kwargs: Any) -> None:
        super().__init__(usage_file_id=usage_file_id, **kwargs)
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 0:
            raise ConnectValidationError("max_records", f"{max_records!r}: give a non-negative integer")
        self.max_records = max_records

    def execute(self, context: Context) -> list[dict[str, Any]]:
        file_id = self._file_id()
        total = self.hook.count("/usage/records", query=records_query(file_id))
        if total > self.max_records:
            raise ConnectError(
                f"usage file {file_id} holds {total:,} records, more than max_records={self.max_records:,}. "
                "XCom is not for bulk data: export it with ConnectUsageRecordsToParquetOperator "
                "(connect_provider.operators.usage) and pass the path on instead"
            )
        records: list[dict[str, Any]] = []
        for page in self.hook.iter_usage_record_pages(file_id):
            records.extend(page)
            if len(records) > self.max_records:
                raise ConnectError(
                    f"usage file {file_id} grew past max_records={self.max_records:,} while it was read; "
                    "use ConnectUsageRecordsToParquetOperator"
                )
        self.log.info("usage file %s: %d records", file_id, len(records))
        return records


class ConnectUsageRecordsToParquetOperator(ConnectLineageMixin, _UsageOperator):
    """Export every record of a usage file to typed, hive-partitioned Parquet, atomically.

    Writes ``<destination>/product_id=<PRD>/period=<YYYY-MM>/usage_file_id=<UF>.parquet`` with the
    schema of :mod:`connect_provider.usage.schema`, streaming ``concurrency + 1`` pages and one row
    group at a time; records that cannot be converted go to ``<destination>/_quarantine/...`` with
    the reason (or
    fail the task with ``on_bad_records="fail"``), and when more than ``max_bad_record_ratio`` of
    the records would be set aside the task fails and publishes nothing; fields the schema does not
    know are kept in the ``extra`` column. The manifest ``<destination>/_manifest/<UF>.json``
    records the exported version. The destination is checked before any call to Connect; a second
    export of the same file waits for the first. Logs progress with rate and time left.

    :param usage_file_id: the usage file (``UF-...``); templated.
    :param destination: a local path or a URI (``file://``, ``s3://``... through
        ``ObjectStoragePath``; ``s3://conn_id@bucket/...`` picks a connection); templated. Default:
        ``connect_provider.config.data_dir() / "usage_records"``.
    :param page_size: records per API call (1-1000, default 1000).
    :param concurrency: record pages fetched side by side (1-32, default 4; the connection's
        ``max_concurrency`` caps it); templated. The task takes as many slots of its pool
        (``pool_slots`` defaults to it), so the ``cloudblue_connect_api`` pool keeps bounding the
        calls a whole deployment makes to Connect. A templated value takes 4 slots unless
        ``pool_slots`` says otherwise, and is checked once rendered: it may not exceed them.
    :param row_group_rows: rows per Parquet row group (default 20,000: about 2 MB of memory per 1,000
        rows is held while a row group is built; larger groups compress a little better).
    :param compression: Parquet codec (default ``zstd``).
    :param on_bad_records: ``"quarantine"`` (default) or ``"fail"``.
    :param max_bad_record_ratio: the share of the file's records that may be quarantined (0 to 1,
        default 0.01 = 1 %); past it the export fails with the counts and the first reasons, and
        publishes nothing. Templated (a rendered ``"0.05"`` is accepted).
    :return: ``{"path", "rows", "bytes", "usage_file_id", "quarantined"}``.
    """

    template_fields: Sequence[str] = (
        "connect_conn_id",
        "usage_file_id",
        "destination",
        "max_bad_record_ratio",
        "concurrency",
    )

    def __init__(
        self,
        *,
        usage_file_id: str,
        destination: str | ObjectStoragePath | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        concurrency: int | str = DEFAULT_CONCURRENCY,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        compression: str = "zstd",
        on_bad_records: str = "quarantine",
        max_bad_record_ratio: float | str = DEFAULT_MAX_BAD_RECORD_RATIO,
        **kwargs: Any,
    ) -> None:
        templated = isinstance(max_bad_record_ratio, str) and "{{" in max_bad_record_ratio
        concurrency_templated = isinstance(concurrency, str) and "{{" in concurrency
        validate_export_options(
            page_size=page_size,
            concurrency=DEFAULT_CONCURRENCY if concurrency_templated else concurrency,
            row_group_rows=row_group_rows,
            compression=compression,
            on_bad_records=on_bad_records,
            max_bad_record_ratio=DEFAULT_MAX_BAD_RECORD_RATIO if templated else max_bad_record_ratio,
        )
        if "pool_slots" not in kwargs:
            slots = DEFAULT_CONCURRENCY if concurrency_templated else export_concurrency(concurrency)
            kwargs["pool_slots"] = slots
        super().__init__(usage_file_id=usage_file_id, **kwargs)
        if not concurrency_templated:
            self._check_pool_slots(export_concurrency(concurrency))
        self.destination = destination
        self.concurrency = concurrency
        self.page_size = page_size
        self.row_group_rows = row_group_rows
        self.compression = compression
        self.on_bad_records = on_bad_records
        self.max_bad_record_ratio = max_bad_record_ratio

    def _check_pool_slots(self, concurrency: int) -> None:
        """The pool bounds the deployment's calls only if the task takes a slot per page call."""
        if concurrency > self.pool_slots:
            raise ConnectValidationError(
                "concurrency",
                f"{concurrency} pages side by side in a task that takes {self.pool_slots} slot(s) of pool "
                f"{self.pool!r}: the pool would not bound the calls to Connect; give pool_slots="
                f"{concurrency} (or leave it out), or a lower concurrency",
            )

    def execute(self, context: Context) -> dict[str, Any]:
        # Checked again once rendered, before any call to Connect.
        ratio = bad_record_ratio(self.max_bad_record_ratio)
        concurrency = export_concurrency(self.concurrency)
        self._check_pool_slots(concurrency)
        result = export_usage_file(
            self.hook,
            self._file_id(),
            self.destination or None,
            page_size=self.page_size,
            concurrency=concurrency,
            row_group_rows=self.row_group_rows,
            compression=self.compression,
            on_bad_records=self.on_bad_records,
            max_bad_record_ratio=ratio,
            logger=self.log,
        )
        return result.to_xcom()
