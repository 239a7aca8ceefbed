"""The export with record pages fetched side by side: exactly the file, whatever the server does.

Over real HTTP against the local ``listing_server`` (``tests/connect_provider/conftest.py``):
pages answered out of order and with jitter, a gateway that answers 429 past two calls at once,
and a listing that changes while it is read. The file is compared with the records served.
"""

from __future__ import annotations

import random
import threading
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from connect_provider.exceptions import ConnectError
from connect_provider.hooks.connect import ConnectHook
from connect_provider.usage.exporter import export_usage_file
from connect_provider.usage.manifest import read_entry
from connect_provider.usage.writer import DatasetLayout
from usage_factory import FILE_ID, PRODUCT_ID, dumps_exact, record, usage_file

DATA_REL = f"product_id={PRODUCT_ID}/period=2026-10/usage_file_id={FILE_ID}.parquet"
PAGE = 250


def jittered_later_pages_first(seed: int = 3):
    """Of every four pages the last is answered first; each answer also waits 0-10 ms at random."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def delay(offset: int) -> float:
        with lock:
            jitter = rng.uniform(0, 0.01)
        return 0.02 * (3 - (offset // PAGE) % 4) + jitter

    return delay


def nothing_published(dest: Path) -> bool:
    staging = dest / "_staging"
    return (
        not (dest / DATA_REL).exists()
        and not (dest / "_quarantine").exists()
        and read_entry(DatasetLayout(dest), FILE_ID) is None
        and (not staging.exists() or not [p for p in staging.iterdir() if p.suffix == ".parquet"])
    )


class TestConcurrentExport:
    @pytest.mark.parametrize("concurrency", [2, 4, 8], ids=["two", "four", "eight"])
    def test_pages_answered_out_of_order_with_jitter_give_exactly_the_file(
        self, listing_server, dest: Path, concurrency: int
    ) -> None:
        served = [record(i) for i in range(3000)]
        server = listing_server(served, usage_file(), dumps=dumps_exact, max_concurrency=8)
        server.delay = jittered_later_pages_first()
        result = export_usage_file(
            ConnectHook(), FILE_ID, dest, page_size=PAGE, concurrency=concurrency, row_group_rows=1000
        )
        assert (result.rows, result.quarantined, result.path) == (3000, 0, str(dest / DATA_REL))
        table = pq.read_table(dest / DATA_REL)
        assert table.column("id").to_pylist() == [r["id"] for r in served]
        assert table.column("usage").to_pylist() == [Decimal(r["usage"]) for r in served]
        assert server.answered != sorted(server.answered)  # it did answer out of order
        assert 1 < server.peak_in_flight <= concurrency

    def test_a_429_storm_shrinks_the_window_and_nothing_is_lost(
        self, listing_server, dest: Path, hook_logs
    ) -> None:
        served = [record(i) for i in range(3000)]
        server = listing_server(served, usage_file(), dumps=dumps_exact, max_wait=0.05)
        server.delay = lambda offset: 0.03
        server.max_in_flight = 2  # past two calls at once: 429, Retry-After: 1 (capped by max_wait)
        result = export_usage_file(ConnectHook(), FILE_ID, dest, page_size=PAGE, concurrency=4)
        assert result.rows == 3000
        assert pq.read_table(dest / DATA_REL).column("id").to_pylist() == [r["id"] for r in served]
        assert server.rate_limited > 0
        shrinks = [line for line in hook_logs() if "rate-limited the listing (429)" in line]
        assert shrinks and "2 page call(s) at once now, was 4" in shrinks[0]

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            (lambda rows: rows.insert(0, record(9999)), r"record count changed during the export"),
            (lambda rows: rows.append(rows.pop(5)), r"record ids appear more than once"),
            (lambda rows: rows.pop(1), r"record count changed during the export"),
        ],
        ids=["a-record-added-in-front", "a-record-moved-to-the-end", "a-record-removed"],
    )
    def test_a_listing_that_changes_under_the_export_is_caught_and_nothing_published(
        self, listing_server, dest: Path, change, reason: str
    ) -> None:
        served = [record(i) for i in range(3000)]
        server = listing_server(served, usage_file(), dumps=dumps_exact)
        server.delay = jittered_later_pages_first()
        server.mutate_before_call[1] = change  # after the first page was served, before the others
        with pytest.raises(ConnectError, match=reason) as caught:
            export_usage_file(ConnectHook(), FILE_ID, dest, page_size=PAGE, concurrency=4)
        assert "nothing was published" in str(caught.value).lower()
        assert nothing_published(dest)
