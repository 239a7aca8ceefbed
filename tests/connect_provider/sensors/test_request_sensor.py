"""ConnectRequestSensor against the sandbox: poking, deferring and failing on the vendor's refusal."""

from __future__ import annotations

import asyncio

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from connect_provider import actions
from connect_provider.actions import ConnectRequestFailedError
from connect_provider.exceptions import ConnectError, ConnectValidationError
from connect_provider.hooks.connect import ConnectHook
from connect_provider.sensors.requests import ConnectRequestSensor
from connect_provider.triggers.requests import ConnectRequestTrigger

APPROVED = "PR-0000-0000-0001-001"
PENDING = "PR-0000-0000-0004-001"  # seeded: the sandbox never decides it on its own


def sensor(**kwargs) -> ConnectRequestSensor:
    return ConnectRequestSensor(task_id="wait", **{"poke_interval": 0.1, "timeout": 10, **kwargs})


def test_poke_is_done_with_the_request_ids_once_the_target_status_is_reached(sandbox):
    result = sensor(request_id=APPROVED).poke({})
    assert result.is_done
    assert result.xcom_value == {
        "request_id": APPROVED,
        "type": "purchase",
        "status": "approved",
        "asset_id": "AS-0000-0000-0001",
        "asset_external_id": "sub-1001",
    }


def test_poke_keeps_waiting_on_a_pending_request(sandbox):
    assert sensor(request_id=PENDING).poke({}) is False


def test_a_failure_status_fails_the_task_without_retries(sandbox):
    actions.fail(ConnectHook(), request_id=PENDING, reason="Out of licences")
    with pytest.raises(ConnectRequestFailedError, match="Out of licences") as err:
        sensor(request_id=PENDING).poke({})
    assert isinstance(err.value, AirflowFailException)


def test_custom_target_statuses_wait_for_any_of_them(sandbox):
    actions.inquire(ConnectHook(), request_id=PENDING)
    done = sensor(request_id=PENDING, target_statuses=("inquiring", "approved")).poke({})
    assert done.is_done and done.xcom_value["status"] == "inquiring"


def test_the_sensor_runs_to_success_on_the_worker(sandbox):
    assert sensor(request_id=APPROVED).execute({})["status"] == "approved"


def test_a_bad_request_id_is_refused_before_any_call(sandbox):
    before = sandbox.admin("GET", "stats")["calls"]
    with pytest.raises(ConnectValidationError, match="request_id"):
        sensor(request_id="request-1").execute({})
    assert sandbox.admin("GET", "stats")["calls"] == before


def test_statuses_cannot_be_both_target_and_failure():
    with pytest.raises(ValueError, match="approved"):
        ConnectRequestSensor(task_id="w", request_id=PENDING, failure_statuses=("approved",))


def test_deferrable_sensor_defers_while_pending_and_resumes_on_the_event(sandbox):
    waiting = sensor(request_id=PENDING, deferrable=True, poke_interval=0.1, timeout=30)
    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, ConnectRequestTrigger)
    assert (trigger.request_id, trigger.target_statuses, trigger.poll_interval) == (
        PENDING,
        ("approved",),
        0.1,
    )

    actions.approve(ConnectHook(), request_id=PENDING, template_id="TL-276-377-545-0001")

    async def first_event():
        async for event in trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), 10))
    assert waiting.execute_complete({}, event.payload)["status"] == "approved"


def test_deferrable_sensor_does_not_defer_for_an_already_ended_request(sandbox):
    assert sensor(request_id=APPROVED, deferrable=True).execute({})["status"] == "approved"


def test_resuming_with_a_failure_or_timeout_event_fails_clearly(sandbox):
    waiting = sensor(request_id=PENDING, deferrable=True)
    event = {"request_id": PENDING, "reason": None, "message": "m"}
    with pytest.raises(ConnectRequestFailedError, match="no stock"):
        waiting.execute_complete(
            {}, {**event, "status": "failed", "request_status": "failed", "reason": "no stock"}
        )
    with pytest.raises(ConnectError, match="still pending"):
        waiting.execute_complete({}, {**event, "status": "timeout", "request_status": "pending"})
    with pytest.raises(ConnectError, match="unreachable"):
        waiting.execute_complete({}, {**event, "status": "error", "message": "Connect unreachable"})
