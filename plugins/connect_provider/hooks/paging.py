"""Concurrent offset paging for :class:`~connect_provider.hooks.connect.ConnectHook`: no HTTP here.

Why: against the real Connect every page is a round trip over the internet plus Connect's own
query time (about 150 ms), and the page count is known from the first page's ``Content-Range``.
Asking for the next pages side by side turns ``pages x latency`` into ``pages x latency /
concurrency``. What must not change is what the consumer sees: the same pages, in the same order,
as the sequential loop would have read them, so the count, gap and id checks of the consumers
hold exactly as before.

Two pieces, both free of any HTTP client (the hook sends, through its one retry policy):

* :class:`AdaptiveWindow`: how many calls may be in flight at once. It starts at the cap; a 429
  halves it (once per burst: the answers of calls sent before the cut do not cut it again) and
  holds every new attempt until the server's ``Retry-After`` has passed; each ``size``
  consecutive successes grow it by one, back to the cap.
* :class:`PagesAhead`: worker threads that fetch pages at offsets planned ahead of the consumer,
  at most ``depth`` of them outstanding, handed out by offset. A page the plan did not foresee (a
  short page moves every later offset) is fetched by the caller and the plan starts again from
  there: speculation may be wasted, never wrong.

Workers never share an HTTP session with each other or with the consumer's thread (a
``requests.Session`` is not safe across concurrent calls): the hook gives each worker thread its
own, and :meth:`PagesAhead.close` closes them all when the consumer stops, early or not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["DEFAULT_MAX_CONCURRENCY", "MAX_CONCURRENCY", "AdaptiveWindow", "PagesAhead", "PagingStopped"]

#: Page calls one listing runs side by side once the first page told the total (connection extra
#: ``max_concurrency``). At Connect's ~150 ms per page, 4 cut the wait of a long listing by 4.
DEFAULT_MAX_CONCURRENCY = 4
#: The most a connection or a caller may ask for.
MAX_CONCURRENCY = 32

_T = TypeVar("_T")


class PagingStopped(Exception):
    """Raised in a worker waiting for the window once the consumer has stopped."""


class AdaptiveWindow:
    """At most ``size`` attempts in flight; a 429 halves ``size`` and pauses new attempts.

    ``acquire()`` returns a token (the window's epoch when the attempt started) that goes back to
    ``release()``: a 429 cuts the window only if the attempt started after the last cut, so the
    four answers of one burst of four calls cut it once, as TCP does once per round trip.
    ``on_change(old, new, why)`` is called outside the lock when the size changes.
    """

    def __init__(
        self,
        cap: int,
        *,
        on_change: Callable[[int, int, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cap < 1:
            raise ValueError("the window's cap must be at least 1")
        self.cap = cap
        self._size = cap
        self._in_flight = 0
        self._epoch = 0
        self._successes = 0
        self._resume_at = 0.0
        self._closed = False
        self._on_change = on_change
        self._clock = clock
        self._cond = threading.Condition()

    @property
    def size(self) -> int:
        """Attempts allowed in flight now (1 to ``cap``)."""
        return self._size

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def acquire(self) -> int:
        """Wait for a free slot and the end of any pause; the token for :meth:`release`."""
        with self._cond:
            while True:
                if self._closed:
                    raise PagingStopped("the consumer of the pages stopped")
                wait = self._resume_at - self._clock()
                if wait <= 0 and self._in_flight < self._size:
                    self._in_flight += 1
                    return self._epoch
                self._cond.wait(timeout=wait if wait > 0 else None)

    def release(self, token: int, status: int | None, retry_after: float | None = None) -> None:
        """One attempt ended: ``status`` of its answer (``None``: no answer), ``Retry-After`` seconds."""
        change: tuple[int, int, str] | None = None
        with self._cond:
            self._in_flight -= 1
            if status == 429:
                change = self._rate_limited(token, retry_after)
            elif status is not None and status < 400:
                change = self._succeeded()
            self._cond.notify_all()
        if change is not None and self._on_change is not None:
            self._on_change(*change)

    def _rate_limited(self, token: int, retry_after: float | None) -> tuple[int, int, str] | None:
        self._successes = 0
        if retry_after is not None and retry_after > 0:
            self._resume_at = max(self._resume_at, self._clock() + retry_after)
        if token != self._epoch:
            return None  # sent before the last cut: that cut already answered this burst
        self._epoch += 1
        old, self._size = self._size, max(1, self._size // 2)
        return (old, self._size, "429") if old != self._size else None

    def _succeeded(self) -> tuple[int, int, str] | None:
        self._successes += 1
        if self._size >= self.cap or self._successes < self._size:
            return None
        self._successes = 0
        old, self._size = self._size, self._size + 1
        return old, self._size, "sustained success"

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (a retry's back-off), cut short with PagingStopped if the consumer stops."""
        deadline = self._clock() + seconds
        with self._cond:
            while not self._closed:
                left = deadline - self._clock()
                if left <= 0:
                    return
                self._cond.wait(timeout=left)
            raise PagingStopped("the consumer of the pages stopped")

    def close(self) -> None:
        """Wake every waiting worker: they stop with PagingStopped instead of starting a call."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class PagesAhead(Generic[_T]):
    """Pages fetched by worker threads at planned offsets, at most ``depth`` outstanding.

    ``fetch(offset)`` runs in a worker thread and returns the page (or raises: the error is
    raised again to whoever :meth:`take` s that offset). ``on_close`` runs once the workers are
    done (the hook closes the workers' sessions there).
    """

    def __init__(
        self,
        fetch: Callable[[int], _T],
        *,
        workers: int,
        depth: int,
        window: AdaptiveWindow,
        name: str = "connect-pages",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._depth = max(1, depth)
        self._window = window
        self._on_close = on_close
        self._executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name)
        self._planned: dict[int, Future[_T]] = {}
        self._closed = False

    @property
    def planned(self) -> list[int]:
        """The offsets asked for and not taken yet, in order."""
        return sorted(self._planned)

    def plan(self, start: int, step: int, end: int) -> None:
        """Ask for pages at ``start, start+step, ...`` below ``end``, keeping ``depth`` outstanding."""
        offset = start
        while len(self._planned) < self._depth and offset < end:
            if offset not in self._planned:
                self._planned[offset] = self._executor.submit(self._fetch, offset)
            offset += step

    def take(self, offset: int) -> _T | None:
        """The page at ``offset`` if it was planned (waiting for it), else ``None``.

        A miss means the listing moved differently than planned: every other planned page is
        dropped (a call under way finishes and is discarded) and the caller fetches this one.
        """
        future = self._planned.pop(offset, None)
        if future is None:
            self.drop()
            return None
        return future.result()

    def drop(self) -> None:
        """Forget every planned page (cancelling those not started)."""
        for future in self._planned.values():
            future.cancel()
        self._planned.clear()

    def close(self) -> None:
        """Stop: nothing new starts, waiting workers wake, calls under way end, then ``on_close``."""
        if self._closed:
            return
        self._closed = True
        self.drop()
        self._window.close()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._on_close is not None:
            self._on_close()
