"""Following the outbox's submitted rows until Connect decides their requests.

:func:`follow_open_requests` reads the requests of ``submitted``/``inquiring`` rows in bulk and
records approved, failed (with Connect's reason) or inquiring, counting one attempt per check; the
DAG's ``follow`` sensor calls :func:`follow_poke` once per poke. One bad row never stops the others:
a row whose request id cannot be looked up is marked ``failed`` with that reason at once; a row
whose request Connect does not return is checked again up to ``max_missing_checks`` times in a row
(the reason in its ``error`` meanwhile), then marked ``failed`` (see
:mod:`connect_provider.outbox.table` for why ``failed`` and not a new status).

Every write-back is conditional on the row's request id and an open status
(:meth:`Outbox.record_outcomes`), so two followers racing, or a follower racing a resubmission,
never overwrite a newer result.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connect_provider import validation as v
from connect_provider.config import CHANGES_DB_CONN_ID, DEFAULT_CONN_ID
from connect_provider.enums import RequestStatus
from connect_provider.exceptions import (
    ConnectAPIError,
    ConnectAuthError,
    ConnectError,
    ConnectValidationError,
)
from connect_provider.outbox.processing import Counts, rejection_reason, shorten
from connect_provider.outbox.table import Change, ChangeStatus, Outbox, Outcome
from connect_provider.rql import R, render_value

if TYPE_CHECKING:
    from connect_provider.hooks.connect import ConnectHook

log = logging.getLogger(__name__)

#: How long after a run's start its follow step waits for Connect's decisions, seconds: shorter
#: than the default schedule, so new changes are not held up.
DEFAULT_FOLLOW_TIMEOUT = 240
#: Request ids per ``GET /requests?in(id,(...))`` when following (keeps the URL well under 8 KB).
FOLLOW_PAGE = 100
#: Status checks in a row that may not find a row's request before the row is marked failed.
#: Why more than one: a check that races the create's commit, or a Connect hiccup, must not turn a
#: change that exists into a failure; why bounded: a request that is not there never appears.
DEFAULT_MAX_MISSING_CHECKS = 5


@dataclass
class FollowReport(Counts):
    """What one pass over the open rows found (the follow task's XCom)."""

    checked: int = 0
    approved: int = 0
    failed: int = 0
    inquiring: int = 0
    still_submitted: int = 0
    missing: int = 0  # requests Connect did not return this pass (the row stays open, with the reason)
    missing_failed: int = 0  # of those, rows marked failed: not found in max_missing_checks checks in a row
    unfollowable: int = 0  # rows marked failed: their request id cannot be looked up at all


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
            f"{exc} (value {shorten(repr(rid))}); this id cannot be looked up on Connect: set "
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
        if isinstance(exc, ConnectAuthError) or rejection_reason(exc) is None:
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
    max_missing = v.positive_int("max_missing_checks", max_missing_checks)
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
            if isinstance(exc, ConnectAuthError) or rejection_reason(exc) is not None:
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
