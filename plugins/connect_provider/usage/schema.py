"""The one Arrow schema of exported usage records, and page bytes -> Arrow record batch.

Schema (``USAGE_RECORD_SCHEMA``; version ``SCHEMA_VERSION``), one row per usage record:

=========================  ==============================  =============================================
column                     type                            why
=========================  ==============================  =============================================
id                         string, not null                Connect ids are strings (``UR-...``).
usage_file_id              string, not null                the exported file; also the data file's name.
product_id                 string, not null                the file's product; hive partition key (*).
period                     string ``YYYY-MM``, not null    month of the file's ``period.from``; partition
                                                           key (*).
start_date, end_date       timestamp[us, tz=UTC]           offsets are applied; a naive value is UTC.
usage                      decimal128(38, 12), not null    see "Numbers" below.
amount                     decimal128(38, 12)              null when Connect sends null (no price yet).
multiplier, tier           int64                           integers in the spec (int32 range); int64 is
                                                           the type every reader handles without casts.
status                     string                          valid|invalid|approved|rejected|closed.
item_id, item_local_id,    string                          ``item{...}`` flattened (``item_id`` falls back
item_name, item_mpn,                                       to the record's top-level ``item_id``).
item_unit, item_precision,
item_type
asset_id, asset_external_  string                          ``asset{...}`` flattened, falling back to the
id, asset_external_uid                                     top-level ``asset_*`` copies.
usagefile_name,            string                          ``usagefile{name, schema, currency}``; currency
usagefile_schema, currency                                 falls back to the usage file's own currency.
category, resource_local_  string                          as sent.
id, external_billing_id,
external_billing_note,
closed_by
closed_at                  timestamp[us, tz=UTC]           as start_date.
params                     list<struct<name: string,       ``params[{parameter_name, parameter_value}]``
                           value: string>>                 kept in order, duplicates and null values as
                                                           sent (a map would force a choice on duplicate
                                                           names, which Spark rejects by default).
exported_at                timestamp[us, tz=UTC]           when this export ran (same for a whole file).
=========================  ==============================  =============================================

(*) Partition keys live in the path (``product_id=PRD-.../period=2026-10/``), not inside the
files (``FILE_SCHEMA`` is the schema without them): every hive-aware reader adds them, and a copy
inside the files makes pandas and Spark refuse the dataset.

Numbers. ``usage`` and ``amount`` are billing quantities: a float would round
``123456789012.123456`` (18 significant digits) and make sums depend on order. They are read
straight from the JSON text into ``decimal128(38, 12)``, never through a float: 38 digits is the
widest decimal128 (DuckDB, Spark and PostgreSQL read it natively); scale 12 keeps four digits below
Connect's finest item precision (``Decimal(8)``), so ``0.000001`` is exact; 26 integer digits cover
the spec's ``amount`` bound of 1e16 with room. A value that needs more digits either side is not
rounded: its record is set aside with the reason.

Conversion (:class:`PageConverter`): a page body (the JSON array exactly as Connect sent it) is
parsed by Arrow's JSON reader against an explicit schema of the record, so the hot path runs no
Python per record. Bad records are found per record anyway: the batch is checked with vectorised
compute (missing id or usage, digits beyond the decimal, a record of another file or product), and
only a page Arrow refuses as a whole is split into its records (``json.JSONDecoder.raw_decode``
keeps each record's original text) and converted one by one to name the culprit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

SCHEMA_VERSION = 1

DECIMAL_PRECISION = 38
DECIMAL_SCALE = 12
DECIMAL_TYPE = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
PARAM_TYPE = pa.struct([pa.field("name", pa.string()), pa.field("value", pa.string())])
PARAMS_TYPE = pa.list_(PARAM_TYPE)

_MAX_DECIMAL = Decimal("9" * (DECIMAL_PRECISION - DECIMAL_SCALE) + "." + "9" * DECIMAL_SCALE)


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


USAGE_RECORD_SCHEMA = pa.schema(
    [
        _f("id", pa.string(), "Usage record id (UR-...).", nullable=False),
        _f("usage_file_id", pa.string(), "Usage file the record belongs to (UF-...).", nullable=False),
        _f("product_id", pa.string(), "Product of the usage file (hive partition key).", nullable=False),
        _f("period", pa.string(), "YYYY-MM of the usage file's period.from (partition key).", nullable=False),
        _f("start_date", TIMESTAMP_TYPE, "Start of the usage, UTC."),
        _f("end_date", TIMESTAMP_TYPE, "End of the usage, UTC."),
        _f("usage", DECIMAL_TYPE, "Reported quantity, exact decimal.", nullable=False),
        _f("amount", DECIMAL_TYPE, "Reported amount, exact decimal; null when not priced."),
        _f("multiplier", pa.int64(), "Multiplier of the usage."),
        _f("tier", pa.int64(), "Tier level (0 = provider)."),
        _f("status", pa.string(), "valid, invalid, approved, rejected or closed."),
        _f("item_id", pa.string(), "Item id (PRD-...-0001)."),
        _f("item_local_id", pa.string(), "Item local id."),
        _f("item_name", pa.string(), "Item name."),
        _f("item_mpn", pa.string(), "Item MPN."),
        _f("item_unit", pa.string(), "Item unit."),
        _f("item_precision", pa.string(), "Item precision (Integer, Decimal(1..8))."),
        _f("item_type", pa.string(), "Item type (Reservation, PPU)."),
        _f("asset_id", pa.string(), "Asset (subscription) id (AS-...)."),
        _f("asset_external_id", pa.string(), "Asset external id."),
        _f("asset_external_uid", pa.string(), "Asset external uid."),
        _f("usagefile_name", pa.string(), "Usage file name."),
        _f("usagefile_schema", pa.string(), "Usage file schema (tr, pr, qt, cr)."),
        _f("currency", pa.string(), "Currency of the usage file."),
        _f("category", pa.string(), "Record category."),
        _f("resource_local_id", pa.string(), "Resource local id."),
        _f("external_billing_id", pa.string(), "External billing id set on close."),
        _f("external_billing_note", pa.string(), "External billing note set on close."),
        _f("closed_at", TIMESTAMP_TYPE, "When the record was closed, UTC."),
        _f("closed_by", pa.string(), "Who closed the record."),
        _f("params", PARAMS_TYPE, "Record parameters, in the order sent."),
        _f("exported_at", TIMESTAMP_TYPE, "When this export ran, UTC.", nullable=False),
    ],
    metadata={"connect_provider.usage_schema_version": str(SCHEMA_VERSION)},
)

#: The hive partition keys: in the path (``product_id=.../period=...``), not inside the files. Hive
#: readers (pyarrow.dataset, pandas, DuckDB ``hive_partitioning``, Spark, Polars) add them as
#: columns; written in the files as well, pandas and Spark refuse the dataset (a partition field
#: and a file column of the same name, which they type differently).
PARTITION_COLUMNS = ("product_id", "period")
#: The schema of each data file: the dataset's schema without the partition keys.
FILE_SCHEMA = pa.schema(
    [f for f in USAGE_RECORD_SCHEMA if f.name not in PARTITION_COLUMNS], metadata=USAGE_RECORD_SCHEMA.metadata
)

QUARANTINE_SCHEMA = pa.schema(
    [
        _f("usage_file_id", pa.string(), "Usage file the record came from.", nullable=False),
        _f(
            "record_index",
            pa.int64(),
            "0-based position of the record in the file's listing.",
            nullable=False,
        ),
        _f("record_id", pa.string(), "The record's id when it could be read."),
        _f("reason", pa.string(), "Why the record was not exported.", nullable=False),
        _f("raw_json", pa.string(), "The record exactly as Connect sent it.", nullable=False),
        _f("quarantined_at", TIMESTAMP_TYPE, "When the record was set aside, UTC.", nullable=False),
    ],
    metadata={"connect_provider.usage_schema_version": str(SCHEMA_VERSION)},
)

# The record as Connect sends it (spec usage.UsageRecord). Arrow's JSON reader fills it by field
# name, ignores fields not listed and converts numbers/timestamps without going through Python.
_STR = pa.string()
_RAW_ITEM = pa.struct([(k, _STR) for k in ("id", "local_id", "name", "unit", "mpn", "precision", "type")])
_RAW_ASSET = pa.struct([(k, _STR) for k in ("id", "external_id", "external_uid")])
_RAW_USAGEFILE = pa.struct([(k, _STR) for k in ("id", "name", "schema", "currency")])
_RAW_PARAMS = pa.list_(pa.struct([("parameter_name", _STR), ("parameter_value", _STR)]))
_RAW_RECORD = pa.struct(
    [
        ("id", _STR),
        ("start_date", TIMESTAMP_TYPE),
        ("end_date", TIMESTAMP_TYPE),
        ("product_id", _STR),
        ("external_billing_id", _STR),
        ("external_billing_note", _STR),
        ("item", _RAW_ITEM),
        ("asset", _RAW_ASSET),
        ("category", _STR),
        ("tier", pa.int64()),
        ("amount", DECIMAL_TYPE),
        ("multiplier", pa.int64()),
        ("usage", DECIMAL_TYPE),
        ("status", _STR),
        ("closed_at", TIMESTAMP_TYPE),
        ("closed_by", _STR),
        ("params", _RAW_PARAMS),
        ("item_id", _STR),
        ("asset_id", _STR),
        ("usagefile", _RAW_USAGEFILE),
        ("resource_local_id", _STR),
        ("asset_external_id", _STR),
        ("asset_external_uid", _STR),
    ]
)
_WRAP_KEY = "records"
_RAW_PAGE_SCHEMA = pa.schema([(_WRAP_KEY, pa.list_(_RAW_RECORD))])
_PARSE_OPTIONS = pa_json.ParseOptions(
    explicit_schema=_RAW_PAGE_SCHEMA, unexpected_field_behavior="ignore", newlines_in_values=True
)
# Arrow's default allocator (mimalloc) keeps freed pages for reuse; with one page parsed and one
# row group written at a time, the system allocator returns them and keeps the peak lower.
MEMORY_POOL = pa.system_memory_pool()
_WRAP_HEAD = b'{"' + _WRAP_KEY.encode() + b'":'
_ARROW_PATH = re.compile(r"Column\(/" + _WRAP_KEY + r"/\[\]/?([^)]*)\)")


class PageFormatError(ValueError):
    """The page is not a JSON array of objects at all: a protocol error, not a bad record."""


@dataclass(frozen=True)
class ExportContext:
    """What every row of one usage file's export shares."""

    usage_file_id: str
    product_id: str
    period: str
    exported_at: datetime
    currency: str | None = None

    @classmethod
    def from_usage_file(
        cls, usage_file: dict[str, Any], exported_at: datetime | None = None
    ) -> ExportContext:
        """Read id, product, period and currency from a usage file object as Connect returns it."""
        file_id = usage_file.get("id")
        product = (usage_file.get("product") or {}).get("id")
        period_from = (usage_file.get("period") or {}).get("from")
        if not file_id or not product or not period_from:
            raise PageFormatError(
                f"usage file {file_id or '?'} lacks id, product.id or period.from; "
                "these place its records in the dataset (product_id=/period= partitions)"
            )
        period = str(period_from)[:7]
        if not re.fullmatch(r"\d{4}-\d{2}", period):
            raise PageFormatError(f"usage file {file_id}: period.from {period_from!r} is not an ISO date")
        now = exported_at or datetime.now(timezone.utc)
        return cls(
            usage_file_id=str(file_id),
            product_id=str(product),
            period=period,
            exported_at=now,
            currency=usage_file.get("currency"),
        )


@dataclass(frozen=True)
class BadRecord:
    """A record set aside: where it was, its id if readable, why, and its text as sent."""

    record_index: int
    record_id: str | None
    reason: str
    raw_json: str


@dataclass(frozen=True)
class ConvertedPage:
    """One page converted: the good rows as a batch of ``FILE_SCHEMA`` and the bad ones."""

    batch: pa.RecordBatch
    bad: list[BadRecord]
    received: int


def _parse(body: bytes) -> pa.StructArray:
    """A JSON array of records -> StructArray of ``_RAW_RECORD`` (raises ArrowInvalid)."""
    wrapped = b"".join((_WRAP_HEAD, body, b"}"))
    table = pa_json.read_json(
        pa.BufferReader(wrapped),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(wrapped) + 64),
        parse_options=_PARSE_OPTIONS,
        memory_pool=MEMORY_POOL,
    )
    if table.num_rows != 1:
        raise pa.ArrowInvalid("the page body is not a single JSON value")
    column = table.column(0).combine_chunks()
    if column.null_count:
        raise pa.ArrowInvalid("the page body is null, not a JSON array")
    return column.flatten()


def split_records(body: bytes) -> list[str]:
    """The text of each record of a JSON array page, exactly as sent (no re-serialisation).

    Raises :class:`PageFormatError` when the body is not a JSON array: then no record can be
    isolated and the page as a whole is wrong.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PageFormatError(f"the page is not UTF-8: {exc}") from exc
    decoder = json.JSONDecoder()
    ws = " \t\n\r"
    i, n = 0, len(text)
    while i < n and text[i] in ws:
        i += 1
    if i >= n or text[i] != "[":
        raise PageFormatError("the page is not a JSON array")
    i += 1
    records: list[str] = []
    while True:
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == "]" and not records:
            return records
        try:
            _, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise PageFormatError(f"the page is not valid JSON: {exc}") from exc
        records.append(text[i:end])
        i = end
        while i < n and text[i] in ws:
            i += 1
        if i < n and text[i] == ",":
            i += 1
            continue
        if i < n and text[i] == "]":
            return records
        raise PageFormatError(f"the page is not valid JSON: expected ',' or ']' at character {i}")


def _friendly(exc: Exception) -> str:
    """Arrow's conversion message with the record-relative field path."""
    message = str(exc).strip()
    message = _ARROW_PATH.sub(lambda m: f"field {m.group(1) or '<record>'}", message)
    return message.replace(" in row 0", "")


_NUMBER_MARK = "\x00"
_MARKED_NUMBER = re.compile(r'"\\u0000([^"\\]*)\\u0000"')


def _locate_field(raw: str) -> str | None:
    """The first top-level field of a refused record that Arrow refuses on its own.

    Numbers keep their original text (marked while the record is a dict, unmarked in the JSON
    sent to Arrow), so a digit too many is found exactly as it was sent.
    """
    mark = _NUMBER_MARK
    try:
        record = json.loads(
            raw, parse_float=lambda t: f"{mark}{t}{mark}", parse_int=lambda t: f"{mark}{t}{mark}"
        )
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for name in _RAW_RECORD.names:
        if name not in record:
            continue
        text = _MARKED_NUMBER.sub(r"\1", json.dumps([{name: record[name]}]))
        try:
            _parse(text.encode())
        except pa.ArrowInvalid:
            return name
    return None


def _reason(raw: str, exc: Exception) -> str:
    message = _friendly(exc)
    if "field " in message:
        return message
    where = _locate_field(raw)
    return f"field {where}: {message}" if where else message


def _record_id(raw: str) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _scalars(values: list[tuple[str, pa.DataType, Any]]) -> dict[str, pa.Scalar]:
    """Arrow scalars built by Arrow's JSON reader rather than from Python objects.

    ``pa.scalar``/``pa.array`` on Python values make pyarrow import pandas (to recognise its
    types), which costs about 40 MB of resident memory in the export process for nothing.
    """
    schema = pa.schema([(name, type_) for name, type_, _ in values])
    text = json.dumps({name: value for name, _, value in values}).encode()
    table = pa_json.read_json(
        pa.BufferReader(text), parse_options=pa_json.ParseOptions(explicit_schema=schema)
    )
    return {name: table.column(name)[0] for name, _, _ in values}


class PageConverter:
    """Converts page bodies of one usage file into record batches of ``FILE_SCHEMA``."""

    def __init__(self, context: ExportContext) -> None:
        self.context = context
        constants = _scalars(
            [
                ("max", DECIMAL_TYPE, str(_MAX_DECIMAL)),
                ("exported_at", TIMESTAMP_TYPE, context.exported_at.isoformat()),
                ("file_id", pa.string(), context.usage_file_id),
                ("product", pa.string(), context.product_id),
                ("period", pa.string(), context.period),
                ("currency", pa.string(), context.currency),
            ]
        )
        self._max = constants["max"]
        self._exported_at = constants["exported_at"]
        self._file_id = constants["file_id"]
        self._product = constants["product"]
        self._period = constants["period"]
        self._currency = constants["currency"] if context.currency else None

    def convert(self, body: bytes, offset: int = 0) -> ConvertedPage:
        """Convert one page; ``offset`` is the position of its first record in the file."""
        raws: list[str] | None = None
        bad: list[BadRecord] = []
        try:
            records = _parse(body)
            positions: np.ndarray | None = None
        except pa.ArrowInvalid:
            # Arrow refused the page as a whole: find the culprit(s) record by record.
            raws = split_records(body)
            good: list[int] = []
            for i, raw in enumerate(raws):
                try:
                    _parse(b"[" + raw.encode() + b"]")
                except pa.ArrowInvalid as exc:
                    bad.append(BadRecord(offset + i, _record_id(raw), _reason(raw, exc), raw))
                else:
                    good.append(i)
            records = _parse(("[" + ",".join(raws[i] for i in good) + "]").encode())
            positions = np.asarray(good, dtype=np.int64)
        received = len(raws) if raws is not None else len(records)

        reject, reasons = self._checks(self._fields(records))
        if reject is not None:
            keep = pc.invert(reject)
            reject = reject.to_numpy(zero_copy_only=False)
            if raws is None:
                raws = split_records(body)
                positions = np.arange(len(raws), dtype=np.int64)
            assert positions is not None
            rows = np.flatnonzero(reject)
            for row in rows:
                pos = int(positions[row])
                why = "; ".join(reason for mask, reason in reasons if mask[row])
                bad.append(BadRecord(offset + pos, _record_id(raws[pos]), why, raws[pos]))
            records = records.filter(keep)
        bad.sort(key=lambda b: b.record_index)
        return ConvertedPage(self._build(self._fields(records), len(records)), bad, received)

    def _fields(self, records: pa.StructArray) -> dict[str, Any]:
        """Child arrays by name, parent nulls applied (``flatten``: one C++ call, zero-copy
        when nothing is null); nested structs become dicts of their children."""
        out: dict[str, Any] = {}
        for name, child in zip(_RAW_RECORD.names, records.flatten(), strict=True):
            if pa.types.is_struct(child.type):
                out[name] = dict(zip(child.type.names, child.flatten(), strict=True))
            else:
                out[name] = child
        return out

    def _checks(self, f: dict[str, Any]) -> tuple[pa.BooleanArray | None, list[tuple[np.ndarray, str]]]:
        """Vectorised per-record checks; returns the reject mask (or None) and each reason's mask."""
        if len(f["id"]) == 0:
            return None, []
        ctx = self.context
        usage = f["usage"]
        amount = f["amount"]
        product = f["product_id"]
        usagefile_id = f["usagefile"]["id"]
        digits = DECIMAL_PRECISION - DECIMAL_SCALE
        checks = [
            (pc.is_null(f["id"]), "id is missing"),
            (pc.is_null(usage), "usage is missing (Connect requires it)"),
            (
                pc.greater(pc.abs(usage), self._max),
                f"usage has more than {digits} integer digits (decimal128({DECIMAL_PRECISION}, "
                f"{DECIMAL_SCALE}))",
            ),
            (
                pc.greater(pc.abs(amount), self._max),
                f"amount has more than {digits} integer digits (decimal128({DECIMAL_PRECISION}, "
                f"{DECIMAL_SCALE}))",
            ),
            (
                pc.not_equal(product, self._product),
                f"product_id differs from the usage file's product {ctx.product_id}",
            ),
            (
                pc.not_equal(usagefile_id, self._file_id),
                f"usagefile.id differs from the exported usage file {ctx.usage_file_id}",
            ),
        ]
        reject: pa.BooleanArray | None = None
        reasons: list[tuple[np.ndarray, str]] = []
        for mask, reason in checks:
            if not pc.any(mask).as_py():
                continue
            flags = mask.fill_null(False)
            reasons.append((flags.to_numpy(zero_copy_only=False), reason))
            reject = flags if reject is None else pc.or_(reject, flags)
        return reject, reasons

    def _build(self, f: dict[str, Any], n: int) -> pa.RecordBatch:
        item, asset, usagefile = f["item"], f["asset"], f["usagefile"]
        currency = usagefile["currency"]
        if self._currency is not None and currency.null_count:
            currency = pc.coalesce(currency, self._currency)

        def either(first: pa.Array, fallback: pa.Array) -> pa.Array:
            return pc.coalesce(first, fallback) if first.null_count else first

        columns = [
            f["id"],
            pa.repeat(self._file_id, n),
            f["start_date"],
            f["end_date"],
            f["usage"],
            f["amount"],
            f["multiplier"],
            f["tier"],
            f["status"],
            either(item["id"], f["item_id"]),
            item["local_id"],
            item["name"],
            item["mpn"],
            item["unit"],
            item["precision"],
            item["type"],
            either(asset["id"], f["asset_id"]),
            either(asset["external_id"], f["asset_external_id"]),
            either(asset["external_uid"], f["asset_external_uid"]),
            usagefile["name"],
            usagefile["schema"],
            currency,
            f["category"],
            f["resource_local_id"],
            f["external_billing_id"],
            f["external_billing_note"],
            f["closed_at"],
            f["closed_by"],
            _rename_params(f["params"]),
            pa.repeat(self._exported_at, n),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=FILE_SCHEMA)


def _rename_params(params: pa.ListArray) -> pa.ListArray:
    """``list<struct<parameter_name, parameter_value>>`` -> ``list<struct<name, value>>``, zero-copy."""
    values = params.values
    struct_values = pa.StructArray.from_arrays(
        [values.field(0), values.field(1)],
        fields=list(PARAM_TYPE),
        mask=values.is_null() if values.null_count else None,
    )
    return pa.ListArray.from_arrays(
        params.offsets, struct_values, type=PARAMS_TYPE, mask=params.is_null() if params.null_count else None
    )


def quarantine_batch(context: ExportContext, bad: list[BadRecord], when: datetime) -> pa.RecordBatch:
    """The bad records of one page as a batch of ``QUARANTINE_SCHEMA`` (built by the JSON reader,
    like the scalars above, so that no pandas is imported)."""
    lines = [
        json.dumps(
            {
                "usage_file_id": context.usage_file_id,
                "record_index": b.record_index,
                "record_id": b.record_id,
                "reason": b.reason,
                "raw_json": b.raw_json,
                "quarantined_at": when.isoformat(),
            }
        )
        for b in bad
    ]
    table = pa_json.read_json(
        pa.BufferReader("\n".join(lines).encode()),
        read_options=pa_json.ReadOptions(
            use_threads=False, block_size=max(1 << 20, 2 * sum(map(len, lines)))
        ),
        parse_options=pa_json.ParseOptions(explicit_schema=QUARANTINE_SCHEMA),
    )
    batch = table.combine_chunks().to_batches()[0]
    return pa.RecordBatch.from_arrays(batch.columns, schema=QUARANTINE_SCHEMA)
