"""Submitting the outbox's pending rows: claim a batch, cut it into chunks, create each row's request.

The DAG ``connect_subscription_changes`` composes three of its four steps from here, each a function
that needs no task context (tested with a sandbox and no DAG run; the fourth, following, is
:mod:`connect_provider.outbox.follow`):

1. :func:`claim_changes` claims up to ``batch_size`` pending rows under the run's token;
2. :func:`chunk_claim` splits the claimed ids into chunks (the mapped task expands over chunks, so a
   thousand rows make ten task instances, not a thousand);
3. :func:`submit_chunk` runs each row of a chunk through :func:`connect_provider.actions.run_action`
   and writes the result back row by row: the request id and status, or ``rejected`` with the
   reason when the input is wrong, or the row goes back to ``pending`` (with the error) when Connect
   could not be reached, for the next run to retry. As the DAG calls it, a chunk finds its rows'
   assets in one listing per product and works on ``concurrency`` rows side by side, never two of
   one asset (a chunk at Connect's latency is bound by its calls in flight, not by the client).

Why this is safe to run twice: a claim holds a row for one run (token = DAG id + run id, so a task
retry of the same run gets its own rows back); within the run, each task attempt takes a row under
its own attempt token before working on it and renews that hold right before the create, so a
zombie attempt and its retry never both create (:meth:`Outbox.take`, :meth:`Outbox.hold`); a
write-back only lands while the hold is kept; and the actions themselves reuse an open request for
the same asset instead of creating another. A run that dies between the create and the write-back
leaves the row pending under an expiring claim; the next run to take it finds the request and
records it.

What remains: a create whose answer never came (read timeout) and that Connect applies only after
the hold has expired (``lease_seconds``, checked to be longer than the connection lets one create
last), and a process frozen between renewing its hold and sending the create for longer than the
lease. Connect itself answers such a second create with 409 naming the existing request, and a
409 that names one is recorded as that request (``reused``), not as a rejection.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from connect_provider import actions
from connect_provider import validation as v
from connect_provider.arguments import ActionArgs, AssetArgs, PurchaseArgs, request_arguments
from connect_provider.config import CHANGES_DB_CONN_ID, DEFAULT_CONN_ID
from connect_provider.enums import RequestStatus
from connect_provider.exceptions import (
    ConnectAmbiguousWriteError,
    ConnectAPIError,
    ConnectAuthError,
    ConnectConflictError,
    ConnectError,
    ConnectLookupError,
    ConnectTransportError,
    ConnectValidationError,
)
from connect_provider.outbox.table import (
    ATTEMPT_SEPARATOR,
    DEFAULT_LEASE_SECONDS,
    Change,
    ChangeStatus,
    Outbox,
    attempt_token,
)

if TYPE_CHECKING:
    from connect_provider.hooks.connect import ConnectHook

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 2000
DEFAULT_CHUNK_SIZE = 100
#: Rows of a chunk worked on side by side: the connection's ``max_concurrency`` default
#: (``connect_provider.hooks.paging.DEFAULT_MAX_CONCURRENCY``, not imported here: the DAG file
#: imports this module, and the hook's module is heavy to import when a DAG is parsed).
DEFAULT_CONCURRENCY = 4
#: Airflow's default ``[core] max_map_length``: a mapped task expands over at most this many values.
MAX_CHUNKS = 1024
#: Pauses before a chunk tries its transiently failed rows again (on top of the hook's own retries).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (2.0, 10.0)
_ASSET_KEYS = ("asset_id", "asset_external_id", "asset_external_uid")


def run_token(dag_id: str, run_id: str) -> str:
    """The claim token of a DAG run: stable across task retries and reruns of that same run."""
    return f"{dag_id}/{run_id}"


# --------------------------------------------------------------------------- claim and chunk


def claim_changes(
    token: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    changes_conn_id: str = CHANGES_DB_CONN_ID,
) -> dict[str, Any]:
    """Claim a batch for ``token``; returns ``{"token", "ids"}`` (ids only: XCom carries no rows)."""
    with Outbox.from_airflow(changes_conn_id) as outbox:
        outbox.require_table()
        ids = outbox.claim(token, v.positive_int("batch_size", batch_size), lease_seconds=lease_seconds)
    log.info("Claimed %d pending change(s) for %s.", len(ids), token)
    return {"token": token, "ids": ids}


def chunk_claim(
    claim: Mapping[str, Any], chunk_size: int = DEFAULT_CHUNK_SIZE, *, max_chunks: int = MAX_CHUNKS
) -> list[dict[str, Any]]:
    """Split a claim into ``{"token", "ids"}`` chunks of at most ``chunk_size`` ids.

    Never more than ``max_chunks`` chunks (Airflow refuses to expand a mapped task over more than
    ``[core] max_map_length`` values, 1024 by default): chunks grow instead.
    """
    ids = [int(i) for i in claim.get("ids") or []]
    most = v.positive_int("max_chunks", max_chunks)
    size = max(v.positive_int("chunk_size", chunk_size), -(-len(ids) // most))
    return [{"token": claim["token"], "ids": ids[i : i + size]} for i in range(0, len(ids), size)]


# --------------------------------------------------------------------------- submit


@dataclass
class Counts:
    """Counters of one step of the outbox pipeline, as its task's XCom (counts only, no rows)."""

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ChunkReport(Counts):
    """Counts of what one chunk did (the mapped task's XCom)."""

    claimed: int = 0
    submitted: int = 0
    approved: int = 0
    inquiring: int = 0
    rejected: int = 0
    retry_later: int = 0
    lost_claim: int = 0
    reused: int = 0
    skipped: int = 0  # ids no longer held by this token (already written back, or taken over)
    held_elsewhere: int = 0  # rows another attempt of this run is working on: left to it


def arguments_for(change: Change) -> dict[str, Any]:
    """The action's arguments of an outbox row: its JSON ``payload``, plus the asset columns.

    ``asset_external_id``/``asset_external_uid`` columns name the asset when the payload does not;
    when both say something, they must agree (a row that contradicts itself is refused).
    """
    payload = _payload_object(change)
    arguments = dict(payload)
    columns = {"asset_external_id": change.asset_external_id, "asset_external_uid": change.asset_external_uid}
    for key, value in columns.items():
        if value in (None, "") or arguments.get(key) in (None, ""):
            continue
        if str(arguments[key]) != str(value):
            raise ConnectValidationError(
                key, f"the row's column says {value!r} but its payload says {arguments[key]!r}"
            )
    if not any(arguments.get(key) not in (None, "") for key in _ASSET_KEYS):
        arguments.update({k: v for k, v in columns.items() if v not in (None, "")})
    return arguments


_PAYLOAD_FIX = (
    'store the arguments themselves as a JSON object, e.g. {"items": [{"item_id": "...", "quantity": 5}]} '
    "for a change or {} for a suspend (the change type goes in change_type)"
)


def _payload_object(change: Change) -> Mapping[str, Any]:
    """The row's payload as a mapping, or a ConnectValidationError that says what to store instead.

    Why so explicit: a payload written as a JSON string (``'"purchase"'``), or an object encoded
    twice (``'"{\\"quantity\\": 5}"'``, what ``json.dumps`` of an already encoded text gives), is
    valid JSON and passes the database's checks; the fix is the application's, so the message
    says what was found and what to write, not how a parser failed.
    """
    payload = change.payload
    what = "must be a JSON object of the action's arguments"
    if change.payload_error is not None:
        raise ConnectValidationError(
            "payload", f"{what}; the column holds text that is {change.payload_error}: {_PAYLOAD_FIX}"
        )
    if payload is None:
        return {}
    if isinstance(payload, Mapping):
        return payload
    if isinstance(payload, str):
        try:
            inner = json.loads(payload)
        except ValueError:
            inner = None
        if isinstance(inner, Mapping):
            raise ConnectValidationError(
                "payload",
                f"{what}, got a JSON string that holds an encoded object ({shorten(payload)}): the "
                "object was encoded twice; store the object itself, not a string of it",
            )
        raise ConnectValidationError(
            "payload", f"{what}, got the JSON string {shorten(json.dumps(payload))}: {_PAYLOAD_FIX}"
        )
    raise ConnectValidationError("payload", f"{what}, got {shorten(json.dumps(payload))}: {_PAYLOAD_FIX}")


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for an error message (a payload can be any size)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def rejection_reason(exc: Exception) -> str | None:
    """The reason to reject a row for, or None when the row should be tried again later.

    Decided by the error's class and its ``retryable`` attribute (the hook sets it; see
    :mod:`connect_provider.exceptions`), never by status codes: what may succeed later as it is
    (Connect unreachable, 5xx, 429, 408, after the hook's own retries) is about Connect's
    availability, and so is a write whose outcome is unknown, a transport failure and an answer
    that is not Connect's (an API error with no status): the row is tried again. Everything else
    the provider raises is about the row itself (bad input, Connect's 4xx, look-ups that found
    none or several, a request in the wrong status): retrying cannot help, the row is rejected
    with the message. A 409 naming an open request (of another type: the action returns its own
    as reused) keeps the row pending until Connect has decided that one.
    """
    if not isinstance(exc, ConnectError) or exc.retryable or isinstance(exc, _ABOUT_CONNECT):
        return None
    if isinstance(exc, ConnectConflictError) and exc.params.get("request_status") in actions.OPEN_STATUSES:
        return None
    if isinstance(exc, ConnectAPIError) and exc.status is None and not isinstance(exc, ConnectLookupError):
        return None  # an answer that is not Connect's (not JSON, no Content-Range)
    return str(exc)  # the hook's message already carries Connect's error_code and errors


#: Errors about reaching Connect, not about the row, even when waiting alone cannot fix them.
_ABOUT_CONNECT = (ConnectAmbiguousWriteError, ConnectTransportError)


def _row_status_of(request_status: Any) -> str:
    """Outbox status right after a create: only a reused request can already be decided."""
    if request_status == RequestStatus.APPROVED.value:
        return ChangeStatus.APPROVED.value
    if request_status == RequestStatus.INQUIRING.value:
        return ChangeStatus.INQUIRING.value
    # Failed or revoked reused requests stay 'submitted': following them fetches the reason.
    return ChangeStatus.SUBMITTED.value


class _HoldLost(Exception):
    """The attempt no longer holds the row it was about to create a request for.

    Deliberately not a ConnectError: nothing in the actions may catch it on its way out.
    """


def lease_covers_a_create(hook: ConnectHook, lease_seconds: float) -> None:
    """Refuse a lease shorter than the longest one create can last with the hook's settings.

    Why: an attempt renews its hold on a row right before the create; the hold keeps every other
    run off the row for ``lease_seconds``. If a create could outlast it, another run could take the
    row, find no request yet and create a second one. The bound is every try of one call at its
    full connect and read timeouts plus every back-off at ``max_wait``.
    """
    settings = hook.settings
    tries = settings.max_retries + 1
    longest = tries * (settings.connect_timeout + settings.timeout) + settings.max_retries * settings.max_wait
    if float(lease_seconds) <= longest:
        raise ConnectValidationError(
            "lease_seconds",
            f"{lease_seconds} s is not longer than one create can last with connection "
            f"{hook.connect_conn_id!r} ({longest:.0f} s: {tries} tries of up to "
            f"{settings.connect_timeout + settings.timeout:.0f} s and back-offs of up to "
            f"{settings.max_wait:.0f} s); another run could take a row while its create is in flight. "
            "Raise lease_seconds, or lower the connection's timeout, max_retries or max_wait",
        )


def _look_up_key(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """The key a remembered look-up is kept under: the hook method, its arguments, its keywords.

    Why one function: the chunk's preparation removes repeated look-ups by this key before asking
    Connect, and the rows find the answers under it; two spellings of it would drift apart.
    """
    return (name, args, tuple(sorted(kwargs.items())))


class _SharedMemo:
    """The remembered configuration look-ups of one chunk, shared by the threads of that chunk.

    Why a lock per key: the chunk's first rows start side by side and all need the same
    marketplace; one of them asks Connect, the others wait for its answer instead of asking too.
    A failed look-up is not remembered (the next row asks again).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[Any, ...], Any] = {}
        self._key_locks: dict[tuple[Any, ...], threading.Lock] = {}

    def get(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """A copy of the value remembered for ``key``, computed once."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in self._values:
                self._values[key] = compute()
            value = self._values[key]
        return copy.deepcopy(value)


class ChunkLookups:
    """The hook of one chunk, remembering Connect's configuration look-ups for that chunk.

    Why: a purchase resolves its marketplace, its connection (product + hub) and its tier accounts
    before it creates anything, and a chunk's purchases mostly share them; asking Connect again for
    each row would triple the calls of a purchase. Only those read-only look-ups of configuration
    are remembered (a failed look-up is not), for the few minutes a chunk lasts; assets and
    requests are read fresh, since they are what the chunk changes (the chunk's one listing of its
    assets, :class:`_ListedAsset`, is read right before the rows). Every other attribute is the
    hook's own. The threads of one chunk each have their own hook and share one ``memo``.
    """

    CACHED = frozenset({"find_marketplace", "find_connection", "find_tier_account"})

    def __init__(self, hook: ConnectHook, memo: _SharedMemo | None = None) -> None:
        self._hook = hook
        self._memo = memo or _SharedMemo()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._hook, name)
        if name not in self.CACHED:
            return attr

        def remembered(*args: Any, **kwargs: Any) -> Any:
            return self._memo.get(_look_up_key(name, args, kwargs), lambda: attr(*args, **kwargs))

        return remembered

    def __repr__(self) -> str:
        return f"ChunkLookups({self._hook!r})"


@dataclass(frozen=True)
class _Listed:
    """What the chunk's asset listing found for one row: the look-up it stands for, and its answer."""

    product_id: str | None
    external_id: str
    assets: list[dict[str, Any]]


class _ListedAsset:
    """One row's hook while the chunk's listing of its asset is unused: it answers the row's first look-up.

    The row's first ``find_assets`` that asks what the listing asked (same external id, same
    product filter) gets the listed assets, narrowed by ``external_uid`` as Connect would; any
    other look-up, and every later one (the look-up after an ambiguous create must see what that
    create made), goes to Connect. So does the look-up of assets another row of the chunk has
    worked on since the listing (``untouched`` says no: a row named by ``asset_id`` may act on an
    asset listed under its external id); the listing is then stale, and Connect says what is.
    """

    def __init__(self, hook: Any, listed: _Listed | None, untouched: Callable[[list[str]], bool]) -> None:
        self._hook = hook
        self._listed = listed
        self._untouched = untouched

    def find_assets(
        self, external_id: str | None = None, external_uid: str | None = None, product_id: str | None = None
    ) -> list[dict[str, Any]]:
        listed, self._listed = self._listed, None
        if (
            listed is not None
            and (listed.external_id, listed.product_id) == (external_id, product_id)
            and self._untouched([str(a.get("id")) for a in listed.assets])
        ):
            matching = [
                a for a in listed.assets if external_uid is None or a.get("external_uid") == external_uid
            ]
            return copy.deepcopy(matching)
        return self._hook.find_assets(
            external_id=external_id, external_uid=external_uid, product_id=product_id
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hook, name)


class _HeldRowHook:
    """The chunk's hook while one row is worked on: every write first renews the row's hold.

    ``create_request`` (and a plain ``post``) call ``keep_hold`` first and are sent only when it
    returns True; otherwise :class:`_HoldLost` is raised and nothing reaches Connect. Reads go
    straight through.
    """

    WRITES = frozenset({"create_request", "post"})

    def __init__(self, hook: Any, keep_hold: Callable[[], bool]) -> None:
        self._hook = hook
        self._keep_hold = keep_hold

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._hook, name)
        if name not in self.WRITES:
            return attr

        def held(*args: Any, **kwargs: Any) -> Any:
            if not self._keep_hold():
                raise _HoldLost(f"{name}: this attempt no longer holds the row")
            return attr(*args, **kwargs)

        return held

    def __repr__(self) -> str:
        return f"_HeldRowHook({self._hook!r})"


def asset_lane(change: Change) -> tuple[str, Any]:
    """The asset a row acts on, as far as the row says: rows of one lane are never in flight together.

    Why: the claim keeps changes of one ``asset_external_id`` column in order, but rows that name
    their asset only in the payload are not ordered by it; a chunk that runs rows side by side
    keeps each asset's rows one after the other, in id order. A row whose arguments cannot be
    read (it is rejected before any call) is a lane of its own.
    """
    try:
        arguments = arguments_for(change)
    except ConnectValidationError:
        return ("row", change.id)
    for key in ("asset_id", "asset_external_id"):
        if arguments.get(key) not in (None, ""):
            return (key, str(arguments[key]))
    return ("row", change.id)


def _lanes(rows: Sequence[Change]) -> list[list[Change]]:
    """The rows grouped by :func:`asset_lane`, each lane in id order, lanes by their first row."""
    lanes: dict[tuple[str, Any], list[Change]] = {}
    for change in sorted(rows, key=lambda c: c.id):
        lanes.setdefault(asset_lane(change), []).append(change)
    return list(lanes.values())


def _checked(change: Change) -> ActionArgs | None:
    """The row's checked arguments, or None when its input is refused (it is rejected, no call)."""
    try:
        return request_arguments(change.change_type, arguments_for(change)).checked()
    except ConnectValidationError:
        return None


def _asset_look_up(args: ActionArgs) -> tuple[str | None, str] | None:
    """(product filter, external id) of the row's first asset look-up, or None when it makes none.

    A purchase that may reuse an existing asset looks its external id up within its product;
    a change, suspend, resume or cancel named by external id looks it up alone. Rows named by
    ``asset_id`` make a ``GET /assets/{id}``, not a listing.
    """
    if isinstance(args, PurchaseArgs):
        return (args.product_id, str(args.asset_external_id)) if args.reuse_existing_request else None
    if isinstance(args, AssetArgs) and not args.asset_id and args.asset_external_id:
        return (None, str(args.asset_external_id))
    return None


def _preparations(chunk: _ChunkRun, rows: Sequence[Change]) -> list[Callable[[], None]]:
    """What a chunk reads before its rows: one asset listing per product filter, for the first row
    of every lane, and every distinct configuration look-up of its purchases."""
    firsts = {lane[0].id: args for lane in _lanes(rows) if (args := _checked(lane[0])) is not None}
    wanted = {row_id: look_up for row_id, args in firsts.items() if (look_up := _asset_look_up(args))}
    by_product: dict[str | None, list[str]] = {}
    for product_id, external_id in wanted.values():
        by_product.setdefault(product_id, []).append(external_id)
    calls = dict.fromkeys(
        _look_up_key(name, call_args, kwargs)
        for args in firsts.values()
        if isinstance(args, PurchaseArgs)
        for name, call_args, kwargs in actions.purchase_look_ups(args)
    )
    listings = [partial(chunk.list_assets, product, ids, wanted) for product, ids in by_product.items()]
    return [*listings, *(partial(chunk.look_up, *call) for call in calls)]


class _ChunkRun:
    """One attempt at a chunk: its shared state, and each thread's own hook and outbox.

    Why one outbox and one hook per thread: a DB-API connection and a requests Session serve one
    thread. The report's counters are updated under a lock; the configuration look-ups are shared
    (:class:`_SharedMemo`). With ``concurrency`` 1 everything runs in the caller's thread, on the
    outbox and hook it gave.
    """

    def __init__(
        self,
        outbox: Outbox,
        hook: ConnectHook,
        token: str,
        attempt: str,
        run: Callable[[ConnectHook, str, Mapping[str, Any]], actions.ActionResult],
        *,
        concurrency: int,
        hook_factory: Callable[[], ConnectHook],
    ) -> None:
        self.outbox, self.hook, self.token, self.attempt, self.run = outbox, hook, token, attempt, run
        self.concurrency = concurrency
        self.report = ChunkReport()
        self.listed: dict[int, _Listed] = {}
        self._hook_factory = hook_factory
        self._memo = _SharedMemo()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._opened: list[tuple[Outbox, ConnectHook]] = []
        self._touched: set[str] = set()

    def count(self, field: str) -> None:
        with self._lock:
            setattr(self.report, field, getattr(self.report, field) + 1)

    def _resources(self) -> tuple[Outbox, ChunkLookups]:
        """This thread's outbox and hook (the caller's own when the chunk runs in one thread)."""
        if self.concurrency == 1:
            return self.outbox, ChunkLookups(self.hook, self._memo)
        own = getattr(self._local, "own", None)
        if own is None:
            own = self._local.own = (self.outbox.sibling(), self._hook_factory())
            with self._lock:
                self._opened.append(own)
        return own[0], ChunkLookups(own[1], self._memo)

    def touch(self, asset_ids: list[str], *, unless_touched: bool = False) -> bool:
        """Note that a row works on these assets; with ``unless_touched``, only if no row did yet.

        Why: the chunk's listing of its assets was read before its rows changed them; a row that
        would use it for an asset another row has worked on looks that asset up afresh instead.
        """
        with self._lock:
            if unless_touched and not self._touched.isdisjoint(asset_ids):
                return False
            self._touched.update(asset_ids)
        return True

    def prepare(self, rows: Sequence[Change]) -> None:
        """Before the rows, side by side: the chunk's asset listings and its purchases' look-ups.

        Why side by side: they do not depend on each other, and one after the other they would
        hold every lane up for a round trip each (a listing per product filter; the marketplace,
        connection and tier accounts that the first purchase would otherwise ask for in turn).
        """
        jobs = _preparations(self, rows)
        if self.concurrency == 1:
            for job in jobs:
                job()
            return
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="connect-chunk-prep") as pool:
            list(pool.map(lambda job: job(), jobs))

    def list_assets(
        self, product_id: str | None, external_ids: list[str], wanted: Mapping[int, tuple[str | None, str]]
    ) -> None:
        """One listing of the chunk's assets; one that fails (but for a refused API key) is logged,
        and its rows look their assets up themselves, failing with their own reasons."""
        hook = self._resources()[1]
        try:
            found = actions.find_assets_by_external_id(hook, external_ids, product_id=product_id)
        except ConnectAuthError:
            raise
        except Exception as exc:
            log.warning(
                "Listing the assets of %d change(s) failed; each looks its asset up itself: %s",
                len(external_ids),
                exc,
            )
            return
        for row_id, (product, external_id) in wanted.items():
            if product == product_id and external_id in found:
                self.listed[row_id] = _Listed(product, external_id, found[external_id])

    def look_up(self, name: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]) -> None:
        """One configuration look-up, remembered for the rows; a failed one is left to the rows."""
        try:
            getattr(self._resources()[1], name)(*args, **dict(kwargs))
        except ConnectAuthError:
            raise
        except Exception as exc:
            log.info(
                "Look-up %s%r failed before the rows; the rows that need it ask again: %s", name, args, exc
            )

    def submit(self, change: Change) -> str | None:
        """Submit one row on this thread's outbox and hook; the error text when it should be tried again."""
        outbox, lookups = self._resources()
        listed = self.listed.pop(change.id, None)

        def untouched(asset_ids: list[str]) -> bool:
            return self.touch(asset_ids, unless_touched=True)

        return _submit_one(outbox, _ListedAsset(lookups, listed, untouched), self, change)

    def submit_round(self, todo: Sequence[Change]) -> list[tuple[Change, str]]:
        """Every row of ``todo``, ``concurrency`` lanes at a time; the rows to try again, with why."""
        stop = threading.Event()

        def lane_worker(lane: Sequence[Change]) -> list[tuple[Change, str]]:
            failed = []
            for change in lane:
                if stop.is_set():
                    break  # the chunk stops: rows not reached are released with the rest
                try:
                    error = self.submit(change)
                except BaseException:
                    stop.set()
                    raise
                if error is not None:
                    failed.append((change, error))
            return failed

        if self.concurrency == 1:  # one lane: every row in id order, which keeps each asset's too
            return lane_worker(sorted(todo, key=lambda c: c.id))
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="connect-chunk") as pool:
            futures = [pool.submit(lane_worker, lane) for lane in _lanes(todo)]
        # Every lane has ended here: an error is raised only once no row is in flight.
        return [pair for future in futures for pair in future.result()]

    def close(self) -> None:
        for outbox, hook in self._opened:
            outbox.close()
            hook.close()


def submit_chunk(
    outbox: Outbox,
    hook: ConnectHook,
    token: str,
    ids: Sequence[int],
    *,
    run: Callable[[ConnectHook, str, Mapping[str, Any]], actions.ActionResult] | None = None,
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    attempt_id: str | None = None,
    concurrency: int = 1,
    batch_assets: bool = False,
    hook_factory: Callable[[], ConnectHook] | None = None,
) -> ChunkReport:
    """Create the Connect request of every row of the chunk still held by the run ``token``.

    This call is one task attempt: it takes each row under its own attempt token
    (``attempt_id``, a fresh random id by default) before working on it, and renews that hold
    right before the create, so an earlier attempt still running (a zombie) and this one never
    both create a row's request: a row another attempt holds is left to it (``held_elsewhere``).

    Each row is written back as soon as its request exists, so a crash loses at most the rows in
    flight (whose requests the next run finds and reuses). A per-row error never stops the
    chunk: invalid input rejects the row; a transient error (Connect unreachable, 5xx, 429 after
    the hook's own retries) is tried again after each of ``retry_delays``, and a row still failing
    then goes back to ``pending`` with the error, for the next run. An authentication error stops
    the chunk (every row would fail the same way): its rows are released and the error is raised.

    ``concurrency`` rows go side by side (at most the connection's ``max_concurrency``), each
    thread with an outbox and a hook of its own (``hook_factory``; default: a new ``ConnectHook``
    of ``hook``'s connection), never two rows of one asset (:func:`asset_lane`). ``batch_assets``:
    one asset listing per product, and the configuration look-ups, first (:meth:`_ChunkRun.prepare`).
    """
    hook.get_conn()  # a broken connection fails the task here, instead of rejecting every row
    lease_covers_a_create(hook, lease_seconds)
    chunk = _ChunkRun(
        outbox,
        hook,
        token,
        attempt_token(token, attempt_id or uuid.uuid4().hex[:16]),
        run or actions.run_action,
        concurrency=min(v.positive_int("concurrency", concurrency), hook.settings.max_concurrency),
        hook_factory=hook_factory or _hook_factory(hook),
    )
    rows = outbox.claimed(token, ids)
    chunk.report.claimed, chunk.report.skipped = len(rows), len({int(i) for i in ids}) - len(rows)
    try:
        if batch_assets:
            chunk.prepare(rows)
        todo = _submit_in_rounds(rows, retry_delays, chunk.submit_round)
    except BaseException:
        # Rows this attempt holds (waiting for a retry) and rows it never reached.
        row_ids = [c.id for c in rows]
        outbox.release(chunk.attempt, row_ids)
        outbox.release(token, row_ids)
        raise
    finally:
        chunk.close()
    _leave_to_the_next_run(outbox, chunk, todo)
    return chunk.report


def _leave_to_the_next_run(outbox: Outbox, chunk: _ChunkRun, todo: Sequence[tuple[Change, str]]) -> None:
    """Release the rows still failing after the last retry, each with its error, for the next run."""
    for change, error in todo:
        log.warning("Change %s stays pending for the next run: %s", change.id, error)
        outbox.release(chunk.attempt, [change.id], error=f"will retry: {error}")
        chunk.report.retry_later += 1


def _hook_factory(hook: ConnectHook) -> Callable[[], ConnectHook]:
    """New hooks of ``hook``'s connection (its constructor overrides are not carried over)."""
    from connect_provider.hooks.connect import ConnectHook

    return lambda: ConnectHook(hook.connect_conn_id)


def _submit_in_rounds(
    rows: Sequence[Change],
    retry_delays: Sequence[float],
    submit_round: Callable[[Sequence[Change]], list[tuple[Change, str]]],
) -> list[tuple[Change, str]]:
    """Submit every row, then the transiently failed ones again after each delay; the rows still
    failing, with their last errors."""
    todo = list(rows)
    failed: list[tuple[Change, str]] = []
    for round_, delay in enumerate([0.0, *retry_delays]):
        if not todo:
            break
        if round_:
            log.info("Retrying %d change(s) after a transient error, in %.1fs.", len(todo), delay)
            time.sleep(delay)
        failed = submit_round(todo)
        todo = [change for change, _ in failed]
    return failed


def _submit_one(outbox: Outbox, lookups: Any, chunk: _ChunkRun, change: Change) -> str | None:
    """Submit one row and write it back; returns the error text when it should be tried again."""
    attempt = chunk.attempt
    if not outbox.take(change.id, chunk.token, attempt):
        _count_untaken(outbox, chunk.token, change, chunk.count)
        return None
    hook = _HeldRowHook(lookups, lambda: outbox.hold(change.id, attempt))
    try:
        arguments = arguments_for(change)
        actions.validate_action(change.change_type, arguments)
        if arguments.get("asset_id"):
            chunk.touch([str(arguments["asset_id"])])
        result = chunk.run(hook, change.change_type, arguments)  # type: ignore[arg-type]
        if result.asset_id:
            chunk.touch([str(result.asset_id)])
    except ConnectAuthError:
        raise
    except _HoldLost:
        chunk.count("lost_claim")
        log.warning(
            "Change %s: this attempt lost its hold on the row before creating; nothing sent.", change.id
        )
        return None
    except Exception as exc:
        # A 409 naming the row's own request never gets here: the actions return that request as
        # reused. One that does names a request of another type in the way (see _rejection_reason).
        reason = rejection_reason(exc)
        if reason is None:
            log.warning("Change %s (%s): transient error: %s", change.id, change.change_type, exc)
            return f"{type(exc).__name__}: {exc}"
        return _reject(outbox, attempt, change, reason, chunk.count)
    return _write_back(outbox, attempt, change, result, chunk.count)


def _count_untaken(outbox: Outbox, token: str, change: Change, count: Callable[[str], None]) -> None:
    """Why a row could not be taken: another attempt of this run holds it, or it is gone."""
    current = outbox.get([change.id])
    holder = current[0].claim_token if current and current[0].status == ChangeStatus.PENDING.value else None
    if holder is not None and holder.startswith(f"{token}{ATTEMPT_SEPARATOR}"):
        count("held_elsewhere")
        log.warning(
            "Change %s is held by another attempt of this run (%s), which may still be creating its "
            "request: left to it (another run takes it if that attempt never writes it back).",
            change.id,
            holder,
        )
    else:
        count("skipped")


def _reject(outbox: Outbox, attempt: str, change: Change, reason: str, count: Callable[[str], None]) -> None:
    log.info("Change %s (%s) rejected: %s", change.id, change.change_type, reason)
    count("rejected" if outbox.mark_rejected(change.id, attempt, reason) else "lost_claim")
    return None


def _write_back(
    outbox: Outbox, attempt: str, change: Change, result: actions.ActionResult, count: Callable[[str], None]
) -> None:
    status = _row_status_of(result.status)
    if outbox.mark_submitted(change.id, attempt, result.request_id, status):
        count(status)
        if result.reused:
            count("reused")
        log.info(
            "Change %s (%s) -> request %s (%s%s).",
            change.id,
            change.change_type,
            result.request_id,
            result.status,
            ", reused" if result.reused else "",
        )
    else:
        # The lease expired and another run holds the row: it will find this same request.
        count("lost_claim")
        log.warning("Change %s: claim lost before writing back request %s.", change.id, result.request_id)
    return None


def submit_claimed_chunk(
    chunk: Mapping[str, Any],
    *,
    connect_conn_id: str = DEFAULT_CONN_ID,
    changes_conn_id: str = CHANGES_DB_CONN_ID,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> dict[str, int]:
    """:func:`submit_chunk` for a chunk from :func:`chunk_claim`, with hook and outbox by conn id.

    Each call is one task attempt with its own attempt token. As the DAG runs it: ``concurrency``
    rows side by side (the task takes as many slots of its pool) and the chunk's assets found in
    one listing.
    """
    from connect_provider.hooks.connect import ConnectHook

    hook = ConnectHook(connect_conn_id)
    with Outbox.from_airflow(changes_conn_id) as outbox:
        report = submit_chunk(
            outbox,
            hook,
            str(chunk["token"]),
            [int(i) for i in chunk["ids"]],
            lease_seconds=lease_seconds,
            concurrency=concurrency,
            batch_assets=True,
            hook_factory=lambda: ConnectHook(connect_conn_id),
        )
    log.info("Chunk done: %s", report.to_dict())
    return report.to_dict()
