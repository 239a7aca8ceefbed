"""The API key never leaks, on any path, when a server echoes it back.

Every path that turns Connect's answers into text is driven against :class:`EchoConnect` (see
``conftest.py``), which copies the ``Authorization`` header it receives into its 400, 401 and 500
JSON bodies (``error_code``, ``errors``, nested ``params``), into HTML error pages and into response
headers. Whatever comes out - an exception and everything chained to it, a log event before any
masking, a trigger event, the outbox's ``error`` column, the usage exporter's files, a DAG run's
XCom, rendered templates and task logs - must hold none of the key's forms: the header value, the
bare key, or its secret part.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from connect_provider.exceptions import ConnectAuthError, ConnectError
from connect_provider.hooks.connect import ConnectHook
from connect_provider.operators.requests import (
    ConnectApproveRequestOperator,
    ConnectCancelRequestOperator,
)
from connect_provider.outbox import Outbox, processing
from connect_provider.outbox.follow import follow_open_requests
from connect_provider.sensors.requests import ConnectRequestSensor
from connect_provider.triggers.requests import ConnectRequestTrigger
from connect_provider.usage.exporter import export_usage_file

ERROR_MODES = ["400", "401", "500", "html-500", "html-404"]
ALL_FAILURES = [*ERROR_MODES, "drop"]
REQUEST = "PR-0000-0000-0004-001"
TEMPLATE = "TL-276-377-545-0001"
USAGE_FILE = "UF-2026-10-0000000001"
ROOT = Path(__file__).resolve().parents[2]


def events_of(trigger: ConnectRequestTrigger, limit: float = 30.0) -> list[Any]:
    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), limit))


SYNC_CALLS = {
    "get_request": lambda hook: hook.get_request(REQUEST),
    "list_requests": lambda hook: hook.list_requests("eq(status,pending)"),
    "count": lambda hook: hook.count("/assets"),
    "create_request": lambda hook: hook.create_request({"type": "suspend", "asset": {"id": "AS-1"}}),
    "approve_request": lambda hook: hook.approve_request(REQUEST, TEMPLATE),
    "usage_record_pages": lambda hook: list(hook.iter_usage_record_raw_pages(USAGE_FILE)),
}


class TestSyncHook:
    """Every call of the synchronous hook raises errors, and logs lines, without the key."""

    @pytest.mark.parametrize("mode", ALL_FAILURES, ids=ALL_FAILURES)
    @pytest.mark.parametrize("call", list(SYNC_CALLS.values()), ids=list(SYNC_CALLS))
    def test_an_echoed_key_is_in_no_error_and_no_log_event(self, echo, scanner, raw_logs, mode, call):
        echo.mode = mode
        with pytest.raises(ConnectError) as caught:
            call(ConnectHook())
        assert scanner.found(scanner.exception_text(caught.value), raw_logs()) == []

    @pytest.mark.parametrize("mode", ALL_FAILURES, ids=ALL_FAILURES)
    def test_an_error_carries_no_chained_exception(self, echo, mode):
        echo.mode = mode
        with pytest.raises(ConnectError) as caught:
            ConnectHook().get_request(REQUEST)
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None

    @pytest.mark.parametrize("mode", ALL_FAILURES, ids=ALL_FAILURES)
    def test_test_connection_reports_without_the_key(self, echo, scanner, raw_logs, mode):
        echo.mode = mode
        ok, message = ConnectHook().test_connection()
        assert ok is False
        assert scanner.found(message, raw_logs()) == []


class TestAsyncHook:
    """``aget_request`` (the triggers' path) redacts from the connection's key, having no session."""

    @pytest.mark.parametrize("mode", ALL_FAILURES, ids=ALL_FAILURES)
    def test_an_echoed_key_is_in_no_async_error_and_no_log_event(self, echo, scanner, raw_logs, mode):
        echo.mode = mode
        with pytest.raises(ConnectError) as caught:
            asyncio.run(ConnectHook().aget_request(REQUEST))
        assert scanner.found(scanner.exception_text(caught.value), raw_logs()) == []
        assert caught.value.__cause__ is None and caught.value.__context__ is None


class TestTrigger:
    """The trigger's one event, which Airflow stores in the metadata DB, holds no key."""

    @pytest.mark.parametrize("mode", ALL_FAILURES, ids=ALL_FAILURES)
    def test_the_error_event_of_an_echoing_server_holds_no_key(self, echo, scanner, raw_logs, mode):
        echo.mode = mode
        [event] = events_of(ConnectRequestTrigger(request_id=REQUEST, poll_interval=0.01))
        assert event.payload["status"] == "error"
        assert REQUEST in event.payload["message"]
        assert scanner.found(json.dumps(event.payload), repr(event), raw_logs()) == []


def _sensor(**kwargs: Any) -> ConnectRequestSensor:
    return ConnectRequestSensor(task_id="wait", request_id=REQUEST, poke_interval=0.01, timeout=30, **kwargs)


class TestSensor:
    """The sensor, poking on a worker or resumed after its trigger, fails without the key."""

    @pytest.mark.parametrize("mode", ERROR_MODES, ids=ERROR_MODES)
    def test_a_poke_fails_without_the_key(self, echo, scanner, raw_logs, mode):
        echo.mode = mode
        with pytest.raises(ConnectError) as caught:
            _sensor().poke({})
        assert scanner.found(scanner.exception_text(caught.value), raw_logs()) == []

    @pytest.mark.parametrize("mode", ERROR_MODES, ids=ERROR_MODES)
    def test_a_deferred_wait_fails_without_the_key(self, echo, scanner, raw_logs, mode):
        echo.modes, echo.mode = ["ok"], mode  # the first look finds it pending, then errors
        sensor = _sensor(deferrable=True)
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute({})
        [event] = events_of(deferred.value.trigger)
        with pytest.raises(ConnectError) as caught:
            sensor.execute_complete({}, event.payload)
        text = scanner.exception_text(caught.value)
        assert scanner.found(text, json.dumps(event.payload), raw_logs()) == []
        assert REQUEST in text


class TestOperators:
    """The request operators fail without the key, on the worker and after deferral."""

    @pytest.mark.parametrize("mode", ERROR_MODES, ids=ERROR_MODES)
    def test_a_failing_decision_fails_without_the_key(self, echo, scanner, raw_logs, mode):
        echo.mode = mode
        op = ConnectApproveRequestOperator(task_id="approve", request_id=REQUEST, template_id=TEMPLATE)
        with pytest.raises(ConnectError) as caught:
            op.execute({})
        assert scanner.found(scanner.exception_text(caught.value), raw_logs()) == []

    @pytest.mark.parametrize("mode", ERROR_MODES, ids=ERROR_MODES)
    def test_a_resumed_operator_fails_without_the_key(self, echo, scanner, raw_logs, mode):
        echo.mode = mode
        op = ConnectCancelRequestOperator(task_id="cancel", asset_id="AS-0000-0000-0001")
        [event] = events_of(ConnectRequestTrigger(request_id=REQUEST, poll_interval=0.01))
        result = {
            "request_id": REQUEST,
            "type": "cancel",
            "status": "pending",
            "asset_id": "AS-0000-0000-0001",
            "asset_external_id": None,
            "reused": False,
        }
        with pytest.raises(ConnectError) as caught:
            op.execute_complete({}, event.payload, result)
        assert scanner.found(scanner.exception_text(caught.value), raw_logs()) == []


@pytest.fixture
def outbox(tmp_path: Path):
    box = Outbox.sqlite(tmp_path / "changes.sqlite")
    box.create_schema()
    yield box
    box.close()


def _outbox_text(outbox: Outbox) -> str:
    return "\n".join(repr(change) for change in outbox.all())


class TestOutbox:
    """What the subscription-changes batch writes into the outbox's rows holds no key."""

    @pytest.mark.parametrize("mode", ERROR_MODES, ids=ERROR_MODES)
    def test_submitting_a_chunk_writes_errors_without_the_key(self, echo, scanner, raw_logs, outbox, mode):
        echo.mode = mode
        ids = [outbox.add("suspend", {"asset_id": "AS-0000-0000-0001"})]
        claimed = outbox.claim("run-1", 10)
        assert claimed == ids
        raised: list[str] = []
        try:
            report = processing.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())
        except ConnectAuthError as error:  # a refused key stops the chunk and releases its rows
            raised.append(scanner.exception_text(error))
        else:
            assert report.rejected + report.retry_later == 1
            [change] = outbox.all()
            assert change.error, "the row's error column was not written"
        assert scanner.found(_outbox_text(outbox), *raised, raw_logs()) == []

    @pytest.mark.parametrize("mode", ERROR_MODES, ids=ERROR_MODES)
    def test_following_open_requests_fails_without_the_key(self, echo, scanner, raw_logs, outbox, mode):
        [change_id] = [outbox.add("suspend", {"asset_id": "AS-0000-0000-0001"})]
        outbox.claim("run-1", 10)
        assert outbox.mark_submitted(change_id, "run-1", REQUEST, "submitted")
        echo.mode = mode
        raised: list[str] = []
        try:
            follow_open_requests(outbox, ConnectHook())
        except ConnectError as error:  # the server or the key is at fault: the pass stops
            raised.append(scanner.exception_text(error))
        else:  # the one row's look-up was refused: that row carries the reason, the pass goes on
            [change] = outbox.all()
            assert change.error, "the row's error column was not written"
        assert scanner.found(*raised, _outbox_text(outbox), raw_logs()) == []


class TestUsageExporter:
    """A failing usage export raises, logs and leaves files without the key."""

    @pytest.mark.parametrize("mode", ALL_FAILURES, ids=ALL_FAILURES)
    def test_a_failing_export_leaves_no_key(self, echo, scanner, raw_logs, tmp_path, mode):
        echo.modes, echo.mode = ["ok"], mode  # the usage file is read, then its records fail
        with pytest.raises(ConnectError) as caught:
            export_usage_file(ConnectHook(), USAGE_FILE, tmp_path / "usage")
        written = [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
        assert scanner.found(scanner.exception_text(caught.value), *written, raw_logs()) == []


class TestDagRun:
    """A real DAG run (``dag.test()``): task logs, XCom, rendered templates, the metadata DB."""

    @pytest.mark.parametrize("mode", ["401", "500"], ids=["refused-key", "server-error"])
    def test_a_dag_run_against_an_echoing_server_persists_and_prints_no_key(
        self, airflow_db, echo, scanner, capfd, mode
    ):
        from airflow import settings
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(ROOT / "dags" / "connect_request_action.py"))
        dag = bag.get_dag("connect_request_action")
        echo.mode = mode
        run = dag.test(
            logical_date=None,
            run_conf={"action": "suspend", "asset_id": None, "asset_external_id": f"leak-{mode}"},
        )
        assert run.state == "failed"
        assert echo.calls, "the run never called the server"

        out, err = capfd.readouterr()
        assert mode in out + err, "the run's task log was not captured"
        # Everything the run persisted: XCom, rendered templates, task instances (and their
        # next_kwargs), audit log rows - read as the database file's bytes, so no table is missed.
        database = Path(settings.engine.url.database).read_bytes().decode("utf-8", "replace")
        logs = [
            p.read_text("utf-8", "replace")
            for p in Path(settings.AIRFLOW_HOME, "logs").rglob("*")
            if p.is_file() and "connect_request_action" in str(p)
        ]
        assert scanner.found(out, err, database, *logs) == []


class TestEveryWayOut:
    """What keeps the list above complete: every public call is scrubbed, and Airflow masks the key."""

    def test_every_public_call_of_the_hook_scrubs_its_errors(self) -> None:
        unguarded = []
        for name, attr in vars(ConnectHook).items():
            if name.startswith("_") or name in ("redact", "close", "test_connection"):
                continue
            func = attr.fget if isinstance(attr, property) else attr
            if callable(func) and not getattr(func, "redacting", False):
                unguarded.append(name)
        assert unguarded == []

    @pytest.mark.parametrize("path", ["sync", "async"], ids=["sync", "async"])
    def test_the_key_is_registered_with_airflows_secret_masker(self, echo, monkeypatch, path) -> None:
        from airflow.sdk.log import redact

        secret = f"masker-{uuid.uuid4().hex}"
        header = f"ApiKey SU-900-800-700:{secret}"
        conn = json.loads(echo.conn_json())
        monkeypatch.setenv("AIRFLOW_CONN_MASKER_CHECK", json.dumps({**conn, "password": header}))
        echo.mode = "ok"
        hook = ConnectHook("masker_check")
        if path == "sync":
            hook.get_request(REQUEST)
        else:
            asyncio.run(hook.aget_request(REQUEST))
        masked = redact(f"{header} | SU-900-800-700:{secret} | {secret}")
        assert secret not in masked
