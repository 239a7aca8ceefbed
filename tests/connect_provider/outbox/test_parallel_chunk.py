"""A chunk's rows N at a time, and its assets found in one listing, against the sandbox.

What is counted comes from the sandbox's ``/_sandbox/stats`` (calls per route, ``max_in_flight``),
not from timings.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from connect_project.demo import seed_demo_changes
from connect_provider import actions
from connect_provider.arguments import request_arguments
from connect_provider.hooks.connect import ConnectHook
from connect_provider.outbox import Outbox, processing
from outbox_factory import FaultProxy, _stats, purchase_payload


def _purchases(outbox: Outbox, prefix: str, n: int) -> list[int]:
    return outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"{prefix}-{i}", "payload": purchase_payload()}
        for i in range(n)
    )


def _outcomes(outbox: Outbox) -> list[tuple[Any, ...]]:
    return [(row.change_type, row.status, row.error) for row in outbox.all()]


def test_the_rows_of_a_chunk_are_submitted_n_at_a_time(sandbox, outbox: Outbox) -> None:
    ids = _purchases(outbox, "par", 16)
    claimed = outbox.claim("run-1", 100)
    sandbox.set_faults("latency_ms=60")  # every call lasts long enough for the threads to overlap

    report = processing.submit_chunk(
        outbox, ConnectHook(), "run-1", claimed, retry_delays=(), concurrency=4, batch_assets=True
    )

    stats = _stats(sandbox)
    assert report.submitted == 16 and stats["requests_created"] == 16
    assert stats["max_in_flight"] == 4
    assert {row.status for row in outbox.get(ids)} == {"submitted"}
    assert len({row.connect_request_id for row in outbox.get(ids)}) == 16
    assert all(row.claim_token is None for row in outbox.get(ids))


def test_one_at_a_time_by_default(sandbox, outbox: Outbox) -> None:
    _purchases(outbox, "seq", 6)
    claimed = outbox.claim("run-1", 100)
    sandbox.set_faults("latency_ms=30")
    report = processing.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())
    assert report.submitted == 6 and _stats(sandbox)["max_in_flight"] == 1


def test_the_connections_max_concurrency_caps_the_threads(sandbox, outbox: Outbox) -> None:
    _purchases(outbox, "cap", 8)
    claimed = outbox.claim("run-1", 100)
    sandbox.set_faults("latency_ms=60")
    report = processing.submit_chunk(
        outbox, ConnectHook(max_concurrency=2), "run-1", claimed, retry_delays=(), concurrency=4
    )
    assert report.submitted == 8 and _stats(sandbox)["max_in_flight"] == 2


def test_rows_of_one_asset_are_never_in_flight_together_and_keep_their_order(sandbox, outbox: Outbox) -> None:
    # Rows that name their asset only in the payload are not ordered by the claim: the chunk
    # itself must keep them one after the other, in id order, while other rows run beside them.
    same = [
        outbox.add("change", {"asset_external_id": "sub-1001", "item_id": "SEATS", "quantity": q})
        for q in (21, 22, 23, 24)
    ]
    _purchases(outbox, "beside", 8)
    claimed = outbox.claim("run-1", 100)
    lock = threading.Lock()
    busy: set[str] = set()
    overlaps: list[str] = []
    order: list[int] = []

    def watched_run(hook, change_type, arguments):
        key = str(arguments["asset_external_id"])
        with lock:
            if key in busy:
                overlaps.append(key)
            busy.add(key)
            if key == "sub-1001":
                order.append(arguments["quantity"])
        try:
            time.sleep(0.05)  # widens the window in which a second row of the asset could start
            return actions.run_action(hook, change_type, arguments)
        finally:
            with lock:
                busy.discard(key)

    report = processing.submit_chunk(
        outbox, ConnectHook(), "run-1", claimed, run=watched_run, retry_delays=(), concurrency=4
    )

    assert overlaps == [] and order == [21, 22, 23, 24]
    assert (report.submitted, report.rejected, report.retry_later) == (12, 0, 0)
    assert {row.status for row in outbox.get(same)} == {"submitted"}


def test_a_chunk_finds_its_assets_in_one_listing_per_product(sandbox, outbox: Outbox) -> None:
    _purchases(outbox, "batch", 10)
    outbox.add("change", {"item_id": "SEATS", "quantity": 12}, asset_external_id="sub-1001")
    outbox.add("resume", {}, asset_external_id="sub-1002")
    claimed = outbox.claim("run-1", 100)

    report = processing.submit_chunk(
        outbox, ConnectHook(), "run-1", claimed, retry_delays=(), concurrency=4, batch_assets=True
    )

    routes = _stats(sandbox)["calls_by_route"]
    assert (report.submitted, report.rejected) == (12, 0)
    # One listing for the product's purchases, one for the changes' assets: not one per row.
    assert routes["GET /assets"] == 2
    assert routes["POST /requests"] == report.submitted
    assert routes["GET /marketplaces"] == 1 and routes["GET /tier/accounts"] == 2


def test_a_row_found_in_the_batch_ends_as_when_it_looks_its_asset_up_itself(instant_vendor, tmp_path) -> None:
    # The demo rows cover reuse of an existing purchase, a missing asset, two assets matching one
    # external id, a resume of a suspended asset and invalid input: both ways must end alike.
    ends = []
    for name, options in (("own", {}), ("batch", {"batch_assets": True})):
        instant_vendor.reset("demo", auto_approve_delay=0)
        with Outbox.sqlite(tmp_path / f"{name}.sqlite") as box:
            seed_demo_changes(box)
            box.add("purchase", purchase_payload(), asset_external_id="sub-1003")  # exists: reused
            claimed = box.claim("run-1", 100)
            report = processing.submit_chunk(box, ConnectHook(), "run-1", claimed, retry_delays=(), **options)
            ends.append((_outcomes(box), report.reused, _stats(instant_vendor)["requests_created"]))
    assert ends[0] == ends[1]
    assert ends[0][1] == 1  # the purchase of sub-1003
    # Side by side the rows end alike too (the error texts may show assets in other states: the
    # rows of other assets run in another order).
    instant_vendor.reset("demo", auto_approve_delay=0)
    with Outbox.sqlite(tmp_path / "parallel.sqlite") as box:
        seed_demo_changes(box)
        box.add("purchase", purchase_payload(), asset_external_id="sub-1003")
        claimed = box.claim("run-1", 100)
        report = processing.submit_chunk(
            box, ConnectHook(), "run-1", claimed, retry_delays=(), concurrency=4, batch_assets=True
        )
        assert [end[:2] for end in _outcomes(box)] == [end[:2] for end in ends[0][0]]
        assert (report.reused, _stats(instant_vendor)["requests_created"]) == ends[0][1:]


def test_a_batch_look_up_that_fails_leaves_each_row_to_its_own(
    sandbox, outbox: Outbox, proxy: FaultProxy, monkeypatch
) -> None:
    refused: list[str] = []

    def refuse_batches(method: str, target: str) -> tuple[int, Any] | None:
        if (
            method == "GET"
            and target.startswith("/public/v1/assets?")
            and "in(" in target.replace("%28", "(")
        ):
            refused.append(target)
            return 400, {"error_code": "VAL_001", "errors": ["lookup in is not supported"]}
        return None

    proxy.answer = refuse_batches
    ids = _purchases(outbox, "fallback", 5)
    missing = outbox.add("cancel", {}, asset_external_id="sub-nowhere")
    claimed = outbox.claim("run-1", 100)

    report = processing.submit_chunk(
        outbox,
        ConnectHook("connect_via_proxy"),
        "run-1",
        claimed,
        retry_delays=(),
        concurrency=4,
        batch_assets=True,
    )

    routes = _stats(sandbox)["calls_by_route"]
    assert refused and (report.submitted, report.rejected) == (5, 1)
    assert routes["GET /assets"] == 6  # each row looked its asset up itself
    assert {row.status for row in outbox.get(ids)} == {"submitted"}
    [row] = outbox.get([missing])
    assert row.status == "rejected" and "No asset found" in row.error


def test_two_parallel_attempts_of_one_run_create_each_request_once(sandbox, outboxes) -> None:
    setup = outboxes()
    ids = _purchases(setup, "twice", 24)
    token = "connect_subscription_changes/scheduled__twice"
    claimed = setup.claim(token, 100)
    reports: list[processing.ChunkReport] = []
    barrier = threading.Barrier(2)
    sandbox.set_faults("latency_ms=20")

    def attempt() -> None:
        with outboxes() as own:
            barrier.wait()
            reports.append(
                processing.submit_chunk(
                    own, ConnectHook(), token, claimed, retry_delays=(), concurrency=4, batch_assets=True
                )
            )

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    rows = setup.get(ids)
    stats = _stats(sandbox)
    assert sum(r.submitted for r in reports) == 24
    assert stats["requests_created"] == 24 and stats["calls_by_route"]["POST /requests"] == 24
    assert len({row.connect_request_id for row in rows}) == 24
    assert {row.status for row in rows} == {"submitted"}


def test_a_purchase_asks_nothing_its_chunk_has_looked_up_before_its_rows(sandbox) -> None:
    # actions.purchase_look_ups names the look-ups a purchase makes in the shape it makes them;
    # if the two drifted apart, the chunk's preparation would ask Connect for nothing.
    spec = request_arguments("purchase", {**purchase_payload(), "asset_external_id": "warm-1"}).checked()
    lookups = processing.ChunkLookups(ConnectHook())
    for name, args, kwargs in actions.purchase_look_ups(spec):
        getattr(lookups, name)(*args, **kwargs)
    before = dict(_stats(sandbox)["calls_by_route"])

    actions.run_action(lookups, "purchase", {**purchase_payload(), "asset_external_id": "warm-1"})

    routes = _stats(sandbox)["calls_by_route"]
    assert before["GET /marketplaces"] == 1 and before["GET /tier/accounts"] == 2
    configuration = ("GET /marketplaces", "GET /products/{product_id}/connections", "GET /tier/accounts")
    assert {route: routes[route] for route in configuration} == {
        route: before[route] for route in configuration
    }
    assert routes["POST /requests"] == 1
