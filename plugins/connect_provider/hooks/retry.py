"""The hook's one retry policy: what is retried, how long to wait, and what is never resent.

Every call :class:`~connect_provider.hooks.connect.ConnectHook` makes, on the synchronous path and
on the triggers' async one, runs one loop (``ConnectHook._exchange``) over :meth:`RetryPolicy.decide`,
which judges each attempt's answer or transport error. Changing what is retried, the back-off or
what counts as a write whose outcome is unknown is a change here, and its tests are in
``tests/connect_provider/hooks/test_retry_policy.py``. Above the hook nothing decides by its own
rules: callers look at an error's class or its ``retryable`` attribute
(:mod:`connect_provider.exceptions`).

Kept apart from the hook's endpoints and session as the Databricks provider keeps its transport:
this module knows HTTP statuses, ``Retry-After`` and the transport libraries' exceptions
(``requests``/``urllib3`` on the sync path, ``aiohttp`` on the async one), nothing of Connect's routes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

__all__ = [
    "AMBIGUOUS",
    "BACKOFF_BASE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_WAIT",
    "DONE",
    "DROPPED",
    "INVALID",
    "RAISE",
    "RETRY",
    "TIMEOUT",
    "TLS",
    "UNSENT",
    "RetryDecision",
    "RetryPolicy",
    "chained",
    "linked_exceptions",
    "parse_retry_after",
    "transport_failure_kind",
]

#: Retries after the first attempt, for transport errors, timeouts, 5xx and 429.
DEFAULT_MAX_RETRIES = 5
#: Cap of one back-off sleep, including a server's ``Retry-After``, seconds.
DEFAULT_MAX_WAIT = 60.0
#: First back-off ceiling; it doubles on every retry (full jitter: sleep uniform in [0, ceiling]).
BACKOFF_BASE = 0.5

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Gateway errors: the gateway lost or timed out on the backend, which may have applied the write.
_AMBIGUOUS_WRITE_STATUSES = frozenset({502, 504})


# ---------------------------------------------------------------------------------- retry policy

#: :class:`RetryDecision` actions: the answer is the result; try again after ``delay``; raise the
#: error this answer or exception stands for; raise ConnectAmbiguousWriteError (never resend).
DONE, RETRY, RAISE, AMBIGUOUS = "done", "retry", "raise", "ambiguous"

#: :func:`transport_failure_kind` values.
UNSENT = "unsent"  # connecting failed (refused, DNS, connect timeout): nothing was sent
TIMEOUT = "timeout"  # sent, no answer in time (read timeout)
DROPPED = "dropped"  # sent, the connection broke before a whole answer came
TLS = "tls"  # the TLS handshake failed: waiting will not help
INVALID = "invalid"  # the call could not be built or sent at all (a bad header, URL...)


class RetryDecision(NamedTuple):
    """What :meth:`RetryPolicy.decide` says about one attempt.

    ``action`` is :data:`DONE`, :data:`RETRY` (sleep ``delay`` seconds first), :data:`RAISE` or
    :data:`AMBIGUOUS`; ``why`` names what decided: ``"Retry-After"`` or ``"back-off"`` for a retry,
    the gateway status or the transport failure's kind otherwise.
    """

    action: str
    delay: float = 0.0
    why: str = ""


def linked_exceptions(
    exc: BaseException, links: Callable[[BaseException], Iterable[BaseException | None]]
) -> Iterator[BaseException]:
    """``exc`` and every exception reachable from it through ``links``, each once, depth first.

    Chains can loop (an exception its own context) and fan out (a wrapper's ``args``), so one
    walk with a seen set serves every search of a chain: what a transport failure wraps, and
    whether an error anywhere in its chain mentions the key.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(links(current))


def chained(exc: BaseException) -> tuple[BaseException | None, ...]:
    """The exceptions Python chained ``exc`` to (``raise ... from`` and the one being handled)."""
    return exc.__cause__, exc.__context__


def _wrapped(exc: BaseException) -> list[BaseException | None]:
    """What a ``requests``/``urllib3`` error wraps (``reason``, exceptions in ``args``), then its chain."""
    inner = [a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)]
    return [getattr(exc, "reason", None), *inner, *chained(exc)]


def _nothing_sent(exc: BaseException) -> bool:
    """True when the request certainly never left: connecting failed (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    return any(
        isinstance(current, (NewConnectionError, ConnectTimeoutError))
        for current in linked_exceptions(exc, _wrapped)
    )


def _aiohttp_failure_kind(exc: BaseException) -> str | None:
    if not type(exc).__module__.startswith("aiohttp"):
        return None
    import aiohttp

    if isinstance(exc, aiohttp.ClientSSLError):
        return TLS
    if isinstance(exc, getattr(aiohttp, "ConnectionTimeoutError", ())):
        return UNSENT
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UNSENT
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.TooManyRedirects)):
        return INVALID
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return TIMEOUT
    if isinstance(exc, aiohttp.ClientError):
        return DROPPED
    return None


def transport_failure_kind(exc: BaseException) -> str:
    """What a failure to get an answer means, for ``requests`` and ``aiohttp`` alike.

    :data:`UNSENT` (safe to resend, even a write), :data:`TIMEOUT` and :data:`DROPPED` (the call may
    have reached Connect), :data:`TLS` and :data:`INVALID` (retrying cannot help).
    """
    kind = _aiohttp_failure_kind(exc)
    if kind is not None:
        return kind
    if isinstance(exc, requests.exceptions.SSLError):
        return TLS
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return UNSENT
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return TIMEOUT
    if isinstance(
        exc,
        (
            requests.exceptions.InvalidHeader,
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidJSONError,
            requests.exceptions.TooManyRedirects,
        ),
    ):
        return INVALID
    if isinstance(exc, requests.exceptions.RequestException):
        return UNSENT if _nothing_sent(exc) else DROPPED
    if isinstance(exc, asyncio.TimeoutError):
        return TIMEOUT
    return INVALID  # raised while building the call (an encoding error, a bad value): never sent


@dataclass(frozen=True)
class RetryPolicy:
    """The hook's one retry policy: after each attempt, :meth:`decide` says what to do next.

    Both paths (the synchronous calls and the triggers' async read) run the same loop over it, so
    what is retried, how long the hook waits and what is never resent are decided here only:

    * an answer below 400 is the result (:data:`DONE`);
    * 429 and 5xx are retried up to ``max_retries`` times, after ``Retry-After`` (seconds or an HTTP
      date) when the server sends it, else after a full-jitter back-off (uniform in [0, ceiling],
      the ceiling ``backoff_base`` doubling per retry), every wait capped by ``max_wait``;
    * a 502/504 to a write is :data:`AMBIGUOUS`: the gateway may have passed it on;
    * other 4xx are raised at once (:data:`RAISE`);
    * a transport failure before anything was sent is retried like a 5xx, one after sending is
      retried for a read and :data:`AMBIGUOUS` for a write, a TLS or local failure is raised.

    ``max_retries=0`` makes one attempt (the connection test).
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    max_wait: float = DEFAULT_MAX_WAIT
    backoff_base: float = BACKOFF_BASE

    @property
    def attempts(self) -> int:
        """Attempts in all: the first one and the retries."""
        return self.max_retries + 1

    def backoff(self, retry_number: int) -> float:
        """Full jitter: uniform in [0, min(max_wait, backoff_base * 2**(retry_number-1))]."""
        ceiling = min(self.max_wait, self.backoff_base * (2 ** (retry_number - 1)))
        return random.uniform(0.0, ceiling)

    def decide(
        self,
        method: str,
        attempt: int,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        error: BaseException | None = None,
        now: dt.datetime | None = None,
    ) -> RetryDecision:
        """Judge attempt number ``attempt`` (1-based) of ``method``: its ``status`` (and response
        ``headers``), or the ``error`` raised instead of an answer."""
        write = method.upper() in _WRITE_METHODS
        if error is not None:
            kind = transport_failure_kind(error)
            if kind in (TLS, INVALID):
                return RetryDecision(RAISE, why=kind)
            if write and kind != UNSENT:
                return RetryDecision(AMBIGUOUS, why=kind)
            if attempt >= self.attempts:
                return RetryDecision(RAISE, why=kind)
            return RetryDecision(RETRY, self.backoff(attempt), "back-off")
        if status is None:
            raise ValueError("decide() needs the status of an answer or the error raised instead")
        if status < 400:
            return RetryDecision(DONE)
        if status != 429 and status < 500:
            return RetryDecision(RAISE, why=str(status))
        if write and status in _AMBIGUOUS_WRITE_STATUSES:
            return RetryDecision(AMBIGUOUS, why=f"a gateway answered {status}")
        if attempt >= self.attempts:
            return RetryDecision(RAISE, why=str(status))
        retry_after = parse_retry_after((headers or {}).get("Retry-After"), now)
        if retry_after is not None:
            return RetryDecision(RETRY, min(retry_after, self.max_wait), "Retry-After")
        return RetryDecision(RETRY, self.backoff(attempt), "back-off")


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; ``None`` if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = (when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
