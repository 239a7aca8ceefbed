"""Paging with ``Content-Range`` and the API key check, over real HTTP."""

from __future__ import annotations

import pytest
import requests


def test_a_list_carries_content_range_for_its_page(api) -> None:
    r = api.get("/requests", "limit=2&offset=1")
    assert r.status_code == 200
    assert r.headers["Content-Range"] == "items 1-2/6"
    assert [x["id"] for x in r.json()] == ["PR-0000-0000-0002-001", "PR-0000-0000-0003-001"]


def test_the_default_page_size_is_100(api, sandbox) -> None:
    sandbox.admin("POST", "usage-files", {"records": 250})
    r = api.get("/usage/records", "usagefile.id=UF-2026-10-9000000001")
    assert r.headers["Content-Range"] == "items 0-99/250"
    assert len(r.json()) == 100


def test_the_last_page_is_short_and_ends_at_total_minus_one(api) -> None:
    r = api.get("/usage/records", "usagefile.id=UF-2026-10-0000000001&limit=20&offset=40")
    assert r.headers["Content-Range"] == "items 40-49/50"
    assert [x["id"][-3:] for x in r.json()] == [f"{i:03d}" for i in range(40, 50)]


def test_an_offset_past_the_end_gives_an_empty_page_with_the_total(api) -> None:
    r = api.get("/assets", "offset=50")
    assert r.status_code == 200
    assert r.json() == []
    assert r.headers["Content-Range"] == "items 50-50/6"


def test_an_empty_result_says_zero_items(api) -> None:
    r = api.get("/assets", "external_id=no-such-subscription")
    assert r.json() == []
    assert r.headers["Content-Range"] == "items 0-0/0"


def test_limit_zero_counts_without_returning_items(api) -> None:
    r = api.get("/requests", "status=approved&limit=0&offset=3")
    assert r.json() == []
    assert r.headers["Content-Range"] == "items 0-0/5"


def test_a_limit_above_the_maximum_is_cut_to_the_maximum(start_sandbox) -> None:
    small = start_sandbox("--max-limit", "3")
    r = requests.get(
        f"{small.api_url}/requests?limit=1000", headers={"Authorization": small.api_key}, timeout=30
    )
    assert r.headers["Content-Range"] == "items 0-2/6"
    assert len(r.json()) == 3


def test_limit_and_offset_inside_the_rql_expression_are_honoured(api) -> None:
    r = api.get("/requests", "and(eq(type,purchase))&limit(2,4)")
    assert r.headers["Content-Range"] == "items 4-5/6"


def test_ordering_applies_before_paging(api) -> None:
    r = api.get("/requests", "ordering(-created)&limit=2")  # asset.id does not order /requests
    assert [x["asset"]["id"] for x in r.json()] == ["AS-0000-0000-0006", "AS-0000-0000-0005"]


def test_malformed_rql_gets_400_in_connects_error_shape(api) -> None:
    r = api.get("/requests", "and(eq(status,pending)")
    assert r.status_code == 400
    body = r.json()
    assert body["error_code"] == "INVALID_RQL"
    assert isinstance(body["errors"], list) and body["errors"]


def test_unknown_operators_are_malformed_rql(api) -> None:
    r = api.get("/assets", "between(created,1,2)")
    assert r.status_code == 400
    assert r.json()["error_code"] == "INVALID_RQL"


def test_select_minus_drops_nested_fields(api) -> None:
    r = api.get("/requests/PR-0000-0000-0001-001")
    assert "items" in r.json()["asset"]
    listed = api.get("/requests", "id=PR-0000-0000-0001-001&select(-asset.items)").json()
    assert listed and "items" not in listed[0]["asset"]


def test_pending_request_is_only_sent_when_selected(api) -> None:
    plain = api.get("/assets/AS-0000-0000-0004").json()
    assert "pending_request" not in plain
    selected = api.get("/assets/AS-0000-0000-0004", "select(pending_request)").json()
    assert selected["pending_request"]["id"] == "PR-0000-0000-0004-001"


def test_undeclared_filters_are_ignored_as_connect_does(api) -> None:
    # The spec declares no `type` filter for product connections: Connect ignores it.
    r = api.get("/products/PRD-276-377-545/connections", "hub.id=HB-0000-0001&type=production")
    assert sorted(c["id"] for c in r.json()) == ["CT-0000-0000-0001", "CT-0000-0000-0003"]


def test_a_missing_resource_is_404_in_connects_error_shape(api) -> None:
    for path in (
        "/requests/PR-9999-9999-9999-001",
        "/assets/AS-9999",
        "/usage/files/UF-2000-01-0000000000",
        "/products/PRD-000-000-000/connections",
        "/no/such/route",
    ):
        r = api.get(path)
        assert r.status_code == 404, path
        assert set(r.json()) == {"error_code", "errors"}


# ----------------------------------------------------------------------------------- auth
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "ApiKey SU-000-000-000:wrong-key"},
        {"Authorization": "SU-000-000-000:sandbox-demo-key"},  # the key without the "ApiKey " prefix
        {"Authorization": "Bearer SU-000-000-000:sandbox-demo-key"},
        {"Authorization": "apikey SU-000-000-000:sandbox-demo-key"},
    ],
    ids=["missing", "wrong-key", "no-prefix", "bearer", "lowercase-prefix"],
)
def test_calls_without_the_exact_api_key_get_401_in_connects_error_shape(sandbox, headers) -> None:
    for method, path in (("GET", "/requests"), ("POST", "/requests"), ("GET", "/usage/records")):
        r = requests.request(method, f"{sandbox.api_url}{path}", headers=headers, json={}, timeout=30)
        assert r.status_code == 401
        body = r.json()
        assert body["error_code"] == "AUTH_001"
        assert isinstance(body["errors"], list) and body["errors"]
        assert "sandbox-demo-key" not in r.text


def test_a_refused_call_changes_nothing(sandbox, api) -> None:
    r = requests.post(
        f"{sandbox.api_url}/requests",
        json={"type": "suspend", "asset": {"id": "AS-0000-0000-0001"}},
        timeout=30,
    )
    assert r.status_code == 401
    assert api.get("/requests", "type=suspend&limit=0").headers["Content-Range"] == "items 0-0/0"


def test_the_admin_api_needs_no_key(sandbox) -> None:
    r = requests.get(f"{sandbox.url}/_sandbox/health", timeout=30)
    assert r.json() == {"status": "ok"}
