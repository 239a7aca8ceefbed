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
   could not be reached, for the next run to retry.

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
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from connect_provider import actions
from connect_provider import validation as v
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


class ChunkLookups:
    """The hook of one chunk, remembering Connect's configuration look-ups for that chunk.

    Why: a purchase resolves its marketplace, its connection (product + hub) and its tier accounts
    before it creates anything, and a chunk's purchases mostly share them; asking Connect again for
    each row would triple the calls of a purchase. Only those read-only look-ups of configuration
    are remembered (a failed look-up is not), for the few minutes a chunk lasts; assets and
    requests are always read fresh, since they are what the chunk changes. Every other attribute
    is the hook's own.
    """

    CACHED = frozenset({"find_marketplace", "find_connection", "find_tier_account"})

    def __init__(self, hook: ConnectHook) -> None:
        self._hook = hook
        self._memo: dict[tuple[Any, ...], Any] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._hook, name)
        if name not in self.CACHED:
            return attr

        def remembered(*args: Any, **kwargs: Any) -> Any:
            key = (name, args, tuple(sorted(kwargs.items())))
            if key not in self._memo:
                self._memo[key] = attr(*args, **kwargs)
            return copy.deepcopy(self._memo[key])

        return remembered

    def __repr__(self) -> str:
        return f"ChunkLookups({self._hook!r})"


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
) -> ChunkReport:
    """Create the Connect request of every row of the chunk still held by the run ``token``.

    This call is one task attempt: it takes each row under its own attempt token
    (``attempt_id``, a fresh random id by default) before working on it, and renews that hold
    right before the create, so an earlier attempt still running (a zombie) and this one never
    both create a row's request: a row another attempt holds is left to it (``held_elsewhere``).

    Each row is written back as soon as its request exists, so a crash loses at most the row in
    flight (whose request the next run finds and reuses). A per-row error never stops the
    chunk: invalid input rejects the row; a transient error (Connect unreachable, 5xx, 429 after
    the hook's own retries) is tried again after each of ``retry_delays``, and a row still failing
    then goes back to ``pending`` with the error, for the next run. An authentication error stops
    the chunk (every row would fail the same way): its rows are released and the error is raised.
    """
    run = run or actions.run_action
    report = ChunkReport()
    hook.get_conn()  # a broken connection fails the task here, instead of rejecting every row
    lease_covers_a_create(hook, lease_seconds)
    attempt = attempt_token(token, attempt_id or uuid.uuid4().hex[:16])
    lookups = ChunkLookups(hook)
    rows = outbox.claimed(token, ids)
    report.claimed = len(rows)
    report.skipped = len({int(i) for i in ids}) - len(rows)
    errors: dict[int, str] = {}
    try:
        todo = _submit_in_rounds(rows, retry_delays, errors, lambda change: _submit_one(
            outbox, lookups, token, attempt, change, run, report
        ))  # fmt: skip
    except BaseException:
        # Rows this attempt holds (in flight, or waiting for a retry) and rows it never reached.
        row_ids = [c.id for c in rows]
        outbox.release(attempt, row_ids)
        outbox.release(token, row_ids)
        raise
    for change in todo:
        log.warning("Change %s stays pending for the next run: %s", change.id, errors[change.id])
        outbox.release(attempt, [change.id], error=f"will retry: {errors[change.id]}")
        report.retry_later += 1
    return report


def _submit_in_rounds(
    rows: Sequence[Change],
    retry_delays: Sequence[float],
    errors: dict[int, str],
    submit: Callable[[Change], str | None],
) -> list[Change]:
    """Submit every row, then the transiently failed ones again after each delay; the rows still
    failing (their errors recorded in ``errors``)."""
    todo = list(rows)
    for round_, delay in enumerate([0.0, *retry_delays]):
        if not todo:
            break
        if round_:
            log.info("Retrying %d change(s) after a transient error, in %.1fs.", len(todo), delay)
            time.sleep(delay)
        failed: list[Change] = []
        for change in todo:
            error = submit(change)
            if error is not None:
                errors[change.id] = error
                failed.append(change)
        todo = failed
    return todo


def _submit_one(
    outbox: Outbox,
    lookups: ChunkLookups,
    token: str,
    attempt: str,
    change: Change,
    run: Callable[[ConnectHook, str, Mapping[str, Any]], actions.ActionResult],
    report: ChunkReport,
) -> str | None:
    """Submit one row and write it back; returns the error text when it should be tried again."""
    if not outbox.take(change.id, token, attempt):
        _count_untaken(outbox, token, change, report)
        return None
    hook = _HeldRowHook(lookups, lambda: outbox.hold(change.id, attempt))
    try:
        arguments = arguments_for(change)
        actions.validate_action(change.change_type, arguments)
        result = run(hook, change.change_type, arguments)  # type: ignore[arg-type]
    except ConnectAuthError:
        raise
    except _HoldLost:
        report.lost_claim += 1
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
        return _reject(outbox, attempt, change, reason, report)
    return _write_back(outbox, attempt, change, result.request_id, result.status, result.reused, report)


def _count_untaken(outbox: Outbox, token: str, change: Change, report: ChunkReport) -> None:
    """Why a row could not be taken: another attempt of this run holds it, or it is gone."""
    current = outbox.get([change.id])
    holder = current[0].claim_token if current and current[0].status == ChangeStatus.PENDING.value else None
    if holder is not None and holder.startswith(f"{token}{ATTEMPT_SEPARATOR}"):
        report.held_elsewhere += 1
        log.warning(
            "Change %s is held by another attempt of this run (%s), which may still be creating its "
            "request: left to it (another run takes it if that attempt never writes it back).",
            change.id,
            holder,
        )
    else:
        report.skipped += 1


def _reject(outbox: Outbox, attempt: str, change: Change, reason: str, report: ChunkReport) -> None:
    log.info("Change %s (%s) rejected: %s", change.id, change.change_type, reason)
    if outbox.mark_rejected(change.id, attempt, reason):
        report.rejected += 1
    else:
        report.lost_claim += 1
    return None


def _write_back(
    outbox: Outbox,
    attempt: str,
    change: Change,
    request_id: str,
    request_status: Any,
    reused: bool,
    report: ChunkReport,
) -> None:
    status = _row_status_of(request_status)
    if outbox.mark_submitted(change.id, attempt, request_id, status):
        setattr(report, status, getattr(report, status) + 1)
        report.reused += int(reused)
        log.info(
            "Change %s (%s) -> request %s (%s%s).",
            change.id,
            change.change_type,
            request_id,
            request_status,
            ", reused" if reused else "",
        )
    else:
        # The lease expired and another run holds the row: it will find this same request.
        report.lost_claim += 1
        log.warning("Change %s: claim lost before writing back request %s.", change.id, request_id)
    return None


def submit_claimed_chunk(
    chunk: Mapping[str, Any],
    *,
    connect_conn_id: str = DEFAULT_CONN_ID,
    changes_conn_id: str = CHANGES_DB_CONN_ID,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> dict[str, int]:
    """:func:`submit_chunk` for a chunk from :func:`chunk_claim`, with hook and outbox by conn id.

    Each call is one task attempt with its own attempt token.
    """
    from connect_provider.hooks.connect import ConnectHook

    hook = ConnectHook(connect_conn_id)
    with Outbox.from_airflow(changes_conn_id) as outbox:
        report = submit_chunk(
            outbox, hook, str(chunk["token"]), [int(i) for i in chunk["ids"]], lease_seconds=lease_seconds
        )
    log.info("Chunk done: %s", report.to_dict())
    return report.to_dict()
