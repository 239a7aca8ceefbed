"""Turn the pending subscription changes of the outbox into CloudBlue Connect requests.

claim -> chunk -> submit_chunk (mapped over chunks, in the ``cloudblue_connect_api`` pool) -> follow.

* ``claim`` takes up to ``batch_size`` pending rows of ``connect_subscription_changes`` (connection
  ``connect_changes_db``; a SQLite file in the data folder when it is not defined) under this run's
  claim token; a concurrent run never gets the same rows.
* ``submit_chunk`` creates (or reuses) each row's request and writes back the request id and
  status; invalid input makes the row ``rejected`` with the reason, the other rows go on. Each
  task attempt holds the row it works on under its own token, so a retry never creates a request
  that an earlier attempt, still running, is creating. A chunk finds its rows' assets in one
  listing and works on ``CONNECT_CHANGES_CONCURRENCY`` rows side by side (default 4, at most the
  connection's ``max_concurrency``; never two rows of one asset), taking as many pool slots.
* ``follow`` re-checks the submitted rows in reschedule mode (no worker slot held between pokes)
  until Connect has decided them or ``follow_timeout_seconds`` after the run started; rows still
  open stay ``submitted`` and the next run follows them. A row whose request cannot be found is
  marked ``failed`` after ``max_missing_checks`` checks in a row.

With ``CONNECT_CHANGES_FOLLOW=events`` (read at parse time; default ``poll``) the run ends after
``submit_chunk`` and no sensor polls: the DAG ``connect_subscription_outcomes``, scheduled on the
``connect_request_outcomes`` Asset (its watcher, ``ConnectRequestEventTrigger``, fires in the
triggerer when a request is approved, failed, revoked or inquired), writes the outcomes back, one
pass over the open rows per run.

Parse-time settings come from environment variables (``CONNECT_CHANGES_SCHEDULE``, default every
5 minutes; ``CONNECT_CHANGES_FOLLOW_POKE_SECONDS``...): see ``connect_project.settings.DagSettings``
and ``connect_project.events``.
This file only wires tasks; the logic lives in ``connect_provider.outbox`` (``processing`` and ``follow``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import Param, PokeReturnValue, dag, task
from connect_project import events
from connect_project.settings import DagSettings, follow_deadline
from connect_provider.config import API_POOL, CHANGES_DB_CONN_ID, DEFAULT_CONN_ID
from connect_provider.outbox import follow as outbox_follow
from connect_provider.outbox import processing

SETTINGS = DagSettings.from_env()
FOLLOW_BY_EVENTS = events.SETTINGS.changes_follow == events.EVENTS


@dag(
    dag_id="connect_subscription_changes",
    description="Pending subscription changes (outbox) -> Connect requests -> outcomes written back",
    schedule=SETTINGS.schedule,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["cloudblue-connect", "outbox"],
    params={
        "batch_size": Param(
            SETTINGS.batch_size,
            type="integer",
            minimum=1,
            title="Batch size",
            description="Most pending changes this run claims.",
        ),
        "chunk_size": Param(
            SETTINGS.chunk_size,
            type="integer",
            minimum=1,
            title="Chunk size",
            description="Changes per submit_chunk task instance.",
        ),
        "lease_seconds": Param(
            SETTINGS.lease_seconds,
            type="integer",
            minimum=1,
            title="Claim lease (seconds)",
            description="After this long, rows claimed by a run that never finished may be claimed again.",
        ),
        "follow_timeout_seconds": Param(
            SETTINGS.follow_timeout_seconds,
            type="integer",
            minimum=1,
            title="Follow timeout (seconds)",
            description="How long after the run's start it waits for Connect's decisions.",
        ),
        "max_missing_checks": Param(
            SETTINGS.max_missing_checks,
            type="integer",
            minimum=1,
            title="Checks before a missing request fails its change",
            description="Checks in a row that may miss a row's request before the row is marked failed.",
        ),
        "connect_conn_id": Param(
            DEFAULT_CONN_ID,
            type="string",
            title="Connect connection",
            description="cloudblue_connect connection id.",
        ),
        "changes_conn_id": Param(
            CHANGES_DB_CONN_ID,
            type="string",
            title="Outbox connection",
            description="sqlite (host = file) or postgres connection holding connect_subscription_changes.",
        ),
    },
)
def connect_subscription_changes() -> None:
    @task
    def claim(params: dict | None = None, dag_run=None) -> dict:
        p = params or {}
        return processing.claim_changes(
            processing.run_token(dag_run.dag_id, dag_run.run_id),
            batch_size=p["batch_size"],
            lease_seconds=p["lease_seconds"],
            changes_conn_id=p["changes_conn_id"],
        )

    @task
    def split(claimed: dict, params: dict | None = None) -> list[dict]:
        return processing.chunk_claim(claimed, (params or {})["chunk_size"])

    # Each chunk submits ``concurrency`` rows side by side, so it takes as many slots of the pool:
    # the pool keeps bounding the calls to Connect across chunks and DAGs.
    @task(pool=API_POOL, pool_slots=SETTINGS.concurrency)
    def submit_chunk(chunk: dict, concurrency: int, params: dict | None = None) -> dict:
        p = params or {}
        return processing.submit_claimed_chunk(
            chunk,
            connect_conn_id=p["connect_conn_id"],
            changes_conn_id=p["changes_conn_id"],
            lease_seconds=p["lease_seconds"],
            concurrency=concurrency,
        )

    @task.sensor(
        pool=API_POOL,
        mode="reschedule",
        poke_interval=SETTINGS.follow_poke_seconds,
        timeout=SETTINGS.follow_timeout_seconds + 3600,
        soft_fail=True,
        trigger_rule="none_failed",
    )
    def follow(params: dict | None = None, dag_run=None) -> PokeReturnValue:
        p = params or {}
        done, counts = outbox_follow.follow_poke(
            connect_conn_id=p["connect_conn_id"],
            changes_conn_id=p["changes_conn_id"],
            deadline=follow_deadline(dag_run.start_date, p["follow_timeout_seconds"]),
            max_missing_checks=p["max_missing_checks"],
        )
        return PokeReturnValue(is_done=done, xcom_value=counts)

    chunks = split(claim())
    submitted = submit_chunk.partial(concurrency=SETTINGS.concurrency).expand(chunk=chunks)
    if not FOLLOW_BY_EVENTS:
        submitted >> follow()


connect_subscription_changes()


if FOLLOW_BY_EVENTS:

    @dag(
        dag_id="connect_subscription_outcomes",
        description="Connect decided requests (event-driven) -> outcomes written back to the outbox",
        schedule=[events.REQUEST_OUTCOMES_ASSET],
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
        tags=["cloudblue-connect", "outbox", "events"],
        params={
            "max_missing_checks": Param(SETTINGS.max_missing_checks, type="integer", minimum=1),
            "connect_conn_id": Param(DEFAULT_CONN_ID, type="string"),
            "changes_conn_id": Param(CHANGES_DB_CONN_ID, type="string"),
        },
    )
    def connect_subscription_outcomes() -> None:
        @task(pool=API_POOL)
        def record_outcomes(params: dict | None = None) -> dict:
            p = params or {}
            _, counts = outbox_follow.follow_poke(
                connect_conn_id=p["connect_conn_id"],
                changes_conn_id=p["changes_conn_id"],
                deadline=0.0,  # one pass: the next event starts the next one
                max_missing_checks=p["max_missing_checks"],
            )
            return counts

        record_outcomes()

    connect_subscription_outcomes()
