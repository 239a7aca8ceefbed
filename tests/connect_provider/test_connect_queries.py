"""The provider asks Connect only what Connect's RQL layer accepts, and pages lists in a stable order.

Two servers answer here. The sandbox refuses, as django-rql does, a lookup or an ordering the
endpoint does not declare (a 400), so every flow of the provider run against it shows that its
queries are ones Connect takes. A small local server then plays a Connect whose default order is
not stable between calls (PostgreSQL without ORDER BY: "using different LIMIT/OFFSET values to
select different subsets of a query result will give inconsistent results unless you enforce a
predictable result ordering with ORDER BY"): only an ``ordering()`` keeps offset pages from
skipping or repeating records there.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from connect_project.demo import seed_demo_changes
from connect_provider import actions
from connect_provider.exceptions import ConnectAPIError
from connect_provider.hooks.connect import ConnectHook
from connect_provider.outbox import Outbox, processing
from connect_provider.outbox.follow import follow_open_requests
from connect_provider.usage.exporter import export_usage_file, list_usage_files
from connect_sandbox import rql as sandbox_rql
from connect_sandbox.filter_table import FILTERS
from local_http import LocalServer, QuietHandler

READY_FILE = "UF-2026-10-0000000001"  # 50 records
PRODUCT = "PRD-276-377-545"
EU_HUB = "HB-0000-0001"


def _pipeline(hook: ConnectHook, tmp_path: Path) -> None:
    box = Outbox.sqlite(tmp_path / "changes.sqlite")
    box.create_schema()
    try:
        ids = seed_demo_changes(box)
        claimed = box.claim("run-1", 100)
        assert claimed == ids
        processing.submit_chunk(box, hook, "run-1", claimed, retry_delays=())
        report = follow_open_requests(box, hook)
        assert report.checked > 0
    finally:
        box.close()


def _export(hook: ConnectHook, tmp_path: Path) -> None:
    result = export_usage_file(hook, READY_FILE, tmp_path / "usage")
    assert result.rows == 50


def _list_files(hook: ConnectHook, tmp_path: Path) -> None:
    assert list_usage_files(hook)


def _lookups(hook: ConnectHook, tmp_path: Path) -> None:
    assert hook.find_marketplace("EU Marketplace")["id"] == "MP-00001"
    assert hook.find_marketplace("MP-00002")["name"] == "US Marketplace"
    hook.find_tier_account("reseller-1")
    assert hook.find_connection(PRODUCT, EU_HUB)["hub"]["id"] == EU_HUB
    assert hook.find_assets(external_id="sub-dup", product_id=PRODUCT)
    assert hook.test_connection()[0]


def _requests_of_an_asset(hook: ConnectHook, tmp_path: Path) -> None:
    result = actions.cancel(hook, asset_external_id="sub-1001")
    again = actions.cancel(hook, asset_external_id="sub-1001")  # finds the open request it made
    assert again.request_id == result.request_id and again.reused


def _usage_records_operator_path(hook: ConnectHook, tmp_path: Path) -> None:
    pages = list(hook.iter_usage_record_pages(READY_FILE, page_size=7))
    assert sum(len(p) for p in pages) == 50


FLOWS: list[tuple[str, Callable[[ConnectHook, Path], None]]] = [
    ("subscription-changes pipeline: claim, submit, follow", _pipeline),
    ("usage file to Parquet", _export),
    ("usage files to export", _list_files),
    ("marketplace, tier account, connection and asset look-ups, test_connection", _lookups),
    ("open requests of an asset (cancel twice)", _requests_of_an_asset),
    ("usage records page by page", _usage_records_operator_path),
]


class TestTheProvidersQueriesAreOnesConnectAccepts:
    """Every flow that lists something runs against the strict sandbox without a single 400."""

    @pytest.mark.parametrize("flow", [f for _, f in FLOWS], ids=[name for name, _ in FLOWS])
    def test_the_flow_runs_against_the_strict_sandbox(self, sandbox, tmp_path: Path, flow) -> None:
        before = sandbox.admin("GET", "stats")["calls"]
        flow(ConnectHook(), tmp_path)
        assert sandbox.admin("GET", "stats")["calls"] > before

    @pytest.mark.parametrize(
        ("path", "query", "refusal"),
        [
            ("/requests", "ge(id,PR-0000)", "RQL Lookup error: filter 'id' does not support lookup 'ge'"),
            ("/requests", "ordering(id)", "Bad ordering filter: id."),
            ("/usage/records", "ordering(id)", "Bad ordering filter: id."),
            ("/usage/files", "eq(created.at,2026-10-01)", "does not support lookup 'eq'"),
        ],
        ids=[
            "id has no ge",
            "requests do not order by id",
            "records do not order by id",
            "created.at has no eq",
        ],
    )
    def test_the_sandbox_would_refuse_what_connect_refuses(self, sandbox, path, query, refusal) -> None:
        with pytest.raises(ConnectAPIError) as caught:
            list(ConnectHook().iter_items(path, query))
        assert caught.value.status == 400 and refusal in caught.value.errors[0]


# ------------------------------------------------------------------ a Connect with an unstable order


class UnstableConnect(LocalServer):
    """Serves a few lists whose order without ``ordering()`` changes from one call to the next.

    With an ``ordering()`` the endpoint allows (spec v37, :data:`connect_sandbox.filter_table`), a
    list is sorted by that key, ties in a random order (as a database may break them); an ordering
    the endpoint does not allow is Connect's 400. ``key`` holds each object's ordering values,
    kept out of the served JSON when Connect does not send them (a record's created_time).
    """

    def __init__(self, lists: dict[str, tuple[str, list[dict[str, Any]], dict[str, dict[str, Any]]]]) -> None:
        self.lists = lists  # route -> (spec path, objects, {object id: {ordering name: value}})
        self.queries: list[str] = []
        self.calls = 0
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                owner.calls += 1
                status, headers, body = owner.answer(self.path)
                self.reply(status, body, headers=headers)

        super().__init__(Handler)

    def answer(self, raw_path: str) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        route = parts.path.removeprefix("/public/v1")
        spec_path, objects, keys = self.lists[route]
        self.queries.append(unquote(parts.query))
        q = sandbox_rql.parse(parts.query)
        try:
            sandbox_rql.Filterable(FILTERS[spec_path]).check(q)
        except sandbox_rql.RQLError as exc:
            return 400, {}, json.dumps({"error_code": "INVALID_RQL", "errors": [str(exc)]}).encode()
        limit, offset = sandbox_rql.parse_page(q, 100, 1000)
        shuffled = list(objects)
        random.Random(self.calls).shuffle(shuffled)  # a different plan, a different order, every call
        for item in reversed(q.ordering):
            name = item.lstrip("-")
            shuffled.sort(key=lambda o, name=name: keys[o["id"]][name], reverse=item.startswith("-"))
        page = [] if limit == 0 else shuffled[offset : offset + limit]
        content_range = sandbox_rql.content_range(0 if limit == 0 else offset, len(page), len(objects))
        return 200, {"Content-Range": content_range}, json.dumps(page).encode()


def _records() -> tuple[list[dict], dict[str, dict]]:
    records = [{"id": f"UR-0001-{i:05d}", "usagefile": {"id": READY_FILE}} for i in range(230)]
    # Created one by one as the file was processed; every record of a monthly file starts on day 1.
    keys = {
        r["id"]: {
            "created_time": f"2026-10-02T10:00:00.{i:06d}",
            "usage_start_time": "2026-10-01",
            "status": "valid",
        }
        for i, r in enumerate(records)
    }
    return records, keys


def _files() -> tuple[list[dict], dict[str, dict]]:
    files = [{"id": f"UF-2026-10-{i:04d}", "status": "ready"} for i in range(57)]
    # Files uploaded in batches: several share a creation second, their ids break the tie.
    keys = {
        f["id"]: {"created.at": f"2026-10-02T10:{i // 4:02d}:00", "id": f["id"]} for i, f in enumerate(files)
    }
    return files, keys


def _requests() -> tuple[list[dict], dict[str, dict]]:
    requests = [{"id": f"PR-0000-0000-{i:04d}-001", "status": "pending"} for i in range(120)]
    keys = {r["id"]: {"created": f"2026-10-02T10:00:{i // 60:02d}.{i:06d}"} for i, r in enumerate(requests)}
    return requests, keys


@pytest.fixture
def unstable(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnstableConnect]:
    records, record_keys = _records()
    files, file_keys = _files()
    requests, request_keys = _requests()
    server = UnstableConnect(
        {
            "/usage/records": ("/usage/records", records, record_keys),
            "/usage/files": ("/usage/files", files, file_keys),
            "/requests": ("/requests", requests, request_keys),
        }
    ).start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT",
        json.dumps(
            {
                "conn_type": "cloudblue_connect",
                "host": server.api_url,
                "password": "SU-000-000-000:unstable-key",
            }
        ),
    )
    yield server
    server.close()


def _ids_of_raw_record_pages(hook: ConnectHook) -> list[str]:
    pages = hook.iter_usage_record_raw_pages(READY_FILE, page_size=40)
    return [r["id"] for page in pages for r in json.loads(page.body)]


def _ids_of_record_pages(hook: ConnectHook) -> list[str]:
    return [r["id"] for page in hook.iter_usage_record_pages(READY_FILE, page_size=40) for r in page]


def _ids_of_usage_files(hook: ConnectHook) -> list[str]:
    return [f["id"] for f in list_usage_files(hook, ["ready"])]


def _ids_of_requests(hook: ConnectHook) -> list[str]:
    return [r["id"] for r in hook.list_requests("in(status,(pending))")]


class TestOffsetPagesNeitherSkipNorRepeat:
    """Read page by page from a server whose default order moves, every object comes exactly once."""

    @pytest.mark.parametrize(
        ("read", "expected", "ordering"),
        [
            (_ids_of_raw_record_pages, 230, "ordering(created_time)"),
            (_ids_of_record_pages, 230, "ordering(created_time)"),
            (_ids_of_usage_files, 57, "ordering(created.at,id)"),
            (_ids_of_requests, 120, "ordering(created)"),
        ],
        ids=["usage records, raw pages", "usage records, decoded pages", "usage files", "requests"],
    )
    def test_every_object_comes_exactly_once(
        self, unstable: UnstableConnect, read, expected: int, ordering: str
    ) -> None:
        ids = read(ConnectHook(page_size=40))
        assert len(ids) == expected and len(set(ids)) == expected
        assert unstable.queries and all(ordering in q for q in unstable.queries)
