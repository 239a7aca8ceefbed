"""Fixtures of the event-trigger tests: a Connect with whole-second stamps, a store, a triggerer loop.

* ``whole_second_connect``: a small local HTTP server answering ``GET /usage/files`` and
  ``GET /requests`` with the sandbox's own strict RQL (``connect_sandbox.rql`` over the endpoint's
  declared filters: an undeclared ordering or lookup is Connect's 400), but stamping whole seconds
  as Connect's documents do (``tests/fixtures/real/``), so keys tie; a test may change the data
  between two pages of one read (``between_pages``), as Connect changes while it is read.
* ``MemoryStore``: Airflow's asset-state-store accessor interface (``aget``/``aset``), in memory,
  for trigger runs outside a triggerer; the real store is exercised by the topology tests.
* ``run_in_triggerer``: Airflow's own ``TriggerRunner.run_trigger`` driving the triggers, with
  its :class:`SharedStreamManager`; this harness plays the supervisor's part (it confirms each
  event as stored, as the triggerer's supervisor does after writing it to the metadata DB).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from connect_sandbox import rql
from connect_sandbox.endpoints import F_REQUESTS, F_USAGE_FILES
from local_http import LocalServer, QuietHandler

API_KEY = "ApiKey SU-000-000-000:whole-second-key"


class WholeSecondConnect(LocalServer):
    """A Connect of a few usage files and requests, whole-second stamps, strict RQL."""

    def __init__(self) -> None:
        self.files: list[dict] = []
        self.requests: list[dict] = []
        self.calls: list[str] = []
        self.between_pages: Callable[[str, list[dict]], None] | None = None
        self.lock = threading.Lock()
        super().__init__(self._handler())

    def conn_json(self) -> str:
        return self.connection_json(API_KEY, max_wait=1, timeout=10)

    def add_file(self, fid: str, created: str, status: str = "ready", **events: str) -> dict:
        item = {
            "id": fid,
            "status": status,
            "product": {"id": "PRD-276-377-545"},
            "marketplace": {"id": "MP-00001"},
            "period": {"from": "2026-10-01", "to": "2026-10-31"},
            "events": {"created": {"at": created}, **{k: {"at": v} for k, v in events.items()}},
        }
        with self.lock:
            self.files.append(item)
        return item

    def add_request(self, rid: str, updated: str, status: str = "pending", rtype: str = "purchase") -> dict:
        item = {
            "id": rid,
            "type": rtype,
            "status": status,
            "created": updated,
            "updated": updated,
            "asset": {
                "id": f"AS-{rid[3:]}",
                "external_id": f"ext-{rid}",
                "product": {"id": "PRD-276-377-545"},
            },
            "marketplace": {"id": "MP-00001"},
        }
        with self.lock:
            self.requests.append(item)
        return item

    def _handler(self) -> type[QuietHandler]:
        outer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if self.headers.get("Authorization") != API_KEY:
                    return self._send(401, {"error_code": "AUTH_001", "errors": ["Unauthorized"]})
                routes = {
                    "/public/v1/usage/files": ("files", F_USAGE_FILES),
                    "/public/v1/requests": ("requests", F_REQUESTS),
                }
                if parts.path not in routes:
                    return self._send(404, {"error_code": "NOT_FOUND", "errors": ["Not found"]})
                kind, filterable = routes[parts.path]
                try:
                    query = rql.parse(parts.query)
                    filterable.check(query)
                except rql.RQLError as exc:
                    return self._send(400, {"error_code": "INVALID_RQL", "errors": [str(exc)]})
                limit, offset = rql.parse_page(query, 100, 1000)
                with outer.lock:
                    outer.calls.append(parts.path)
                    items = [json.loads(json.dumps(o)) for o in getattr(outer, kind)]
                match = rql.compile_filter(query.filter, filterable)
                found = [o for o in items if match(o)]
                if query.ordering:
                    found = rql.apply_ordering(found, query.ordering, filterable)
                page = found[offset : offset + limit] if limit else []
                headers = {"Content-Range": rql.content_range(offset, len(page), len(found))}
                self._send(200, page, headers)
                if outer.between_pages is not None:
                    outer.between_pages(kind, page)

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                self.reply(status, json.dumps(body).encode(), headers=headers)

        return Handler


@pytest.fixture
def whole_second_connect(monkeypatch: pytest.MonkeyPatch) -> Iterator[WholeSecondConnect]:
    with WholeSecondConnect() as server:
        monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", server.conn_json())
        yield server


class MemoryStore:
    """Airflow's asset-state-store accessor interface (``aget``/``aset``) over a dict."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))  # only JSON goes to the metadata DB
        self.writes += 1


class Collected:
    """Events collected from triggers running in a background event loop."""

    def __init__(self) -> None:
        self.events: list[tuple[int, dict]] = []
        self.lock = threading.Lock()

    def payloads(self, trigger_id: int | None = None) -> list[dict]:
        with self.lock:
            return [p for t, p in self.events if trigger_id is None or t == trigger_id]


@contextlib.contextmanager
def run_in_triggerer(triggers: list[Any]) -> Iterator[Collected]:
    """Run ``triggers`` as Airflow's triggerer runs watchers, in a thread with its own event loop.

    ``TriggerRunner.run_trigger`` (the triggerer's own code) subscribes each trigger to its shared
    stream; every event it queues is collected and confirmed as persisted, as the supervisor does.
    """
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    collected = Collected()
    loop = asyncio.new_event_loop()
    runner = TriggerRunner()
    stop = threading.Event()

    async def supervise() -> None:
        tasks = []
        for trigger_id, trigger in enumerate(triggers, start=1):
            trigger.trigger_id = trigger_id
            runner.triggers[trigger_id] = {
                "task": None,
                "is_watcher": True,
                "name": f"t{trigger_id}",
                "events": 0,
            }
            tasks.append(asyncio.create_task(runner.run_trigger(trigger_id, trigger)))
        try:
            while not stop.is_set():
                seqs = []
                while runner.events:
                    entry = runner.events.popleft()
                    with collected.lock:
                        collected.events.append((entry.trigger_id, entry.event.payload))
                    if entry.persist_seq is not None:
                        seqs.append(entry.persist_seq)
                if seqs:
                    runner._shared_streams.confirm_persisted(seqs)
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner._shared_streams.stop_all()

    errors: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(supervise())
        except BaseException as exc:
            errors.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        yield collected
    finally:
        stop.set()
        thread.join(30)
    if errors:
        raise errors[0]


@pytest.fixture
def triggerer(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[Any]], Any]:
    """``with triggerer([t1, t2]) as got:`` runs the triggers as the triggerer does (see above)."""
    # greenback's portal lets sync code block the loop; the triggerer installs it per trigger task,
    # which needs greenback's own loop set-up: not needed here, where no trigger code is sync.
    monkeypatch.setenv("AIRFLOW_DISABLE_GREENBACK_PORTAL", "true")
    return run_in_triggerer


@pytest.fixture
def memory_store() -> type[MemoryStore]:
    return MemoryStore
