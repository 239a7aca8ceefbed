"""Paging against the sandbox over real HTTP: lazy, complete, stopping at the total."""

from __future__ import annotations

import json

import pytest
from connect_provider.hooks.connect import ConnectHook, RawPage
from connect_provider.rql import R

READY_FILE = "UF-2026-10-0000000001"  # 50 records
ACCEPTED_FILE = "UF-2026-10-0000000002"  # 20 records
DRAFT_FILE = "UF-2026-11-0000000003"  # 0 records
EDGE_FILE = "UF-2026-09-0000000004"  # 30 records with edge values


def record_ids(file_id: str, n: int) -> list[str]:
    return [f"UR-{file_id.removeprefix('UF-')}-{i:07d}" for i in range(n)]


def record_calls(stats) -> int:
    return stats()["calls_by_route"].get("GET /usage/records", 0)


def test_pages_of_one_record_read_every_record_once(sandbox, stats) -> None:
    pages = list(ConnectHook().iter_usage_record_pages(ACCEPTED_FILE, page_size=1))
    assert [len(p) for p in pages] == [1] * 20
    assert [p[0]["id"] for p in pages] == record_ids(ACCEPTED_FILE, 20)
    assert record_calls(stats) == 20


def test_an_exact_multiple_stops_at_the_total_without_an_extra_call(sandbox, stats) -> None:
    pages = list(ConnectHook().iter_usage_record_pages(READY_FILE, page_size=10))
    assert [len(p) for p in pages] == [10] * 5
    assert [r["id"] for p in pages for r in p] == record_ids(READY_FILE, 50)
    assert record_calls(stats) == 5


def test_an_empty_collection_yields_no_page_after_one_call(sandbox, stats) -> None:
    assert list(ConnectHook().iter_usage_record_pages(DRAFT_FILE, page_size=10)) == []
    assert list(ConnectHook().iter_usage_record_raw_pages(DRAFT_FILE)) == []
    assert record_calls(stats) == 2


def test_a_page_larger_than_the_collection_is_one_page(sandbox, stats) -> None:
    pages = list(ConnectHook().iter_usage_record_pages(EDGE_FILE))
    assert [len(p) for p in pages] == [30]
    assert record_calls(stats) == 1


def test_pages_are_read_lazily_one_at_a_time(sandbox, stats) -> None:
    pages = ConnectHook().iter_usage_record_pages(READY_FILE, page_size=10)
    assert record_calls(stats) == 0
    first = next(pages)
    assert len(first) == 10
    assert record_calls(stats) == 1
    pages.close()


def test_raw_pages_carry_the_body_offset_count_and_total(sandbox) -> None:
    hook = ConnectHook()
    raw = list(hook.iter_usage_record_raw_pages(READY_FILE, page_size=20))
    assert all(isinstance(p, RawPage) for p in raw)
    assert [(p.offset, p.count, p.total) for p in raw] == [(0, 20, 50), (20, 20, 50), (40, 10, 50)]
    decoded = [json.loads(p.body) for p in raw]
    assert decoded == list(hook.iter_usage_record_pages(READY_FILE, page_size=20))


def test_a_server_that_caps_the_page_size_is_still_paged_completely(start_sandbox, monkeypatch) -> None:
    capped = start_sandbox("--seed", "demo", "--max-limit", "7")
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", capped.conn_uri_json())
    pages = list(ConnectHook().iter_usage_record_raw_pages(READY_FILE, page_size=10))
    assert [p.count for p in pages] == [7] * 7 + [1]
    assert [p.offset for p in pages] == list(range(0, 50, 7))
    ids = [r["id"] for p in pages for r in json.loads(p.body)]
    assert ids == record_ids(READY_FILE, 50)


def test_the_connection_page_size_applies_when_the_call_sets_none(sandbox, monkeypatch, stats) -> None:
    conn = json.loads(sandbox.conn_uri_json())
    conn["extra"]["page_size"] = 25
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", json.dumps(conn))
    assert [len(p) for p in ConnectHook().iter_usage_record_pages(READY_FILE)] == [25, 25]
    assert [len(p) for p in ConnectHook(page_size=50).iter_usage_record_pages(READY_FILE)] == [50]


def test_iter_items_and_count_agree_with_a_filter(sandbox) -> None:
    hook = ConnectHook(page_size=2)
    query = R().status.eq("approved")
    approved = list(hook.iter_items("/requests", query))
    assert approved and all(r["status"] == "approved" for r in approved)
    assert hook.count("/requests", query) == len(approved)
    assert hook.count("/usage/records", R().usagefile.id.eq(READY_FILE)) == 50
    assert hook.count("/usage/records", f'eq(usagefile.id,"{DRAFT_FILE}")') == 0


def test_ordering_and_select_are_sent_with_the_query(sandbox) -> None:
    hook = ConnectHook(page_size=3)
    # /assets orders by created, not by id (spec v37); the seeded assets were created in id order
    ascending = [a["id"] for a in hook.iter_items("/assets", ordering="created")]
    descending = [a["id"] for a in hook.iter_items("/assets", ordering=["-created"])]
    assert ascending == sorted(ascending) and descending == ascending[::-1]
    assert len(ascending) >= 6
    trimmed = next(hook.iter_pages("/requests", select="-asset.items"))
    assert trimmed and all("items" not in r["asset"] for r in trimmed)


def test_paging_progress_is_logged_with_page_and_record_counts(sandbox, hook_logs) -> None:
    list(ConnectHook().iter_usage_record_pages(READY_FILE, page_size=10))
    progress = [line for line in hook_logs() if line.startswith("info: usage records of")]
    assert any(f"usage records of {READY_FILE}: page 1/5, 10/50" in line for line in progress)
    assert any(f"usage records of {READY_FILE}: page 5/5, 50/50" in line for line in progress)
    debug_calls = [line for line in hook_logs() if line.startswith("debug: GET /usage/records?")]
    assert len(debug_calls) == 5


@pytest.mark.parametrize("page_size", [0, 1001, -5])
def test_a_page_size_out_of_range_is_refused(sandbox, page_size: int) -> None:
    from connect_provider.exceptions import ConnectValidationError

    with pytest.raises(ConnectValidationError) as caught:
        next(ConnectHook().iter_usage_record_pages(READY_FILE, page_size=page_size))
    assert caught.value.field == "page_size"
