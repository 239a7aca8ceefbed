"""Batch processing of the subscription-changes outbox: what the DAG's tasks call.

The DAG ``connect_subscription_changes`` is a composition of four steps, each a function here that
needs no task context (tested with a sandbox and no DAG run):

1. :func:`claim_changes` claims up to ``batch_size`` pending rows under the run's token;
2. :func:`chunk_claim` splits the claimed ids into chunks (the mapped task expands over chunks, so a
   thousand rows make ten task instances, not a thousand);
3. :func:`submit_chunk` runs each row of a chunk through :func:`connect_provider.actions.run_action`
   and writes the result back row by row: the request id and status, or ``rejected`` with the
   reason when the input is wrong, or the row goes back to ``pending`` (with the error) when Connect
   could not be reached, for the next run to retry;
4. :func:`follow_open_requests` reads the requests of ``submitted``/``inquiring`` rows in bulk and
   records approved, failed (with Connect's reason) or inquiring, counting one attempt per check.
   One bad row never stops the others: a row whose request id cannot be looked up is marked
   ``failed`` with that reason at once; a row whose request Connect does not return is checked
   again up to ``max_missing_checks`` times in a row (the reason in its ``error`` meanwhile), then
   marked ``failed`` (see :mod:`connect_provider.outbox` for why ``failed`` and not a new status).

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
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from connect_provider import actions
from connect_provider.config import CHANGES_DB_CONN_ID, DEFAULT_CONN_ID
from connect_provider.enums import RequestStatus
from connect_provider.exceptions import (
    ConnectAPIError,
    ConnectAuthError,
    ConnectConflictError,
    ConnectError,
    ConnectNotFoundError,
    ConnectRateLimitError,
    ConnectValidationError,
)
from connect_provider.outbox import (
    ATTEMPT_SEPARATOR,
    CHANGE_TYPES,
    DEFAULT_LEASE_SECONDS,
    Change,
    ChangeStatus,
    Outbox,
    Outcome,
    attempt_token,
)
from connect_provider.rql import R, render_value

if TYPE_CHECKING:
    from connect_provider.hooks.connect import ConnectHook

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 2000
DEFAULT_CHUNK_SIZE = 100
DEFAULT_FOLLOW_TIMEOUT = 240  # seconds: shorter than the default schedule, so new changes are not held up
#: Airflow's default ``[core] max_map_length``: a mapped task expands over at most this many values.
MAX_CHUNKS = 1024
#: Request ids per ``GET /requests?in(id,(...))`` when following (keeps the URL well under 8 KB).
FOLLOW_PAGE = 100
#: Pauses before a chunk tries its transiently failed rows again (on top of the hook's own retries).
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (2.0, 10.0)
#: Status checks in a row that may not find a row's request before the row is marked failed.
#: Why more than one: a check that races the create's commit, or a Connect hiccup, must not turn a
#: change that exists into a failure; why bounded: a request that is not there never appears.
DEFAULT_MAX_MISSING_CHECKS = 5
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
        ids = outbox.claim(token, _positive("batch_size", batch_size), lease_seconds=lease_seconds)
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
    size = max(_positive("chunk_size", chunk_size), -(-len(ids) // _positive("max_chunks", max_chunks)))
    return [{"token": claim["token"], "ids": ids[i : i + size]} for i in range(0, len(ids), size)]


def _positive(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0 or (isinstance(value, float) and value != number) or isinstance(value, bool):
        raise ConnectValidationError(name, f"must be a positive whole number, got {value!r}")
    return number


# --------------------------------------------------------------------------- submit


@dataclass
class ChunkReport:
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

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


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
                f"{what}, got a JSON string that holds an encoded object ({_shorten(payload)}): the "
                "object was encoded twice; store the object itself, not a string of it",
            )
        raise ConnectValidationError(
            "payload", f"{what}, got the JSON string {_shorten(json.dumps(payload))}: {_PAYLOAD_FIX}"
        )
    raise ConnectValidationError("payload", f"{what}, got {_shorten(json.dumps(payload))}: {_PAYLOAD_FIX}")


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _rejection_reason(exc: Exception) -> str | None:
    """The reason to reject a row for, or None when the error is transient (retry the row later).

    Input the local checks refuse, Connect's 4xx answers (except 429) and look-ups that found none
    or several matches are about the row itself: retrying cannot help. Transport errors, 5xx, 429
    and unknown outcomes are about Connect's availability: the row is tried again.
    """
    if isinstance(exc, ConnectValidationError):
        return str(exc)
    if isinstance(exc, ConnectRateLimitError):
        return None
    if isinstance(exc, ConnectNotFoundError):
        return str(exc)
    if isinstance(exc, ConnectConflictError) and exc.params.get("request_status") in actions.OPEN_STATUSES:
        # A 409 naming an open request (of another type: the action returns its own as reused):
        # the row waits until Connect has decided that one, then goes.
        return None
    if isinstance(exc, ConnectAPIError):
        # The hook's message already carries Connect's error_code and errors.
        if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
            return str(exc)
        return None
    if type(exc) is ConnectError or isinstance(exc, actions.ConnectRequestStateError):
        # Ambiguous look-ups (two assets with one external id, two connections for product+hub).
        return str(exc)
    return None


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
    todo = list(rows)
    errors: dict[int, str] = {}
    try:
        for round_, delay in enumerate([0.0, *retry_delays]):
            if not todo:
                break
            if round_:
                log.info("Retrying %d change(s) after a transient error, in %.1fs.", len(todo), delay)
                time.sleep(delay)
            failed: list[Change] = []
            for change in todo:
                error = _submit_one(outbox, lookups, token, attempt, change, run, report)
                if error is not None:
                    errors[change.id] = error
                    failed.append(change)
            todo = failed
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
        reason = _rejection_reason(exc)
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


# --------------------------------------------------------------------------- follow


@dataclass
class FollowReport:
    """What one pass over the open rows found (the follow task's XCom)."""

    checked: int = 0
    approved: int = 0
    failed: int = 0
    inquiring: int = 0
    still_submitted: int = 0
    missing: int = 0  # requests Connect did not return this pass (the row stays open, with the reason)
    missing_failed: int = 0  # of those, rows marked failed: not found in max_missing_checks checks in a row
    unfollowable: int = 0  # rows marked failed: their request id cannot be looked up at all

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def outcome_of(change: Change, request: Mapping[str, Any]) -> Outcome:
    """The outbox status a Connect request stands for; failures carry Connect's reason."""
    status = str(request.get("status") or "")
    rid = str(change.connect_request_id)
    if status == RequestStatus.APPROVED.value:
        return Outcome(change.id, rid, ChangeStatus.APPROVED.value)
    if status in (RequestStatus.FAILED.value, RequestStatus.REVOKED.value):
        reason = request.get("reason") or "no reason given"
        prefix = "revoked: " if status == RequestStatus.REVOKED.value else ""
        return Outcome(change.id, rid, ChangeStatus.FAILED.value, f"{prefix}{reason}")
    if status == RequestStatus.INQUIRING.value:
        return Outcome(change.id, rid, ChangeStatus.INQUIRING.value)
    return Outcome(change.id, rid, ChangeStatus.SUBMITTED.value)


#: How the ``error`` of a row whose request was not found starts while it is still checked; the
#: number of checks in a row is read back from it (the table has no column of its own for it:
#: adding one would break every outbox table created from the earlier DDL).
_MISSING_OPEN = re.compile(r"^not found on Connect yet \(check (\d+) of \d+\)")


def _unfollowable_reason(change: Change) -> str | None:
    """Why a row's request cannot be looked up at all (so no check can ever find it), or None."""
    rid = change.connect_request_id
    if rid is None or not str(rid).strip():
        return (
            "connect_request_id: a submitted row without a request id has nothing to follow; set it to "
            "the row's Connect request (PR-...) and the status back to 'submitted', or insert a new row"
        )
    try:
        render_value(str(rid), field="connect_request_id")
    except ConnectValidationError as exc:
        return (
            f"{exc} (value {_shorten(repr(rid))}); this id cannot be looked up on Connect: set "
            "connect_request_id to the row's Connect request (PR-...) and the status back to 'submitted', "
            "or insert a new row"
        )
    return None


def _missing_outcome(change: Change, limit: int, hook: Any, refusal: str | None) -> Outcome:
    """A row whose request Connect did not return: still open with the reason, or failed at ``limit``."""
    rid = str(change.connect_request_id)
    match = _MISSING_OPEN.match(change.error or "")
    checks = int(match.group(1)) + 1 if match else 1
    why = f"Connect refused the look-up ({refusal})" if refusal else "Connect returned no such request"
    if checks >= limit:
        reason = (
            f"not found on Connect: request {rid} was not found in {checks} checks in a row ({why}; "
            f"connection {getattr(hook, 'connect_conn_id', '?')!r}). It was never created, or that "
            "connection cannot see it; if it exists, set the status back to 'submitted', otherwise "
            "insert a new row to submit the change again"
        )
        return Outcome(change.id, change.connect_request_id, ChangeStatus.FAILED.value, reason)
    reason = (
        f"not found on Connect yet (check {checks} of {limit}): request {rid}: {why}; checked again on "
        f"the next pass, marked failed after {limit} checks in a row"
    )
    return Outcome(change.id, change.connect_request_id, change.status, reason)


def _read_requests(
    hook: ConnectHook, request_ids: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Requests by id, read in one call; ids whose look-up Connect refuses, with its answer.

    When Connect refuses the bulk read with a 4xx that retrying cannot change, the ids are split
    in halves until the refused ones are alone, so one bad id never hides the others. When every
    id of several is refused, the fault is the query, not the rows: the error is raised.
    """
    if not request_ids:
        return {}, {}
    try:
        found = {str(req.get("id")): req for req in hook.list_requests(R(id__in=request_ids))}
        return found, {}
    except ConnectAPIError as exc:
        if isinstance(exc, ConnectAuthError) or _rejection_reason(exc) is None:
            raise
        if len(request_ids) == 1:
            return {}, {request_ids[0]: str(exc)}
        middle = len(request_ids) // 2
        found, refused = _read_requests(hook, request_ids[:middle])
        found_2, refused_2 = _read_requests(hook, request_ids[middle:])
        if not found and not found_2 and len(refused) + len(refused_2) == len(request_ids):
            raise
        return {**found, **found_2}, {**refused, **refused_2}


def follow_open_requests(
    outbox: Outbox,
    hook: ConnectHook,
    *,
    page_size: int = FOLLOW_PAGE,
    limit: int | None = None,
    max_missing_checks: int = DEFAULT_MAX_MISSING_CHECKS,
) -> FollowReport:
    """One pass: read the request of every submitted/inquiring row and record what it became.

    Requests are read in bulk (``in(id,(...))``, ``page_size`` per call), not one call per row.
    ``limit`` bounds the rows looked at in this pass (None: all). Rows are isolated from each
    other: a row whose request id cannot be looked up (empty, or holding both quote characters,
    which RQL cannot quote) is marked ``failed`` with that reason, without a call; a row whose
    request Connect does not return keeps the reason in ``error`` and is marked ``failed`` after
    ``max_missing_checks`` such checks in a row.
    """
    max_missing = _positive("max_missing_checks", max_missing_checks)
    report = FollowReport()
    after = 0
    while limit is None or report.checked < limit:
        size = page_size if limit is None else min(page_size, limit - report.checked)
        rows = outbox.to_follow(size, after_id=after)
        if not rows:
            break
        after = rows[-1].id
        outcomes: list[Outcome] = []
        followable: list[Change] = []
        for change in rows:
            reason = _unfollowable_reason(change)
            if reason is None:
                followable.append(change)
                continue
            report.unfollowable += 1
            log.warning("Change %s cannot be followed, marked failed: %s", change.id, reason)
            outcomes.append(Outcome(change.id, change.connect_request_id, ChangeStatus.FAILED.value, reason))
        found, refused = _read_requests(hook, sorted({str(r.connect_request_id) for r in followable}))
        for change in followable:
            rid = str(change.connect_request_id)
            request = found.get(rid)
            if request is None:
                outcome = _missing_outcome(change, max_missing, hook, refused.get(rid))
                report.missing += 1
                report.missing_failed += outcome.status == ChangeStatus.FAILED.value
                log.warning("Change %s: %s", change.id, outcome.error)
                outcomes.append(outcome)
                continue
            outcome = outcome_of(change, request)
            outcomes.append(outcome)
            if outcome.status == ChangeStatus.SUBMITTED.value:
                report.still_submitted += 1
            else:
                setattr(report, outcome.status, getattr(report, outcome.status) + 1)
        outbox.record_outcomes(outcomes)
        report.checked += len(rows)
    return report


def follow_poke(
    *,
    connect_conn_id: str = DEFAULT_CONN_ID,
    changes_conn_id: str = CHANGES_DB_CONN_ID,
    deadline: float | None = None,
    max_missing_checks: int = DEFAULT_MAX_MISSING_CHECKS,
) -> tuple[bool, dict[str, int]]:
    """One poke of the follow sensor: (done?, counts).

    Done when no row waits for Connect's decision any more (``inquiring`` rows wait for the
    customer, possibly for days: they are checked on every pass but never waited for), or when
    ``deadline`` (a ``time.time()``) has passed: the rows still ``submitted`` are followed by the
    next run, so a DAG run ends in bounded time.
    """
    from connect_provider.hooks.connect import ConnectHook

    hook = ConnectHook(connect_conn_id)
    expired = deadline is not None and time.time() >= deadline
    with Outbox.from_airflow(changes_conn_id) as outbox:
        outbox.require_table()
        try:
            report = follow_open_requests(outbox, hook, max_missing_checks=max_missing_checks)
        except ConnectError as exc:
            if isinstance(exc, ConnectAuthError) or _rejection_reason(exc) is not None:
                raise
            # Outcomes found before the error are saved already; the next poke goes on.
            log.warning("Following interrupted by a transient error (%s); trying again next poke.", exc)
            return expired, {"transient_errors": 1}
    counts = report.to_dict()
    if report.still_submitted == 0:
        log.info("Every submitted change is decided: %s", counts)
        return True, counts
    if expired:
        log.warning(
            "Follow time is up with %d change(s) still submitted; the next run follows them. %s",
            report.still_submitted,
            counts,
        )
        return True, counts
    log.info("Waiting for Connect to decide %d change(s): %s", report.still_submitted, counts)
    return False, counts


# --------------------------------------------------------------------------- one-off actions (UI form)

FORM_TIER_FIELDS = (
    "name",
    "external_id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "address_line1",
    "city",
    "postal_code",
    "country",
)


def _tier_from_form(form: Mapping[str, Any], prefix: str) -> dict[str, Any] | None:
    """A tier account in Connect's shape from flat form fields ``<prefix>_name``...; None if all blank."""
    values = {key: form.get(f"{prefix}_{key}") for key in FORM_TIER_FIELDS}
    if all(value in (None, "") for value in values.values()):
        return None
    return {
        "name": values["name"],
        "external_id": values["external_id"],
        "contact_info": {
            "address_line1": values["address_line1"],
            "city": values["city"],
            "postal_code": values["postal_code"],
            "country": values["country"],
            "contact": {
                "first_name": values["first_name"],
                "last_name": values["last_name"],
                "email": values["email"],
                "phone_number": values["phone"],
            },
        },
    }


def form_arguments(form: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The (action, arguments) a trigger form asks for; only the fields that action takes.

    The form is flat (one field per box in the UI); the action wants Connect's nested shapes.
    Blank fields are left out, so the action's own checks name what is missing.
    """
    action = form.get("action")
    if action not in CHANGE_TYPES:
        raise ConnectValidationError(
            "action", f"must be one of purchase, change, suspend, resume, cancel; got {action!r}"
        )

    def given(key: str) -> bool:
        return form.get(key) not in (None, "")

    arguments: dict[str, Any] = {}
    if action == "purchase":
        for key in ("asset_external_id", "asset_external_uid", "hub_id", "marketplace", "product_id"):
            if given(key):
                arguments[key] = form[key]
        if given("item_id") or given("quantity"):
            arguments["item_id"] = form.get("item_id")
            arguments["quantity"] = form.get("quantity")
        for level in ("tier1", "tier2", "customer"):
            account = _tier_from_form(form, level)
            if account is not None:
                arguments[level] = account
        return action, arguments
    if given("asset_id"):
        arguments["asset_id"] = form["asset_id"]
    else:
        for key in ("asset_external_id", "asset_external_uid"):
            if given(key):
                arguments[key] = form[key]
    if action == "change" and (given("item_id") or given("quantity")):
        arguments["item_id"] = form.get("item_id")
        arguments["quantity"] = form.get("quantity")
    return action, arguments


def form_field(field: str) -> str:
    """The trigger-form field an argument path comes from (``tier1.contact_info.city`` -> ``tier1_city``)."""
    head, _, rest = field.partition(".")
    if head in ("tier1", "tier2", "customer"):
        leaf = rest.split(".")[-1] if rest else "name"
        leaf = "phone" if rest.startswith("contact_info.contact.phone_number") else leaf
        return f"{head}_{leaf}" if leaf in FORM_TIER_FIELDS else head
    if head.startswith("items"):
        return "quantity" if field.endswith("quantity") else "item_id"
    return field


def _as_form_error(exc: ConnectValidationError) -> ConnectValidationError:
    message = str(exc)[len(exc.field) + 2 :] if str(exc).startswith(f"{exc.field}: ") else str(exc)
    name = form_field(exc.field)
    if name != exc.field:
        message = f"{message} (argument {exc.field})"
    return ConnectValidationError(name, message)


def run_form_action(form: Mapping[str, Any], *, connect_conn_id: str | None = None) -> dict[str, Any]:
    """Validate the trigger form, then create (or reuse) the one request it asks for.

    Returns :meth:`ActionResult.to_dict` (request id and status: the task's XCom).
    """
    from connect_provider.hooks.connect import ConnectHook

    action, arguments = form_arguments(form)
    try:
        actions.validate_action(action, arguments)  # names the field before any API call
    except ConnectValidationError as exc:
        raise _as_form_error(exc) from exc
    hook = ConnectHook(connect_conn_id or form.get("connect_conn_id") or DEFAULT_CONN_ID)
    result = actions.run_action(hook, action, arguments)
    log.info(
        "%s request %s is %s (asset %s%s).",
        action.capitalize(),
        result.request_id,
        result.status,
        result.asset_id or result.asset_external_id,
        ", an existing request was reused" if result.reused else "",
    )
    return result.to_dict()


# --------------------------------------------------------------------------- DAG settings


@dataclass(frozen=True)
class DagSettings:
    """Settings of the changes DAG that must be known when the file is parsed.

    They come from environment variables only: a DAG file must not read Airflow Variables (a
    database or API call) at import time. Per-run values (batch and chunk size, follow timeout)
    are DAG params too, with these as defaults, so a manual run can override them.
    """

    schedule: str | None
    batch_size: int
    chunk_size: int
    lease_seconds: int
    follow_timeout_seconds: int
    follow_poke_seconds: float
    max_missing_checks: int = DEFAULT_MAX_MISSING_CHECKS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DagSettings:
        env = os.environ if environ is None else environ
        schedule = env.get("CONNECT_CHANGES_SCHEDULE", "*/5 * * * *").strip()
        return cls(
            schedule=None if schedule.lower() in ("", "none", "manual") else schedule,
            batch_size=_positive(
                "CONNECT_CHANGES_BATCH_SIZE", env.get("CONNECT_CHANGES_BATCH_SIZE", DEFAULT_BATCH_SIZE)
            ),
            chunk_size=_positive(
                "CONNECT_CHANGES_CHUNK_SIZE", env.get("CONNECT_CHANGES_CHUNK_SIZE", DEFAULT_CHUNK_SIZE)
            ),
            lease_seconds=_positive(
                "CONNECT_CHANGES_LEASE_SECONDS",
                env.get("CONNECT_CHANGES_LEASE_SECONDS", DEFAULT_LEASE_SECONDS),
            ),
            follow_timeout_seconds=_positive(
                "CONNECT_CHANGES_FOLLOW_TIMEOUT",
                env.get("CONNECT_CHANGES_FOLLOW_TIMEOUT", DEFAULT_FOLLOW_TIMEOUT),
            ),
            follow_poke_seconds=float(env.get("CONNECT_CHANGES_FOLLOW_POKE_SECONDS", 30)),
            max_missing_checks=_positive(
                "CONNECT_CHANGES_MAX_MISSING_CHECKS",
                env.get("CONNECT_CHANGES_MAX_MISSING_CHECKS", DEFAULT_MAX_MISSING_CHECKS),
            ),
        )


def follow_deadline(run_start: Any, follow_timeout_seconds: Any) -> float | None:
    """``time.time()`` at which following stops: the run's start plus the follow timeout."""
    if run_start is None:
        return None
    return float(run_start.timestamp()) + _positive("follow_timeout_seconds", follow_timeout_seconds)
