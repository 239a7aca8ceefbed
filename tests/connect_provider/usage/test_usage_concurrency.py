"""Two exports of one usage file at once: the second waits for the first, or stops saying why.

Before the export lease, the second export's clean-up of "stale" staging files deleted the file
the first was still writing, and the first died with a raw ``FileNotFoundError``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from connect_provider.exceptions import ConnectError
from connect_provider.usage.exporter import export_usage_pages
from connect_provider.usage.manifest import read_entry
from connect_provider.usage.writer import DatasetLayout
from usage_factory import FILE_ID, PRODUCT_ID, pages, record, usage_file

DATA_REL = f"product_id={PRODUCT_ID}/period=2026-10/usage_file_id={FILE_ID}.parquet"


def staged(dest: Path) -> list[str]:
    folder = dest / "_staging"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


class HeldExport:
    """An export in a thread that writes two pages (one row group each), then waits to be released."""

    def __init__(self, dest: Path, records: int = 3000, **options: Any) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()
        self.error: BaseException | None = None
        self.result: Any = None
        # No category: the same records in the old and the new schema, so that only the race differs.
        self._records = [record(i, category=None) for i in range(records)]
        self._thread = threading.Thread(target=self._run, args=(dest, options), daemon=True)

    def _pages(self):
        for n, page in enumerate(pages(self._records, page_size=1000)):
            if n == 2:
                self.holding.set()
                assert self.release.wait(60), "never released"
            yield page

    def _run(self, dest: Path, options: dict[str, Any]) -> None:
        try:
            self.result = export_usage_pages(
                self._pages(), usage_file(), dest, row_group_rows=1000, **options
            )
        except BaseException as exc:
            self.error = exc

    def start(self) -> HeldExport:
        self._thread.start()
        assert self.holding.wait(60), "the first export never reached its third page"
        return self

    def finish(self) -> None:
        self.release.set()
        self._thread.join(60)
        assert not self._thread.is_alive()


class Export:
    """An export in a thread, started now."""

    def __init__(self, dest: Path, records: int, **options: Any) -> None:
        self.error: BaseException | None = None
        self.result: Any = None
        self.done = threading.Event()
        rows = [record(i, category=None) for i in range(records)]

        def run() -> None:
            try:
                self.result = export_usage_pages(pages(rows), usage_file(), dest, **options)
            except BaseException as exc:
                self.error = exc
            finally:
                self.done.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive()


class TestTwoExportsOfOneFile:
    def test_the_second_waits_for_the_first_and_both_finish(self, dest: Path) -> None:
        first = HeldExport(dest, records=3000).start()
        assert any(".data." in name for name in staged(dest))  # two row groups on disk, unpublished
        second = Export(dest, records=2000)
        overtook = second.done.wait(1.5)
        first.finish()
        second.join()
        assert first.error is None, f"the first export failed: {first.error!r}"
        assert second.error is None, f"the second export failed: {second.error!r}"
        assert not overtook, "the second export ran while the first held the file"
        assert (first.result.rows, second.result.rows) == (3000, 2000)
        # The second ran after the first: its version is the one published, data and manifest alike.
        assert pq.read_table(dest / DATA_REL).num_rows == 2000
        assert read_entry(DatasetLayout(dest), FILE_ID).rows == 2000
        assert staged(dest) == []

    def test_a_second_export_that_waited_too_long_stops_saying_another_export_is_running(
        self, dest: Path
    ) -> None:
        first = HeldExport(dest, records=3000).start()
        before = staged(dest)
        with pytest.raises(ConnectError, match=rf"another export of {FILE_ID} is running") as caught:
            export_usage_pages(
                pages([record(i) for i in range(10)]), usage_file(), dest, wait_for_other_export=0.5
            )
        assert "stops without changing anything" in str(caught.value)
        assert staged(dest) == before  # it touched nothing of the first
        first.finish()
        assert first.error is None and first.result.rows == 3000
        assert pq.read_table(dest / DATA_REL).num_rows == 3000


def _marker(dest: Path, token: str, *, host: str, pid: int, age: float) -> Path:
    folder = dest / "_staging"
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    path = folder / f"{FILE_ID}.owner.{token}.json"
    body = {"token": token, "usage_file_id": FILE_ID, "host": host, "pid": pid}
    path.write_text(json.dumps({**body, "started_at": now - age - 60, "heartbeat_at": now - age}))
    (folder / f"{FILE_ID}.data.{token}.parquet").write_bytes(b"PAR1 left behind")
    return path


class TestWhatCleanupRemoves:
    @pytest.mark.parametrize(
        ("host", "age"),
        [("worker-7.example", 600.0), ("worker-7.example", 121.0)],
        ids=["heartbeat-10-minutes-old", "heartbeat-just-past-the-stale-age"],
    )
    def test_the_leftovers_of_an_export_whose_heartbeat_stopped_are_removed(
        self, dest: Path, host: str, age: float
    ) -> None:
        _marker(dest, "deadbeef" * 4, host=host, pid=4242, age=age)
        result = export_usage_pages(pages([record(i) for i in range(5)]), usage_file(), dest)
        assert result.rows == 5
        assert staged(dest) == []

    def test_the_leftovers_of_a_dead_process_on_this_host_are_removed_at_once(self, dest: Path) -> None:
        import subprocess
        import sys

        from connect_provider.usage.writer import _host_identity

        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait(30)
        _marker(dest, "cafe" * 8, host=_host_identity(), pid=gone.pid, age=1.0)
        result = export_usage_pages(pages([record(i) for i in range(5)]), usage_file(), dest)
        assert result.rows == 5 and staged(dest) == []

    def test_a_dead_pid_in_another_pid_namespace_of_the_same_host_name_is_not_taken_for_dead(
        self, dest: Path
    ) -> None:
        # Two containers may share a host name; a pid means nothing across their namespaces.
        import socket

        _marker(dest, "abcd" * 8, host=f"{socket.gethostname()}/pid:[1]", pid=2**22 + 1, age=1.0)
        with pytest.raises(ConnectError, match="another export of"):
            export_usage_pages(pages([record(0)]), usage_file(), dest, wait_for_other_export=0.3)

    def test_a_live_export_on_another_host_is_waited_for_and_its_files_are_left_alone(
        self, dest: Path
    ) -> None:
        marker = _marker(dest, "beef" * 8, host="worker-9.example", pid=4242, age=1.0)
        with pytest.raises(
            ConnectError, match=r"another export of .* on worker-9\.example .*delete .*owner\.beef"
        ):
            export_usage_pages(pages([record(0)]), usage_file(), dest, wait_for_other_export=0.3)
        assert staged(dest) == sorted([marker.name, f"{FILE_ID}.data.{'beef' * 8}.parquet"])
