"""Submitting outbox rows against the sandbox, with no DAG run: claims, chunks, holds, write-backs.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from connect_project.demo import seed_demo_changes
from connect_provider import actions
from connect_provider.exceptions import (
    ConnectAPIError,
    ConnectAuthError,
    ConnectError,
    ConnectValidationError,
)
from connect_provider.hooks.connect import ConnectHook
from connect_provider.outbox import TABLE, Outbox, processing
from connect_provider.outbox.follow import follow_open_requests
from outbox_factory import FaultProxy, _sql_text, _stats, purchase_payload


def test_every_demo_change_ends_with_the_outcome_its_row_describes(instant_vendor, outbox: Outbox) -> None:
    sandbox = instant_vendor
    ids = seed_demo_changes(outbox)
    hook = ConnectHook()
    claimed = outbox.claim("run-1", 100)
    assert claimed == ids

    report = processing.submit_chunk(outbox, hook, "run-1", claimed, retry_delays=())
    assert (report.claimed, report.submitted, report.rejected, report.retry_later) == (11, 7, 4, 0)
    follow = follow_open_requests(outbox, hook)
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

    report = processing.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())

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
    report = processing.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())
    assert report.submitted == 2
    requests = [ConnectHook().get_request(row.connect_request_id) for row in outbox.all()]
    assert [r["asset"]["external_id"] for r in requests] == ["sub-1001", "new-cols-1"]

def test_a_chunk_of_purchases_looks_up_marketplace_connection_and_tiers_once(sandbox, outbox: Outbox) -> None:
    outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"shared-{i}", "payload": purchase_payload()}
        for i in range(10)
    )
    claimed = outbox.claim("run-1", 10)
    report = processing.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())

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

    report = processing.submit_chunk(
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
        processing.submit_chunk(outbox, ConnectHook(), "run-1", ids, retry_delays=())

    assert [(row.status, row.claim_token) for row in outbox.get(ids)] == [("pending", None)] * 3

def test_a_crash_between_create_and_write_back_is_recovered_without_a_second_request(
    sandbox, outbox: Outbox
) -> None:
    change_id = outbox.add("purchase", purchase_payload(), asset_external_id="crash-1")
    outbox.add("change", {"asset_id": "AS-0000-0000-0001", "item_id": "SEATS", "quantity": 11})
    claimed = outbox.claim("crashed-run", 10)
    # The crashed run created both requests, then died before writing anything back.
    first = [
        actions.run_action(ConnectHook(), c.change_type, processing.arguments_for(c))
        for c in outbox.get(claimed)
    ]
    created = _stats(sandbox)["requests_created"]
    outbox.execute_script(f"UPDATE {TABLE} SET claimed_at = '2000-01-01T00:00:00.000Z'")

    retaken = outbox.claim("next-run", 10, lease_seconds=60)
    report = processing.submit_chunk(outbox, ConnectHook(), "next-run", retaken, retry_delays=())

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
    reports: list[processing.ChunkReport] = []
    barrier = threading.Barrier(2)

    def worker(token: str) -> None:
        with Outbox.sqlite(path) as own:
            hook = ConnectHook()
            barrier.wait()
            while claimed := own.claim(token, 5):
                reports.append(processing.submit_chunk(own, hook, token, claimed, retry_delays=()))

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
        processing.submit_chunk(outbox, hook, token, outbox.claim(token, 100), retry_delays=(0.2, 0.5))
        if outbox.counts()["pending"] == 0:
            break
    for _ in range(100):
        try:
            if follow_open_requests(outbox, hook).still_submitted == 0:
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

def test_a_claim_is_split_into_chunks_of_ids() -> None:
    claim = {"token": "t", "ids": list(range(1, 251))}
    chunks = processing.chunk_claim(claim, 100)
    assert [len(c["ids"]) for c in chunks] == [100, 100, 50]
    assert {c["token"] for c in chunks} == {"t"}
    assert processing.chunk_claim({"token": "t", "ids": []}, 100) == []
    # Never more chunks than a mapped task may expand over: the chunks grow instead.
    assert [len(c["ids"]) for c in processing.chunk_claim(claim, 1, max_chunks=100)] == [3] * 83 + [1]
    with pytest.raises(ConnectValidationError, match="chunk_size"):
        processing.chunk_claim(claim, 0)

class TestAPayloadThatIsNotAnObject:
    """A payload must be a JSON object; a JSON string (a change type, an object encoded twice) is refused
    with a message that says what to store, the same on SQLite and PostgreSQL, before any call."""

    @pytest.mark.parametrize(
        ("stored", "message"),
        [
            (
                '"purchase"',
                'payload: must be a JSON object of the action\'s arguments, got the JSON string "purchase": ',
            ),
            (
                json.dumps(json.dumps({"item_id": "SEATS", "quantity": 15})),
                "payload: must be a JSON object of the action's arguments, got a JSON string that holds an "
                "encoded object",
            ),
            ("[1, 2]", "payload: must be a JSON object of the action's arguments, got [1, 2]: "),
            ("15", "payload: must be a JSON object of the action's arguments, got 15: "),
        ],
        ids=["a JSON string", "an object encoded twice", "an array", "a number"],
    )
    def test_the_row_is_rejected_naming_the_fix(self, sandbox, outboxes, stored: str, message: str) -> None:
        outbox = outboxes()
        outbox.execute_script(
            f"INSERT INTO {TABLE} (change_type, asset_external_id, payload) "
            f"VALUES ('change', 'sub-1001', {_sql_text(stored)})"
        )
        claimed = outbox.claim("run-1", 10)
        calls_before = _stats(sandbox)["calls"]

        report = processing.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())

        [row] = outbox.all()
        assert (report.rejected, row.status) == (1, "rejected")
        assert row.error.startswith(message), row.error
        assert "JSON object, e.g." in row.error or "encoded twice" in row.error
        assert _stats(sandbox)["calls"] == calls_before

    def test_a_payload_the_database_holds_as_text_that_is_not_json_says_so(self, tmp_path: Path) -> None:
        # A table made without the DDL's json_valid() check can hold any text.
        box = Outbox.sqlite(tmp_path / "lax.sqlite")
        box.execute_script(
            f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, change_type TEXT, asset_external_id TEXT, "
            "asset_external_uid TEXT, payload TEXT, status TEXT DEFAULT 'pending', connect_request_id TEXT, "
            "error TEXT, attempts INTEGER DEFAULT 0, claim_token TEXT, claimed_at TEXT, created_at TEXT, "
            "updated_at TEXT)"
        )
        box.execute_script(f"INSERT INTO {TABLE} (change_type, payload) VALUES ('suspend', '{{not json')")
        [row] = box.all()
        with pytest.raises(ConnectValidationError) as raised:
            processing.arguments_for(row)
        assert raised.value.field == "payload"
        assert str(raised.value).startswith(
            "payload: must be a JSON object of the action's arguments; the column holds text that is not JSON"
        )
        box.close()

class TestTwoAttemptsOfOneRun:
    """Two task attempts of one run (a zombie and its retry share the run's claim token) never both
    create a row's request: each takes the row under its own attempt token, and creates only while
    it still holds it."""

    def test_a_retry_leaves_alone_the_row_an_earlier_attempt_is_still_creating(
        self, sandbox, outboxes, proxy: FaultProxy
    ) -> None:
        setup = outboxes()
        [change_id] = setup.add_many(
            [{"change_type": "purchase", "asset_external_id": "zombie-1", "payload": purchase_payload()}]
        )
        token = processing.run_token("connect_subscription_changes", "scheduled__zombie")
        assert setup.claim(token, 10) == [change_id]
        proxy.gate = ("POST", "/public/v1/requests", "before")  # the zombie's create is in flight
        reports: dict[str, processing.ChunkReport] = {}

        def attempt(name: str, conn_id: str) -> None:
            with outboxes() as own:
                reports[name] = processing.submit_chunk(
                    own, ConnectHook(conn_id), token, [change_id], retry_delays=()
                )

        zombie = threading.Thread(target=attempt, args=("zombie", "connect_via_proxy"))
        zombie.start()
        assert proxy.held.wait(30), "the zombie attempt never sent its create"
        retry = threading.Thread(target=attempt, args=("retry", "cloudblue_connect_default"))
        retry.start()
        retry.join(60)
        proxy.release.set()
        zombie.join(60)

        [row] = setup.get([change_id])
        stats = _stats(sandbox)
        assert stats["requests_created"] == 1 and stats["calls_by_route"]["POST /requests"] == 1
        assert (reports["retry"].held_elsewhere, reports["retry"].submitted) == (1, 0)
        assert (reports["zombie"].submitted, reports["zombie"].lost_claim) == (1, 0)
        assert (row.status, row.claim_token) == ("submitted", None)
        assert ConnectHook().get_request(row.connect_request_id)["asset"]["external_id"] == "zombie-1"

    def test_an_attempt_that_lost_its_row_while_looking_it_up_sends_no_create(
        self, sandbox, outboxes, proxy: FaultProxy
    ) -> None:
        setup = outboxes()
        change_id = setup.add("suspend", {}, asset_external_id="sub-1001")
        token = "connect_subscription_changes/scheduled__stale"
        setup.claim(token, 10)
        # The attempt's last look-up before the create (the asset's requests) answers late: by then
        # its lease has run out and another run has taken the row and submitted it.
        proxy.gate = ("GET", "/public/v1/requests", "after")
        reports: list[processing.ChunkReport] = []

        def stale_attempt() -> None:
            with outboxes() as own:
                reports.append(
                    processing.submit_chunk(
                        own, ConnectHook("connect_via_proxy"), token, [change_id], retry_delays=()
                    )
                )

        stale = threading.Thread(target=stale_attempt)
        stale.start()
        assert proxy.held.wait(30), "the attempt never looked the asset's requests up"
        old = "'2000-01-01T00:00:00.000Z'" if setup.dialect == "sqlite" else "now() - interval '2 hours'"
        setup.execute_script(f"UPDATE {TABLE} SET claimed_at = {old} WHERE id = {change_id}")
        assert setup.claim("connect_subscription_changes/scheduled__next", 10, lease_seconds=3600) == [
            change_id
        ]
        taken_over = processing.submit_chunk(
            setup, ConnectHook(), "connect_subscription_changes/scheduled__next", [change_id], retry_delays=()
        )
        proxy.release.set()
        stale.join(60)

        [row] = setup.get([change_id])
        assert taken_over.submitted == 1 and reports[0].lost_claim == 1
        assert _stats(sandbox)["calls_by_route"]["POST /requests"] == 1
        assert (row.status, row.claim_token) == ("submitted", None)

    def test_a_lease_shorter_than_one_create_can_last_is_refused_before_any_call(
        self, sandbox, outbox: Outbox
    ) -> None:
        # The default connection of the tests: timeout 10 s, max_wait 2 s, 5 retries: 130 s at most.
        change_id = outbox.add("suspend", {}, asset_external_id="sub-1001")
        outbox.claim("run-1", 10, lease_seconds=120)
        with pytest.raises(ConnectValidationError) as raised:
            processing.submit_chunk(outbox, ConnectHook(), "run-1", [change_id], lease_seconds=120)
        assert raised.value.field == "lease_seconds"
        assert (
            "not longer than one create can last with connection 'cloudblue_connect_default' (130 s"
            in str(raised.value)
        )
        assert _stats(sandbox)["calls"] == 0
        assert outbox.get([change_id])[0].status == "pending"

class TestAConflictOnCreate:
    """Connect's 409 on a create (it has the request already) records the request it names as the
    row's, reused; a 409 that names none is a refusal with Connect's reason."""

    @pytest.mark.parametrize(
        ("names_request", "status", "reused"),
        [(True, "submitted", 1), (False, "rejected", 0)],
        ids=["names the existing request", "names none"],
    )
    def test_the_row_records_what_connect_says(
        self, sandbox, outboxes, proxy: FaultProxy, names_request: bool, status: str, reused: int
    ) -> None:
        existing = actions.run_action(
            ConnectHook(), "purchase", {**purchase_payload(), "asset_external_id": "dup-1"}
        )
        params = {
            "request_id": existing.request_id,
            "asset_id": existing.asset_id,
            "request_status": "pending",
            "asset_status": "processing",
        }
        body = {"error_code": "REQ_409", "errors": ["A request for this asset exists already."]}

        def conflict(method: str, target: str) -> tuple[int, Any] | None:
            if method == "GET" and target.startswith("/public/v1/assets?"):
                return 200, []  # the look-up misses the asset (as a lagging search would)
            if method == "POST" and target == "/public/v1/requests":
                return 409, {**body, "params": params} if names_request else body
            return None

        proxy.answer = conflict
        outbox = outboxes()
        change_id = outbox.add("purchase", purchase_payload(), asset_external_id="dup-1")
        claimed = outbox.claim("run-1", 10)

        report = processing.submit_chunk(
            outbox, ConnectHook("connect_via_proxy"), "run-1", claimed, retry_delays=()
        )

        [row] = outbox.get([change_id])
        assert (row.status, report.reused) == (status, reused)
        if names_request:
            assert row.connect_request_id == existing.request_id and row.error is None
        else:
            assert row.connect_request_id is None
            assert "A request for this asset exists already." in row.error
        assert _stats(sandbox)["requests_created"] == 1
