"""Usage records as Connect sends them, built in memory for the exporter.

The shape is the real one (``tests/fixtures/real/README.md``): ``category`` an object,
``asset.recon_id``, an integer ``multiplier``, the top-level copies; ``item`` also carries the
spec's ``unit``/``precision``/``type``, which the exporter keeps when Connect sends them.

Numbers given as ``Decimal`` are written into the JSON text exactly (no float on the way), like
a server that keeps billing values exact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NamedTuple

FILE_ID = "UF-2026-10-0000000042"
PRODUCT_ID = "PRD-276-377-545"


class Page(NamedTuple):
    """Same fields as the hook's RawPage."""

    body: bytes
    offset: int
    count: int
    total: int


def usage_file(file_id: str = FILE_ID, status: str = "ready", **overrides: Any) -> dict[str, Any]:
    obj = {
        "id": file_id,
        "name": "Cloud Seats usage 2026-10",
        "status": status,
        "product": {"id": PRODUCT_ID, "name": "Cloud Seats"},
        "currency": "EUR",
        "schema": "qt",
        "period": {"from": "2026-10-01", "to": "2026-10-31"},
        "events": {"created": {"at": "2026-11-01T10:00:00+00:00"}},
        "stats": {"uploaded": 3, "validated": 3},
    }
    obj.update(overrides)
    return obj


def record(i: int, file_id: str = FILE_ID, **overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": f"UR-{file_id.removeprefix('UF-')}-{i:07d}",
        "start_date": "2026-10-01T00:00:00+00:00",
        "end_date": "2026-10-02T00:00:00+00:00",
        "product_id": PRODUCT_ID,
        "item": {
            "id": f"{PRODUCT_ID}-0001",
            "local_id": "SEATS",
            "name": "Seats",
            "unit": "seat",
            "mpn": "SEATS",
            "precision": "integer",
            "type": "reservation",
        },
        "asset": {
            "id": "AS-0000-0000-0001",
            "external_id": "sub-1001",
            "external_uid": "uid-1",
            "recon_id": "98547985",
        },
        "tier": 1,
        "amount": Decimal("2.5"),
        "multiplier": 1,
        "usage": Decimal(i % 97),
        "status": "valid",
        "params": [{"parameter_name": "region", "parameter_value": "eu-west-1"}],
        "item_id": f"{PRODUCT_ID}-0001",
        "asset_id": "AS-0000-0000-0001",
        "asset_external_id": "sub-1001",
        "asset_external_uid": "uid-1",
        "usagefile": {"id": file_id, "name": "Cloud Seats usage 2026-10", "schema": "qt", "currency": "EUR"},
        "category": {"id": "compute", "name": "Compute"},
        "closed_at": None,
        "closed_by": None,
    }
    rec.update(overrides)
    return rec


_MARK = re.compile(r'"@@dec:([^"]*)@@"')


def dumps_exact(value: Any) -> str:
    """JSON where Decimals are written as their exact digits."""

    def mark(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return f"@@dec:{format(obj, 'f')}@@"
        if isinstance(obj, dict):
            return {k: mark(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [mark(v) for v in obj]
        return obj

    return _MARK.sub(r"\1", json.dumps(mark(value), ensure_ascii=False, separators=(",", ":")))


def pages(records: list[Any], page_size: int = 1000, total: int | None = None) -> Iterator[Page]:
    """Records cut into pages the way the hook yields them (none for an empty listing)."""
    total = len(records) if total is None else total
    for offset in range(0, len(records), page_size):
        chunk = records[offset : offset + page_size]
        yield Page(dumps_exact(chunk).encode(), offset, len(chunk), total)
