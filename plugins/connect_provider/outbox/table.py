"""The outbox table: its DDL, DB-API access, claims, per-attempt holds and write-backs.

The target application INSERTs one row per subscription change into ``connect_subscription_changes``
(status ``pending``). The pipeline (:mod:`connect_provider.outbox.processing` and
:mod:`connect_provider.outbox.follow`) claims pending rows, creates the Connect requests, writes
back the request id and status, then follows the requests until Connect decides them; every read
and write of the table is a method of :class:`Outbox`, here.

Why claims are columns and not a status: the status vocabulary belongs to the application
(``pending``, ``submitted``, ``approved``, ``failed``, ``inquiring``, ``rejected``). A claim is a
``claim_token`` plus ``claimed_at`` on a row that stays ``pending``; it expires after a lease, so the
rows of a run that crashed are claimed again later, and the action's reuse of an open request makes
that second try create nothing new. Two concurrent claimers never get the same row: PostgreSQL uses
``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite serialises writers with ``BEGIN IMMEDIATE``.

A claim has two levels. The run claims a batch under its run token (stable across task retries, so
a retry finds its rows again); then, row by row, the task attempt working on a row takes it under
its own *attempt token* (``<run token>#<attempt id>``), and renews that hold right before it creates
anything on Connect (:meth:`Outbox.take`, :meth:`Outbox.hold`). Why: a task attempt that Airflow has
given up on may still be running (a zombie) while its retry runs with the same run token; without
the per-attempt hold both could look for an open request, find none, and both create one. With
it, a row held by one attempt is left alone by every other attempt, and a lost hold stops the
create before it is sent. The price: the one row an attempt that really died was working on is
taken again only when its hold expires (``lease_seconds``), by whichever run comes next.

Rows the pipeline cannot finish end ``failed``, with the reason in ``error``, not in a status of
their own: a row whose request id cannot be looked up (empty, or holding both quote characters),
and a row whose request Connect did not return in ``max_missing_checks`` checks in a row
(``error`` starts ``not found on Connect``). Why not a new status: the DDL is applied with
``IF NOT EXISTS``, so every table created before would keep its old ``CHECK`` on ``status`` and
refuse the new value, and the refused write-back would stop following for every row, the very
fault this avoids; and ``failed`` already says what the application must act on: the change was
not applied on Connect, and ``error`` says why (Connect's reason, ``revoked: ...``,
``not found on Connect: ...`` or ``connect_request_id: ...``).

Every write-back is conditional (on the holding token for submissions, on the request id and an
open status for follow-ups), so a late writer whose claim was taken over changes nothing.

Plain DB-API (``sqlite3``, ``psycopg2``): this module needs no task context and no SQLAlchemy, and
is tested without a DAG run.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connect_provider.config import CHANGES_DB_CONN_ID, data_dir
from connect_provider.exceptions import OutboxError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

TABLE = "connect_subscription_changes"
DIALECTS = ("sqlite", "postgres")
DEFAULT_SQLITE_FILENAME = "connect_changes.sqlite"
#: Seconds after which a claim that was never written back may be taken by another run.
DEFAULT_LEASE_SECONDS = 3600
CHANGE_TYPES: tuple[str, ...] = ("purchase", "change", "suspend", "resume", "cancel")
#: Joins a run token and an attempt id into the token of one task attempt (``dag/run#attempt``).
ATTEMPT_SEPARATOR = "#"
# The payload is read as text on both databases and decoded once here: psycopg2 would otherwise
# decode jsonb itself, and a second decoding would turn a JSON string holding an encoded object
# into that object on PostgreSQL only.
_COLUMNS = (
    "id, change_type, asset_external_id, asset_external_uid, {payload}, status, connect_request_id, "
    "error, attempts, claim_token, claimed_at, created_at, updated_at"
)
# Connection extras handed to libpq (others, like the Postgres provider's own, are ignored).
_LIBPQ_EXTRAS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "connect_timeout",
        "application_name",
        "options",
        "target_session_attrs",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
    }
)
# One fixed UTC text format on SQLite, so that timestamps compare correctly as text.
_SQLITE_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


# A pending row ``p`` waits while an earlier change of the same asset is not decided yet.
_EARLIER_OPEN_CHANGE_OF_ASSET = f"""NOT EXISTS (
    SELECT 1 FROM {TABLE} AS e
    WHERE e.asset_external_id = p.asset_external_id
      AND e.id < p.id
      AND e.status IN ('pending', 'submitted', 'inquiring'))"""


class ChangeStatus(str, Enum):
    """Statuses of an outbox row (the application's vocabulary, fixed by the DDL's CHECK)."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    FAILED = "failed"
    INQUIRING = "inquiring"
    REJECTED = "rejected"


def attempt_token(run_token: str, attempt_id: str) -> str:
    """The token under which one task attempt of the run ``run_token`` holds the row it works on."""
    if not run_token or not attempt_id:
        raise ValueError("run token and attempt id must be non-empty strings")
    return f"{run_token}{ATTEMPT_SEPARATOR}{attempt_id}"


@dataclass(frozen=True)
class Change:
    """One outbox row as the pipeline sees it (``payload`` decoded from JSON when it parses).

    ``payload_error`` says why the payload column could not be decoded (``payload`` is then the
    raw text); None when it is JSON, whatever JSON value it holds.
    """

    id: int
    change_type: str
    asset_external_id: str | None
    asset_external_uid: str | None
    payload: Any
    status: str
    connect_request_id: str | None
    error: str | None
    attempts: int
    claim_token: str | None
    claimed_at: Any
    created_at: Any
    updated_at: Any
    payload_error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """A follow-up result for one row: its new status and, for a failure, the reason."""

    change_id: int
    connect_request_id: str | None
    status: str
    error: str | None = None


#: Where the DDL ships inside the package: ``connect_provider/outbox/sql/<dialect>/<table>.sql``.
DDL_PACKAGE = "connect_provider.outbox"


def ddl_resource(dialect: str) -> Traversable:
    """The DDL file of the table for ``dialect`` (``sqlite`` or ``postgres``), as package data.

    The DDL is the application's contract, kept once as plain SQL files that a DBA can run; the
    code reads the same files instead of repeating them. They ship inside the package (read with
    :mod:`importlib.resources`), so an installed wheel creates its own table, from any working
    directory, with no checkout around it.
    """
    if dialect not in DIALECTS:
        raise OutboxError(f"Unsupported outbox dialect {dialect!r}: use 'sqlite' or 'postgres'.")
    return resources.files(DDL_PACKAGE) / "sql" / dialect / f"{TABLE}.sql"


def ddl(dialect: str) -> str:
    """The DDL script of the table for ``dialect`` (idempotent: ``IF NOT EXISTS``)."""
    return ddl_resource(dialect).read_text(encoding="utf-8")


def _split_statements(script: str) -> list[str]:
    """Split a DDL script on ``;`` (the files hold no ``;`` inside literals), dropping comments."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def _decode_payload(raw: Any) -> tuple[Any, str | None]:
    """(the decoded JSON value, None), or (the raw text, why it is not JSON).

    The column is read as text on both databases, so this is the only decoding: a JSON string
    (``'"purchase"'``) stays a Python ``str`` and is refused by the pipeline as not an object.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw).decode("utf-8", errors="replace")
    if raw is None:
        return None, None
    if not isinstance(raw, str):
        return raw, None  # a driver that decoded the value already
    try:
        return json.loads(raw), None
    except ValueError as exc:
        return raw, f"not JSON ({exc})"


class Outbox:
    """Claim, write back and follow rows of ``connect_subscription_changes`` over DB-API.

    One instance holds at most one open database connection, opened on first use; use one instance
    per thread (:meth:`close` it, or use it as a context manager).
    """

    def __init__(self, dialect: str, connect: Callable[[], Any], *, description: str = "") -> None:
        if dialect not in DIALECTS:
            raise OutboxError(f"Unsupported outbox dialect {dialect!r}: use 'sqlite' or 'postgres'.")
        self.dialect = dialect
        self.description = description or dialect
        self._connect = connect
        self._conn: Any = None
        self._columns = _COLUMNS.format(payload="payload::text" if dialect == "postgres" else "payload")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def sqlite(cls, path: str | os.PathLike[str]) -> Outbox:
        """An outbox in a SQLite file (created with its folder when missing)."""
        file = Path(path).expanduser()

        def connect() -> sqlite3.Connection:
            file.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE to write).
            conn = sqlite3.connect(str(file), timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn

        return cls("sqlite", connect, description=f"sqlite:{file}")

    @classmethod
    def postgres(cls, **connect_kwargs: Any) -> Outbox:
        """An outbox in PostgreSQL; ``connect_kwargs`` go to ``psycopg2.connect`` (host, dbname...)."""
        try:
            import psycopg2
        except ImportError as exc:  # pragma: no cover - psycopg2 is in the postgres extra
            raise OutboxError(
                "The outbox connection is PostgreSQL but psycopg2 is not installed: "
                "pip install 'airflow-provider-cloudblue-connect[postgres]'."
            ) from exc

        def connect() -> Any:
            return psycopg2.connect(**connect_kwargs)

        where = f"{connect_kwargs.get('host', 'localhost')}:{connect_kwargs.get('port', 5432)}"
        return cls("postgres", connect, description=f"postgres://{where}/{connect_kwargs.get('dbname', '')}")

    @classmethod
    def from_airflow(cls, conn_id: str = CHANGES_DB_CONN_ID) -> Outbox:
        """The outbox of an Airflow connection; the default SQLite file when it is not defined.

        ``conn_type`` ``sqlite``: ``host`` is the file path. ``postgres``: host, port, login,
        password and ``schema`` (the database name); libpq extras (sslmode, sslrootcert,
        connect_timeout, options...) go to ``psycopg2.connect``.
        Nothing is opened here: the first query connects.
        """
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            if conn_id != CHANGES_DB_CONN_ID:
                raise
            path = data_dir() / DEFAULT_SQLITE_FILENAME
            log.info("Connection %s is not defined: using the default SQLite outbox %s", conn_id, path)
            return cls.sqlite(path)
        conn_type = (conn.conn_type or "").lower()
        if conn_type == "sqlite":
            path = conn.host or conn.schema
            if not path:
                raise OutboxError(f"Connection {conn_id!r} (sqlite) needs the database file path in 'host'.")
            return cls.sqlite(path)
        if conn_type in ("postgres", "postgresql"):
            kwargs: dict[str, Any] = {
                "host": conn.host or "localhost",
                "port": conn.port or 5432,
                "dbname": conn.schema or "postgres",
            }
            if conn.login:
                kwargs["user"] = conn.login
            if conn.password:
                kwargs["password"] = conn.password
            extra = conn.extra_dejson or {}
            kwargs.update(
                {k: v for k, v in extra.items() if k in _LIBPQ_EXTRAS and isinstance(v, (str, int))}
            )
            return cls.postgres(**kwargs)
        raise OutboxError(
            f"Connection {conn_id!r} has conn_type {conn.conn_type!r}: the outbox supports 'sqlite' "
            "(host = file path) and 'postgres'."
        )

    # -- connection and transactions ----------------------------------------------------------

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Outbox({self.description})"

    def sibling(self) -> Outbox:
        """Another instance on the same database, with a connection of its own.

        Why: a DB-API connection serves one thread (SQLite's explicit transactions of two threads
        would interleave on one connection); a chunk that submits its rows from several threads
        gives each thread its sibling.
        """
        return type(self)(self.dialect, self._connect, description=self.description)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _sql(self, statement: str) -> str:
        """Queries are written with ``?`` placeholders; psycopg2 wants ``%s``."""
        return statement.replace("?", "%s") if self.dialect == "postgres" else statement

    def _now(self) -> str:
        return _SQLITE_NOW if self.dialect == "sqlite" else "now()"

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A write transaction; SQLite takes the write lock up front so claims serialise."""
        conn = self._connection()
        if self.dialect == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        else:
            try:
                with conn.cursor() as cur:
                    yield cur
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _execute(self, cur: Any, statement: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; returns a cursor (sqlite3 makes one per execute, psycopg2 reuses ``cur``)."""
        result = cur.execute(self._sql(statement), tuple(params))
        return cur if result is None else result

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read-only query in its own short transaction."""
        conn = self._connection()
        if self.dialect == "sqlite":
            return list(conn.execute(statement, tuple(params)).fetchall())
        try:
            with conn.cursor() as cur:
                cur.execute(self._sql(statement), tuple(params))
                rows = cur.fetchall()
        finally:
            conn.rollback()
        return list(rows)

    # -- schema and inserts (used by the demo, tests and applications) --------------------------

    def create_schema(self) -> None:
        """Create the table and indexes from the DDL shipped with the package (idempotent)."""
        self.execute_script(ddl(self.dialect))

    def execute_script(self, script: str) -> None:
        """Run a ``;``-separated SQL script in one transaction (DDL or demo INSERTs)."""
        with self._transaction() as cur:
            for statement in _split_statements(script):
                cur.execute(statement)

    def table_exists(self) -> bool:
        if self.dialect == "sqlite":
            rows = self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,))
        else:
            # to_regclass follows the search_path, like the queries that will use the table.
            rows = self._query("SELECT to_regclass(?) IS NOT NULL", (TABLE,))
            return bool(rows and rows[0][0])
        return bool(rows)

    def require_table(self) -> None:
        """Fail with the fix when the application has not created the table yet."""
        if not self.table_exists():
            raise OutboxError(
                f"Table {TABLE} does not exist in {self.description}: create it with "
                f"{ddl_resource(self.dialect)} (print it with `python -m connect_provider.outbox "
                f"{self.dialect}`), or Outbox.create_schema()."
            )

    def add(
        self,
        change_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        asset_external_id: str | None = None,
        asset_external_uid: str | None = None,
    ) -> int:
        """Insert one pending change, as an application would; returns its id."""
        return self.add_many(
            [
                {
                    "change_type": change_type,
                    "payload": payload or {},
                    "asset_external_id": asset_external_id,
                    "asset_external_uid": asset_external_uid,
                }
            ]
        )[0]

    def add_many(self, changes: Iterable[Mapping[str, Any]]) -> list[int]:
        """Insert pending changes (dicts with change_type, payload, asset_external_id/uid)."""
        statement = (
            f"INSERT INTO {TABLE} (change_type, asset_external_id, asset_external_uid, payload) "
            "VALUES (?, ?, ?, ?) RETURNING id"
        )
        ids: list[int] = []
        with self._transaction() as cur:
            for change in changes:
                payload = change.get("payload", {})
                encoded = payload if isinstance(payload, str) else json.dumps(payload)
                params = (
                    change["change_type"],
                    change.get("asset_external_id"),
                    change.get("asset_external_uid"),
                    encoded,
                )
                ids.append(int(self._execute(cur, statement, params).fetchone()[0]))
        return ids

    # -- claiming ---------------------------------------------------------------------------

    def claim(self, token: str, limit: int, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> list[int]:
        """Claim up to ``limit`` pending rows for ``token``; returns their ids in id order.

        A row is claimable when it is pending and unclaimed, already held by ``token`` (the same run
        trying again), or held by a claim older than ``lease_seconds`` (a run that died). Each claim
        counts one attempt. Concurrent claimers get disjoint rows.

        Changes of one asset are taken in order: a row waits while an earlier row with the same
        ``asset_external_id`` is still pending, submitted or inquiring. Connect keeps one open
        request per asset, so a later change (a new quantity, a resume after a suspend) submitted
        before the earlier one is decided would be refused, or would be mistaken for a retry of it.
        Rows that name their asset only by ``asset_id`` in the payload are not ordered this way.
        """
        if not token:
            raise ValueError("claim token must be a non-empty string")
        if limit <= 0:
            return []
        lease = float(lease_seconds)
        if self.dialect == "postgres":
            statement = f"""
                WITH c AS (
                    SELECT p.id FROM {TABLE} AS p
                    WHERE p.status = 'pending'
                      AND (p.claim_token IS NULL OR p.claim_token = ?
                           OR p.claimed_at < now() - make_interval(secs => ?))
                      AND {_EARLIER_OPEN_CHANGE_OF_ASSET}
                    ORDER BY p.id
                    LIMIT ?
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE {TABLE} AS t
                SET claim_token = ?, claimed_at = now(), attempts = t.attempts + 1, updated_at = now()
                FROM c WHERE t.id = c.id
                RETURNING t.id
            """
            with self._transaction() as cur:
                rows = self._execute(cur, statement, (token, lease, int(limit), token)).fetchall()
            return sorted(int(row[0]) for row in rows)
        cutoff = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ? || ' seconds')"
        statement = f"""
            UPDATE {TABLE}
            SET claim_token = ?, claimed_at = {_SQLITE_NOW}, attempts = attempts + 1,
                updated_at = {_SQLITE_NOW}
            WHERE id IN (
                SELECT p.id FROM {TABLE} AS p
                WHERE p.status = 'pending'
                  AND (p.claim_token IS NULL OR p.claim_token = ? OR p.claimed_at < {cutoff})
                  AND {_EARLIER_OPEN_CHANGE_OF_ASSET}
                ORDER BY p.id
                LIMIT ?
            )
        """
        with self._transaction() as conn:
            conn.execute(statement, (token, token, f"{lease:.3f}", int(limit)))
            rows = conn.execute(
                f"SELECT id FROM {TABLE} WHERE claim_token = ? AND status = 'pending' ORDER BY id", (token,)
            ).fetchall()
        return [int(row[0]) for row in rows]

    def claimed(self, token: str, ids: Sequence[int]) -> list[Change]:
        """The rows among ``ids`` still pending and held by the run ``token`` or one of its attempts.

        Rows held by an attempt are included (their ``claim_token`` says which): the caller takes
        each row with :meth:`take` before working on it, which fails while another attempt holds it.
        """
        prefix = f"{token}{ATTEMPT_SEPARATOR}"
        found: list[Change] = []
        for part in _batches(ids, 500):
            marks = ", ".join("?" for _ in part)
            found.extend(
                self._changes(
                    f"SELECT {self._columns} FROM {TABLE} WHERE status = 'pending' "
                    "AND (claim_token = ? OR substr(claim_token, 1, ?) = ?) "
                    f"AND id IN ({marks}) ORDER BY id",
                    (token, len(prefix), prefix, *part),
                )
            )
        return found

    def take(self, change_id: int, run_token: str, attempt: str) -> bool:
        """The attempt ``attempt`` takes a pending row of its run before working on it.

        True when the row is pending and held by the run itself or already by this attempt; False
        when another attempt holds it (a zombie of an earlier try may still be creating its
        request), when another run took it over, or when it is written back already. The hold is
        stamped with the database's clock: it counts as a claim for ``lease_seconds`` like the
        run's, so other runs leave the row alone meanwhile.
        """
        statement = (
            f"UPDATE {TABLE} SET claim_token = ?, claimed_at = {self._now()}, updated_at = {self._now()} "
            "WHERE id = ? AND status = 'pending' AND claim_token IN (?, ?)"
        )
        return self._update_one(statement, (attempt, int(change_id), run_token, attempt))

    def hold(self, change_id: int, attempt: str) -> bool:
        """Renew the hold of ``attempt`` on a row right before it creates the row's request.

        True only while ``attempt`` still holds the row: the create is sent only then, and no
        other run may take the row for ``lease_seconds`` after this renewal, longer than one create
        can last. False means the hold was lost, and the caller must not create anything.
        """
        statement = (
            f"UPDATE {TABLE} SET claimed_at = {self._now()} "
            "WHERE id = ? AND status = 'pending' AND claim_token = ?"
        )
        return self._update_one(statement, (int(change_id), attempt))

    def release(self, token: str, ids: Sequence[int], error: str | None = None) -> int:
        """Give claimed rows back (still pending) so any run may take them now; returns how many.

        Used when a row hit a transient error (``error`` records it for the application) and when
        a chunk stops early, instead of leaving the rows locked until the lease expires.
        """
        released = 0
        for part in _batches(ids, 500):
            marks = ", ".join("?" for _ in part)
            statement = (
                f"UPDATE {TABLE} SET claim_token = NULL, claimed_at = NULL, "
                f"error = COALESCE(?, error), updated_at = {self._now()} "
                f"WHERE claim_token = ? AND status = 'pending' AND id IN ({marks})"
            )
            with self._transaction() as cur:
                released += self._execute(cur, statement, (error, token, *part)).rowcount
        return released

    # -- write-back -------------------------------------------------------------------------

    def mark_submitted(
        self, change_id: int, token: str, request_id: str, status: str, error: str | None = None
    ) -> bool:
        """Record the Connect request created (or reused) for a claimed row, and drop the claim.

        ``status`` is the row status matching the request's (``submitted`` while Connect has not
        decided). False when the claim was lost (its lease expired and another run holds the row):
        that run will find and reuse the same open request. ``error`` carries the reason of a
        reused request that Connect already failed.
        """
        if status not in (ChangeStatus.SUBMITTED.value, ChangeStatus.INQUIRING.value, "approved", "failed"):
            raise ValueError(f"not a status for a submitted row: {status!r}")
        statement = (
            f"UPDATE {TABLE} SET status = ?, connect_request_id = ?, error = ?, "
            f"claim_token = NULL, claimed_at = NULL, updated_at = {self._now()} "
            "WHERE id = ? AND claim_token = ? AND status = 'pending'"
        )
        return self._update_one(statement, (status, request_id, error, int(change_id), token))

    def mark_rejected(self, change_id: int, token: str, reason: str) -> bool:
        """A row whose input Connect (or the local checks) refused: final, with the reason."""
        statement = (
            f"UPDATE {TABLE} SET status = 'rejected', error = ?, claim_token = NULL, claimed_at = NULL, "
            f"updated_at = {self._now()} WHERE id = ? AND claim_token = ? AND status = 'pending'"
        )
        return self._update_one(statement, (reason, int(change_id), token))

    def _update_one(self, statement: str, params: Sequence[Any]) -> bool:
        with self._transaction() as cur:
            return self._execute(cur, statement, params).rowcount == 1

    # -- following --------------------------------------------------------------------------

    def to_follow(self, limit: int, *, after_id: int = 0) -> list[Change]:
        """Rows whose Connect request is not final yet (submitted, inquiring), by id, after ``after_id``.

        A row without a request id is included too: it has nothing to follow, and the follower
        marks it with that reason instead of leaving it open for ever.
        """
        return self._changes(
            f"SELECT {self._columns} FROM {TABLE} WHERE status IN ('submitted', 'inquiring') "
            "AND id > ? ORDER BY id LIMIT ?",
            (int(after_id), int(limit)),
        )

    def record_outcomes(self, outcomes: Iterable[Outcome]) -> int:
        """Write back what a status check found, counting one attempt per row checked.

        Only rows still open with the same request id change, so two followers racing, or a
        follower racing a resubmission, never overwrite a newer result. Returns rows updated.
        """
        same_request = (
            "connect_request_id IS ?"
            if self.dialect == "sqlite"
            else ("connect_request_id IS NOT DISTINCT FROM ?")
        )
        statement = (
            f"UPDATE {TABLE} SET status = ?, error = ?, attempts = attempts + 1, "
            f"updated_at = {self._now()} "
            f"WHERE id = ? AND {same_request} AND status IN ('submitted', 'inquiring')"
        )
        updated = 0
        with self._transaction() as cur:
            for outcome in outcomes:
                params = (outcome.status, outcome.error, int(outcome.change_id), outcome.connect_request_id)
                updated += self._execute(cur, statement, params).rowcount
        return updated

    # -- reading ----------------------------------------------------------------------------

    def get(self, ids: Sequence[int]) -> list[Change]:
        """Rows by id, in id order."""
        found: list[Change] = []
        for part in _batches(ids, 500):
            marks = ", ".join("?" for _ in part)
            found.extend(
                self._changes(f"SELECT {self._columns} FROM {TABLE} WHERE id IN ({marks}) ORDER BY id", part)
            )
        return found

    def all(self) -> list[Change]:
        """Every row, in id order (for demos, tests and benchmarks; not for the DAG's hot path)."""
        return self._changes(f"SELECT {self._columns} FROM {TABLE} ORDER BY id")

    def counts(self) -> dict[str, int]:
        """Rows per status (every status present, zero when none)."""
        rows = self._query(f"SELECT status, COUNT(*) FROM {TABLE} GROUP BY status")
        counts = {status.value: 0 for status in ChangeStatus}
        counts.update({str(status): int(n) for status, n in rows})
        return counts

    def _changes(self, statement: str, params: Sequence[Any] = ()) -> list[Change]:
        found: list[Change] = []
        for row in self._query(statement, params):
            payload, payload_error = _decode_payload(row[4])
            found.append(
                Change(
                    id=int(row[0]),
                    change_type=row[1],
                    asset_external_id=row[2],
                    asset_external_uid=row[3],
                    payload=payload,
                    status=row[5],
                    connect_request_id=row[6],
                    error=row[7],
                    attempts=int(row[8]),
                    claim_token=row[9],
                    claimed_at=row[10],
                    created_at=row[11],
                    updated_at=row[12],
                    payload_error=payload_error,
                )
            )
        return found


def _batches(values: Sequence[int], size: int) -> Iterator[list[int]]:
    values = [int(v) for v in values]
    for start in range(0, len(values), size):
        yield values[start : start + size]
