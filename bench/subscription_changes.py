"""The subscription-changes DAG over N pending changes: throughput, API calls, duplicates, leftovers.

    .venv/bin/python bench/subscription_changes.py --changes 1000 [--json] [--modes chunked,per_change]
        [--latency-ms 150]

One sandbox (demo seed, vendor auto-decision after ``--approve-delay`` seconds) serves every mode.
Each mode runs in its own fresh process with its own metadata DB and SQLite outbox:

1. set-up (not measured): purchase and approve the assets that the non-purchase changes act on;
2. seed N pending changes into a fresh outbox: mostly purchases of new external ids (~80 %), then
   changes, suspends and cancels of distinct existing assets, and ~1 % rows with invalid input;
3. a warm-up ``dag.test()`` on an empty outbox (the first task of a process pays ~10 s of Airflow
   start-up that a scheduler-run worker does not);
4. one measured ``dag.test()`` of ``connect_subscription_changes``, with the sandbox's
   ``latency_ms=L`` fault from here on when ``--latency-ms`` is given (every call waits L ms, as a
   call to the real Connect waits for the internet and Connect's query); set-up and warm-up run
   without it.

At latency the report adds the floor: ``calls x L / parallel calls``, the time the calls alone
take when ``parallel`` of them run at once: 1 (the DAG before its chunks ran rows side by side),
and 4, what the DAG makes now: each ``submit_chunk`` works on ``CONNECT_CHANGES_CONCURRENCY`` (4)
rows at once and takes as many slots of the 4-slot ``cloudblue_connect_api`` pool, so 4 calls at
once both as ``dag.test()`` runs the mapped chunks (one task instance after another) and as a
scheduler does (one chunk in the pool at a time). ``max_in_flight`` is the sandbox's count of the
most calls it served at once since the mode's reset (set-up included, which runs its calls one
after another but for the pages of a listing).

Modes: ``chunked`` is the DAG as shipped (``chunk_size`` 100: N/100 mapped task instances);
``per_change`` is the same DAG with ``chunk_size`` 1, i.e. one task instance per change, the
design the DAG avoids. Reported per mode: the run's wall time and changes/s, the submit phase
alone, API calls per change (from the sandbox's ``/_sandbox/stats``, set-up excluded), requests
created, and the checks: no request created twice, no two rows sharing a request, no row left
pending or submitted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, admin_call, machine_info, running_sandbox, venv_python

DAG_ID = "connect_subscription_changes"
MODES = {"chunked": 100, "per_change": 1}
TIER = {
    "name": "Bench Reseller",
    "external_id": "reseller-1",
    "contact_info": {
        "address_line1": "1 Bench Street",
        "city": "Springfield",
        "postal_code": "10001",
        "country": "US",
        "contact": {
            "first_name": "Ben",
            "last_name": "Reseller",
            "email": "ben@example.com",
            "phone_number": "+1 2015550123",
        },
    },
}
PURCHASE = {
    "hub_id": "HB-0000-0001",
    "marketplace": "MP-00001",
    "item_id": "PRD-276-377-545-0001",
    "quantity": 2,
    "tier1": TIER,
    "customer": {**TIER, "name": "Bench Customer", "external_id": "customer-1"},
}


def plan(n: int, tag: str) -> tuple[list[dict], int]:
    """The N changes of a run (and how many existing assets they need)."""
    others = n // 5
    bad = max(1, n // 100)
    purchases = n - others - bad
    rows = [
        {"change_type": "purchase", "asset_external_id": f"{tag}-new-{i}", "payload": PURCHASE}
        for i in range(purchases)
    ]
    kinds = ["change", "suspend", "cancel", "change"]
    for i in range(others):
        kind = kinds[i % len(kinds)]
        payload = {"item_id": "SEATS", "quantity": 3 + i % 7} if kind == "change" else {}
        rows.append({"change_type": kind, "asset_external_id": f"{tag}-old-{i}", "payload": payload})
    for i in range(bad):
        rows.append(
            {
                "change_type": "purchase",
                "asset_external_id": f"{tag}-bad-{i}",
                "payload": {**PURCHASE, "quantity": 0},
            }
        )
    random.Random(n).shuffle(rows)  # interleave the kinds the way an application's activity would
    return rows, others


POOL_SLOTS = 4  # the cloudblue_connect_api pool as docker-compose, the demo and docs/deployment.md create it


def floors(calls: int, latency_ms: float, wall: float) -> dict:
    """The time the calls alone take at latency, one at a time and with the pool's slots at once."""
    if latency_ms <= 0:
        return {}
    one = calls * latency_ms / 1000.0
    return {
        "latency_ms": latency_ms,
        "floor_s_one_at_a_time": round(one, 1),
        f"floor_s_{POOL_SLOTS}_at_once": round(one / POOL_SLOTS, 1),
        "run_vs_floor_one_at_a_time": round(one / wall, 3),
        f"run_vs_floor_{POOL_SLOTS}_at_once": round(one / POOL_SLOTS / wall, 3),
    }


def child(mode: str, n: int, sandbox_url: str, latency_ms: float = 0.0) -> dict:
    """One mode in this (fresh) process; returns its figures."""
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.utils import db
    from connect_provider import actions
    from connect_provider.hooks.connect import ConnectHook
    from connect_provider.outbox import Outbox

    db.resetdb()
    tag = f"{mode}-{int(time.time())}"
    rows, existing = plan(n, tag)
    hook = ConnectHook()
    for i in range(existing):  # the assets that changes, suspends and cancels act on
        actions.run_action(hook, "purchase", {**PURCHASE, "asset_external_id": f"{tag}-old-{i}"})
    time.sleep(float(os.environ["BENCH_APPROVE_DELAY"]) + 0.2)
    hook.list_requests("and(eq(status,pending),eq(type,purchase))")  # the sandbox decides on read

    outbox = Outbox.from_airflow()
    outbox.create_schema()
    bag = BundleDagBag(dag_folder=str(REPO / "dags"), bundle_path=REPO / "dags")
    dag = bag.dags[DAG_ID]
    conf = {"chunk_size": MODES[mode], "batch_size": n + 10, "follow_timeout_seconds": 600}
    dag.test(run_conf=conf)  # warm-up: nothing pending, pays the process's one-time start-up

    ids = outbox.add_many(rows)
    if latency_ms > 0:
        admin_call(sandbox_url, "POST", "faults", {"spec": f"latency_ms={latency_ms:g}"})
    before = admin_call(sandbox_url, "GET", "stats")
    started = time.perf_counter()
    dag_run = dag.test(run_conf=conf)
    wall = time.perf_counter() - started
    after = admin_call(sandbox_url, "GET", "stats")

    tis = dag_run.get_task_instances()
    submits = [ti for ti in tis if ti.task_id == "submit_chunk"]
    submit_s = (max(ti.end_date for ti in submits) - min(ti.start_date for ti in submits)).total_seconds()
    changed = outbox.get(ids)
    request_ids = [row.connect_request_id for row in changed if row.connect_request_id]
    created = after["requests_created"] - before["requests_created"]
    calls = after["calls"] - before["calls"]
    routes = {
        route: count - before["calls_by_route"].get(route, 0)
        for route, count in after["calls_by_route"].items()
        if count - before["calls_by_route"].get(route, 0)
    }
    counts = outbox.counts()
    return {
        "mode": mode,
        "changes": n,
        "chunk_size": MODES[mode],
        "task_instances": len(submits),
        "run_state": str(dag_run.state),
        "run_wall_s": round(wall, 2),
        "changes_per_s": round(n / wall, 1),
        "submit_phase_s": round(submit_s, 2),
        "submit_changes_per_s": round(n / submit_s, 1) if submit_s else None,
        "api_calls": calls,
        "api_calls_per_change": round(calls / n, 2),
        "calls_by_route": routes,
        "requests_created": created,
        "outcomes": counts,
        "no_duplicate_request": created == len(set(request_ids))
        and len(request_ids) == len(set(request_ids)),
        "none_left_behind": counts["pending"] == 0 and counts["submitted"] == 0,
        "max_in_flight": after.get("max_in_flight"),
        **floors(calls, latency_ms, wall),
    }


def run_mode(mode: str, n: int, sandbox, approve_delay: float, latency_ms: float = 0.0) -> dict:
    sandbox.reset("demo", auto_approve_delay=approve_delay)
    home = Path(tempfile.mkdtemp(prefix=f"bench-changes-{mode}-"))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home / "airflow_home"),
        "CONNECT_DATA_DIR": str(home / "data"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "CONNECT_CHANGES_FOLLOW_POKE_SECONDS": "1",
        "AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT": sandbox.conn_json(),
        "AIRFLOW_CONN_CONNECT_CHANGES_DB": json.dumps(
            {"conn_type": "sqlite", "host": str(home / "data" / "changes.sqlite")}
        ),
        "BENCH_APPROVE_DELAY": str(approve_delay),
    }
    log = home / "child.log"
    argv = [venv_python(), __file__, "--child", mode, "--changes", str(n), "--sandbox-url", sandbox.url]
    with open(log, "w") as out:
        done = subprocess.run(
            [*argv, "--latency-ms", str(latency_ms)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            cwd=REPO,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"mode {mode} failed ({done.returncode}); log: {log}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=1000, help="pending changes to process (default 1000)")
    parser.add_argument("--modes", default="chunked,per_change", help="comma-separated: chunked, per_change")
    parser.add_argument("--approve-delay", type=float, default=0.5, help="sandbox vendor decision delay (s)")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="the sandbox's latency fault during the measured run"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.changes, args.sandbox_url, args.latency_ms)))
        return 0

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {sorted(MODES)}")
    with running_sandbox("--seed", "demo", "--auto-approve-delay", str(args.approve_delay)) as sandbox:
        results = [
            run_mode(mode, args.changes, sandbox, args.approve_delay, args.latency_ms) for mode in modes
        ]
    report = {
        "machine": machine_info(),
        "changes": args.changes,
        "latency_ms": args.latency_ms,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.changes} pending changes, one DAG run per mode (vendor decides in {args.approve_delay}s)")
    print(
        f"{'mode':<11} {'TIs':>5} {'run s':>7} {'changes/s':>9} {'submit s':>8} {'submit/s':>8} "
        f"{'calls/chg':>9}  requests  duplicates  left behind  outcomes"
    )
    for r in results:
        outcomes = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items() if v)
        print(
            f"{r['mode']:<11} {r['task_instances']:>5} {r['run_wall_s']:>7} {r['changes_per_s']:>9} "
            f"{r['submit_phase_s']:>8} {r['submit_changes_per_s']:>8} {r['api_calls_per_change']:>9}  "
            f"{r['requests_created']:>8}  {'none' if r['no_duplicate_request'] else 'YES':>10}  "
            f"{'none' if r['none_left_behind'] else 'YES':>11}  {outcomes}"
        )
        if "floor_s_one_at_a_time" in r:
            print(
                f"{'':<11} at {args.latency_ms:g} ms a call: floor {r['floor_s_one_at_a_time']} s one call "
                f"at a time ({r['run_vs_floor_one_at_a_time']} of the run), "
                f"{r[f'floor_s_{POOL_SLOTS}_at_once']} s with {POOL_SLOTS} at once "
                f"({r[f'run_vs_floor_{POOL_SLOTS}_at_once']} of the run)"
            )
    return 0 if all(r["no_duplicate_request"] and r["none_left_behind"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
