"""connect_subscription_changes run end to end with ``dag.test()`` against the sandbox.

Every test runs on a SQLite and on a PostgreSQL outbox (the ``changes_db`` fixture), through the
``connect_changes_db`` connection given as an environment variable.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from connect_project.demo import seed_demo_changes
from connect_provider.hooks.connect import ConnectHook
from connect_provider.outbox import TABLE, processing
from outbox_factory import purchase_payload

pytestmark = pytest.mark.e2e

DAG_ID = "connect_subscription_changes"
EXPECTED = {
    "demo-2001": "approved",
    "fail-2002": "failed",
    "inquire-2003": "inquiring",
    "sub-1001": "approved",
    "sub-1002": "approved",
    "AS-0000-0000-0005": "approved",
    "AS-0000-0000-0006": "approved",
    "demo-2004": "rejected",
    "sub-9999": "rejected",
    "demo-2005": "rejected",
}


PURCHASE = purchase_payload(quantity=1)  # the demo reseller and customer, one of the demo item


def _outcomes(outbox) -> dict[str, str]:
    return {
        (row.asset_external_id or row.payload.get("asset_id")): row.status
        for row in outbox.all()
        if row.asset_external_id != "sub-dup"
    }


def _ti_states(dag_run) -> dict[str, str]:
    return {f"{ti.task_id}[{ti.map_index}]": ti.state for ti in dag_run.get_task_instances()}


def test_a_run_turns_every_pending_change_into_its_outcome(sandbox, dags, changes_db) -> None:
    outbox = changes_db()
    seed_demo_changes(outbox)

    dag_run = dags[DAG_ID].test(run_conf={"chunk_size": 4})

    assert dag_run.state == "success", _ti_states(dag_run)
    # 11 rows in chunks of 4: three mapped submit_chunk task instances, not eleven.
    assert sorted(k for k in _ti_states(dag_run) if k.startswith("submit_chunk")) == [
        "submit_chunk[0]",
        "submit_chunk[1]",
        "submit_chunk[2]",
    ]
    assert _outcomes(outbox) == EXPECTED
    rows = outbox.all()
    assert [row.status for row in rows if row.asset_external_id == "sub-dup"] == ["rejected"]
    assert all(row.claim_token is None for row in rows)
    assert next(r for r in rows if r.asset_external_id == "fail-2002").error.startswith("Vendor refused")
    assert sandbox.admin("GET", "stats")["requests_created"] == 7


def test_rerunning_the_same_run_creates_no_new_request(sandbox, dags, changes_db) -> None:
    outbox = changes_db()
    ids = seed_demo_changes(outbox)
    logical_date = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)
    first = dags[DAG_ID].test(logical_date=logical_date, run_after=logical_date)
    assert first.state == "success", _ti_states(first)
    created = sandbox.admin("GET", "stats")["requests_created"]
    request_ids = {row.id: row.connect_request_id for row in outbox.get(ids)}

    # As if the run had died after creating the requests and before writing them back: the rows
    # are pending again, still claimed by that run.
    token = processing.run_token(DAG_ID, first.run_id)
    outbox.execute_script(
        f"UPDATE {TABLE} SET status = 'pending', connect_request_id = NULL, claim_token = '{token}', "
        "claimed_at = CURRENT_TIMESTAMP WHERE connect_request_id IS NOT NULL"
    )
    again = dags[DAG_ID].test(logical_date=logical_date, run_after=logical_date)

    assert again.run_id == first.run_id
    assert again.state == "success", _ti_states(again)
    assert sandbox.admin("GET", "stats")["requests_created"] == created
    assert {row.id: row.connect_request_id for row in outbox.get(ids)} == request_ids
    assert _outcomes(outbox) == EXPECTED


def test_two_concurrent_runs_over_one_outbox_create_each_request_once(sandbox, changes_db) -> None:
    outbox = changes_db()
    ids = outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"conc-{i}", "payload": PURCHASE} for i in range(60)
    )
    reports: dict[str, list[dict]] = {}
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(2)

    def run(run_id: str) -> None:
        # The DAG's claim -> chunk -> submit_chunk steps, as two runs would execute them.
        barrier.wait()
        claim = processing.claim_changes(processing.run_token(DAG_ID, run_id), batch_size=40)
        claimed[run_id] = claim["ids"]
        reports[run_id] = [processing.submit_claimed_chunk(c) for c in processing.chunk_claim(claim, 7)]

    threads = [threading.Thread(target=run, args=(f"manual__run-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # What a claim promises, however the two claims interleave (under SKIP LOCKED they may split
    # the 60 rows 21/39 as well as 20/40): each run at most its batch size, no row in both, and
    # between them every row; each run's chunks worked on exactly the rows it claimed.
    assert sorted(claimed) == sorted(reports) == ["manual__run-1", "manual__run-2"]
    assert all(len(got) <= 40 for got in claimed.values()), {k: len(v) for k, v in claimed.items()}
    assert sorted(i for got in claimed.values() for i in got) == ids
    assert {run: sum(r["claimed"] for r in runs) for run, runs in reports.items()} == {
        run: len(got) for run, got in claimed.items()
    }
    rows = outbox.get(ids)
    assert {row.status for row in rows} == {"submitted"}
    assert len({row.connect_request_id for row in rows}) == 60
    stats = sandbox.admin("GET", "stats")
    assert stats["requests_created"] == 60 and stats["calls_by_route"]["POST /requests"] == 60


def test_a_run_with_nothing_pending_still_follows_earlier_submissions(sandbox, dags, changes_db) -> None:
    outbox = changes_db()
    seed_demo_changes(outbox)
    claimed = outbox.claim("an-earlier-run", 100)
    processing.submit_chunk(outbox, ConnectHook(), "an-earlier-run", claimed, retry_delays=())
    assert outbox.counts()["submitted"] == 7
    created = sandbox.admin("GET", "stats")["requests_created"]

    dag_run = dags[DAG_ID].test()

    assert dag_run.state == "success", _ti_states(dag_run)
    assert _ti_states(dag_run)["submit_chunk[-1]"] == "skipped"
    assert _outcomes(outbox) == EXPECTED
    assert sandbox.admin("GET", "stats")["requests_created"] == created
