"""Batch processing of outbox rows against the sandbox, with no DAG run (SQLite outbox)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from connect_provider import actions, changes
from connect_provider.exceptions import (
    ConnectAPIError,
    ConnectAuthError,
    ConnectError,
    ConnectValidationError,
)
from connect_provider.hooks.connect import ConnectHook
from connect_provider.outbox import TABLE, Outbox, seed_demo_changes

TIER = {
    "name": "Demo Reseller",
    "external_id": "reseller-1",
    "contact_info": {
        "address_line1": "1 Demo Street",
        "city": "Springfield",
        "postal_code": "10001",
        "country": "US",
        "contact": {
            "first_name": "Rita",
            "last_name": "Reseller",
            "email": "rita@example.com",
            "phone_number": "+1 2015550123",
        },
    },
}
CUSTOMER = {**TIER, "name": "Demo Customer", "external_id": "customer-1"}


def purchase_payload(**overrides) -> dict:
    return {
        "hub_id": "HB-0000-0001",
        "marketplace": "MP-00001",
        "item_id": "PRD-276-377-545-0001",
        "quantity": 3,
        "tier1": TIER,
        "customer": CUSTOMER,
        **overrides,
    }


@pytest.fixture
def outbox(tmp_path: Path):
    box = Outbox.sqlite(tmp_path / "changes.sqlite")
    box.create_schema()
    yield box
    box.close()


@pytest.fixture
def instant_vendor(sandbox):
    """The sandbox's vendor decides a request on the first read after its creation."""
    sandbox.admin("POST", "reset", {"seed": "demo", "auto_approve_delay": 0})
    return sandbox


def _stats(sandbox) -> dict:
    return sandbox.admin("GET", "stats")


def test_every_demo_change_ends_with_the_outcome_its_row_describes(instant_vendor, outbox: Outbox) -> None:
    sandbox = instant_vendor
    ids = seed_demo_changes(outbox)
    hook = ConnectHook()
    claimed = outbox.claim("run-1", 100)
    assert claimed == ids

    report = changes.submit_chunk(outbox, hook, "run-1", claimed, retry_delays=())
    assert (report.claimed, report.submitted, report.rejected, report.retry_later) == (11, 7, 4, 0)
    follow = changes.follow_open_requests(outbox, hook)
    assert (follow.checked, follow.approved, follow.failed, follow.inquiring) == (7, 5, 1, 1)

    rows = {row.asset_external_id or row.payload.get("asset_id"): row for row in outbox.all()}
    assert rows["demo-2001"].status == "approved" and rows["demo-2001"].connect_request_id
    assert (rows["fail-2002"].status, rows["fail-2002"].error) == (
        "failed",
        "Vendor refused: the demo marks fail-* assets",
    )
    assert rows["inquire-2003"].status == "inquiring"
    assert rows["AS-0000-0000-0005"].status == rows["AS-0000-0000-0006"].status == "approved"
    assert rows["demo-2004"].status == "rejected" and rows["demo-2004"].error.startswith("quantity:")
    assert rows["sub-9999"].status == "rejected" and "sub-9999" in rows["sub-9999"].error
    assert rows["demo-2005"].error.startswith("tier1.contact_info.contact.email:")
    rejected_dup = [r for r in outbox.all() if r.change_type == "cancel" and r.asset_external_id == "sub-dup"]
    assert "2 assets match" in rejected_dup[0].error
    assert all(row.claim_token is None for row in outbox.all())
    assert _stats(sandbox)["requests_created"] == 7


def test_a_row_that_contradicts_itself_or_is_not_an_object_is_rejected_before_any_call(
    sandbox, outbox: Outbox
) -> None:
    outbox.add("cancel", {"asset_external_id": "sub-1001"}, asset_external_id="sub-1002")
    outbox.execute_script(f"INSERT INTO {TABLE} (change_type, payload) VALUES ('suspend', '[1, 2]')")
    outbox.add("resume", {"asset_id": "AS-0000-0000-0002", "colour": "blue"})
    outbox.add("purchase", purchase_payload(hub_id="HUB-1"), asset_external_id="new-1")
    claimed = outbox.claim("run-1", 10)
    calls_before = _stats(sandbox)["calls"]

    report = changes.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())

    assert report.rejected == 4
    errors = [row.error for row in outbox.all()]
    assert errors[0].startswith("asset_external_id: the row's column says 'sub-1002'")
    assert errors[1].startswith("payload: must be a JSON object")
    assert errors[2].startswith("colour: is not an argument of a resume request")
    assert errors[3].startswith("hub_id:")
    assert _stats(sandbox)["calls"] == calls_before


def test_the_asset_columns_name_the_asset_when_the_payload_does_not(sandbox, outbox: Outbox) -> None:
    outbox.add("change", {"item_id": "SEATS", "quantity": 12}, asset_external_id="sub-1001")
    outbox.add("purchase", purchase_payload(), asset_external_id="new-cols-1")
    claimed = outbox.claim("run-1", 10)
    report = changes.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())
    assert report.submitted == 2
    requests = [ConnectHook().get_request(row.connect_request_id) for row in outbox.all()]
    assert [r["asset"]["external_id"] for r in requests] == ["sub-1001", "new-cols-1"]


def test_a_chunk_of_purchases_looks_up_marketplace_connection_and_tiers_once(sandbox, outbox: Outbox) -> None:
    outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"shared-{i}", "payload": purchase_payload()}
        for i in range(10)
    )
    claimed = outbox.claim("run-1", 10)
    report = changes.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())

    routes = _stats(sandbox)["calls_by_route"]
    assert report.submitted == 10
    assert routes["POST /requests"] == 10 and routes["GET /assets"] == 10  # per row: is it new?
    assert routes["GET /marketplaces"] == 1
    assert routes["GET /products/{product_id}/connections"] == 1
    assert routes["GET /tier/accounts"] == 2  # tier1 and customer


def test_a_transient_error_is_retried_in_the_chunk_then_left_pending_with_the_error(
    sandbox, outbox: Outbox
) -> None:
    first = outbox.add("purchase", purchase_payload(), asset_external_id="flaky-1")
    second = outbox.add("purchase", purchase_payload(), asset_external_id="down-1")
    claimed = outbox.claim("run-1", 10)
    calls: dict[str, int] = {}

    def flaky_run(hook, change_type, arguments):
        ext = arguments["asset_external_id"]
        calls[ext] = calls.get(ext, 0) + 1
        if ext == "down-1" or calls[ext] == 1:
            raise ConnectAPIError("503 on POST /requests: Connect failed", status=503)
        return actions.run_action(hook, change_type, arguments)

    report = changes.submit_chunk(
        outbox, ConnectHook(), "run-1", claimed, run=flaky_run, retry_delays=(0.0, 0.0)
    )

    assert calls == {"flaky-1": 2, "down-1": 3}
    assert (report.submitted, report.retry_later) == (1, 1)
    done, left = outbox.get([first, second])
    assert done.status == "submitted" and done.connect_request_id
    assert (left.status, left.claim_token) == ("pending", None)
    assert left.error.startswith("will retry: ConnectAPIError: 503")
    assert outbox.claim("next-run", 10) == [second]


def test_a_refused_api_key_stops_the_chunk_and_releases_its_rows(
    sandbox, outbox: Outbox, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", sandbox.conn_uri_json("ApiKey SU-1:wrong"))
    ids = [outbox.add("resume", {"asset_id": "AS-0000-0000-0002"}) for _ in range(3)]
    outbox.claim("run-1", 10)

    with pytest.raises(ConnectAuthError):
        changes.submit_chunk(outbox, ConnectHook(), "run-1", ids, retry_delays=())

    assert [(row.status, row.claim_token) for row in outbox.get(ids)] == [("pending", None)] * 3


def test_a_crash_between_create_and_write_back_is_recovered_without_a_second_request(
    sandbox, outbox: Outbox
) -> None:
    change_id = outbox.add("purchase", purchase_payload(), asset_external_id="crash-1")
    outbox.add("change", {"asset_id": "AS-0000-0000-0001", "item_id": "SEATS", "quantity": 11})
    claimed = outbox.claim("crashed-run", 10)
    # The crashed run created both requests, then died before writing anything back.
    first = [
        actions.run_action(ConnectHook(), c.change_type, changes.arguments_for(c))
        for c in outbox.get(claimed)
    ]
    created = _stats(sandbox)["requests_created"]
    outbox.execute_script(f"UPDATE {TABLE} SET claimed_at = '2000-01-01T00:00:00.000Z'")

    retaken = outbox.claim("next-run", 10, lease_seconds=60)
    report = changes.submit_chunk(outbox, ConnectHook(), "next-run", retaken, retry_delays=())

    assert retaken == claimed and report.reused == 2
    assert [row.connect_request_id for row in outbox.get(claimed)] == [r.request_id for r in first]
    assert _stats(sandbox)["requests_created"] == created
    assert outbox.get([change_id])[0].attempts == 2


def test_two_workers_claiming_at_once_create_each_request_exactly_once(sandbox, outbox: Outbox) -> None:
    ids = outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"conc-{i}", "payload": purchase_payload()}
        for i in range(40)
    )
    path = outbox.description.removeprefix("sqlite:")
    reports: list[changes.ChunkReport] = []
    barrier = threading.Barrier(2)

    def worker(token: str) -> None:
        with Outbox.sqlite(path) as own:
            hook = ConnectHook()
            barrier.wait()
            while claimed := own.claim(token, 5):
                reports.append(changes.submit_chunk(own, hook, token, claimed, retry_delays=()))

    threads = [threading.Thread(target=worker, args=(f"run-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    rows = outbox.get(ids)
    assert sum(r.submitted for r in reports) == 40 and sum(r.lost_claim for r in reports) == 0
    assert len({row.connect_request_id for row in rows}) == 40
    assert {row.status for row in rows} == {"submitted"}
    assert _stats(sandbox)["requests_by_type"] == {"purchase": 40}


def test_with_faults_on_every_change_ends_once_and_no_request_is_created_twice(
    sandbox, outbox: Outbox, monkeypatch
) -> None:
    conn = json.loads(sandbox.conn_uri_json())
    conn["extra"] = {"max_wait": 0.2, "timeout": 5}
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", json.dumps(conn))
    sandbox.set_faults("429=0.05,500=0.05,drop=0.05,seed=7")
    ids = outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"faulty-{i}", "payload": purchase_payload()}
        for i in range(40)
    )
    hook = ConnectHook()
    for run in range(3):  # a row left pending by a transient error is taken by the next run
        token = f"run-{run}"
        changes.submit_chunk(outbox, hook, token, outbox.claim(token, 100), retry_delays=(0.2, 0.5))
        if outbox.counts()["pending"] == 0:
            break
    for _ in range(100):
        try:
            if changes.follow_open_requests(outbox, hook).still_submitted == 0:
                break
        except ConnectError:  # a fault outlasted the hook's retries: the next pass goes on
            pass
        time.sleep(0.1)

    rows = outbox.get(ids)
    stats = _stats(sandbox)
    assert sum(stats["faults_injected"].values()) > 0
    assert {row.status for row in rows} == {"approved"}
    assert len({row.connect_request_id for row in rows}) == 40
    assert stats["requests_created"] == 40


def test_following_counts_one_attempt_per_check_until_connect_decides(sandbox, outbox: Outbox) -> None:
    change_id = outbox.add("purchase", purchase_payload(), asset_external_id="follow-1")
    outbox.claim("run-1", 1)
    changes.submit_chunk(outbox, ConnectHook(), "run-1", [change_id], retry_delays=())
    hook = ConnectHook()
    checks = 0
    while outbox.get([change_id])[0].status == "submitted" and checks < 100:
        report = changes.follow_open_requests(outbox, hook)
        checks += 1
        assert report.checked == 1
        if report.still_submitted:
            time.sleep(0.1)  # the sandbox's vendor decides 0.5 s after creation

    [row] = outbox.get([change_id])
    assert row.status == "approved"
    assert row.attempts == 1 + checks  # the claim, then one per status check
    assert changes.follow_open_requests(outbox, hook).checked == 0


def test_a_claim_is_split_into_chunks_of_ids() -> None:
    claim = {"token": "t", "ids": list(range(1, 251))}
    chunks = changes.chunk_claim(claim, 100)
    assert [len(c["ids"]) for c in chunks] == [100, 100, 50]
    assert {c["token"] for c in chunks} == {"t"}
    assert changes.chunk_claim({"token": "t", "ids": []}, 100) == []
    # Never more chunks than a mapped task may expand over: the chunks grow instead.
    assert [len(c["ids"]) for c in changes.chunk_claim(claim, 1, max_chunks=100)] == [3] * 83 + [1]
    with pytest.raises(ConnectValidationError, match="chunk_size"):
        changes.chunk_claim(claim, 0)


def test_dag_settings_come_from_the_environment_with_safe_defaults() -> None:
    defaults = changes.DagSettings.from_env({})
    assert defaults.schedule == "*/5 * * * *" and defaults.chunk_size == changes.DEFAULT_CHUNK_SIZE
    custom = changes.DagSettings.from_env(
        {"CONNECT_CHANGES_SCHEDULE": "none", "CONNECT_CHANGES_CHUNK_SIZE": "25"}
    )
    assert (custom.schedule, custom.chunk_size) == (None, 25)
    with pytest.raises(ConnectValidationError, match="CONNECT_CHANGES_BATCH_SIZE"):
        changes.DagSettings.from_env({"CONNECT_CHANGES_BATCH_SIZE": "lots"})


FORM = {
    "action": "purchase",
    "asset_external_id": "form-1",
    "hub_id": "HB-0000-0001",
    "marketplace": "MP-00001",
    "item_id": "PRD-276-377-545-0001",
    "quantity": 2,
    **{
        f"tier1_{k}": v
        for k, v in {
            "name": "Demo Reseller",
            "external_id": "reseller-1",
            "email": "rita@example.com",
            "first_name": "Rita",
            "last_name": "Reseller",
            "phone": "+1 2015550123",
            "address_line1": "1 Demo Street",
            "city": "Springfield",
            "postal_code": "10001",
            "country": "US",
        }.items()
    },
    **{
        f"customer_{k}": v
        for k, v in {
            "name": "Demo Customer",
            "external_id": "customer-1",
            "email": "carl@example.com",
            "first_name": "Carl",
            "last_name": "Customer",
            "phone": "+1 2015550124",
            "address_line1": "2 Client Road",
            "city": "Springfield",
            "postal_code": "10002",
            "country": "US",
        }.items()
    },
}


def test_the_form_creates_one_purchase_and_returns_its_id_and_status(sandbox) -> None:
    result = changes.run_form_action(FORM)
    again = changes.run_form_action(FORM)
    assert result["request_id"].startswith("PR-") and result["status"] == "pending"
    assert again["request_id"] == result["request_id"] and again["reused"] is True
    assert _stats(sandbox)["requests_created"] == 1


def test_a_form_suspend_uses_only_the_asset_fields(sandbox) -> None:
    result = changes.run_form_action({**FORM, "action": "suspend", "asset_external_id": "sub-1001"})
    assert result["type"] == "suspend" and result["asset_id"] == "AS-0000-0000-0001"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"tier1_email": "nobody"}, "tier1_email"),
        ({"tier1_country": "Atlantis"}, "tier1_country"),
        ({"quantity": 0}, "quantity"),
        ({"hub_id": None}, "hub_id"),
        ({"action": "change", "asset_external_id": None}, "asset_external_id"),
        ({"action": "refund"}, "action"),
    ],
)
def test_bad_form_input_fails_naming_the_form_field_before_any_call(sandbox, overrides, field) -> None:
    with pytest.raises(ConnectValidationError) as raised:
        changes.run_form_action({**FORM, **overrides})
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert _stats(sandbox)["calls"] == 0
