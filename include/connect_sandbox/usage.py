"""Usage files whose records are computed, not stored, in the shape the real Connect sends them.

The record's shape follows ``cloudblue/connect-reports @ 082cac0d :
tests/fixtures/usage_records_response.json`` (the whole record as Connect returns it), which the
test ``test_the_sandbox_answers_in_the_real_shape`` compares the sandbox's answers with, key by key
and type by type (``tests/fixtures/real/``): ``item{id, local_id, mpn, name}``, ``asset{id,
external_id, external_uid, recon_id}``, ``category{id, name}`` (an object, although the v37
spec's record schema says string), an integer ``multiplier``, ``usagefile{id, name, schema,
currency}`` and the top-level copies ``item_id``, ``asset_id``, ``asset_external_id``,
``asset_external_uid``, ``resource_local_id``. A closed record adds what closing sets
(``closed_at``, ``closed_by``, ``external_billing_id``, ``external_billing_note``: spec v37
``usage.UsageRecord`` and the body of ``POST /usage/records/{id}/close``); the others do not carry
these keys, as the record of connect-reports does not.

A benchmark file holds a million records; keeping them as dicts would cost gigabytes and
rendering them through a generic JSON encoder would make the sandbox, not the exporter, the
bottleneck. Record ``i`` of a generated file is a pure function of (file id, ``i``), rendered
straight to JSON text from fragments prepared once per file, so any page is served by index
arithmetic in time proportional to the page, never to the file.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

# Per-record status by file status, as Connect moves records along with their file.
RECORD_STATUS_BY_FILE_STATUS = {
    "draft": "valid",
    "uploading": "valid",
    "uploaded": "valid",
    "processing": "valid",
    "invalid": "invalid",
    "ready": "valid",
    "pending": "valid",
    "rejected": "rejected",
    "accepted": "approved",
    "closed": "closed",
    "deleted": "rejected",
}

_REGIONS = ("eu-west-1", "eu-central-1", "us-east-1", "ap-south-1", "sa-east-1")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# A usage record's item, as connect-reports' real record has it (no unit/precision/type there).
RECORD_ITEM_FIELDS = ("id", "local_id", "mpn", "name")
# What closing a record sets on it (spec usage.UsageRecord; POST /usage/records/{id}/close).
CLOSE_FIELDS = ("closed_at", "closed_by", "external_billing_id", "external_billing_note")


def record_item(item: dict) -> dict:
    """The ``item`` object of a usage record from a product item."""
    return {key: item[key] for key in RECORD_ITEM_FIELDS}


def record_asset(asset: dict) -> dict:
    """The ``asset`` object of a usage record: ids and the asset's reconciliation id."""
    return {
        "id": asset["id"],
        "external_id": asset["external_id"],
        "external_uid": asset["external_uid"],
        "recon_id": asset["recon_id"],
    }


@dataclass
class RecordSource:
    """The records of one usage file: ``count``, ``render(i)`` (JSON text) and ``record(i)``.

    ``created_us`` is when record 0 was created, in microseconds since the Unix epoch; record ``i``
    was created ``i`` microseconds later (see :meth:`created_time`).
    """

    count: int
    created_us: int = 0

    def render(self, i: int) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def record(self, i: int) -> dict:
        return json.loads(self.render(i), parse_float=Decimal)

    def render_range(self, start: int, stop: int) -> list[str]:
        return [self.render(i) for i in range(start, stop)]

    def created_time(self, i: int) -> str:
        """When record ``i`` was created, as ``created_time`` filters read it (never served).

        Connect creates a file's records one by one when it processes the upload; the sandbox
        spaces them a microsecond apart from the file's ``events.created.at``, so creation order
        (files as created, then rows) is also the order of this value.
        """
        return iso_of_us(self.created_us + i)

    def with_status(self, status: str) -> RecordSource:  # pragma: no cover - interface
        """The same records with another per-record ``status`` (their file moved)."""
        raise NotImplementedError


@dataclass
class StoredRecords(RecordSource):
    """Hand-written records (the edge-value file): kept as dicts, rendered once."""

    records: list[dict] = field(default_factory=list)
    _rendered: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, records: list[dict], created_us: int = 0) -> StoredRecords:
        rendered = [_render_exact(r) for r in records]
        return cls(count=len(records), created_us=created_us, records=records, _rendered=rendered)

    def render(self, i: int) -> str:
        return self._rendered[i]

    def record(self, i: int) -> dict:
        return json.loads(self._rendered[i], parse_float=Decimal)

    def with_status(self, status: str) -> StoredRecords:
        return StoredRecords.of([{**r, "status": status} for r in self.records], self.created_us)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_of_us(us: int) -> str:
    """A time in microseconds since the epoch as ISO 8601 text, UTC, with microseconds."""
    return (_EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds")


def us_of_iso(text: str) -> int:
    """ISO 8601 text (naive means UTC) as microseconds since the epoch."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _render_exact(record: dict) -> str:
    """JSON for a record whose ``usage``/``amount`` may be Decimals that floats cannot carry."""
    exact: dict[str, str] = {}
    clean = dict(record)
    for key in ("usage", "amount"):
        value = clean.get(key)
        if isinstance(value, Decimal):
            marker = f"__exact_{key}__"
            exact[marker] = format(value, "f")
            clean[key] = marker
    text = _dumps(clean)
    for marker, literal in exact.items():
        text = text.replace(f'"{marker}"', literal)
    return text


@dataclass
class GeneratedRecords(RecordSource):
    """``count`` records computed from the file id; nothing per record is kept in memory."""

    file_id: str = ""
    items: Sequence[dict] = ()
    assets: Sequence[dict] = ()
    product_id: str = ""
    usagefile: dict = field(default_factory=dict)
    period_from: date = date(2026, 10, 1)
    period_days: int = 31
    status: str = "valid"
    #: ``category`` of the records of each item, by item id.
    categories: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._id_prefix = "UR-" + self.file_id.removeprefix("UF-") + "-"
        self._salt = zlib.crc32(self.file_id.encode())
        self._dates = [
            (
                (self.period_from + timedelta(days=d)).isoformat() + "T00:00:00+00:00",
                (self.period_from + timedelta(days=d + 1)).isoformat() + "T00:00:00+00:00",
            )
            for d in range(max(self.period_days, 1))
        ]
        self._prepare_classes()
        self._prepare_tail()
        self._prepare_render()

    def with_status(self, status: str) -> GeneratedRecords:
        """A new source (fragments prepared again), so a page being rendered keeps its own."""
        return replace(self, status=status)

    def _prepare_classes(self) -> None:
        """One prepared middle fragment per (item, asset) pair: everything that does not vary."""
        self._parts: list[dict] = [
            {
                "product_id": self.product_id,
                "item": record_item(item),
                "asset": record_asset(asset),
                "category": dict(self.categories.get(item["id"], DEFAULT_CATEGORY)),
                "tier": 1,
            }
            for item in self.items
            for asset in self.assets
        ]
        self._fragments = ["," + _dumps(part)[1:-1] for part in self._parts]
        self._n_fragments = max(len(self._fragments), 1)
        self.period = self._n_fragments

    def _prepare_tail(self) -> None:
        """What follows the usage: the status and, on a closed file, what closing set on every record."""
        close = (
            {
                "closed_at": "2026-11-05T09:00:00+00:00",
                "closed_by": "SU-000-000-000",
                "external_billing_id": f"INV-{self.file_id.removeprefix('UF-')}",
                "external_billing_note": "billed with the monthly invoice",
            }
            if self.status == "closed"
            else {}
        )
        self._tail_fields = {"multiplier": 1, "status": self.status, **close}
        self._tail = "," + _dumps(self._tail_fields)[1:-1]

    def record(self, i: int) -> dict:
        """The same record as ``render(i)``, built as a dict (for filters that must scan)."""
        if not 0 <= i < self.count:
            raise IndexError(i)
        mix = (i * 2654435761 + self._salt) & 0xFFFFFFFF
        n = mix % 100000
        start, end = self._dates[i % len(self._dates)]
        part = self._parts[i % self._n_fragments]
        rec = {"id": f"{self._id_prefix}{i:07d}", "start_date": start, "end_date": end}
        rec.update(part)
        rec["amount"] = Decimal(n * 5).scaleb(-4)
        rec["usage"] = Decimal(n).scaleb(-2)
        rec.update(self._tail_fields)
        rec["params"] = [{"parameter_name": "region", "parameter_value": _REGIONS[mix % 5]}]
        rec.update(_top_level_copies(part, self.usagefile))
        rec["resource_local_id"] = f"res-{mix % 997:03d}"
        rec["asset_external_id"] = part["asset"]["external_id"]
        rec["asset_external_uid"] = part["asset"]["external_uid"]
        return rec

    def _prepare_render(self) -> None:
        # Everything between the id and the amount depends only on i modulo the lcm of the day
        # and (item, asset) cycles; everything after the usage only on the region choice and the
        # (item, asset) class.
        n_days = len(self._dates)
        cycle = n_days * self._n_fragments // math.gcd(n_days, self._n_fragments)
        self._cycle = cycle
        self._heads = []
        for k in range(cycle):
            start, end = self._dates[k % n_days]
            self._heads.append(
                f'","start_date":"{start}","end_date":"{end}"'
                f'{self._fragments[k % self._n_fragments]},"amount":'
            )
        # After the usage: the tail, the params (by region), the top-level copies (by class).
        self._tails = [
            f'{self._tail},"params":[{{"parameter_name":"region","parameter_value":"{region}"}}]'
            for region in _REGIONS
        ]
        self._copies = []
        for part in self._parts or [{"item": {"id": None}, "asset": {"id": None}}]:
            copies = _top_level_copies(part, self.usagefile)
            self._copies.append("," + _dumps(copies)[1:-1])
        self._externals = [
            f',"asset_external_id":{_dumps(part["asset"]["external_id"])}'
            f',"asset_external_uid":{_dumps(part["asset"]["external_uid"])}}}'
            for part in self._parts or [{"asset": {"external_id": None, "external_uid": None}}]
        ]
        self._prefix = '{"id":"' + self._id_prefix

    def render(self, i: int) -> str:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return self.render_range(i, i + 1)[0]

    def render_range(self, start: int, stop: int) -> list[str]:
        if not 0 <= start <= stop <= self.count:
            raise IndexError((start, stop))
        prefix, heads, tails, cycle, salt = self._prefix, self._heads, self._tails, self._cycle, self._salt
        copies, externals, classes = self._copies, self._externals, self._n_fragments
        out: list[str] = []
        append = out.append
        for i in range(start, stop):
            mix = (i * 2654435761 + salt) & 0xFFFFFFFF
            n = mix % 100000  # usage in hundredths: 0.00 .. 999.99
            a = n * 5  # amount = usage * 0.05, in ten-thousandths
            c = i % classes
            append(
                f"{prefix}{i:07d}{heads[i % cycle]}{a // 10000}.{a % 10000:04d}"
                f',"usage":{n // 100}.{n % 100:02d}{tails[mix % 5]}{copies[c]}'
                f',"resource_local_id":"res-{mix % 997:03d}"{externals[c]}'
            )
        return out


DEFAULT_CATEGORY = {"id": "usage", "name": "Usage"}


def _top_level_copies(part: dict, usagefile: dict) -> dict:
    """``item_id``, ``asset_id`` and the ``usagefile`` object, in the real record's order."""
    return {"item_id": part["item"]["id"], "asset_id": part["asset"]["id"], "usagefile": usagefile}


# Record fields that are the same for every record of one (item, asset) class of a generated file.
CLASS_CONSTANT_PATHS = frozenset(
    {
        "product_id",
        "item.id",
        "item.local_id",
        "item.name",
        "item.mpn",
        "asset.id",
        "asset.external_id",
        "asset.external_uid",
        "asset.recon_id",
        "category.id",
        "category.name",
        "tier",
        "item_id",
        "asset_id",
        "asset_external_id",
        "asset_external_uid",
        "usagefile.id",
        "usagefile.name",
        "usagefile.schema",
        "usagefile.currency",
        "multiplier",
        "status",
        "closed_at",
        "closed_by",
        "external_billing_id",
        "external_billing_note",
        "category",
    }
)


class ClassView:
    """The indexes ``start <= i < stop`` with ``i % period`` in ``classes``, addressable without a scan."""

    def __init__(self, period: int, classes: list[int], start: int, stop: int) -> None:
        self.period, self.classes = period, sorted(classes)
        self._base = start - start % period  # the first index of start's cycle
        self._skip = self._before(start)  # indexes of the class set in that cycle before start
        self._len = max(self._before(stop) - self._skip, 0)

    def _before(self, n: int) -> int:
        """How many indexes of the class set are below ``n``, counted from ``self._base``."""
        full, rest = divmod(n - self._base, self.period)
        return full * len(self.classes) + sum(1 for c in self.classes if c < rest)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, k: int) -> int:
        if not 0 <= k < self._len:
            raise IndexError(k)
        cycle, pos = divmod(k + self._skip, len(self.classes))
        return self._base + cycle * self.period + self.classes[pos]


def class_view(
    source: RecordSource, predicate: Callable[[dict], bool], paths: set[str], start: int, stop: int
) -> ClassView | None:
    """When a filter reads only per-class constants, the matches in ``[start, stop)`` by arithmetic."""
    if not isinstance(source, GeneratedRecords) or not paths <= CLASS_CONSTANT_PATHS:
        return None
    period = source.period
    good = [c for c in range(min(period, source.count)) if predicate(source.record(c))]
    return ClassView(period, good, start, stop)


def join_page(rendered: list[str]) -> bytes:
    """A JSON array from rendered records; the body of a usage-records page."""
    return ("[" + ",".join(rendered) + "]").encode()
