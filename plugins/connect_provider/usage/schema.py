"""The one schema of exported usage records (one declarative table), and page bytes -> Arrow record batch.

``COLUMNS`` is the single place where each column's name, Arrow type and JSON path(s) in Connect's
usage record are written down. Everything else is derived from it: the output schema
(``USAGE_RECORD_SCHEMA``, ``FILE_SCHEMA``), the explicit schema Arrow's JSON reader parses a page
with, the set of known fields (anything else is *drift*, kept in ``extra``), the vectorised checks,
and the batch, which is assembled column by column *by name*.

Schema (version ``SCHEMA_VERSION``), one row per usage record:

=========================  ==============================  =============================================
column                     type                            from the record (why)
=========================  ==============================  =============================================
id                         string, not null                ``id`` (``UR-...``; ids are strings).
usage_file_id              string, not null                the exported file (``usagefile.id`` must
                                                           match it); also the data file's name.
product_id                 string, not null (*)            the file's product (``product_id`` must match).
period                     string ``YYYY-MM``, not null    month of the file's ``period.from`` (*).
start_date, end_date       timestamp[us, tz=UTC]           offsets applied; a naive value is UTC.
usage                      decimal128(38, 12), not null    ``usage``; see "Numbers" below.
amount                     decimal128(38, 12)              ``amount``; null when Connect sends null.
multiplier, tier           int64                           integers on the wire (``multiplier: 1``).
status                     string                          valid|invalid|approved|rejected|closed.
item_id, item_local_id,    string                          ``item{id, local_id, name, mpn}`` flattened
item_name, item_mpn                                        (``item_id`` falls back to the top-level copy).
item_unit, item_precision, string                          ``item{unit, precision, type}``: in the spec and
item_type                                                  the Boomi/MuleSoft schemas, absent from the
                                                           real record of connect-reports: often null.
asset_id, asset_external_  string                          ``asset{...}`` flattened, falling back to the
id, asset_external_uid                                     top-level ``asset_*`` copies.
asset_recon_id             string                          ``asset.recon_id``: the asset's reconciliation
                                                           id, what billing systems match usage on.
usagefile_name,            string                          ``usagefile{name, schema, currency}``; currency
usagefile_schema, currency                                 falls back to the usage file's own currency.
category                   struct<id, name, description:   ``category{id, name, description}`` as the real
                           string>                         API sends it; the string form of old data
                                                           (and of the v37 record schema) is its ``id``.
resource_local_id,         string                          as sent.
external_billing_id,
external_billing_note,
closed_by
closed_at                  timestamp[us, tz=UTC]           as start_date.
params                     list<struct<name: string,       ``params[{parameter_name, parameter_value}]``
                           value: string>>                 in order, duplicates and null values as sent
                                                           (a map would force a choice on duplicate
                                                           names, which Spark rejects by default).
extra                      string (JSON object)            fields this schema does not know, by path
                                                           (``{"asset.tier_id": "T-1", "params[0].x":
                                                           2}``); null when there are none.
exported_at                timestamp[us, tz=UTC]           when this export ran (same for a whole file).
=========================  ==============================  =============================================

(*) Partition keys live in the path (``product_id=PRD-.../period=2026-10/``), not inside the
files (``FILE_SCHEMA`` is the schema without them): every hive-aware reader adds them, and a copy
inside the files makes pandas and Spark refuse the dataset.

Evidence for the record's shape: ``cloudblue/connect-reports @ 082cac0d :
tests/fixtures/usage_records_response.json`` (a whole record: ``category`` an object,
``asset.recon_id``, ``usagefile.currency``, integer ``multiplier``, status ``approved``), the
``UsageRecord-schema.json`` of ``cloudblue/connect-extension-boomi @ f87068a8`` and
``cloudblue/connect-extension-mulesoft @ 090e60a7`` (``category{id, name, description}``), and the
spec's own ``usage.Categories``; the v37 record schema's ``category: string`` is a defect.

Numbers. ``usage`` and ``amount`` are billing quantities: a float would round
``123456789012.123456`` (18 significant digits) and make sums depend on order. They are read
straight from the JSON text into ``decimal128(38, 12)``, never through a float: 38 digits is the
widest decimal128 (DuckDB, Spark and PostgreSQL read it natively); scale 12 keeps four digits below
Connect's finest item precision (``Decimal(8)``), so ``0.000001`` is exact; 26 integer digits cover
the spec's ``amount`` bound of 1e16 with room. A value that needs more digits either side is not
rounded: its record is set aside with the reason.

Conversion (:class:`PageConverter`). A page body (the JSON array exactly as Connect sent it) is
parsed by Arrow's JSON reader against the explicit schema, refusing unexpected fields: a page in
the known shape costs one parse and no Python per record. Only a page Arrow refuses takes a slower
path, in this order: the legacy shape (``category`` as a string, old data: still one parse); the
same parses ignoring unknown fields (schema drift: the unknown fields of each record are then
collected into ``extra``, by path, so nothing is lost and nothing is set aside for it); and last,
record by record, to name the culprit of a record Arrow cannot read
(``json.JSONDecoder.raw_decode`` keeps each record's original text). Bad records are found with
vectorised checks (a required field missing, digits beyond the decimal, a record of another file
or product) and set aside with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from connect_provider.exceptions import PageFormatError

SCHEMA_VERSION = 2

DECIMAL_PRECISION = 38
DECIMAL_SCALE = 12
DECIMAL_TYPE = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
PARAM_TYPE = pa.struct([pa.field("name", pa.string()), pa.field("value", pa.string())])
PARAMS_TYPE = pa.list_(PARAM_TYPE)
CATEGORY_TYPE = pa.struct(
    [pa.field("id", pa.string()), pa.field("name", pa.string()), pa.field("description", pa.string())]
)
#: ``params`` as Connect sends it; renamed (zero-copy) to ``PARAMS_TYPE``.
RAW_PARAMS_TYPE = pa.list_(
    pa.struct([pa.field("parameter_name", pa.string()), pa.field("parameter_value", pa.string())])
)

_MAX_DECIMAL = Decimal("9" * (DECIMAL_PRECISION - DECIMAL_SCALE) + "." + "9" * DECIMAL_SCALE)
_STR = pa.string()
_INT = pa.int64()

#: Where a column's value comes from.
RECORD = "record"  # the record's JSON path(s): the first non-null one wins
CONTEXT = "context"  # the usage file being exported (ExportContext); a path, if any, must agree
EXTRA = "extra"  # the record's fields no column knows, as one JSON object


@dataclass(frozen=True)
class Column:
    """One column of the dataset and where it comes from in Connect's usage record.

    ``paths`` are dotted JSON paths in the record (``item.id``); for a ``RECORD`` column the first
    non-null one wins, for a ``CONTEXT`` column the first must equal the context's value
    (``mismatch`` is the reason when it does not). ``raw_type`` is how Arrow parses the path when
    it differs from the column's type (``params``); ``legacy_raw_type`` an older shape still
    accepted (``category`` as a string). ``fallback`` names an :class:`ExportContext` attribute used
    where every path is null; ``required`` is the reason a record without the value is set aside.
    """

    name: str
    type: pa.DataType
    doc: str
    paths: tuple[str, ...] = ()
    nullable: bool = True
    source: str = RECORD
    raw_type: pa.DataType | None = None
    legacy_raw_type: pa.DataType | None = None
    fallback: str | None = None
    required: str | None = None
    mismatch: str | None = None

    @property
    def parse_type(self) -> pa.DataType:
        return self.raw_type if self.raw_type is not None else self.type


def _c(name: str, type_: pa.DataType, doc: str, *paths: str, **options: Any) -> Column:
    return Column(name, type_, doc, paths, **options)


#: THE table: every column, its Arrow type and its JSON path(s). Order = column order in the files.
COLUMNS: tuple[Column, ...] = (
    _c("id", _STR, "Usage record id (UR-...).", "id", nullable=False, required="id is missing"),
    _c(
        "usage_file_id",
        _STR,
        "Usage file the record belongs to (UF-...).",
        "usagefile.id",
        nullable=False,
        source=CONTEXT,
        mismatch="usagefile.id differs from the exported usage file {value}",
    ),
    _c(
        "product_id",
        _STR,
        "Product of the usage file (hive partition key).",
        "product_id",
        nullable=False,
        source=CONTEXT,
        mismatch="product_id differs from the usage file's product {value}",
    ),
    _c(
        "period",
        _STR,
        "YYYY-MM of the usage file's period.from (partition key).",
        nullable=False,
        source=CONTEXT,
    ),
    _c("start_date", TIMESTAMP_TYPE, "Start of the usage, UTC.", "start_date"),
    _c("end_date", TIMESTAMP_TYPE, "End of the usage, UTC.", "end_date"),
    _c(
        "usage",
        DECIMAL_TYPE,
        "Reported quantity, exact decimal.",
        "usage",
        nullable=False,
        required="usage is missing (Connect requires it)",
    ),
    _c("amount", DECIMAL_TYPE, "Reported amount, exact decimal; null when not priced.", "amount"),
    _c("multiplier", _INT, "Multiplier of the usage.", "multiplier"),
    _c("tier", _INT, "Tier level (0 = provider).", "tier"),
    _c("status", _STR, "valid, invalid, approved, rejected or closed.", "status"),
    _c("item_id", _STR, "Item id (PRD-...-0001).", "item.id", "item_id"),
    _c("item_local_id", _STR, "Item local id.", "item.local_id"),
    _c("item_name", _STR, "Item name.", "item.name"),
    _c("item_mpn", _STR, "Item MPN.", "item.mpn"),
    _c("item_unit", _STR, "Item unit, when Connect sends it.", "item.unit"),
    _c("item_precision", _STR, "Item precision, when Connect sends it.", "item.precision"),
    _c("item_type", _STR, "Item type (reservation, ppu), when Connect sends it.", "item.type"),
    _c("asset_id", _STR, "Asset (subscription) id (AS-...).", "asset.id", "asset_id"),
    _c("asset_external_id", _STR, "Asset external id.", "asset.external_id", "asset_external_id"),
    _c("asset_external_uid", _STR, "Asset external uid.", "asset.external_uid", "asset_external_uid"),
    _c("asset_recon_id", _STR, "Asset reconciliation id.", "asset.recon_id"),
    _c("usagefile_name", _STR, "Usage file name.", "usagefile.name"),
    _c("usagefile_schema", _STR, "Usage file schema (tr, pr, qt, cr).", "usagefile.schema"),
    _c("currency", _STR, "Currency of the usage file.", "usagefile.currency", fallback="currency"),
    _c(
        "category",
        CATEGORY_TYPE,
        "Record category {id, name, description}; a category sent as a string is its id.",
        "category",
        legacy_raw_type=_STR,
    ),
    _c("resource_local_id", _STR, "Resource local id.", "resource_local_id"),
    _c("external_billing_id", _STR, "External billing id set on close.", "external_billing_id"),
    _c("external_billing_note", _STR, "External billing note set on close.", "external_billing_note"),
    _c("closed_at", TIMESTAMP_TYPE, "When the record was closed, UTC.", "closed_at"),
    _c("closed_by", _STR, "Who closed the record.", "closed_by"),
    _c("params", PARAMS_TYPE, "Record parameters, in the order sent.", "params", raw_type=RAW_PARAMS_TYPE),
    _c("extra", _STR, "Fields of the record this schema does not know: a JSON object by path.", source=EXTRA),
    _c("exported_at", TIMESTAMP_TYPE, "When this export ran, UTC.", nullable=False, source=CONTEXT),
)
COLUMNS_BY_NAME = {c.name: c for c in COLUMNS}
_METADATA = {"connect_provider.usage_schema_version": str(SCHEMA_VERSION)}


def _field(c: Column) -> pa.Field:
    metadata = {"description": c.doc}
    if c.paths:
        metadata["json_path"] = ",".join(c.paths)
    return pa.field(c.name, c.type, nullable=c.nullable, metadata=metadata)


USAGE_RECORD_SCHEMA = pa.schema([_field(c) for c in COLUMNS], metadata=_METADATA)

#: The hive partition keys: in the path (``product_id=.../period=...``), not inside the files. Hive
#: readers (pyarrow.dataset, pandas, DuckDB ``hive_partitioning``, Spark, Polars) add them as
#: columns; written in the files as well, pandas and Spark refuse the dataset (a partition field
#: and a file column of the same name, which they type differently).
PARTITION_COLUMNS = ("product_id", "period")
FILE_COLUMNS = tuple(c for c in COLUMNS if c.name not in PARTITION_COLUMNS)
#: The schema of each data file: the dataset's schema without the partition keys.
FILE_SCHEMA = pa.schema([_field(c) for c in FILE_COLUMNS], metadata=_METADATA)


def _qf(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


QUARANTINE_SCHEMA = pa.schema(
    [
        _qf("usage_file_id", pa.string(), "Usage file the record came from.", nullable=False),
        _qf(
            "record_index",
            pa.int64(),
            "0-based position of the record in the file's listing.",
            nullable=False,
        ),
        _qf("record_id", pa.string(), "The record's id when it could be read."),
        _qf("reason", pa.string(), "Why the record was not exported.", nullable=False),
        _qf("raw_json", pa.string(), "The record exactly as Connect sent it.", nullable=False),
        _qf("quarantined_at", TIMESTAMP_TYPE, "When the record was set aside, UTC.", nullable=False),
    ],
    metadata=_METADATA,
)


# ---------------------------------------------------------------------------------------------
# The record as Arrow parses it, derived from the table: {name: type | {child: ...}}.
def _raw_tree(legacy: bool) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for c in COLUMNS:
        type_ = c.legacy_raw_type if legacy and c.legacy_raw_type is not None else c.parse_type
        for path in c.paths:
            *parents, leaf = path.split(".")
            node = tree
            for parent in parents:
                node = node.setdefault(parent, {})
                if not isinstance(node, dict):
                    raise TypeError(f"schema table: {path} nests under a leaf")
            if leaf in node and node[leaf] != type_:
                raise TypeError(f"schema table: {path} is given two types")
            node[leaf] = type_
    return tree


def _to_struct(tree: dict[str, Any]) -> pa.StructType:
    return pa.struct([(k, _to_struct(v) if isinstance(v, dict) else v) for k, v in tree.items()])


_RAW_TREE = _raw_tree(legacy=False)
_RAW_RECORD = _to_struct(_RAW_TREE)
_LEGACY_RECORD = _to_struct(_raw_tree(legacy=True))
_LEGACY_PATHS = tuple(p for c in COLUMNS if c.legacy_raw_type is not None for p in c.paths)
if any("." in p for p in _LEGACY_PATHS):  # _as_current rewrites top-level fields only
    raise TypeError(f"schema table: a legacy shape is supported for top-level fields only: {_LEGACY_PATHS}")

_WRAP_KEY = "records"


def _options(record: pa.StructType, unexpected: str) -> pa_json.ParseOptions:
    return pa_json.ParseOptions(
        explicit_schema=pa.schema([(_WRAP_KEY, pa.list_(record))]),
        unexpected_field_behavior=unexpected,
        newlines_in_values=True,
    )


#: The hot path: the known shape only, so a page that parses needs nothing else.
_STRICT = _options(_RAW_RECORD, "error")
#: Schema drift: known fields parsed, the unknown ones collected from the text afterwards.
_TOLERANT = _options(_RAW_RECORD, "ignore")
#: Old data (``category`` as a string): strict first, so that such a page needs no Python either.
_LEGACY_STRICT = _options(_LEGACY_RECORD, "error")
_LEGACY = _options(_LEGACY_RECORD, "ignore")
# Arrow's default allocator (mimalloc) keeps freed pages for reuse; with one page parsed and one
# row group written at a time, the system allocator returns them and keeps the peak lower.
MEMORY_POOL = pa.system_memory_pool()
_WRAP_HEAD = b'{"' + _WRAP_KEY.encode() + b'":'
_ARROW_PATH = re.compile(r"Column\(/" + _WRAP_KEY + r"/\[\]/?([^)]*)\)")


class _ListOf:
    """Known shape of each element of a list field."""

    def __init__(self, item: Any) -> None:
        self.item = item


def _known_shape(type_: pa.DataType) -> Any:
    if pa.types.is_struct(type_):
        return {f.name: _known_shape(f.type) for f in type_}
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return _ListOf(_known_shape(type_.value_type))
    return None


def _known_tree(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _known_tree(v) if isinstance(v, dict) else _known_shape(v) for k, v in tree.items()}


#: Every field the schema knows, nested: what is not in here goes to ``extra``.
KNOWN_FIELDS = _known_tree(_RAW_TREE)


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
        """Read id, product, period and currency from a usage file object as Connect returns it.

        ``period.from`` is a date in the spec and a date-time in CloudBlue's MuleSoft fixture
        (``2029-01-01T00:00:00+00:00``): only its ``YYYY-MM`` is used.
        """
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
    """One page converted: the good rows as a batch of ``FILE_SCHEMA``, the bad ones, and the
    paths of fields the schema does not know (kept in ``extra``; list indexes as ``[]``)."""

    batch: pa.RecordBatch
    bad: list[BadRecord]
    received: int
    unknown_fields: frozenset[str] = field(default_factory=frozenset)


def _parse(body: bytes, options: pa_json.ParseOptions = _TOLERANT) -> pa.StructArray:
    """A JSON array of records -> StructArray of the raw record (raises ArrowInvalid)."""
    wrapped = b"".join((_WRAP_HEAD, body, b"}"))
    table = pa_json.read_json(
        pa.BufferReader(wrapped),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(wrapped) + 64),
        parse_options=options,
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


# Numbers keep their original text while a record is a Python object: marked strings on load,
# unmarked when written back (no float ever rounds a billing value or a drifted field).
_NUMBER_MARK = "\x00"
_MARKED_NUMBER = re.compile(r'"\\u0000([^"\\]*)\\u0000"')


def _load_exact(raw: str) -> Any:
    mark = _NUMBER_MARK
    return json.loads(raw, parse_float=lambda t: f"{mark}{t}{mark}", parse_int=lambda t: f"{mark}{t}{mark}")


def _dump_exact(value: Any) -> str:
    return _MARKED_NUMBER.sub(r"\1", json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _locate_field(raw: str, options: pa_json.ParseOptions, record: pa.StructType) -> str | None:
    """The first top-level field of a refused record that Arrow refuses on its own."""
    try:
        value = _load_exact(raw)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    for name in record.names:
        if name not in value:
            continue
        try:
            _parse(_dump_exact([{name: value[name]}]).encode(), options)
        except pa.ArrowInvalid:
            return name
    return None


def _reason(raw: str, exc: Exception, options: pa_json.ParseOptions, record: pa.StructType) -> str:
    message = _friendly(exc)
    if "field " in message:
        return message
    where = _locate_field(raw, options, record)
    return f"field {where}: {message}" if where else message


def _record_id(raw: str) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _unknown(value: Any, known: Any, path: str, out: dict[str, Any]) -> None:
    """Collect into ``out`` the fields of ``value`` that ``known`` does not list, by path."""
    if isinstance(known, dict):
        if not isinstance(value, dict):
            return  # null, or a type change: Arrow decides about those
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if key in known:
                _unknown(child, known[key], where, out)
            else:
                out[where] = child
    elif isinstance(known, _ListOf) and isinstance(value, list):
        for i, element in enumerate(value):
            _unknown(element, known.item, f"{path}[{i}]", out)


_INDEX = re.compile(r"\[\d+\]")


def unknown_fields(raw: str) -> dict[str, Any]:
    """The fields of one record's JSON text that the schema does not know, by path (numbers exact)."""
    out: dict[str, Any] = {}
    try:
        value = _load_exact(raw)
    except ValueError:
        return out
    _unknown(value, KNOWN_FIELDS, "", out)
    return out


def _string_array(values: list[str | None]) -> pa.StringArray:
    """A string array built from buffers (``pa.array`` on Python objects imports pandas, about 40 MB)."""
    n = len(values)
    encoded = [v.encode() if v is not None else b"" for v in values]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    nulls = int(n - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes()) if nulls else None
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(encoded)), bitmap, nulls
    )


def _extras(raws: Iterable[str]) -> tuple[pa.StringArray, frozenset[str]]:
    """The ``extra`` column of some records (their unknown fields as JSON, or null) and the paths."""
    values: list[str | None] = []
    paths: set[str] = set()
    for raw in raws:
        found = unknown_fields(raw)
        if found:
            values.append(_dump_exact(found))
            paths.update(_INDEX.sub("[]", p) for p in found)
        else:
            values.append(None)
    return _string_array(values), frozenset(paths)


def _is_legacy(raw: str) -> bool:
    try:
        value = json.loads(raw)
    except ValueError:
        return False
    return isinstance(value, dict) and any(isinstance(value.get(p), str) for p in _LEGACY_PATHS)


def _as_current(raw: str) -> str:
    """A record in the legacy shape rewritten in the current one (``"category": "x"`` -> ``{"id": "x"}``)."""
    value = _load_exact(raw)
    for path in _LEGACY_PATHS:
        if isinstance(value.get(path), str):
            value[path] = {"id": value[path]}
    return _dump_exact(value)


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


@dataclass
class _Parsed:
    """A page's records as Arrow read them, and what the slow paths learned on the way."""

    records: pa.StructArray
    legacy: bool = False
    raws: list[str] | None = None
    positions: np.ndarray | None = None  # position in ``raws`` of each row of ``records``
    extra: pa.StringArray | None = None
    unknown: frozenset[str] = frozenset()
    bad: list[BadRecord] = field(default_factory=list)


class PageConverter:
    """Converts page bodies of one usage file into record batches of ``FILE_SCHEMA``."""

    def __init__(self, context: ExportContext) -> None:
        self.context = context
        constants = _scalars(
            [
                ("max", DECIMAL_TYPE, str(_MAX_DECIMAL)),
                ("exported_at", TIMESTAMP_TYPE, context.exported_at.isoformat()),
                ("usage_file_id", pa.string(), context.usage_file_id),
                ("product_id", pa.string(), context.product_id),
                ("period", pa.string(), context.period),
                ("currency", pa.string(), context.currency),
            ]
        )
        self._max = constants.pop("max")
        if not context.currency:
            constants.pop("currency")
        #: Scalars of the context by name: CONTEXT columns and ``fallback``s read them.
        self._context = constants

    def convert(self, body: bytes, offset: int = 0) -> ConvertedPage:
        """Convert one page; ``offset`` is the position of its first record in the file."""
        try:
            parsed = _Parsed(_parse(body, _STRICT))
        except pa.ArrowInvalid:
            parsed = self._tolerant(body, offset)
        records, bad = parsed.records, parsed.bad
        received = len(parsed.raws) if parsed.raws is not None else len(records)

        reject, reasons = self._checks(self._fields(records))
        if reject is not None:
            keep = pc.invert(reject)
            flags = reject.to_numpy(zero_copy_only=False)
            if parsed.raws is None:
                parsed.raws = split_records(body)
            positions = parsed.positions if parsed.positions is not None else np.arange(len(parsed.raws))
            for row in np.flatnonzero(flags):
                pos = int(positions[row])
                why = "; ".join(reason for mask, reason in reasons if mask[row])
                raw = parsed.raws[pos]
                bad.append(BadRecord(offset + pos, _record_id(raw), why, raw))
            records = records.filter(keep)
            if parsed.extra is not None:
                parsed.extra = parsed.extra.filter(keep)
        bad.sort(key=lambda b: b.record_index)
        batch = self._build(self._fields(records), len(records), parsed.legacy, parsed.extra)
        return ConvertedPage(batch, bad, received, parsed.unknown)

    # -- the slow paths: only for a page Arrow refused in the strict shape
    def _tolerant(self, body: bytes, offset: int) -> _Parsed:
        try:
            return _Parsed(_parse(body, _LEGACY_STRICT), legacy=True)
        except pa.ArrowInvalid:
            pass
        raws = split_records(body)
        for options, legacy in ((_TOLERANT, False), (_LEGACY, True)):
            try:
                records = _parse(body, options)
            except pa.ArrowInvalid:
                continue
            extra, unknown = _extras(raws)
            return _Parsed(records, legacy, raws, np.arange(len(raws)), extra, unknown)
        # Some record Arrow cannot read at all: find it, record by record.
        good: list[str] = []
        positions: list[int] = []
        bad: list[BadRecord] = []
        for i, raw in enumerate(raws):
            one = b"[" + raw.encode() + b"]"
            try:
                _parse(one, _TOLERANT)
                good.append(raw)
            except pa.ArrowInvalid as exc:
                try:
                    _parse(one, _LEGACY)
                except pa.ArrowInvalid as legacy_exc:
                    if _is_legacy(raw):
                        reason = _reason(raw, legacy_exc, _LEGACY, _LEGACY_RECORD)
                    else:
                        reason = _reason(raw, exc, _TOLERANT, _RAW_RECORD)
                    bad.append(BadRecord(offset + i, _record_id(raw), reason, raw))
                    continue
                good.append(_as_current(raw))
            positions.append(i)
        records = _parse(("[" + ",".join(good) + "]").encode(), _TOLERANT)
        extra, unknown = _extras(raws[i] for i in positions)
        return _Parsed(records, False, raws, np.asarray(positions, dtype=np.int64), extra, unknown, bad)

    @staticmethod
    def _fields(records: pa.StructArray) -> dict[str, Any]:
        """Child arrays by name, parent nulls applied (``flatten``: one C++ call, zero-copy when
        nothing is null); the nested objects of the table (``item``...) become dicts of children."""

        def children(array: pa.StructArray, tree: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, child in zip(array.type.names, array.flatten(), strict=True):
                node = tree[name]
                out[name] = children(child, node) if isinstance(node, dict) else child
            return out

        return children(records, _RAW_TREE)

    @staticmethod
    def _at(fields: dict[str, Any], path: str) -> pa.Array:
        node: Any = fields
        for part in path.split("."):
            node = node[part]
        return node

    def _checks(self, f: dict[str, Any]) -> tuple[pa.BooleanArray | None, list[tuple[np.ndarray, str]]]:
        """Vectorised per-record checks from the table; the reject mask (or None) and each reason's mask."""
        if len(f["id"]) == 0:
            return None, []
        digits = DECIMAL_PRECISION - DECIMAL_SCALE
        checks: list[tuple[pa.Array, str]] = []
        for c in COLUMNS:
            if c.source == RECORD and c.required:
                checks.append((pc.is_null(self._at(f, c.paths[0])), c.required))
            if c.source == CONTEXT and c.mismatch:
                expected = self._context[c.name]
                checks.append(
                    (
                        pc.not_equal(self._at(f, c.paths[0]), expected),
                        c.mismatch.format(value=expected.as_py()),
                    )
                )
            if c.source == RECORD and c.type == DECIMAL_TYPE:
                checks.append(
                    (
                        pc.greater(pc.abs(self._at(f, c.paths[0])), self._max),
                        f"{c.name} has more than {digits} integer digits (decimal128({DECIMAL_PRECISION}, "
                        f"{DECIMAL_SCALE}))",
                    )
                )
        reject: pa.BooleanArray | None = None
        reasons: list[tuple[np.ndarray, str]] = []
        for mask, reason in checks:
            if not pc.any(mask).as_py():
                continue
            flags = mask.fill_null(False)
            reasons.append((flags.to_numpy(zero_copy_only=False), reason))
            reject = flags if reject is None else pc.or_(reject, flags)
        return reject, reasons

    def _build(self, f: dict[str, Any], n: int, legacy: bool, extra: pa.StringArray | None) -> pa.RecordBatch:
        """The batch, each column looked up by its name in the table (never by position)."""
        columns: dict[str, pa.Array] = {}
        for c in FILE_COLUMNS:
            if c.source == CONTEXT:
                columns[c.name] = pa.repeat(self._context[c.name], n)
                continue
            if c.source == EXTRA:
                columns[c.name] = extra if extra is not None and extra.null_count < n else pa.nulls(n, c.type)
                continue
            value = self._at(f, c.paths[0])
            for path in c.paths[1:]:
                if value.null_count:
                    value = pc.coalesce(value, self._at(f, path))
            if c.fallback and c.fallback in self._context and value.null_count:
                value = pc.coalesce(value, self._context[c.fallback])
            if c.type == PARAMS_TYPE:
                value = _rename_params(value)
            elif c.type == CATEGORY_TYPE and legacy:
                value = _category_from_id(value)
            columns[c.name] = value
        return pa.RecordBatch.from_arrays([columns[name] for name in FILE_SCHEMA.names], schema=FILE_SCHEMA)


def _rename_params(params: pa.ListArray) -> pa.ListArray:
    """``list<struct<parameter_name, parameter_value>>`` -> ``list<struct<name, value>>``, zero-copy."""
    values = params.values
    struct_values = pa.StructArray.from_arrays(
        [values.field("parameter_name"), values.field("parameter_value")],
        fields=list(PARAM_TYPE),
        mask=values.is_null() if values.null_count else None,
    )
    return pa.ListArray.from_arrays(
        params.offsets, struct_values, type=PARAMS_TYPE, mask=params.is_null() if params.null_count else None
    )


def _category_from_id(ids: pa.StringArray) -> pa.StructArray:
    """A category sent as a string (old data; the v37 record schema) becomes ``{id: <it>}``."""
    n = len(ids)
    return pa.StructArray.from_arrays(
        [ids, pa.nulls(n, pa.string()), pa.nulls(n, pa.string())],
        fields=list(CATEGORY_TYPE),
        mask=ids.is_null() if ids.null_count else None,
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
