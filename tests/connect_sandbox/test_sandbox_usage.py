"""Usage files and records: the seeded files, generated files and paging through a million records."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import requests
from connect_sandbox.store import Store

BIG_FILE = "UF-2026-10-9000000001"


@pytest.fixture(scope="module")
def million(start_sandbox):
    return start_sandbox("--usage-records", "1000000")


def get(sb, path: str, query: str) -> requests.Response:
    return requests.get(f"{sb.api_url}{path}?{query}", headers={"Authorization": sb.api_key}, timeout=60)


def test_the_last_page_of_a_million_records_is_served(million) -> None:
    r = get(million, "/usage/records", f"usagefile.id={BIG_FILE}&limit=1000&offset=999000")
    assert r.status_code == 200
    assert r.headers["Content-Range"] == "items 999000-999999/1000000"
    records = r.json()
    assert len(records) == 1000
    assert records[0]["id"] == "UR-2026-10-9000000001-0999000"
    assert records[-1]["id"] == "UR-2026-10-9000000001-0999999"
    assert {rec["usagefile"]["id"] for rec in records} == {BIG_FILE}


@pytest.mark.parametrize(
    "query",
    [
        f"usagefile.id={BIG_FILE}",
        f"eq(usagefile.id,{BIG_FILE})",
        f"eq(usage_file,{BIG_FILE})",
        f"usage_file={BIG_FILE}",
        f"in(usagefile.id,({BIG_FILE}))",
    ],
)
def test_every_spelling_of_the_file_filter_counts_the_whole_file(million, query: str) -> None:
    r = get(million, "/usage/records", f"{query}&limit=0")
    assert r.headers["Content-Range"] == "items 0-0/1000000"


def test_the_big_file_is_listed_with_its_record_count(million) -> None:
    f = get(million, f"/usage/files/{BIG_FILE}", "").json()
    assert (f["status"], f["records"]["valid"], f["stats"]["uploaded"]) == ("ready", 1000000, 1000000)


def test_a_filter_on_per_asset_fields_is_answered_without_scanning(million) -> None:
    r = get(
        million, "/usage/records", f"usagefile.id={BIG_FILE}&asset.id=AS-0000-0000-0005&limit=5&offset=1000"
    )
    assert r.headers["Content-Range"] == "items 1000-1004/250000"
    assert {rec["asset"]["id"] for rec in r.json()} == {"AS-0000-0000-0005"}


def test_a_wrong_filter_key_is_ignored_as_connect_ignores_it(million) -> None:
    # `usage_file.id` is not a declared filter: Connect returns records of every file.
    r = get(million, "/usage/records", f"usage_file.id={BIG_FILE}&limit=0")
    total = int(r.headers["Content-Range"].rsplit("/", 1)[1])
    assert total == 1000000 + 50 + 20 + 30


def test_pages_are_the_same_records_every_time(million) -> None:
    a = get(million, "/usage/records", f"usagefile.id={BIG_FILE}&limit=100&offset=500000").content
    b = get(million, "/usage/records", f"usagefile.id={BIG_FILE}&limit=100&offset=500000").content
    assert a == b


def test_records_of_the_seeded_files_follow_their_file_status(api) -> None:
    for file_id, status, count in (
        ("UF-2026-10-0000000001", "valid", 50),
        ("UF-2026-10-0000000002", "approved", 20),
        ("UF-2026-11-0000000003", None, 0),
        ("UF-2026-09-0000000004", "closed", 30),
    ):
        r = api.get("/usage/records", f"usagefile.id={file_id}&limit=100")
        assert r.headers["Content-Range"].endswith(f"/{count}")
        assert {rec["status"] for rec in r.json()} == ({status} if status else set())


def test_the_edge_file_carries_the_values_exporters_get_wrong(api) -> None:
    r = api.get("/usage/records", "eq(usage_file,UF-2026-09-0000000004)&limit=30")
    records = json.loads(r.content, parse_float=Decimal)
    usages = {rec["usage"] for rec in records}
    assert Decimal("123456789012.123456") in usages and Decimal("0.000001") in usages
    assert any(rec["amount"] is None for rec in records)
    assert any(rec["params"] == [] for rec in records)
    assert any(
        p["parameter_value"] and "東京" in p["parameter_value"] for rec in records for p in rec["params"]
    )
    assert all("保管庫" in rec["item"]["name"] for rec in records)


def test_the_usage_files_list_filters_by_status_and_product(api) -> None:
    r = api.get("/usage/files", "in(status,(ready,accepted))&product.id=PRD-276-377-545")
    assert [f["id"] for f in r.json()] == ["UF-2026-10-0000000001", "UF-2026-10-0000000002"]


def test_records_filter_by_dates_by_scanning(api) -> None:
    # start_date filters but does not order records; usage_start_time is the spec's ordering on it
    r = api.get(
        "/usage/records",
        "usagefile.id=UF-2026-10-0000000001&ge(start_date,2026-10-30)&ordering(-usage_start_time)",
    )
    assert r.headers["Content-Range"] == "items 0-1/2"
    assert [rec["start_date"] for rec in r.json()] == [
        "2026-10-31T00:00:00+00:00",
        "2026-10-30T00:00:00+00:00",
    ]


def test_amount_and_usage_are_not_filters_of_records_so_they_are_ignored(api) -> None:
    r = api.get("/usage/records", "and(eq(usagefile.id,UF-2026-09-0000000004),eq(amount,null()),gt(usage,5))")
    assert r.headers["Content-Range"] == "items 0-29/30"


def test_the_admin_api_adds_a_generated_file(api, sandbox) -> None:
    f = sandbox.admin(
        "POST",
        "usage-files",
        {
            "records": 1234,
            "product_id": "PRD-684-920-001",
            "status": "accepted",
            "period_from": "2026-12-01",
            "period_to": "2026-12-31",
        },
    )
    assert f["id"] == "UF-2026-12-9000000001"
    assert (f["status"], f["product"]["id"], f["period"]) == (
        "accepted",
        "PRD-684-920-001",
        {"from": "2026-12-01", "to": "2026-12-31"},
    )
    r = api.get("/usage/records", f"usagefile.id={f['id']}&limit=10&offset=1230")
    assert r.headers["Content-Range"] == "items 1230-1233/1234"
    assert {rec["status"] for rec in r.json()} == {"approved"}
    assert all(rec["start_date"].startswith("2026-12-") for rec in r.json())


def test_generated_records_render_exactly_the_records_filters_see() -> None:
    store = Store("demo")
    store.add_usage_file(200)
    source = store.record_sources[BIG_FILE]
    for i in range(200):
        assert json.loads(source.render(i), parse_float=Decimal) == source.record(i)


def test_a_generated_record_is_a_function_of_its_file_and_index() -> None:
    first, second = Store("demo"), Store("demo")
    first.add_usage_file(10)
    second.add_usage_file(10)
    assert first.record_sources[BIG_FILE].render(7) == second.record_sources[BIG_FILE].render(7)
