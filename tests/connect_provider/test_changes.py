"""Batch processing of outbox rows against the sandbox, with no DAG run (SQLite outbox)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from connect_provider import actions, changes
from connect_provider.exceptions import (
    ConnectAPIError,
    ConnectAuthError,
    ConnectError,
    ConnectValidationError,
)
from connect_provider.hooks.connect import ConnectHook
from connect_provider.outbox import TABLE, Outbox, seed_demo_changes

TIER = {
    "name": "Demo Reseller",
    "external_id": "reseller-1",
    "contact_info": {
        "address_line1": "1 Demo Street",
        "city": "Springfield",
        "postal_code": "10001",
        "country": "US",
        "contact": {
            "first_name": "Rita",
            "last_name": "Reseller",
            "email": "rita@example.com",
            "phone_number": "+1 2015550123",
        },
    },
}
CUSTOMER = {**TIER, "name": "Demo Customer", "external_id": "customer-1"}


def purchase_payload(**overrides) -> dict:
    return {
        "hub_id": "HB-0000-0001",
        "marketplace": "MP-00001",
        "item_id": "PRD-276-377-545-0001",
        "quantity": 3,
        "tier1": TIER,
        "customer": CUSTOMER,
        **overrides,
    }


@pytest.fixture
def outbox(tmp_path: Path):
    box = Outbox.sqlite(tmp_path / "changes.sqlite")
    box.create_schema()
    yield box
    box.close()


@pytest.fixture
def instant_vendor(sandbox):
    """The sandbox's vendor decides a request on the first read after its creation."""
    sandbox.admin("POST", "reset", {"seed": "demo", "auto_approve_delay": 0})
    return sandbox


def _stats(sandbox) -> dict:
    return sandbox.admin("GET", "stats")


def test_every_demo_change_ends_with_the_outcome_its_row_describes(instant_vendor, outbox: Outbox) -> None:
    sandbox = instant_vendor
    ids = seed_demo_changes(outbox)
    hook = ConnectHook()
    claimed = outbox.claim("run-1", 100)
    assert claimed == ids

    report = changes.submit_chunk(outbox, hook, "run-1", claimed, retry_delays=())
    assert (report.claimed, report.submitted, report.rejected, report.retry_later) == (11, 7, 4, 0)
    follow = changes.follow_open_requests(outbox, hook)
    assert (follow.checked, follow.approved, follow.failed, follow.inquiring) == (7, 5, 1, 1)

    rows = {row.asset_external_id or row.payload.get("asset_id"): row for row in outbox.all()}
    assert rows["demo-2001"].status == "approved" and rows["demo-2001"].connect_request_id
    assert (rows["fail-2002"].status, rows["fail-2002"].error) == (
        "failed",
        "Vendor refused: the demo marks fail-* assets",
    )
    assert rows["inquire-2003"].status == "inquiring"
    assert rows["AS-0000-0000-0005"].status == rows["AS-0000-0000-0006"].status == "approved"
    assert rows["demo-2004"].status == "rejected" and rows["demo-2004"].error.startswith("quantity:")
    assert rows["sub-9999"].status == "rejected" and "sub-9999" in rows["sub-9999"].error
    assert rows["demo-2005"].error.startswith("tier1.contact_info.contact.email:")
    rejected_dup = [r for r in outbox.all() if r.change_type == "cancel" and r.asset_external_id == "sub-dup"]
    assert "2 assets match" in rejected_dup[0].error
    assert all(row.claim_token is None for row in outbox.all())
    assert _stats(sandbox)["requests_created"] == 7


def test_a_row_that_contradicts_itself_or_is_not_an_object_is_rejected_before_any_call(
    sandbox, outbox: Outbox
) -> None:
    outbox.add("cancel", {"asset_external_id": "sub-1001"}, asset_external_id="sub-1002")
    outbox.execute_script(f"INSERT INTO {TABLE} (change_type, payload) VALUES ('suspend', '[1, 2]')")
    outbox.add("resume", {"asset_id": "AS-0000-0000-0002", "colour": "blue"})
    outbox.add("purchase", purchase_payload(hub_id="HUB-1"), asset_external_id="new-1")
    claimed = outbox.claim("run-1", 10)
    calls_before = _stats(sandbox)["calls"]

    report = changes.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())

    assert report.rejected == 4
    errors = [row.error for row in outbox.all()]
    assert errors[0].startswith("asset_external_id: the row's column says 'sub-1002'")
    assert errors[1].startswith("payload: must be a JSON object")
    assert errors[2].startswith("colour: is not an argument of a resume request")
    assert errors[3].startswith("hub_id:")
    assert _stats(sandbox)["calls"] == calls_before


def test_the_asset_columns_name_the_asset_when_the_payload_does_not(sandbox, outbox: Outbox) -> None:
    outbox.add("change", {"item_id": "SEATS", "quantity": 12}, asset_external_id="sub-1001")
    outbox.add("purchase", purchase_payload(), asset_external_id="new-cols-1")
    claimed = outbox.claim("run-1", 10)
    report = changes.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())
    assert report.submitted == 2
    requests = [ConnectHook().get_request(row.connect_request_id) for row in outbox.all()]
    assert [r["asset"]["external_id"] for r in requests] == ["sub-1001", "new-cols-1"]


def test_a_chunk_of_purchases_looks_up_marketplace_connection_and_tiers_once(sandbox, outbox: Outbox) -> None:
    outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"shared-{i}", "payload": purchase_payload()}
        for i in range(10)
    )
    claimed = outbox.claim("run-1", 10)
    report = changes.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())

    routes = _stats(sandbox)["calls_by_route"]
    assert report.submitted == 10
    assert routes["POST /requests"] == 10 and routes["GET /assets"] == 10  # per row: is it new?
    assert routes["GET /marketplaces"] == 1
    assert routes["GET /products/{product_id}/connections"] == 1
    assert routes["GET /tier/accounts"] == 2  # tier1 and customer


def test_a_transient_error_is_retried_in_the_chunk_then_left_pending_with_the_error(
    sandbox, outbox: Outbox
) -> None:
    first = outbox.add("purchase", purchase_payload(), asset_external_id="flaky-1")
    second = outbox.add("purchase", purchase_payload(), asset_external_id="down-1")
    claimed = outbox.claim("run-1", 10)
    calls: dict[str, int] = {}

    def flaky_run(hook, change_type, arguments):
        ext = arguments["asset_external_id"]
        calls[ext] = calls.get(ext, 0) + 1
        if ext == "down-1" or calls[ext] == 1:
            raise ConnectAPIError("503 on POST /requests: Connect failed", status=503)
        return actions.run_action(hook, change_type, arguments)

    report = changes.submit_chunk(
        outbox, ConnectHook(), "run-1", claimed, run=flaky_run, retry_delays=(0.0, 0.0)
    )

    assert calls == {"flaky-1": 2, "down-1": 3}
    assert (report.submitted, report.retry_later) == (1, 1)
    done, left = outbox.get([first, second])
    assert done.status == "submitted" and done.connect_request_id
    assert (left.status, left.claim_token) == ("pending", None)
    assert left.error.startswith("will retry: ConnectAPIError: 503")
    assert outbox.claim("next-run", 10) == [second]


def test_a_refused_api_key_stops_the_chunk_and_releases_its_rows(
    sandbox, outbox: Outbox, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", sandbox.conn_uri_json("ApiKey SU-1:wrong"))
    ids = [outbox.add("resume", {"asset_id": "AS-0000-0000-0002"}) for _ in range(3)]
    outbox.claim("run-1", 10)

    with pytest.raises(ConnectAuthError):
        changes.submit_chunk(outbox, ConnectHook(), "run-1", ids, retry_delays=())

    assert [(row.status, row.claim_token) for row in outbox.get(ids)] == [("pending", None)] * 3


def test_a_crash_between_create_and_write_back_is_recovered_without_a_second_request(
    sandbox, outbox: Outbox
) -> None:
    change_id = outbox.add("purchase", purchase_payload(), asset_external_id="crash-1")
    outbox.add("change", {"asset_id": "AS-0000-0000-0001", "item_id": "SEATS", "quantity": 11})
    claimed = outbox.claim("crashed-run", 10)
    # The crashed run created both requests, then died before writing anything back.
    first = [
        actions.run_action(ConnectHook(), c.change_type, changes.arguments_for(c))
        for c in outbox.get(claimed)
    ]
    created = _stats(sandbox)["requests_created"]
    outbox.execute_script(f"UPDATE {TABLE} SET claimed_at = '2000-01-01T00:00:00.000Z'")

    retaken = outbox.claim("next-run", 10, lease_seconds=60)
    report = changes.submit_chunk(outbox, ConnectHook(), "next-run", retaken, retry_delays=())

    assert retaken == claimed and report.reused == 2
    assert [row.connect_request_id for row in outbox.get(claimed)] == [r.request_id for r in first]
    assert _stats(sandbox)["requests_created"] == created
    assert outbox.get([change_id])[0].attempts == 2


def test_two_workers_claiming_at_once_create_each_request_exactly_once(sandbox, outbox: Outbox) -> None:
    ids = outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"conc-{i}", "payload": purchase_payload()}
        for i in range(40)
    )
    path = outbox.description.removeprefix("sqlite:")
    reports: list[changes.ChunkReport] = []
    barrier = threading.Barrier(2)

    def worker(token: str) -> None:
        with Outbox.sqlite(path) as own:
            hook = ConnectHook()
            barrier.wait()
            while claimed := own.claim(token, 5):
                reports.append(changes.submit_chunk(own, hook, token, claimed, retry_delays=()))

    threads = [threading.Thread(target=worker, args=(f"run-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    rows = outbox.get(ids)
    assert sum(r.submitted for r in reports) == 40 and sum(r.lost_claim for r in reports) == 0
    assert len({row.connect_request_id for row in rows}) == 40
    assert {row.status for row in rows} == {"submitted"}
    assert _stats(sandbox)["requests_by_type"] == {"purchase": 40}


def test_with_faults_on_every_change_ends_once_and_no_request_is_created_twice(
    sandbox, outbox: Outbox, monkeypatch
) -> None:
    conn = json.loads(sandbox.conn_uri_json())
    conn["extra"] = {"max_wait": 0.2, "timeout": 5}
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", json.dumps(conn))
    sandbox.set_faults("429=0.05,500=0.05,drop=0.05,seed=7")
    ids = outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"faulty-{i}", "payload": purchase_payload()}
        for i in range(40)
    )
    hook = ConnectHook()
    for run in range(3):  # a row left pending by a transient error is taken by the next run
        token = f"run-{run}"
        changes.submit_chunk(outbox, hook, token, outbox.claim(token, 100), retry_delays=(0.2, 0.5))
        if outbox.counts()["pending"] == 0:
            break
    for _ in range(100):
        try:
            if changes.follow_open_requests(outbox, hook).still_submitted == 0:
                break
        except ConnectError:  # a fault outlasted the hook's retries: the next pass goes on
            pass
        time.sleep(0.1)

    rows = outbox.get(ids)
    stats = _stats(sandbox)
    assert sum(stats["faults_injected"].values()) > 0
    assert {row.status for row in rows} == {"approved"}
    assert len({row.connect_request_id for row in rows}) == 40
    assert stats["requests_created"] == 40


def test_following_counts_one_attempt_per_check_until_connect_decides(sandbox, outbox: Outbox) -> None:
    change_id = outbox.add("purchase", purchase_payload(), asset_external_id="follow-1")
    outbox.claim("run-1", 1)
    changes.submit_chunk(outbox, ConnectHook(), "run-1", [change_id], retry_delays=())
    hook = ConnectHook()
    checks = 0
    while outbox.get([change_id])[0].status == "submitted" and checks < 100:
        report = changes.follow_open_requests(outbox, hook)
        checks += 1
        assert report.checked == 1
        if report.still_submitted:
            time.sleep(0.1)  # the sandbox's vendor decides 0.5 s after creation

    [row] = outbox.get([change_id])
    assert row.status == "approved"
    assert row.attempts == 1 + checks  # the claim, then one per status check
    assert changes.follow_open_requests(outbox, hook).checked == 0


def test_a_claim_is_split_into_chunks_of_ids() -> None:
    claim = {"token": "t", "ids": list(range(1, 251))}
    chunks = changes.chunk_claim(claim, 100)
    assert [len(c["ids"]) for c in chunks] == [100, 100, 50]
    assert {c["token"] for c in chunks} == {"t"}
    assert changes.chunk_claim({"token": "t", "ids": []}, 100) == []
    # Never more chunks than a mapped task may expand over: the chunks grow instead.
    assert [len(c["ids"]) for c in changes.chunk_claim(claim, 1, max_chunks=100)] == [3] * 83 + [1]
    with pytest.raises(ConnectValidationError, match="chunk_size"):
        changes.chunk_claim(claim, 0)


def test_dag_settings_come_from_the_environment_with_safe_defaults() -> None:
    defaults = changes.DagSettings.from_env({})
    assert defaults.schedule == "*/5 * * * *" and defaults.chunk_size == changes.DEFAULT_CHUNK_SIZE
    custom = changes.DagSettings.from_env(
        {"CONNECT_CHANGES_SCHEDULE": "none", "CONNECT_CHANGES_CHUNK_SIZE": "25"}
    )
    assert (custom.schedule, custom.chunk_size) == (None, 25)
    with pytest.raises(ConnectValidationError, match="CONNECT_CHANGES_BATCH_SIZE"):
        changes.DagSettings.from_env({"CONNECT_CHANGES_BATCH_SIZE": "lots"})


FORM = {
    "action": "purchase",
    "asset_external_id": "form-1",
    "hub_id": "HB-0000-0001",
    "marketplace": "MP-00001",
    "item_id": "PRD-276-377-545-0001",
    "quantity": 2,
    **{
        f"tier1_{k}": v
        for k, v in {
            "name": "Demo Reseller",
            "external_id": "reseller-1",
            "email": "rita@example.com",
            "first_name": "Rita",
            "last_name": "Reseller",
            "phone": "+1 2015550123",
            "address_line1": "1 Demo Street",
            "city": "Springfield",
            "postal_code": "10001",
            "country": "US",
        }.items()
    },
    **{
        f"customer_{k}": v
        for k, v in {
            "name": "Demo Customer",
            "external_id": "customer-1",
            "email": "carl@example.com",
            "first_name": "Carl",
            "last_name": "Customer",
            "phone": "+1 2015550124",
            "address_line1": "2 Client Road",
            "city": "Springfield",
            "postal_code": "10002",
            "country": "US",
        }.items()
    },
}


def test_the_form_creates_one_purchase_and_returns_its_id_and_status(sandbox) -> None:
    result = changes.run_form_action(FORM)
    again = changes.run_form_action(FORM)
    assert result["request_id"].startswith("PR-") and result["status"] == "pending"
    assert again["request_id"] == result["request_id"] and again["reused"] is True
    assert _stats(sandbox)["requests_created"] == 1


def test_a_form_suspend_uses_only_the_asset_fields(sandbox) -> None:
    result = changes.run_form_action({**FORM, "action": "suspend", "asset_external_id": "sub-1001"})
    assert result["type"] == "suspend" and result["asset_id"] == "AS-0000-0000-0001"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"tier1_email": "nobody"}, "tier1_email"),
        ({"tier1_country": "Atlantis"}, "tier1_country"),
        ({"quantity": 0}, "quantity"),
        ({"hub_id": None}, "hub_id"),
        ({"action": "change", "asset_external_id": None}, "asset_external_id"),
        ({"action": "refund"}, "action"),
    ],
)
def test_bad_form_input_fails_naming_the_form_field_before_any_call(sandbox, overrides, field) -> None:
    with pytest.raises(ConnectValidationError) as raised:
        changes.run_form_action({**FORM, **overrides})
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert _stats(sandbox)["calls"] == 0


# --------------------------------------------------------------------------- faults the sandbox cannot make


class FaultProxy:
    """A small HTTP server in front of the sandbox, for the faults the sandbox cannot make on demand.

    Every call is forwarded, except that ``answer(method, target)`` may answer one itself
    (``(status, json body)``), and one gated call (``gate = (method, path, when)``) is held until
    :attr:`release` is set: ``when="before"`` holds it before it reaches the sandbox (a create
    still in flight), ``"after"`` holds the sandbox's answer (a read that has gone stale).
    :attr:`held` is set when the gated call arrives. Only the first matching call is gated.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.answer: Callable[[str, str], tuple[int, Any] | None] = lambda method, target: None
        self.gate: tuple[str, str, str] | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                answered = proxy.answer(self.command, self.path)
                if answered is not None:
                    status, payload = answered
                    self._send(status, {"Content-Type": "application/json"}, json.dumps(payload).encode())
                    return
                gated = proxy._gated(self.command, self.path)
                if gated == "before":
                    proxy._hold()
                status, headers, content = proxy._forward(self.command, self.path, body, self.headers)
                if gated == "after":
                    proxy._hold()
                self._send(status, headers, content)

            def _send(self, status: int, headers: dict[str, str], content: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = _handle

        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _gated(self, method: str, target: str) -> str | None:
        with self._lock:
            if self.gate is None or self.held.is_set():
                return None
            gate_method, path, when = self.gate
            if method != gate_method or target.split("?")[0] != path:
                return None
            self.held.set()
            return when

    def _hold(self) -> None:
        if not self.release.wait(60):
            raise RuntimeError("the gated call was never released")

    def _forward(self, method: str, target: str, body: bytes | None, headers: Any) -> tuple[int, dict, bytes]:
        sent = {k: headers[k] for k in ("Authorization", "Content-Type", "Accept") if headers.get(k)}
        request = urllib.request.Request(self.upstream + target, data=body, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, got, content = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, got, content = error.code, error.headers, error.read()
        kept = {k: got[k] for k in ("Content-Type", "Content-Range", "Retry-After") if got.get(k)}
        return status, kept, content

    def conn_json(self, sandbox, **extra: Any) -> str:
        conn = json.loads(sandbox.conn_uri_json())
        conn["host"] = f"{self.url}/public/v1"
        conn["extra"] = {**conn["extra"], **extra}
        return json.dumps(conn)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` before the sandbox, as the connection ``connect_via_proxy``."""
    made = FaultProxy(sandbox.url)
    monkeypatch.setenv("AIRFLOW_CONN_CONNECT_VIA_PROXY", made.conn_json(sandbox, timeout=60))
    yield made
    made.close()


@pytest.fixture(scope="module")
def pg_outbox_database(fresh_postgres_database) -> dict:
    return fresh_postgres_database("changes")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outboxes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Outbox]]:
    """A factory of :class:`Outbox` instances (one per thread) on one fresh table, on each database."""
    if request.param == "sqlite":

        def make() -> Outbox:
            return Outbox.sqlite(tmp_path / "changes.sqlite")
    else:
        kwargs = request.getfixturevalue("pg_outbox_database")

        def make() -> Outbox:
            return Outbox.postgres(**kwargs)

    made: list[Outbox] = []

    def factory() -> Outbox:
        made.append(make())
        return made[-1]

    setup = factory()
    setup.execute_script(f"DROP TABLE IF EXISTS {TABLE}")
    setup.create_schema()
    yield factory
    for box in made:
        box.close()


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------- payloads


class TestAPayloadThatIsNotAnObject:
    """A payload must be a JSON object; a JSON string (a change type, an object encoded twice) is refused
    with a message that says what to store, the same on SQLite and PostgreSQL, before any call."""

    @pytest.mark.parametrize(
        ("stored", "message"),
        [
            (
                '"purchase"',
                'payload: must be a JSON object of the action\'s arguments, got the JSON string "purchase": ',
            ),
            (
                json.dumps(json.dumps({"item_id": "SEATS", "quantity": 15})),
                "payload: must be a JSON object of the action's arguments, got a JSON string that holds an "
                "encoded object",
            ),
            ("[1, 2]", "payload: must be a JSON object of the action's arguments, got [1, 2]: "),
            ("15", "payload: must be a JSON object of the action's arguments, got 15: "),
        ],
        ids=["a JSON string", "an object encoded twice", "an array", "a number"],
    )
    def test_the_row_is_rejected_naming_the_fix(self, sandbox, outboxes, stored: str, message: str) -> None:
        outbox = outboxes()
        outbox.execute_script(
            f"INSERT INTO {TABLE} (change_type, asset_external_id, payload) "
            f"VALUES ('change', 'sub-1001', {_sql_text(stored)})"
        )
        claimed = outbox.claim("run-1", 10)
        calls_before = _stats(sandbox)["calls"]

        report = changes.submit_chunk(outbox, ConnectHook(), "run-1", claimed, retry_delays=())

        [row] = outbox.all()
        assert (report.rejected, row.status) == (1, "rejected")
        assert row.error.startswith(message), row.error
        assert "JSON object, e.g." in row.error or "encoded twice" in row.error
        assert _stats(sandbox)["calls"] == calls_before

    def test_a_payload_the_database_holds_as_text_that_is_not_json_says_so(self, tmp_path: Path) -> None:
        # A table made without the DDL's json_valid() check can hold any text.
        box = Outbox.sqlite(tmp_path / "lax.sqlite")
        box.execute_script(
            f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, change_type TEXT, asset_external_id TEXT, "
            "asset_external_uid TEXT, payload TEXT, status TEXT DEFAULT 'pending', connect_request_id TEXT, "
            "error TEXT, attempts INTEGER DEFAULT 0, claim_token TEXT, claimed_at TEXT, created_at TEXT, "
            "updated_at TEXT)"
        )
        box.execute_script(f"INSERT INTO {TABLE} (change_type, payload) VALUES ('suspend', '{{not json')")
        [row] = box.all()
        with pytest.raises(ConnectValidationError) as raised:
            changes.arguments_for(row)
        assert raised.value.field == "payload"
        assert str(raised.value).startswith(
            "payload: must be a JSON object of the action's arguments; the column holds text that is not JSON"
        )
        box.close()


# --------------------------------------------------------------------------- following


def _submitted_purchases(outbox: Outbox, n: int, prefix: str) -> list[int]:
    ids = outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"{prefix}-{i}", "payload": purchase_payload()}
        for i in range(n)
    )
    claimed = outbox.claim("run-0", n)
    changes.submit_chunk(outbox, ConnectHook(), "run-0", claimed, retry_delays=())
    assert {row.status for row in outbox.get(ids)} == {"submitted"}
    return ids


def _submitted_row(outbox: Outbox, request_id: str | None) -> int:
    """A row the application (or a hand edit) left submitted with this request id."""
    value = "NULL" if request_id is None else _sql_text(request_id)
    outbox.execute_script(
        f"INSERT INTO {TABLE} (change_type, asset_external_id, payload, status, connect_request_id) "
        f"VALUES ('suspend', 'sub-1002', '{{}}', 'submitted', {value})"
    )
    return max(row.id for row in outbox.all())


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
            counts = changes.follow_open_requests(outbox, ConnectHook()).to_dict()
        else:
            monkeypatch.setenv("AIRFLOW_CONN_CONNECT_CHANGES_DB", _changes_db_json(outbox))
            done, counts = changes.follow_poke()
            assert done

        rows = {row.id: row for row in outbox.all()}
        assert [rows[i].status for i in good] == ["approved", "approved"]
        assert (rows[bad].status, str(rows[bad].error)[: len(reason)]) == ("failed", reason)
        assert "set connect_request_id to the row's Connect request" in rows[bad].error or (
            "set it to the row's Connect request" in rows[bad].error
        )
        assert (counts["checked"], counts["approved"], counts.get("unfollowable")) == (3, 2, 1)
        assert changes.follow_open_requests(outbox, ConnectHook()).checked == 0  # nothing left open

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
        report = changes.follow_open_requests(outbox, ConnectHook("connect_via_proxy"))

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
            changes.follow_open_requests(outbox, ConnectHook("connect_via_proxy"))
        assert [(row.status, row.error) for row in outbox.get(ids)] == [("submitted", None)] * 2


def _changes_db_json(outbox: Outbox) -> str:
    if outbox.dialect == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": outbox.description.removeprefix("sqlite:")})
    dbname = outbox.description.rsplit("/", 1)[1]
    return json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": dbname}
    )


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
            report = changes.follow_open_requests(outbox, hook, **bound)
            [row] = outbox.get([lost])
            assert row.status == "submitted" and row.attempts == check
            assert str(row.error).startswith(
                f"not found on Connect yet (check {check} of {limit}): request PR-9999"
            )
            assert (report.missing, report.missing_failed) == (1, 0)
        report = changes.follow_open_requests(outbox, hook, **bound)

        [row] = outbox.get([lost])
        assert (row.status, row.attempts) == ("failed", limit)
        assert (report.missing, report.missing_failed) == (1, 1)
        assert row.error.startswith(
            f"not found on Connect: request PR-9999-9999-9999-999 was not found in {limit} checks in a row "
            "(Connect returned no such request; connection 'cloudblue_connect_default')"
        )
        assert "insert a new row to submit the change again" in row.error
        assert outbox.get([good])[0].status == "approved"
        assert changes.follow_open_requests(outbox, hook).checked == 0

    def test_a_request_found_again_clears_the_reason_and_restarts_the_count(
        self, instant_vendor, outboxes
    ) -> None:
        outbox = outboxes()
        [row_id] = _submitted_purchases(outbox, 1, "found-again")
        real = outbox.get([row_id])[0].connect_request_id
        outbox.execute_script(
            f"UPDATE {TABLE} SET connect_request_id = 'PR-0000-0000-0000-404' WHERE id = {row_id}"
        )
        changes.follow_open_requests(outbox, ConnectHook(), max_missing_checks=2)
        assert outbox.get([row_id])[0].error.startswith("not found on Connect yet (check 1 of 2)")

        outbox.execute_script(f"UPDATE {TABLE} SET connect_request_id = '{real}' WHERE id = {row_id}")
        changes.follow_open_requests(outbox, ConnectHook(), max_missing_checks=2)

        [row] = outbox.get([row_id])
        assert (row.status, row.error) == ("approved", None)

    @pytest.mark.parametrize(
        ("environ", "expected"),
        [({}, 5), ({"CONNECT_CHANGES_MAX_MISSING_CHECKS": "12"}, 12)],
        ids=["default", "from the environment"],
    )
    def test_the_bound_is_a_dag_setting(self, environ: dict, expected: int) -> None:
        assert changes.DagSettings.from_env(environ).max_missing_checks == expected

    def test_a_bound_that_is_not_a_positive_whole_number_is_refused_by_name(self) -> None:
        with pytest.raises(ConnectValidationError, match="CONNECT_CHANGES_MAX_MISSING_CHECKS"):
            changes.DagSettings.from_env({"CONNECT_CHANGES_MAX_MISSING_CHECKS": "0"})


# --------------------------------------------------------------------------- attempts of one run


class TestTwoAttemptsOfOneRun:
    """Two task attempts of one run (a zombie and its retry share the run's claim token) never both
    create a row's request: each takes the row under its own attempt token, and creates only while
    it still holds it."""

    def test_a_retry_leaves_alone_the_row_an_earlier_attempt_is_still_creating(
        self, sandbox, outboxes, proxy: FaultProxy
    ) -> None:
        setup = outboxes()
        [change_id] = setup.add_many(
            [{"change_type": "purchase", "asset_external_id": "zombie-1", "payload": purchase_payload()}]
        )
        token = changes.run_token("connect_subscription_changes", "scheduled__zombie")
        assert setup.claim(token, 10) == [change_id]
        proxy.gate = ("POST", "/public/v1/requests", "before")  # the zombie's create is in flight
        reports: dict[str, changes.ChunkReport] = {}

        def attempt(name: str, conn_id: str) -> None:
            with outboxes() as own:
                reports[name] = changes.submit_chunk(
                    own, ConnectHook(conn_id), token, [change_id], retry_delays=()
                )

        zombie = threading.Thread(target=attempt, args=("zombie", "connect_via_proxy"))
        zombie.start()
        assert proxy.held.wait(30), "the zombie attempt never sent its create"
        retry = threading.Thread(target=attempt, args=("retry", "cloudblue_connect_default"))
        retry.start()
        retry.join(60)
        proxy.release.set()
        zombie.join(60)

        [row] = setup.get([change_id])
        stats = _stats(sandbox)
        assert stats["requests_created"] == 1 and stats["calls_by_route"]["POST /requests"] == 1
        assert (reports["retry"].held_elsewhere, reports["retry"].submitted) == (1, 0)
        assert (reports["zombie"].submitted, reports["zombie"].lost_claim) == (1, 0)
        assert (row.status, row.claim_token) == ("submitted", None)
        assert ConnectHook().get_request(row.connect_request_id)["asset"]["external_id"] == "zombie-1"

    def test_an_attempt_that_lost_its_row_while_looking_it_up_sends_no_create(
        self, sandbox, outboxes, proxy: FaultProxy
    ) -> None:
        setup = outboxes()
        change_id = setup.add("suspend", {}, asset_external_id="sub-1001")
        token = "connect_subscription_changes/scheduled__stale"
        setup.claim(token, 10)
        # The attempt's last look-up before the create (the asset's requests) answers late: by then
        # its lease has run out and another run has taken the row and submitted it.
        proxy.gate = ("GET", "/public/v1/requests", "after")
        reports: list[changes.ChunkReport] = []

        def stale_attempt() -> None:
            with outboxes() as own:
                reports.append(
                    changes.submit_chunk(
                        own, ConnectHook("connect_via_proxy"), token, [change_id], retry_delays=()
                    )
                )

        stale = threading.Thread(target=stale_attempt)
        stale.start()
        assert proxy.held.wait(30), "the attempt never looked the asset's requests up"
        old = "'2000-01-01T00:00:00.000Z'" if setup.dialect == "sqlite" else "now() - interval '2 hours'"
        setup.execute_script(f"UPDATE {TABLE} SET claimed_at = {old} WHERE id = {change_id}")
        assert setup.claim("connect_subscription_changes/scheduled__next", 10, lease_seconds=3600) == [
            change_id
        ]
        taken_over = changes.submit_chunk(
            setup, ConnectHook(), "connect_subscription_changes/scheduled__next", [change_id], retry_delays=()
        )
        proxy.release.set()
        stale.join(60)

        [row] = setup.get([change_id])
        assert taken_over.submitted == 1 and reports[0].lost_claim == 1
        assert _stats(sandbox)["calls_by_route"]["POST /requests"] == 1
        assert (row.status, row.claim_token) == ("submitted", None)

    def test_a_lease_shorter_than_one_create_can_last_is_refused_before_any_call(
        self, sandbox, outbox: Outbox
    ) -> None:
        # The default connection of the tests: timeout 10 s, max_wait 2 s, 5 retries: 130 s at most.
        change_id = outbox.add("suspend", {}, asset_external_id="sub-1001")
        outbox.claim("run-1", 10, lease_seconds=120)
        with pytest.raises(ConnectValidationError) as raised:
            changes.submit_chunk(outbox, ConnectHook(), "run-1", [change_id], lease_seconds=120)
        assert raised.value.field == "lease_seconds"
        assert (
            "not longer than one create can last with connection 'cloudblue_connect_default' (130 s"
            in str(raised.value)
        )
        assert _stats(sandbox)["calls"] == 0
        assert outbox.get([change_id])[0].status == "pending"


class TestAConflictOnCreate:
    """Connect's 409 on a create (it has the request already) records the request it names as the
    row's, reused; a 409 that names none is a refusal with Connect's reason."""

    @pytest.mark.parametrize(
        ("names_request", "status", "reused"),
        [(True, "submitted", 1), (False, "rejected", 0)],
        ids=["names the existing request", "names none"],
    )
    def test_the_row_records_what_connect_says(
        self, sandbox, outboxes, proxy: FaultProxy, names_request: bool, status: str, reused: int
    ) -> None:
        existing = actions.run_action(
            ConnectHook(), "purchase", {**purchase_payload(), "asset_external_id": "dup-1"}
        )
        params = {
            "request_id": existing.request_id,
            "asset_id": existing.asset_id,
            "request_status": "pending",
            "asset_status": "processing",
        }
        body = {"error_code": "REQ_409", "errors": ["A request for this asset exists already."]}

        def conflict(method: str, target: str) -> tuple[int, Any] | None:
            if method == "GET" and target.startswith("/public/v1/assets?"):
                return 200, []  # the look-up misses the asset (as a lagging search would)
            if method == "POST" and target == "/public/v1/requests":
                return 409, {**body, "params": params} if names_request else body
            return None

        proxy.answer = conflict
        outbox = outboxes()
        change_id = outbox.add("purchase", purchase_payload(), asset_external_id="dup-1")
        claimed = outbox.claim("run-1", 10)

        report = changes.submit_chunk(
            outbox, ConnectHook("connect_via_proxy"), "run-1", claimed, retry_delays=()
        )

        [row] = outbox.get([change_id])
        assert (row.status, report.reused) == (status, reused)
        if names_request:
            assert row.connect_request_id == existing.request_id and row.error is None
        else:
            assert row.connect_request_id is None
            assert "A request for this asset exists already." in row.error
        assert _stats(sandbox)["requests_created"] == 1
