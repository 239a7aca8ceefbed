"""The event triggers, run as Airflow's triggerer runs watchers, against real HTTP servers.

Against the sandbox (``POST /_sandbox/usage-files`` and ``/status`` change it while the triggers
run) and against ``whole_second_connect`` (whole-second stamps, so keys tie, and data that
changes between two pages of one read). Statements of behaviour:

* a usage file fires once when it appears in, or moves into, a watched status; what existed when
  the watch started does not fire, unless ``since`` says so;
* requests fire when they enter a watched status, and again when they come back to it;
* nothing is missed across ties, across pages read while Connect changes, or across a restart
  (the watermark in the asset's store); nothing fires twice while the triggerer runs;
* watchers of one connection and filter share one poll;
* bad arguments are refused when the trigger is built, naming the argument.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from connect_provider.exceptions import ConnectValidationError
from connect_provider.hooks.connect import ConnectHook
from connect_provider.triggers.events import ConnectRequestEventTrigger, ConnectUsageFileEventTrigger
from connect_provider.triggers.feeds import UsageFileFeed
from purchase_factory import buy

FAST = {"poll_interval": 1, "overlap_seconds": 5}


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def settle(seconds: float = 2.5) -> None:
    """Let the watchers poll a few times (their interval is 1 s)."""
    time.sleep(seconds)


def ids_of(payloads: list[dict], key: str = "usage_file_id") -> list[tuple[str, str]]:
    return [(p[key], p["status"]) for p in payloads]


class TestUsageFileEvents:
    def test_a_file_added_while_watching_fires_once_with_its_id_status_and_time(self, sandbox, triggerer):
        trigger = ConnectUsageFileEventTrigger(statuses=["ready"], **FAST)
        with triggerer([trigger]) as got:
            settle(1.5)
            added = sandbox.add_usage_file(3, status="ready")
            wait_for("the event", lambda: got.payloads())
            settle()
        (event,) = got.payloads()
        assert event["usage_file_id"] == added["id"]
        assert event["status"] == "ready" and event["previous_status"] is None
        assert event["changed_at"] == added["events"]["uploaded"]["at"]
        assert event["created_at"] == added["events"]["created"]["at"]
        assert event["product_id"] == "PRD-276-377-545"

    @pytest.mark.parametrize(
        ("move_to", "fires"),
        [("pending", True), ("accepted", False), ("deleted", False)],
        ids=["into-a-watched-status", "into-another-status", "deleted"],
    )
    def test_a_status_change_of_an_existing_file_fires_only_into_a_watched_status(
        self, sandbox, triggerer, move_to, fires
    ):
        # UF-2026-10-0000000001 is seeded ready, long before the watch starts.
        trigger = ConnectUsageFileEventTrigger(statuses=["pending"], **FAST)
        with triggerer([trigger]) as got:
            settle(1.5)
            sandbox.admin("POST", "usage-files/UF-2026-10-0000000001/status", {"status": move_to})
            settle(3)
        expected = [("UF-2026-10-0000000001", "pending")] if fires else []
        assert ids_of(got.payloads()) == expected

    def test_a_file_created_as_draft_fires_when_it_becomes_ready(self, sandbox, triggerer):
        # Workato's trigger filters in(status,...) at creation and never looks at the file again.
        trigger = ConnectUsageFileEventTrigger(statuses=["ready"], **FAST)
        with triggerer([trigger]) as got:
            settle(1.5)
            draft = sandbox.add_usage_file(2, status="draft")
            settle()
            assert got.payloads() == []
            sandbox.admin("POST", f"usage-files/{draft['id']}/status", {"status": "ready"})
            wait_for("the ready event", lambda: got.payloads())
            settle()
        assert ids_of(got.payloads()) == [(draft["id"], "ready")]
        assert got.payloads()[0]["previous_status"] == "draft"

    def test_files_that_existed_at_the_start_fire_only_with_since(self, sandbox, triggerer):
        quiet = ConnectUsageFileEventTrigger(statuses=["ready", "accepted", "closed"], **FAST)
        since = ConnectUsageFileEventTrigger(
            statuses=["ready", "accepted", "closed"], since="2026-10-11T10:01:00+00:00", **FAST
        )
        with triggerer([quiet, since]) as got:
            wait_for("the events of the files since", lambda: got.payloads(2))
            settle()
        assert got.payloads(1) == []
        # Seeded: ...0001 ready at 10:00 (before since), ...0002 accepted at 10:01, ...0004 closed at 10:03.
        assert sorted(ids_of(got.payloads(2))) == [
            ("UF-2026-09-0000000004", "closed"),
            ("UF-2026-10-0000000002", "accepted"),
        ]

    def test_nothing_fires_twice_while_the_polls_go_on(self, sandbox, triggerer):
        trigger = ConnectUsageFileEventTrigger(statuses=["ready", "pending", "accepted"], **FAST)
        with triggerer([trigger]) as got:
            settle(1.5)
            added = sandbox.add_usage_file(1, status="ready")
            sandbox.admin("POST", f"usage-files/{added['id']}/status", {"status": "accepted"})
            settle(5)  # five polls re-read the overlap window and the open files
        events = ids_of(got.payloads())
        assert len(events) == len(set(events))
        assert (added["id"], "accepted") in events


class TestRequestEvents:
    def test_a_new_pending_purchase_fires_for_the_vendor_and_its_approval_for_the_application(
        self, sandbox, triggerer
    ):
        vendor = ConnectRequestEventTrigger(types=["purchase"], statuses=["pending"], **FAST)
        application = ConnectRequestEventTrigger(statuses=["approved", "failed", "inquiring"], **FAST)
        with triggerer([vendor, application]) as got:
            settle(1.5)
            request_id = buy("manual-event-1")  # the demo vendor leaves manual- requests to us
            wait_for("the pending event", lambda: got.payloads(1))
            ConnectHook().approve_request(request_id, "TL-276-377-545-0001")
            wait_for("the approved event", lambda: got.payloads(2))
            settle()
        assert ids_of(got.payloads(1), "request_id") == [(request_id, "pending")]
        assert ids_of(got.payloads(2), "request_id") == [(request_id, "approved")]
        event = got.payloads(2)[0]
        assert event["type"] == "purchase" and event["asset_external_id"] == "manual-event-1"
        assert event["previous_status"] == "pending"

    def test_a_request_that_comes_back_to_a_watched_status_fires_again(self, whole_second_connect, triggerer):
        connect = whole_second_connect
        connect.add_request("PR-1", "2026-12-01T10:00:00+00:00", "inquiring")
        trigger = ConnectRequestEventTrigger(statuses=["pending"], **FAST)
        with triggerer([trigger]) as got:
            settle(1.5)
            with connect.lock:
                connect.requests[0].update(status="pending", updated="2026-12-01T10:00:05+00:00")
            wait_for("the first pending event", lambda: got.payloads())
            with connect.lock:
                connect.requests[0].update(status="inquiring", updated="2026-12-01T10:00:09+00:00")
            settle()
            with connect.lock:
                connect.requests[0].update(status="pending", updated="2026-12-01T10:00:12+00:00")
            wait_for("the second pending event", lambda: len(got.payloads()) == 2)
            settle()
        assert [(p["status"], p["previous_status"]) for p in got.payloads()] == [
            ("pending", "inquiring"),
            ("pending", "inquiring"),
        ]


class TestNothingIsMissed:
    def test_files_sharing_one_second_across_pages_are_each_seen_once(self, whole_second_connect):
        # Whole seconds, as Connect stamps: seven files of one second on pages of three.
        for n in range(7):
            whole_second_connect.add_file(f"UF-2026-10-{n:010d}", "2026-12-01T10:00:00+00:00")
        whole_second_connect.add_file("UF-2026-10-0000000099", "2026-12-01T10:00:01+00:00")

        async def read() -> list[dict]:
            feed = UsageFileFeed(ConnectHook(), page_size=3)
            return await feed.read_window(None)

        found = asyncio.run(read())
        ids = [f["id"] for f in found]
        assert len(ids) == len(set(ids)) == 8

    def test_a_request_updated_while_its_pages_are_read_is_not_skipped(
        self, whole_second_connect, triggerer, monkeypatch
    ):
        # Pages of two, no overlap: only the paging itself can keep PR-7 from being skipped.
        monkeypatch.setattr("connect_provider.triggers.feeds.POLL_PAGE_SIZE", 2)
        connect = whole_second_connect
        for n in range(6):
            connect.add_request(f"PR-{n}", f"2026-12-01T10:00:0{n}+00:00", "pending")
        trigger = ConnectRequestEventTrigger(
            statuses=["pending", "inquiring"], poll_interval=1, overlap_seconds=0
        )

        def update_pr5_after_the_page_with_pr6(kind: str, page: list[dict]) -> None:
            # PR-5 changes after the page [PR-5, PR-6] was sent: under ordering(updated) it moves
            # to the end, and every item after it shifts one place towards the start. Read by
            # offset, the next page would start at PR-8 and PR-7 would never be read.
            if (
                kind == "requests"
                and "PR-6" in [r["id"] for r in page]
                and connect.requests[5]["status"] == "pending"
            ):
                with connect.lock:
                    connect.requests[5].update(status="inquiring", updated="2026-12-01T10:00:40+00:00")

        with triggerer([trigger]) as got:
            settle(1.5)  # the baseline: PR-0..PR-5 are the past
            connect.between_pages = update_pr5_after_the_page_with_pr6
            for n in range(6, 10):
                connect.add_request(f"PR-{n}", f"2026-12-01T10:00:{n + 4}+00:00", "pending")
            wait_for("PR-5's move", lambda: ("PR-5", "inquiring") in ids_of(got.payloads(), "request_id"))
            settle()
        events = ids_of(got.payloads(), "request_id")
        assert sorted(events) == [
            ("PR-5", "inquiring"),
            ("PR-6", "pending"),
            ("PR-7", "pending"),
            ("PR-8", "pending"),
            ("PR-9", "pending"),
        ]

    def test_a_file_added_while_the_triggerer_is_down_fires_after_the_restart(
        self, sandbox, triggerer, memory_store
    ):
        store = memory_store()
        first = ConnectUsageFileEventTrigger(statuses=["ready"], **FAST)
        first.asset_state_store = store
        with triggerer([first]) as got:
            settle(1.5)
            before = sandbox.add_usage_file(1, status="ready")
            wait_for("the first event", lambda: got.payloads())
            settle(3)  # a poll or two more: the state after the event is durable and stored
        assert ids_of(got.payloads()) == [(before["id"], "ready")]
        assert store.writes > 0
        during = sandbox.add_usage_file(1, status="ready")  # nobody is watching
        again = ConnectUsageFileEventTrigger(statuses=["ready"], **FAST)
        again.asset_state_store = store
        with triggerer([again]) as got_after:
            wait_for("the event of the file added while down", lambda: got_after.payloads())
            settle()
        assert ids_of(got_after.payloads()) == [(during["id"], "ready")]

    def test_a_watch_without_a_stored_state_starts_now_and_stores_one(self, sandbox, triggerer, memory_store):
        store = memory_store()
        trigger = ConnectUsageFileEventTrigger(statuses=["ready"], **FAST)
        trigger.asset_state_store = store
        with triggerer([trigger]):
            settle(3.5)
        (value,) = store.values.values()
        assert value["started"] is True and value["w"] is not None
        # the seeded open files are remembered with their status, so their next move can fire
        assert value["known"]["UF-2026-10-0000000001"][0] == "ready"


class TestOnePollPerStream:
    def test_twenty_watchers_of_one_filter_make_the_calls_of_one(self, sandbox, triggerer):
        statuses = [["ready"], ["pending"], ["accepted"], ["ready", "closed"]]
        watchers = [
            ConnectUsageFileEventTrigger(product_id="PRD-276-377-545", statuses=statuses[n % 4], **FAST)
            for n in range(20)
        ]
        assert len({w.shared_stream_key() for w in watchers}) == 1
        with triggerer(watchers) as got:
            settle(1.5)
            start = sandbox.stats()["calls_by_route"].get("GET /usage/files", 0)
            added = sandbox.add_usage_file(1, status="ready")
            wait_for("every ready watcher's event", lambda: len(got.payloads()) == 10)
            settle(4)
            calls = sandbox.stats()["calls_by_route"].get("GET /usage/files", 0) - start
        # about six polls in those ~5 s, two calls each (the window and the open files); twenty
        # independent watchers would have made twenty times as many.
        assert 4 <= calls <= 20, calls
        assert all(p["usage_file_id"] == added["id"] for p in got.payloads())
        assert len(got.payloads()) == 10  # the 5 ready-only and 5 ready-or-closed watchers

    def test_different_filters_or_connections_are_different_streams(self):
        base = ConnectUsageFileEventTrigger(product_id="PRD-276-377-545")
        assert (
            base.shared_stream_key()
            == ConnectUsageFileEventTrigger(
                product_id="PRD-276-377-545", statuses=["closed"], since="2026-01-01T00:00:00+00:00"
            ).shared_stream_key()
        )
        for other in (
            ConnectUsageFileEventTrigger(product_id="PRD-684-920-001"),
            ConnectUsageFileEventTrigger(product_id="PRD-276-377-545", connect_conn_id="other"),
            ConnectUsageFileEventTrigger(product_id="PRD-276-377-545", poll_interval=30),
        ):
            assert other.shared_stream_key() != base.shared_stream_key()
        assert (
            base.state_key()
            != ConnectUsageFileEventTrigger(product_id="PRD-276-377-545", statuses=["closed"]).state_key()
        )


class TestArguments:
    def test_the_trigger_serializes_to_the_arguments_that_rebuild_it(self):
        trigger = ConnectRequestEventTrigger(
            statuses="approved, failed", types=["purchase", "cancel"], product_id="PRD-1", poll_interval=5
        )
        classpath, kwargs = trigger.serialize()
        assert classpath == "connect_provider.triggers.events.ConnectRequestEventTrigger"
        rebuilt = ConnectRequestEventTrigger(**kwargs)
        assert rebuilt.serialize() == (classpath, kwargs)
        assert kwargs["statuses"] == ["approved", "failed"] and kwargs["types"] == ["cancel", "purchase"]

    @pytest.mark.parametrize(
        ("build", "field"),
        [
            (lambda: ConnectUsageFileEventTrigger(statuses=["redy"]), "statuses"),
            (lambda: ConnectUsageFileEventTrigger(statuses=[]), "statuses"),
            (lambda: ConnectUsageFileEventTrigger(product_id="276-377-545"), "product_id"),
            (lambda: ConnectUsageFileEventTrigger(marketplace_id="MP-1) or (1"), "marketplace_id"),
            (lambda: ConnectUsageFileEventTrigger(since="yesterday"), "since"),
            (lambda: ConnectUsageFileEventTrigger(since="2026-10-01"), "since"),
            (lambda: ConnectUsageFileEventTrigger(poll_interval=0), "poll_interval"),
            (lambda: ConnectUsageFileEventTrigger(connect_conn_id=" "), "connect_conn_id"),
            (lambda: ConnectRequestEventTrigger(statuses=["pending"], types=["buy"]), "types"),
            (lambda: ConnectRequestEventTrigger(statuses=["done"]), "statuses"),
            (lambda: ConnectRequestEventTrigger(statuses=["pending"], overlap_seconds=-1), "overlap_seconds"),
        ],
        ids=[
            "unknown-status",
            "no-status",
            "product-id-shape",
            "rql-in-an-id",
            "since-not-a-time",
            "since-a-date",
            "zero-interval",
            "blank-connection",
            "unknown-type",
            "unknown-request-status",
            "negative-overlap",
        ],
    )
    def test_bad_arguments_are_refused_when_the_trigger_is_built(self, build, field):
        with pytest.raises(ConnectValidationError) as raised:
            build()
        assert raised.value.field == field
