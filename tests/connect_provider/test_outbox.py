"""The outbox table: claims are exclusive and expire, write-backs are conditional, on both databases."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from connect_provider.outbox import TABLE, ChangeStatus, Outbox, OutboxError, Outcome, attempt_token


@pytest.fixture(scope="module")
def pg_database(fresh_postgres_database) -> dict:
    """A fresh PostgreSQL database for this module (skipped without a server, except in CI)."""
    return fresh_postgres_database("outbox")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple]:
    """(a factory of Outbox instances on one fresh table, the dialect)."""
    if request.param == "sqlite":
        path = tmp_path / "outbox.sqlite"

        def make() -> Outbox:
            return Outbox.sqlite(path)
    else:
        kwargs = request.getfixturevalue("pg_database")

        def make() -> Outbox:
            return Outbox.postgres(**kwargs)

    made: list[Outbox] = []

    def factory() -> Outbox:
        box = make()
        made.append(box)
        return box

    setup = factory()
    if request.param == "postgres":
        setup.execute_script(f"DROP TABLE IF EXISTS {TABLE}")
    setup.create_schema()
    yield factory, request.param
    for box in made:
        box.close()


@pytest.fixture
def outbox(db) -> Outbox:
    return db[0]()


def _purchases(outbox: Outbox, n: int) -> list[int]:
    return outbox.add_many(
        {"change_type": "purchase", "asset_external_id": f"ext-{i}", "payload": {"quantity": i}}
        for i in range(n)
    )


def test_a_new_change_is_pending_with_its_payload_decoded(outbox: Outbox) -> None:
    change_id = outbox.add("change", {"asset_id": "AS-1", "quantity": 3}, asset_external_id="sub-1")
    [row] = outbox.get([change_id])
    assert row.status == "pending"
    assert row.payload == {"asset_id": "AS-1", "quantity": 3}
    assert row.attempts == 0 and row.claim_token is None and row.connect_request_id is None
    assert row.created_at is not None and row.updated_at is not None


def test_a_claim_takes_pending_rows_in_id_order_and_counts_one_attempt(outbox: Outbox) -> None:
    ids = _purchases(outbox, 5)
    claimed = outbox.claim("run-a", 3)
    assert claimed == ids[:3]
    rows = {row.id: row for row in outbox.get(ids)}
    assert all((rows[i].claim_token, rows[i].attempts) == ("run-a", 1) for i in ids[:3])
    assert all(rows[i].claim_token is None and rows[i].attempts == 0 for i in ids[3:])
    # The claim is not a status of its own: the application's vocabulary stays intact.
    assert {row.status for row in rows.values()} == {"pending"}


def test_a_second_claimer_gets_only_rows_nobody_holds(outbox: Outbox) -> None:
    ids = _purchases(outbox, 5)
    assert outbox.claim("run-a", 3) == ids[:3]
    assert outbox.claim("run-b", 10) == ids[3:]
    assert outbox.claim("run-c", 10) == []


def test_the_same_run_claiming_again_gets_back_the_rows_it_holds(outbox: Outbox) -> None:
    ids = _purchases(outbox, 4)
    assert outbox.claim("run-a", 4) == ids
    outbox.mark_submitted(ids[0], "run-a", "PR-1", "submitted")
    assert outbox.claim("run-a", 4) == ids[1:]
    assert [row.attempts for row in outbox.get(ids[1:])] == [2, 2, 2]


def test_an_expired_claim_is_taken_over_and_the_late_writer_changes_nothing(outbox: Outbox) -> None:
    ids = _purchases(outbox, 2)
    outbox.claim("crashed-run", 2, lease_seconds=600)
    assert outbox.claim("next-run", 2, lease_seconds=600) == []
    old = "'2000-01-01T00:00:00.000Z'" if outbox.dialect == "sqlite" else "now() - interval '1 hour'"
    outbox.execute_script(f"UPDATE {TABLE} SET claimed_at = {old} WHERE id = {ids[0]}")

    assert outbox.claim("next-run", 2, lease_seconds=600) == [ids[0]]
    assert outbox.mark_submitted(ids[0], "crashed-run", "PR-LATE", "submitted") is False
    assert outbox.mark_submitted(ids[0], "next-run", "PR-1", "submitted") is True
    [row] = outbox.get([ids[0]])
    assert (row.status, row.connect_request_id, row.attempts) == ("submitted", "PR-1", 2)


def test_a_submission_records_the_request_and_drops_the_claim(outbox: Outbox) -> None:
    [change_id] = _purchases(outbox, 1)
    outbox.claim("run-a", 1)
    assert outbox.mark_submitted(change_id, "run-a", "PR-0001", "submitted") is True
    [row] = outbox.get([change_id])
    assert (row.status, row.connect_request_id, row.claim_token, row.claimed_at) == (
        "submitted",
        "PR-0001",
        None,
        None,
    )
    # Written once: a second write-back by the same claim finds the row no longer pending.
    assert outbox.mark_submitted(change_id, "run-a", "PR-0002", "submitted") is False
    assert outbox.get([change_id])[0].connect_request_id == "PR-0001"


def test_a_status_outside_the_vocabulary_is_refused(outbox: Outbox) -> None:
    [change_id] = _purchases(outbox, 1)
    outbox.claim("run-a", 1)
    with pytest.raises(ValueError, match="claimed"):
        outbox.mark_submitted(change_id, "run-a", "PR-1", "claimed")
    with pytest.raises(Exception, match=r"(?i)check"):
        outbox.execute_script(f"UPDATE {TABLE} SET status = 'claimed' WHERE id = {change_id}")


def test_a_rejected_row_keeps_its_reason_and_is_never_claimed_again(outbox: Outbox) -> None:
    ids = _purchases(outbox, 2)
    outbox.claim("run-a", 2)
    assert outbox.mark_rejected(ids[0], "run-a", "quantity: must be a positive integer") is True
    outbox.release("run-a", [ids[1]])
    [row] = outbox.get([ids[0]])
    assert (row.status, row.error) == ("rejected", "quantity: must be a positive integer")
    assert outbox.claim("run-b", 10) == [ids[1]]


def test_released_rows_are_pending_for_anyone_with_the_transient_error(outbox: Outbox) -> None:
    ids = _purchases(outbox, 3)
    outbox.claim("run-a", 3)
    assert outbox.release("run-a", ids[:2], error="503 from Connect, will retry") == 2
    assert outbox.release("someone-else", [ids[2]]) == 0
    rows = outbox.get(ids)
    assert [row.claim_token for row in rows] == [None, None, "run-a"]
    assert rows[0].error == "503 from Connect, will retry" and rows[0].status == "pending"
    assert outbox.claim("run-b", 10) == ids[:2]


def test_following_reads_open_requests_and_records_outcomes_with_attempts(outbox: Outbox) -> None:
    ids = _purchases(outbox, 4)
    outbox.claim("run-a", 4)
    outbox.mark_submitted(ids[0], "run-a", "PR-A", "submitted")
    outbox.mark_submitted(ids[1], "run-a", "PR-B", "inquiring")
    outbox.mark_submitted(ids[2], "run-a", "PR-C", "approved")
    # ids[3] stays pending: nothing to follow.
    assert [row.id for row in outbox.to_follow(10)] == ids[:2]
    assert [row.id for row in outbox.to_follow(10, after_id=ids[0])] == [ids[1]]

    updated = outbox.record_outcomes(
        [
            Outcome(ids[0], "PR-A", "failed", "Vendor refused"),
            Outcome(ids[1], "PR-B", "inquiring"),
            Outcome(ids[2], "PR-C", "failed", "must not overwrite a final row"),
            Outcome(ids[1], "PR-OTHER", "approved"),
        ]
    )
    assert updated == 2
    rows = {row.id: row for row in outbox.get(ids)}
    assert (rows[ids[0]].status, rows[ids[0]].error, rows[ids[0]].attempts) == ("failed", "Vendor refused", 2)
    assert (rows[ids[1]].status, rows[ids[1]].attempts) == ("inquiring", 2)
    assert (rows[ids[2]].status, rows[ids[2]].error) == ("approved", None)
    assert outbox.counts() == {
        "pending": 1,
        "submitted": 0,
        "approved": 1,
        "failed": 1,
        "inquiring": 1,
        "rejected": 0,
    }


def test_concurrent_claimers_get_disjoint_rows_covering_the_whole_table(db) -> None:
    factory, _dialect = db
    ids = _purchases(factory(), 300)
    workers = 6
    boxes = [factory() for _ in range(workers)]
    start, first_claims_done = threading.Barrier(workers), threading.Barrier(workers)
    taken: dict[int, list[int]] = {n: [] for n in range(workers)}
    errors: list[BaseException] = []

    def claimer(n: int) -> None:
        try:
            start.wait()
            rounds = 0
            while True:
                got = boxes[n].claim(f"run-{n}", 7)
                rounds += 1
                if rounds == 1:
                    # Every claimer makes its first claim while all the others are claiming too
                    # (SQLite's lock is not fair: without this one thread may drain the table).
                    first_claims_done.wait()
                if not got:
                    return
                taken[n].extend(got)
                for change_id in got:
                    boxes[n].mark_submitted(change_id, f"run-{n}", f"PR-{change_id}", "submitted")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            first_claims_done.abort()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    all_taken = [change_id for got in taken.values() for change_id in got]
    assert sorted(all_taken) == ids  # every row once: none twice, none left
    assert all(taken.values())  # every claimer got rows: they really claimed side by side
    assert all(row.attempts == 1 for row in factory().get(ids))


def test_the_ddl_can_be_applied_again(outbox: Outbox) -> None:
    change_id = outbox.add("cancel", {"asset_id": "AS-1"})
    outbox.create_schema()
    assert [row.id for row in outbox.get([change_id])] == [change_id]


def test_a_missing_table_is_reported_with_the_ddl_to_run(tmp_path: Path) -> None:
    box = Outbox.sqlite(tmp_path / "empty.sqlite")
    ddl_file = r"connect_provider/outbox/sql/sqlite/connect_subscription_changes\.sql"
    with pytest.raises(OutboxError, match=ddl_file):
        box.require_table()
    box.close()


@pytest.mark.postgres
def test_a_missing_postgres_table_is_reported_with_the_ddl_to_run(pg_database: dict) -> None:
    with Outbox.postgres(**pg_database) as box:
        box.execute_script(f"DROP TABLE IF EXISTS {TABLE}")
        ddl_file = r"connect_provider/outbox/sql/postgres/connect_subscription_changes\.sql"
        with pytest.raises(OutboxError, match=ddl_file):
            box.require_table()
        box.create_schema()
        box.require_table()


def test_invalid_json_cannot_enter_the_sqlite_outbox(tmp_path: Path) -> None:
    box = Outbox.sqlite(tmp_path / "o.sqlite")
    box.create_schema()
    with pytest.raises(Exception, match=r"(?i)check"):
        box.add_many([{"change_type": "purchase", "payload": "{not json"}])
    box.close()


def test_without_a_connection_the_outbox_is_the_sqlite_file_in_the_data_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CONNECT_CHANGES_DB", raising=False)
    monkeypatch.setenv("CONNECT_DATA_DIR", str(tmp_path / "data"))
    box = Outbox.from_airflow()
    assert box.dialect == "sqlite"
    box.create_schema()
    box.close()
    assert (tmp_path / "data" / "connect_changes.sqlite").is_file()


def test_a_sqlite_connection_names_the_file_in_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "changes.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_CONNECT_CHANGES_DB", json.dumps({"conn_type": "sqlite", "host": str(path)})
    )
    with Outbox.from_airflow() as box:
        box.create_schema()
        box.add("resume", {"asset_id": "AS-2"})
    assert path.is_file()


@pytest.mark.postgres
def test_a_postgres_connection_opens_the_named_database(
    monkeypatch: pytest.MonkeyPatch, pg_database: dict
) -> None:
    conn = {
        "conn_type": "postgres",
        "host": pg_database["host"],
        "port": pg_database["port"],
        "login": pg_database["user"],
        "schema": pg_database["dbname"],
        # libpq options are passed on; the Postgres provider's own extras are not libpq's.
        "extra": {"connect_timeout": 5, "application_name": "outbox-test", "cursor": "realdictcursor"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CONNECT_CHANGES_DB", json.dumps(conn))
    with Outbox.from_airflow() as box:
        assert box.dialect == "postgres"
        box.create_schema()
        assert box.table_exists()
        assert box.counts()[ChangeStatus.PENDING.value] >= 0


def test_an_unsupported_connection_type_names_the_supported_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CONNECT_CHANGES_DB", json.dumps({"conn_type": "mysql", "host": "db"}))
    with pytest.raises(OutboxError, match=r"'sqlite'.*'postgres'"):
        Outbox.from_airflow()


def test_a_later_change_of_an_asset_waits_until_the_earlier_one_is_decided(outbox: Outbox) -> None:
    # Connect keeps one open request per asset: a change submitted while the purchase is pending
    # would be refused or mistaken for the purchase's retry. Other assets are not held up.
    purchase = outbox.add("purchase", {}, asset_external_id="sub-x")
    change = outbox.add("change", {"item_id": "SEATS", "quantity": 5}, asset_external_id="sub-x")
    other = outbox.add("suspend", {}, asset_external_id="sub-y")
    assert outbox.claim("run-1", 10) == [purchase, other]
    assert outbox.mark_submitted(purchase, "run-1", "PR-1", "submitted")
    assert outbox.claim("run-2", 10) == []  # the purchase is submitted, not decided
    outbox.record_outcomes([Outcome(purchase, "PR-1", "approved")])
    assert outbox.claim("run-3", 10) == [change]


class TestAttemptHolds:
    """Within a run, one task attempt at a time holds a row: take, hold (renew) and write back."""

    def test_an_attempt_takes_a_row_of_its_run_and_another_attempt_cannot(self, outbox: Outbox) -> None:
        [change_id] = _purchases(outbox, 1)
        outbox.claim("run-a", 1)
        first, second = attempt_token("run-a", "1"), attempt_token("run-a", "2")

        assert outbox.take(change_id, "run-a", first) is True
        assert outbox.take(change_id, "run-a", second) is False
        assert outbox.take(change_id, "run-a", first) is True  # the same attempt, trying the row again
        assert [row.claim_token for row in outbox.claimed("run-a", [change_id])] == [first]

    @pytest.mark.parametrize(
        ("writer", "landed"),
        [("1", True), ("2", False)],
        ids=["the holding attempt", "another attempt of the run"],
    )
    def test_only_the_holding_attempt_renews_and_writes_back(
        self, outbox: Outbox, writer: str, landed: bool
    ) -> None:
        [change_id] = _purchases(outbox, 1)
        outbox.claim("run-a", 1)
        outbox.take(change_id, "run-a", attempt_token("run-a", "1"))
        token = attempt_token("run-a", writer)

        assert outbox.hold(change_id, token) is landed
        assert outbox.mark_submitted(change_id, token, "PR-1", "submitted") is landed
        assert (
            outbox.mark_submitted(change_id, "run-a", "PR-2", "submitted") is False
        )  # the run token no longer

    def test_a_held_row_is_left_to_other_runs_until_the_lease_expires(self, outbox: Outbox) -> None:
        [change_id] = _purchases(outbox, 1)
        outbox.claim("run-a", 1)
        held_by = attempt_token("run-a", "1")
        outbox.take(change_id, "run-a", held_by)

        assert outbox.claim("run-b", 10, lease_seconds=600) == []
        assert outbox.claim("run-a", 10, lease_seconds=600) == []  # not even its own run re-claims it
        old = "'2000-01-01T00:00:00.000Z'" if outbox.dialect == "sqlite" else "now() - interval '1 hour'"
        outbox.execute_script(f"UPDATE {TABLE} SET claimed_at = {old} WHERE id = {change_id}")
        assert outbox.claim("run-b", 10, lease_seconds=600) == [change_id]
        assert outbox.hold(change_id, held_by) is False  # the stale attempt may not create any more
