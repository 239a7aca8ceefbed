"""Pages side by side: in order, bounded, adaptive to 429, stopped cleanly, over real HTTP.

The local ``listing_server`` (``tests/connect_provider/conftest.py``) answers pages out of order,
limits calls in flight with 429s, serves short pages and broken ones; the sandbox cannot.
"""

from __future__ import annotations

import itertools
import json
import random
import threading

import pytest
from connect_provider.exceptions import ConnectAPIError, ConnectValidationError
from connect_provider.hooks.connect import DEFAULT_MAX_CONCURRENCY, ConnectHook
from connect_provider.hooks.paging import AdaptiveWindow, PagingStopped

FILE_ID = "UF-2026-10-0000000042"


def records(n: int) -> list[dict]:
    return [{"id": f"UR-{i:07d}", "usage": i} for i in range(n)]


def ids_of(pages) -> list[str]:
    return [r["id"] for page in pages for r in json.loads(page.body)]


def later_pages_first(page_size: int, window: int = 4, seed: int = 7):
    """Within each run of ``window`` pages the last is answered first, each with some jitter."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def delay(offset: int) -> float:
        with lock:
            jitter = rng.uniform(0, 0.01)
        return 0.015 * (window - 1 - (offset // page_size) % window) + jitter

    return delay


def page_threads(before: set[threading.Thread] | frozenset = frozenset()) -> list[threading.Thread]:
    """The hook's page workers alive now, other than those in ``before``."""
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("connect-page") and t.is_alive() and t not in before
    ]


class TestPagesSideBySide:
    @pytest.mark.parametrize("concurrency", [1, 2, 4, 8], ids=["one", "two", "four", "eight"])
    def test_pages_answered_out_of_order_are_yielded_in_order_every_record_once(
        self, listing_server, concurrency: int
    ) -> None:
        server = listing_server(records(400))
        server.delay = later_pages_first(page_size=20)
        pages = list(ConnectHook(max_concurrency=concurrency).iter_usage_record_raw_pages(FILE_ID, 20))
        assert [p.offset for p in pages] == list(range(0, 400, 20))
        assert ids_of(pages) == [r["id"] for r in records(400)]
        assert sorted(server.asked) == list(range(0, 400, 20))  # each page asked for once
        if concurrency > 1:
            assert server.answered != sorted(server.answered)  # the server did answer out of order

    @pytest.mark.parametrize("concurrency", [2, 4, 8], ids=["two", "four", "eight"])
    def test_no_more_than_concurrency_calls_are_in_flight_and_more_than_one_is(
        self, listing_server, concurrency: int
    ) -> None:
        server = listing_server(records(600))
        server.delay = lambda offset: 0.03
        assert (
            len(ids_of(ConnectHook(max_concurrency=concurrency).iter_usage_record_raw_pages(FILE_ID, 20)))
            == 600
        )
        assert 1 < server.peak_in_flight <= concurrency

    def test_the_first_page_alone_is_read_before_it_is_yielded(self, listing_server) -> None:
        server = listing_server(records(200))
        pages = ConnectHook(max_concurrency=4).iter_usage_record_raw_pages(FILE_ID, 20)
        assert server.asked == []
        first = next(pages)
        assert (first.offset, first.count, first.total) == (0, 20, 200)
        assert server.asked == [0]
        next(pages)
        server.wait_for_calls(6)
        assert sorted(server.asked) == [0, 20, 40, 60, 80, 100]  # page 2 and the next four
        pages.close()

    @pytest.mark.parametrize("concurrency", [1, 3, 4], ids=["one", "three", "four"])
    def test_the_workers_run_no_more_than_concurrency_pages_ahead_of_the_consumer(
        self, listing_server, concurrency: int
    ) -> None:
        server = listing_server(records(300))
        taken = 0
        for page in ConnectHook(max_concurrency=concurrency).iter_usage_record_raw_pages(FILE_ID, 20):
            taken += 1
            server.wait_idle()
            # The page held here, and at most `concurrency` fetched or in flight after it.
            assert len(server.asked) <= taken + concurrency
            assert page.offset == 20 * (taken - 1)
        assert taken == 15

    def test_a_consumer_that_stops_early_stops_the_workers(self, listing_server) -> None:
        server = listing_server(records(2000))
        server.delay = lambda offset: 0.02
        before = set(threading.enumerate())
        pages = ConnectHook(max_concurrency=4).iter_usage_record_raw_pages(FILE_ID, 20)
        assert [p.offset for p in itertools.islice(pages, 3)] == [0, 20, 40]
        assert page_threads(before)
        pages.close()
        assert page_threads(before) == []
        asked = len(server.asked)
        assert asked <= 3 + 4 + 1
        server.wait_idle()
        assert len(server.asked) == asked  # nothing more is asked for once closed

    def test_a_short_page_drops_the_plan_and_paging_goes_on_from_where_it_ended(self, listing_server) -> None:
        server = listing_server(records(200))
        server.short_pages[40] = 5  # the server sends 5 records for offset 40 though 200 exist
        pages = list(ConnectHook(max_concurrency=4).iter_usage_record_raw_pages(FILE_ID, 20))
        assert [p.offset for p in pages][:4] == [0, 20, 40, 45]
        assert ids_of(pages) == [r["id"] for r in records(200)]

    def test_a_server_that_caps_the_page_size_is_paged_side_by_side_completely(self, listing_server) -> None:
        server = listing_server(records(100), max_limit=7)
        server.delay = lambda offset: 0.01
        pages = list(ConnectHook(max_concurrency=4).iter_usage_record_raw_pages(FILE_ID, 20))
        assert [p.count for p in pages] == [7] * 14 + [2]
        assert ids_of(pages) == [r["id"] for r in records(100)]
        assert server.peak_in_flight > 1

    def test_a_failing_page_is_raised_in_the_consumer_after_the_pages_before_it(self, listing_server) -> None:
        server = listing_server(records(200))
        server.fail_at[100] = 400
        before = set(threading.enumerate())
        got = []
        with pytest.raises(ConnectAPIError, match=r"400 on GET /usage/records: .*broken page") as caught:
            for page in ConnectHook(max_concurrency=4).iter_usage_record_raw_pages(FILE_ID, 20):
                got.append(page.offset)
        assert got == [0, 20, 40, 60, 80]
        assert caught.value.status == 400
        assert page_threads(before) == []

    def test_iter_items_reads_a_long_listing_side_by_side_in_order(self, listing_server) -> None:
        server = listing_server(records(120))
        server.delay = later_pages_first(page_size=10)
        items = list(ConnectHook(max_concurrency=4, page_size=10).iter_items("/usage/records"))
        assert [r["id"] for r in items] == [r["id"] for r in records(120)]
        assert server.peak_in_flight > 1

    def test_a_listing_of_two_pages_makes_no_worker(self, listing_server) -> None:
        server = listing_server(records(30))
        pages = ConnectHook(max_concurrency=4).iter_usage_record_raw_pages(FILE_ID, 20)
        assert [p.count for p in pages] == [20, 10]
        assert server.peak_in_flight == 1 and server.asked == [0, 20]


class TestRateLimitedPaging:
    def test_a_429_storm_shrinks_the_window_and_loses_nothing(self, listing_server, hook_logs) -> None:
        server = listing_server(records(600), max_wait=0.05)
        server.delay = lambda offset: 0.03
        server.max_in_flight = 2  # a gateway that refuses a third call at once, Retry-After: 1
        pages = list(ConnectHook(max_concurrency=4).iter_usage_record_raw_pages(FILE_ID, 20))
        assert ids_of(pages) == [r["id"] for r in records(600)]
        assert server.rate_limited > 0
        shrinks = [line for line in hook_logs() if "rate-limited the listing (429)" in line]
        assert shrinks and "2 page call(s) at once now, was 4" in shrinks[0]
        assert sorted(set(server.answered)) == list(range(0, 600, 20))


class TestAdaptiveWindow:
    def test_a_429_halves_the_window_once_per_burst(self) -> None:
        window = AdaptiveWindow(8)
        tokens = [window.acquire() for _ in range(4)]
        for token in tokens:
            window.release(token, 429)
        assert window.size == 4  # four answers of one burst: one cut
        window.release(window.acquire(), 429)
        assert window.size == 2

    @pytest.mark.parametrize(("cap", "floor"), [(4, 1), (1, 1)], ids=["four", "one"])
    def test_the_window_never_goes_below_one(self, cap: int, floor: int) -> None:
        window = AdaptiveWindow(cap)
        for _ in range(5):
            window.release(window.acquire(), 429)
        assert window.size == floor

    def test_sustained_success_grows_the_window_back_to_the_cap(self) -> None:
        changes = []
        window = AdaptiveWindow(4, on_change=lambda old, new, why: changes.append((old, new, why)))
        window.release(window.acquire(), 429)
        window.release(window.acquire(), 429)
        assert window.size == 1
        for _ in range(20):
            window.release(window.acquire(), 200)
        assert window.size == 4
        assert changes == [
            (4, 2, "429"),
            (2, 1, "429"),
            (1, 2, "sustained success"),
            (2, 3, "sustained success"),
            (3, 4, "sustained success"),
        ]

    def test_retry_after_holds_every_new_attempt_until_it_has_passed(self) -> None:
        now = [100.0]
        window = AdaptiveWindow(4, clock=lambda: now[0])
        window.release(window.acquire(), 429, retry_after=5.0)
        started = threading.Event()
        acquired = threading.Event()

        def attempt() -> None:
            started.set()
            window.acquire()
            acquired.set()

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        assert started.wait(5)
        assert not acquired.wait(0.2)  # the clock has not moved: still paused
        now[0] += 5.0
        with window._cond:
            window._cond.notify_all()
        assert acquired.wait(5)
        thread.join(5)

    def test_a_closed_window_stops_waiting_workers(self) -> None:
        window = AdaptiveWindow(1)
        window.acquire()
        errors = []

        def attempt() -> None:
            try:
                window.acquire()
            except PagingStopped as exc:
                errors.append(exc)

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        window.close()
        thread.join(5)
        assert len(errors) == 1
        with pytest.raises(PagingStopped):
            window.sleep(30)


class TestMaxConcurrencySetting:
    def test_the_default_is_four(self, listing_server) -> None:
        listing_server(records(1))
        assert ConnectHook().settings.max_concurrency == DEFAULT_MAX_CONCURRENCY == 4

    def test_the_connection_extra_sets_it_and_caps_what_a_call_asks_for(self, listing_server) -> None:
        server = listing_server(records(400), max_concurrency="2")
        server.delay = lambda offset: 0.03
        hook = ConnectHook()
        assert hook.settings.max_concurrency == 2
        assert len(ids_of(hook.iter_usage_record_raw_pages(FILE_ID, 20, concurrency=8))) == 400
        assert server.peak_in_flight <= 2

    def test_it_is_never_sent_as_a_header(self, listing_server) -> None:
        listing_server(records(1), max_concurrency=3)
        assert not {k.lower() for k in ConnectHook().get_conn().headers} & {"max_concurrency"}

    @pytest.mark.parametrize(
        "value", [0, 33, "many", 2.5, True], ids=["zero", "33", "text", "fraction", "bool"]
    )
    def test_a_bad_extra_is_refused_naming_it_before_any_call(self, listing_server, value: object) -> None:
        server = listing_server(records(1), max_concurrency=value)
        with pytest.raises(ConnectValidationError) as caught:
            list(ConnectHook().iter_usage_record_raw_pages(FILE_ID))
        assert caught.value.field == "max_concurrency"
        assert "the extra 'max_concurrency' of connection 'cloudblue_connect_default'" in str(caught.value)
        assert "from 1 to 32" in str(caught.value)
        assert server.asked == []

    @pytest.mark.parametrize("value", [0, 33, "four"], ids=["zero", "33", "text"])
    def test_a_bad_call_concurrency_is_refused_before_any_call(self, listing_server, value: object) -> None:
        server = listing_server(records(1))
        with pytest.raises(ConnectValidationError) as caught:
            list(ConnectHook().iter_usage_record_raw_pages(FILE_ID, concurrency=value))
        assert caught.value.field == "concurrency"
        assert server.asked == []

    def test_a_bad_constructor_argument_is_refused_at_once(self) -> None:
        with pytest.raises(ConnectValidationError) as caught:
            ConnectHook(max_concurrency=0)
        assert caught.value.field == "max_concurrency"
