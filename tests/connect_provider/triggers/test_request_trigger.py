"""ConnectRequestTrigger, run directly in an event loop against the sandbox."""

from __future__ import annotations

import asyncio
import time

import pytest
from airflow.triggers.base import TriggerEvent
from connect_provider import actions
from connect_provider.hooks.connect import ConnectHook
from connect_provider.triggers.requests import ConnectRequestTrigger
from purchase_factory import buy

SEEDED_PENDING = "PR-0000-0000-0004-001"  # never decided by the sandbox on its own


def events_of(trigger: ConnectRequestTrigger, limit: float = 20.0) -> list[TriggerEvent]:
    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), limit))


def test_the_trigger_serializes_to_its_own_arguments():
    trigger = ConnectRequestTrigger(
        request_id="PR-1",
        connect_conn_id="other",
        target_statuses=("approved",),
        failure_statuses=("failed", "inquiring"),
        poll_interval=3,
        end_time=1234.5,
    )
    path, kwargs = trigger.serialize()
    assert path == "connect_provider.triggers.requests.ConnectRequestTrigger"
    assert kwargs == {
        "request_id": "PR-1",
        "connect_conn_id": "other",
        "target_statuses": ["approved"],
        "failure_statuses": ["failed", "inquiring"],
        "poll_interval": 3.0,
        "end_time": 1234.5,
    }
    rebuilt = ConnectRequestTrigger(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)


def test_the_trigger_fires_success_once_the_request_is_approved(sandbox):
    request_id = buy("trig-ok")
    [event] = events_of(
        ConnectRequestTrigger(request_id=request_id, poll_interval=0.1, end_time=time.time() + 15)
    )
    assert event.payload["status"] == "success"
    assert event.payload["request_id"] == request_id
    assert event.payload["request_status"] == "approved"


def test_the_trigger_fires_failed_with_connects_reason(sandbox):
    request_id = buy("fail-trig")
    [event] = events_of(
        ConnectRequestTrigger(request_id=request_id, poll_interval=0.1, end_time=time.time() + 15)
    )
    assert event.payload["status"] == "failed"
    assert event.payload["request_status"] == "failed"
    assert "Vendor refused" in event.payload["reason"]
    assert "Vendor refused" in event.payload["message"]


def test_inquiring_counts_as_failure_only_when_listed(sandbox):
    request_id = buy("inquire-trig")
    [event] = events_of(
        ConnectRequestTrigger(
            request_id=request_id,
            failure_statuses=("failed", "inquiring"),
            poll_interval=0.1,
            end_time=time.time() + 15,
        )
    )
    assert (event.payload["status"], event.payload["request_status"]) == ("failed", "inquiring")
    [event] = events_of(
        ConnectRequestTrigger(request_id=request_id, poll_interval=0.1, end_time=time.time() + 0.5)
    )
    assert (event.payload["status"], event.payload["request_status"]) == ("timeout", "inquiring")


def test_the_trigger_times_out_at_its_end_time(sandbox):
    started = time.monotonic()
    [event] = events_of(
        ConnectRequestTrigger(request_id=SEEDED_PENDING, poll_interval=120, end_time=time.time() + 0.3)
    )
    assert event.payload["status"] == "timeout"
    assert event.payload["request_status"] == "pending"
    # It slept only until the end time, not a whole poll interval (a margin no load can eat).
    assert time.monotonic() - started < 60


def test_an_unreadable_request_ends_with_an_error_event(sandbox):
    [event] = events_of(ConnectRequestTrigger(request_id="PR-9999-9999-9999-999", poll_interval=0.1))
    assert event.payload["status"] == "error"
    assert "PR-9999-9999-9999-999" in event.payload["message"]


def test_the_trigger_reads_the_connection_only_through_the_async_lookup(sandbox, monkeypatch):
    from airflow.sdk import BaseHook

    def forbidden(*args, **kwargs):
        raise AssertionError("a synchronous connection lookup ran inside the triggerer")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(forbidden))
    [event] = events_of(ConnectRequestTrigger(request_id="PR-0000-0000-0001-001", poll_interval=0.1))
    assert event.payload["status"] == "success"


@pytest.mark.parametrize("status", ["approved", "failed"])
def test_an_already_ended_request_fires_on_the_first_look(sandbox, status):
    request_id = {"approved": "PR-0000-0000-0001-001", "failed": None}[status]
    if request_id is None:
        actions.fail(ConnectHook(), request_id=SEEDED_PENDING, reason="no stock")
        request_id = SEEDED_PENDING
    before = sandbox.admin("GET", "stats")["calls_by_route"].get("GET /requests/{request_id}", 0)
    [event] = events_of(ConnectRequestTrigger(request_id=request_id, poll_interval=30))
    assert event.payload["request_status"] == status
    after = sandbox.admin("GET", "stats")["calls_by_route"]["GET /requests/{request_id}"]
    assert after == before + 1
