"""The distributed deployment, run for real on one machine: ``make distributed-test``.

On the topology of ``conftest.py`` (CeleryExecutor on Redis, PostgreSQL, scheduler, dag-processor,
triggerer, api-server, two workers, the sandbox with faults on), one run seeds pending changes and
two usage files, triggers ``connect_subscription_changes`` and ``connect_usage_to_parquet`` through
Airflow's REST API, and waits for the runs. The tests then state what must hold across workers:
every change ended once with the status its payload implies, no Connect request was created twice,
both Parquet files hold every record exactly once, both workers took part, and every process stops.

Then the event-driven part: a usage file that appears in the sandbox starts the export DAG
through the usage-file watcher in the triggerer (no one triggers it), and a file added while the
triggerer is stopped starts it once the triggerer is back (the watcher's watermark is in the
asset's state store, in the metadata DB).

The tests share one deployment (module fixtures) and run in file order: the deployment, the run,
the events, the stop. Left out of ``make test``; selected by ``-m distributed`` or a path into this folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests

# Imported here, at collection, not in the fixture: importing it imports Airflow, which replaces the
# root logger's handlers, and pytest's live log (the run's progress) would go quiet mid-run.
from connect_provider.outbox import Outbox

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.slow]

log = logging.getLogger("connect.distributed")

CHANGES_DAG = "connect_subscription_changes"
USAGE_DAG = "connect_usage_to_parquet"
USAGE_RECORDS = (1500, 700)


# --------------------------------------------------------------------------------------------------
# The changes to seed, and what each must end as


@dataclass(frozen=True)
class Expected:
    label: str
    status: str
    creates: bool
    asset_external_id: str


def _account(name: str, external_id: str, first: str, email: str) -> dict:
    return {
        "name": name,
        "external_id": external_id,
        "contact_info": {
            "address_line1": "1 Demo Street",
            "city": "Springfield",
            "postal_code": "10001",
            "country": "US",
            "contact": {
                "first_name": first,
                "last_name": "Demo",
                "email": email,
                "phone_number": "+1 2015550123",
            },
        },
    }


def planned_changes(n: int) -> list[tuple[dict, Expected]]:
    """``n`` pending changes against the sandbox's demo seed, each with the outcome it must reach.

    The sandbox's vendor approves new purchases, fails assets whose external id starts with
    ``fail-`` and inquires on ``inquire-``; a quantity of 0 and an unknown asset are refused before
    any request exists. Two actions on seeded assets (a change and a resume) are included too.
    """
    tier1 = _account("Demo Reseller", "reseller-1", "Rita", "rita@example.com")
    customer = _account("Demo Customer", "customer-1", "Carl", "carl@example.com")

    def purchase(external_id: str, quantity: int) -> dict:
        payload = {"hub_id": "HB-0000-0001", "marketplace": "MP-00001", "item_id": "PRD-276-377-545-0001"}
        payload.update(quantity=quantity, tier1=tier1, customer=customer)
        return {"change_type": "purchase", "asset_external_id": external_id, "payload": payload}

    def change(external_id: str, payload: dict) -> dict:
        return {"change_type": "change", "asset_external_id": external_id, "payload": payload}

    plan: list[tuple[dict, Expected]] = [
        (
            change("sub-1001", {"items": [{"item_id": "SEATS", "quantity": 15}]}),
            Expected("change sub-1001", "approved", True, "sub-1001"),
        ),
        (
            {"change_type": "resume", "asset_external_id": "sub-1002", "payload": {}},
            Expected("resume sub-1002", "approved", True, "sub-1002"),
        ),
    ]
    for i in range(max(0, n - len(plan))):
        kind = i % 20
        if kind == 0 and i % 40 == 0:
            ext = f"dist-zero-{i:05d}"
            plan.append((purchase(ext, 0), Expected(f"purchase {ext} quantity 0", "rejected", False, ext)))
        elif kind == 0:
            ext = f"missing-{i:05d}"
            unknown = change(ext, {"item_id": "SEATS", "quantity": 2})
            plan.append((unknown, Expected(f"change of unknown {ext}", "rejected", False, ext)))
        elif kind in (1, 2):
            ext = f"fail-{i:05d}"
            plan.append((purchase(ext, 1), Expected(f"purchase {ext}", "failed", True, ext)))
        elif kind == 3:
            ext = f"inquire-{i:05d}"
            plan.append((purchase(ext, 1), Expected(f"purchase {ext}", "inquiring", True, ext)))
        else:
            ext = f"dist-{i:05d}"
            plan.append((purchase(ext, 1 + i % 7), Expected(f"purchase {ext}", "approved", True, ext)))
    return plan[:n]


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class Run:
    """What one run of both DAGs left behind, read with the sandbox's faults off."""

    expected: dict[int, Expected]
    usage_files: list[dict]
    changes_states: dict[str, str]
    usage_states: dict[str, str]
    rows: dict[int, Any]
    sandbox_stats: dict
    connect_requests: list[dict]

    @property
    def creating(self) -> list[int]:
        """Outbox ids of the changes that must create a Connect request."""
        return [i for i, exp in self.expected.items() if exp.creates]


@pytest.fixture(scope="module")
def run(topology: Any) -> Run:
    """Seed the outbox and two usage files, trigger both DAGs, wait for every run, read the result."""
    settings, api = topology.settings, topology.api

    def outbox() -> Outbox:
        return Outbox.postgres(**topology.outbox_db)

    plan = planned_changes(settings.changes)
    with outbox() as box:
        box.create_schema()
        ids = box.add_many(change for change, _ in plan)
    expected = {row_id: exp for row_id, (_, exp) in zip(ids, plan, strict=True)}
    by_status: dict[str, int] = {}
    for exp in expected.values():
        by_status[exp.status] = by_status.get(exp.status, 0) + 1
    log.info("seeded %s pending changes; expected outcomes %s", len(ids), by_status)
    files = [
        topology.sandbox.add_usage_file(
            n, product_id="PRD-276-377-545", status="ready", period_from="2026-10-01", period_to="2026-10-31"
        )
        for n in USAGE_RECORDS
    ]
    seeded = zip(files, USAGE_RECORDS, strict=True)
    log.info("seeded usage files %s", ", ".join(f"{f['id']} ({n} records)" for f, n in seeded))

    topology.wait_for_dags([CHANGES_DAG, USAGE_DAG])
    for dag_id in (CHANGES_DAG, USAGE_DAG):
        api.unpause(dag_id)
    deadline = time.monotonic() + settings.timeout
    changes_conf = {"chunk_size": max(1, settings.changes // 10), "follow_timeout_seconds": 180}
    changes_runs = [api.trigger(CHANGES_DAG, changes_conf)]
    # No usage_file_id: the run plans every new usage file (both seeded ones among them) and exports
    # them in mapped tasks that the two workers share. Unpausing the daily DAG also makes the
    # scheduler start its latest scheduled run; whichever comes second finds the manifest up to
    # date and exports nothing again.
    usage_runs = [api.trigger(USAGE_DAG)]
    log.info("triggered %s %s and %s %s", CHANGES_DAG, changes_runs[0], USAGE_DAG, usage_runs[0])

    changes_states = topology.wait_runs(CHANGES_DAG, changes_runs, deadline)
    while time.monotonic() < deadline and all(s in ("success", "failed") for s in changes_states.values()):
        with outbox() as box:
            counts = box.counts()
        open_rows = counts["pending"] + counts["submitted"]
        log.info("outbox after %s run(s): %s", len(changes_runs), counts)
        if not open_rows:
            break
        changes_runs.append(api.trigger(CHANGES_DAG, changes_conf))
        log.info("%s change(s) still open: triggered %s", open_rows, changes_runs[-1])
        changes_states = topology.wait_runs(CHANGES_DAG, changes_runs, deadline)
    topology.wait_runs(USAGE_DAG, usage_runs, deadline)
    while time.monotonic() < deadline and topology.active_runs(USAGE_DAG):
        time.sleep(3)
    usage_states = {r["dag_run_id"]: r["state"] for r in api.runs(USAGE_DAG)}

    # The runs are over: read with faults off, so the checker's own reads are exact.
    topology.sandbox.set_faults("")
    with outbox() as box:
        rows = {row.id: row for row in box.all()}
    return Run(
        expected=expected,
        usage_files=files,
        changes_states=changes_states,
        usage_states=usage_states,
        rows=rows,
        sandbox_stats=topology.sandbox.stats(),
        connect_requests=topology.connect_get_all("requests"),
    )


# --------------------------------------------------------------------------------------------------
# The events: usage files that appear start the export DAG, across a triggerer restart

EVENT_RECORDS = (400, 300)
#: How soon after a file appears its run must exist: the watcher's poll (2 s here), the scheduler
#: turning the asset event into a run, generously for a loaded 2-core machine.
EVENT_RUN_WITHIN = 90.0


@dataclass
class EventRun:
    files: list[dict]
    runs: list[dict]  # the asset-triggered runs, in order
    latency: list[float]  # seconds from a file's appearance (or the triggerer's return) to its run


def wait_until(what: str, probe: Any, timeout: float, interval: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def _watcher_polls(topology: Any) -> int:
    return topology.sandbox.stats()["calls_by_route"].get("GET /usage/files", 0)


def _new_asset_runs(topology: Any, known: set[str]) -> list[dict]:
    return [
        r
        for r in topology.api.runs(USAGE_DAG)
        if r["dag_run_id"] not in known and r["run_type"] == "asset_triggered"
    ]


def _wait_for_run(topology: Any, known: set[str], since: float) -> tuple[dict, float]:
    """The first new asset-triggered run of the export DAG, once it succeeded; and how soon it came."""
    created = wait_until(
        "an asset-triggered run of the export DAG",
        lambda: _new_asset_runs(topology, known),
        EVENT_RUN_WITHIN,
        1,
    )
    latency = time.monotonic() - since
    run_id = created[0]["dag_run_id"]
    state = topology.wait_runs(USAGE_DAG, [run_id], time.monotonic() + 240)[run_id]
    assert state == "success", f"{run_id}: {state}"
    return created[0], latency


@pytest.fixture(scope="module")
def event_run(run: Run, topology: Any) -> EventRun:
    """Two usage files appear, one before and one during a triggerer restart; the runs they start."""
    sandbox = topology.sandbox
    # The watcher is live when GET /usage/files keeps being called with no export running.
    before = _watcher_polls(topology)
    wait_until("the usage-file watcher polling", lambda: _watcher_polls(topology) >= before + 3, 60, 1)
    known = {r["dag_run_id"] for r in topology.api.runs(USAGE_DAG)}
    period = {
        "product_id": "PRD-276-377-545",
        "status": "ready",
        "period_from": "2026-11-01",
        "period_to": "2026-11-30",
    }

    first = sandbox.add_usage_file(EVENT_RECORDS[0], **period)
    log.info("added %s; waiting for the export DAG to start on its event", first["id"])
    run_a, latency_a = _wait_for_run(topology, known, time.monotonic())
    log.info("%s started %.1fs after %s appeared", run_a["dag_run_id"], latency_a, first["id"])
    known |= {r["dag_run_id"] for r in topology.api.runs(USAGE_DAG)}

    stopped = topology.processes.stop("triggerer")
    second = sandbox.add_usage_file(EVENT_RECORDS[1], **period)
    log.info("triggerer stopped; added %s while it was down; starting it again", second["id"])
    topology.processes.restart(stopped)
    back = time.monotonic()
    run_b, latency_b = _wait_for_run(topology, known, back)
    log.info("%s started %.1fs after the triggerer came back", run_b["dag_run_id"], latency_b)
    # A duplicate of the first file's event may start one more run after the restart: it finds the
    # file exported and exports nothing; let it end before the checks read the dataset.
    while time.monotonic() < back + 60 and topology.active_runs(USAGE_DAG):
        time.sleep(2)
    sandbox.set_faults("")
    return EventRun(files=[first, second], runs=[run_a, run_b], latency=[latency_a, latency_b])


# --------------------------------------------------------------------------------------------------
# The deployment


class TestDeployment:
    def test_every_component_reports_healthy_and_both_workers_are_ready(self, topology: Any) -> None:
        unhealthy = topology.unhealthy()
        assert not unhealthy, f"not healthy: {unhealthy}"
        assert all(" ready." in topology.worker_log(w) for w in topology.workers)
        assert topology.sandbox.healthy()

    def test_the_rest_api_answers_with_a_bearer_token_from_auth_token_and_refuses_without(
        self, topology: Any
    ) -> None:
        url = f"{topology.api.base_url}/api/v2/pools/{topology.pool_name}"
        assert requests.get(url, timeout=30).status_code in (401, 403)
        token = topology.api.token(*topology.credentials)
        answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text[:300]

    def test_the_connect_api_pool_has_its_slots(self, topology: Any) -> None:
        # Created with `airflow pools set` on the CLI; read back through the REST API.
        pool = topology.api.pool(topology.pool_name)
        assert pool.get("slots") == topology.pool_slots, f"slots={pool.get('slots')}"

    def test_the_dag_processor_parses_both_dags_without_import_errors(self, topology: Any) -> None:
        topology.wait_for_dags([CHANGES_DAG, USAGE_DAG])
        assert topology.api.import_errors() == []


# --------------------------------------------------------------------------------------------------
# The run, across workers


class TestSubscriptionChanges:
    def test_every_run_succeeded(self, run: Run) -> None:
        states = sorted(run.changes_states.values())
        assert states and all(s == "success" for s in states), f"{len(states)} run(s): {states}"

    def test_every_change_ended_with_the_status_its_payload_implies(self, run: Run) -> None:
        rows = run.rows
        wrong = [
            f"#{i} {exp.label}: {rows[i].status if i in rows else 'missing'} (want {exp.status}"
            f"{'; error ' + str(rows[i].error)[:120] if i in rows and rows[i].error else ''})"
            for i, exp in run.expected.items()
            if i not in rows or rows[i].status != exp.status
        ]
        claimed = [i for i, row in rows.items() if row.claim_token]
        assert not wrong, f"{len(rows)} rows; {len(wrong)} wrong: {wrong[:5]}"
        assert not claimed, f"still claimed: {claimed[:5]}"
        assert len(rows) == len(run.expected)

    def test_each_change_that_creates_a_request_has_its_own(self, run: Run) -> None:
        request_ids = [row.connect_request_id for row in run.rows.values() if row.connect_request_id]
        missing = [i for i in run.creating if not run.rows.get(i) or not run.rows[i].connect_request_id]
        shared = len(request_ids) - len(set(request_ids))
        assert not missing, f"no request id on {missing[:5]}"
        assert shared == 0, f"{shared} request id(s) shared by two rows"
        assert len(request_ids) == len(run.creating)

    def test_connect_created_each_request_once(self, run: Run) -> None:
        stats = run.sandbox_stats
        assert stats["requests_created"] == len(run.creating), (
            f"requests_created={stats['requests_created']}, changes needing a create={len(run.creating)}; "
            f"faults injected {stats.get('faults_injected')}"
        )
        assert sum(stats["faults_injected"].values()) > 0, "the run met no fault: the test proves nothing"

    def test_no_asset_has_two_requests_of_one_type(self, run: Run) -> None:
        ours = {exp.asset_external_id for exp in run.expected.values() if exp.creates}
        groups: dict[tuple[str, str], list[str]] = {}
        for request in run.connect_requests:
            external_id = (request.get("asset") or {}).get("external_id") or ""
            if external_id in ours:
                groups.setdefault((request["type"], external_id), []).append(request["id"])
        doubles = {k: v for k, v in groups.items() if len(v) > 1}
        assert not doubles, f"{len(groups)} (type, asset) pairs; doubles: {list(doubles.items())[:5]}"

    def test_each_rows_status_is_its_connect_requests_status(self, run: Run) -> None:
        connect_status = {r["id"]: r["status"] for r in run.connect_requests}
        mismatched = [
            f"#{i} {row.connect_request_id}: {row.status} != {connect_status.get(row.connect_request_id)}"
            for i, row in run.rows.items()
            if row.connect_request_id and connect_status.get(row.connect_request_id) != row.status
        ]
        assert not mismatched, f"mismatched: {mismatched[:5]}"


class TestUsageExport:
    def test_every_run_succeeded_triggered_and_scheduled(self, run: Run) -> None:
        states = sorted(run.usage_states.values())
        assert states and all(s == "success" for s in states), f"{len(states)} run(s): {states}"

    @pytest.mark.parametrize("index", range(len(USAGE_RECORDS)), ids=[f"{n}-records" for n in USAGE_RECORDS])
    def test_the_parquet_file_holds_every_record_once(self, run: Run, topology: Any, index: int) -> None:
        import pyarrow.parquet as pq

        root = topology.data_dir / "usage_records"
        file_id, records = run.usage_files[index]["id"], USAGE_RECORDS[index]
        found = [
            p
            for p in root.rglob(f"usage_file_id={file_id}.parquet")
            if not any(part.startswith("_") for part in p.relative_to(root).parts)
        ]
        assert len(found) == 1, f"want one data file of {file_id} under {root}, found {found}"
        ids = pq.read_table(found[0], columns=["id"]).column("id").to_pylist()
        connect_ids = {r["id"] for r in topology.connect_get_all("usage/records", {"usagefile.id": file_id})}
        assert len(connect_ids) == records, f"Connect lists {len(connect_ids)} records of {file_id}"
        assert len(ids) == records, f"{found[0].relative_to(root)}: {len(ids)} rows, want {records}"
        assert len(set(ids)) == len(ids), f"{len(ids) - len(set(ids))} duplicate ids"
        assert set(ids) == connect_ids


class TestWorkers:
    def test_both_celery_workers_ran_tasks(self, run: Run, topology: Any) -> None:
        counts = topology.tasks_received()
        assert all(v > 0 for v in counts.values()), ", ".join(f"{k}: {v} tasks" for k, v in counts.items())


class TestEventDrivenExport:
    def test_a_new_usage_file_starts_the_export_dag_within_the_poll_and_scheduling_delay(
        self, event_run: EventRun
    ) -> None:
        assert event_run.latency[0] < EVENT_RUN_WITHIN, f"{event_run.latency[0]:.0f}s"
        assert event_run.runs[0]["run_type"] == "asset_triggered"

    def test_a_file_added_while_the_triggerer_was_down_is_not_lost(self, event_run: EventRun) -> None:
        assert event_run.latency[1] < EVENT_RUN_WITHIN, f"{event_run.latency[1]:.0f}s after the restart"

    @pytest.mark.parametrize(
        "index", range(len(EVENT_RECORDS)), ids=["before-the-restart", "during-the-restart"]
    )
    def test_each_file_that_appeared_is_exported_whole(
        self, event_run: EventRun, topology: Any, index: int
    ) -> None:
        import pyarrow.parquet as pq

        root = topology.data_dir / "usage_records"
        file_id = event_run.files[index]["id"]
        found = [
            p
            for p in root.rglob(f"usage_file_id={file_id}.parquet")
            if not any(part.startswith("_") for part in p.relative_to(root).parts)
        ]
        assert len(found) == 1, f"want one data file of {file_id}, found {found}"
        ids = pq.read_table(found[0], columns=["id"]).column("id").to_pylist()
        assert len(ids) == len(set(ids)) == EVENT_RECORDS[index]

    def test_every_event_driven_run_succeeded(self, event_run: EventRun, topology: Any) -> None:
        states = {
            r["dag_run_id"]: r["state"]
            for r in topology.api.runs(USAGE_DAG)
            if r["run_type"] == "asset_triggered"
        }
        assert states and all(s == "success" for s in states.values()), states


# --------------------------------------------------------------------------------------------------
# The stop (last: it ends the deployment)


class TestShutdown:
    def test_stopping_the_deployment_leaves_no_process_behind(self, topology: Any) -> None:
        topology.processes.stop_all()
        still = [f"{p.pid} ({' '.join(p.cmdline()[:3])})" for p in topology.processes.tree()]
        assert not still, f"alive after the stop: {still}"
