"""Following submitted outbox rows against the sandbox, with no DAG run: one row never stops the others.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from connect_provider.exceptions import (
    ConnectAPIError,
)
from connect_provider.hooks.connect import ConnectHook
from connect_provider.outbox import TABLE, Outbox, processing
from connect_provider.outbox.follow import follow_open_requests, follow_poke
from outbox_factory import (
    FaultProxy,
    _changes_db_json,
    _submitted_purchases,
    _submitted_row,
    purchase_payload,
)


def test_following_counts_one_attempt_per_check_until_connect_decides(sandbox, outbox: Outbox) -> None:
    change_id = outbox.add("purchase", purchase_payload(), asset_external_id="follow-1")
    outbox.claim("run-1", 1)
    processing.submit_chunk(outbox, ConnectHook(), "run-1", [change_id], retry_delays=())
    hook = ConnectHook()
    checks = 0
    while outbox.get([change_id])[0].status == "submitted" and checks < 100:
        report = follow_open_requests(outbox, hook)
        checks += 1
        assert report.checked == 1
        if report.still_submitted:
            time.sleep(0.1)  # the sandbox's vendor decides 0.5 s after creation

    [row] = outbox.get([change_id])
    assert row.status == "approved"
    assert row.attempts == 1 + checks  # the claim, then one per status check
    assert follow_open_requests(outbox, hook).checked == 0

class TestFollowingIsolatesRows:
    """One row that cannot be followed never stops the others: it gets its reason and a final status."""

    @pytest.mark.parametrize(
        ("request_id", "reason"),
        [
            (
                "PR-'\"-1",
                "connect_request_id: a value holding both a double and a single quote cannot be written",
            ),
            (None, "connect_request_id: a submitted row without a request id has nothing to follow"),
            ("", "connect_request_id: a submitted row without a request id has nothing to follow"),
        ],
        ids=["both quote kinds", "no request id", "an empty request id"],
    )
    @pytest.mark.parametrize("how", ["one pass", "the follow sensor"])
    def test_the_row_is_failed_with_its_reason_and_the_others_are_followed(
        self, instant_vendor, outboxes, monkeypatch, request_id: str | None, reason: str, how: str
    ) -> None:
        outbox = outboxes()
        good = _submitted_purchases(outbox, 2, "iso")
        bad = _submitted_row(outbox, request_id)

        if how == "one pass":
            counts = follow_open_requests(outbox, ConnectHook()).to_dict()
        else:
            monkeypatch.setenv("AIRFLOW_CONN_CONNECT_CHANGES_DB", _changes_db_json(outbox))
            done, counts = follow_poke()
            assert done

        rows = {row.id: row for row in outbox.all()}
        assert [rows[i].status for i in good] == ["approved", "approved"]
        assert (rows[bad].status, str(rows[bad].error)[: len(reason)]) == ("failed", reason)
        assert "set connect_request_id to the row's Connect request" in rows[bad].error or (
            "set it to the row's Connect request" in rows[bad].error
        )
        assert (counts["checked"], counts["approved"], counts.get("unfollowable")) == (3, 2, 1)
        assert follow_open_requests(outbox, ConnectHook()).checked == 0  # nothing left open

    def test_an_id_connect_refuses_to_look_up_is_isolated_and_the_others_are_followed(
        self, instant_vendor, outboxes, proxy: FaultProxy
    ) -> None:
        outbox = outboxes()
        good = _submitted_purchases(outbox, 3, "refused")
        bad = _submitted_row(outbox, "PR-REFUSED")

        def refuse(method: str, target: str) -> tuple[int, Any] | None:
            if method == "GET" and target.startswith("/public/v1/requests?") and "PR-REFUSED" in target:
                return 400, {"error_code": "VAL_001", "errors": ["id: not a valid request id."]}
            return None

        proxy.answer = refuse
        report = follow_open_requests(outbox, ConnectHook("connect_via_proxy"))

        rows = {row.id: row for row in outbox.all()}
        assert [rows[i].status for i in good] == ["approved"] * 3
        assert (report.approved, report.missing, report.missing_failed) == (3, 1, 0)
        # Refused like a missing request: the reason now, a final status after the bounded checks.
        assert rows[bad].status == "submitted"
        assert rows[bad].error.startswith("not found on Connect yet (check 1 of 5): request PR-REFUSED: ")
        assert "Connect refused the look-up (400 on GET /requests" in rows[bad].error
        assert "id: not a valid request id." in rows[bad].error

    def test_when_connect_refuses_every_look_up_the_error_is_raised_and_no_row_changes(
        self, instant_vendor, outboxes, proxy: FaultProxy
    ) -> None:
        outbox = outboxes()
        ids = _submitted_purchases(outbox, 2, "all-refused")
        proxy.answer = lambda method, target: (
            (400, {"error_code": "VAL_001", "errors": ["in() is not supported here."]})
            if method == "GET" and target.startswith("/public/v1/requests?")
            else None
        )
        with pytest.raises(ConnectAPIError, match=r"in\(\) is not supported here"):
            follow_open_requests(outbox, ConnectHook("connect_via_proxy"))
        assert [(row.status, row.error) for row in outbox.get(ids)] == [("submitted", None)] * 2

class TestARequestConnectDoesNotHave:
    """A submitted row whose request is not on Connect says so in ``error`` at every check, and is
    marked failed after ``max_missing_checks`` checks in a row; rows around it go on."""

    @pytest.mark.parametrize(
        "limit",
        [None, 1, 3],
        ids=["fails at the fifth check by default", "fails at the first check", "fails at the third check"],
    )
    def test_the_row_carries_the_reason_then_fails_after_the_bounded_checks(
        self, instant_vendor, outboxes, limit: int | None
    ) -> None:
        outbox = outboxes()
        [good] = _submitted_purchases(outbox, 1, "missing")
        lost = _submitted_row(outbox, "PR-9999-9999-9999-999")
        hook = ConnectHook()
        bound = {} if limit is None else {"max_missing_checks": limit}
        limit = limit or 5

        for check in range(1, limit):
            report = follow_open_requests(outbox, hook, **bound)
            [row] = outbox.get([lost])
            assert row.status == "submitted" and row.attempts == check
            assert str(row.error).startswith(
                f"not found on Connect yet (check {check} of {limit}): request PR-9999"
            )
            assert (report.missing, report.missing_failed) == (1, 0)
        report = follow_open_requests(outbox, hook, **bound)

        [row] = outbox.get([lost])
        assert (row.status, row.attempts) == ("failed", limit)
        assert (report.missing, report.missing_failed) == (1, 1)
        assert row.error.startswith(
            f"not found on Connect: request PR-9999-9999-9999-999 was not found in {limit} checks in a row "
            "(Connect returned no such request; connection 'cloudblue_connect_default')"
        )
        assert "insert a new row to submit the change again" in row.error
        assert outbox.get([good])[0].status == "approved"
        assert follow_open_requests(outbox, hook).checked == 0

    def test_a_request_found_again_clears_the_reason_and_restarts_the_count(
        self, instant_vendor, outboxes
    ) -> None:
        outbox = outboxes()
        [row_id] = _submitted_purchases(outbox, 1, "found-again")
        real = outbox.get([row_id])[0].connect_request_id
        outbox.execute_script(
            f"UPDATE {TABLE} SET connect_request_id = 'PR-0000-0000-0000-404' WHERE id = {row_id}"
        )
        follow_open_requests(outbox, ConnectHook(), max_missing_checks=2)
        assert outbox.get([row_id])[0].error.startswith("not found on Connect yet (check 1 of 2)")

        outbox.execute_script(f"UPDATE {TABLE} SET connect_request_id = '{real}' WHERE id = {row_id}")
        follow_open_requests(outbox, ConnectHook(), max_missing_checks=2)

        [row] = outbox.get([row_id])
        assert (row.status, row.error) == ("approved", None)
