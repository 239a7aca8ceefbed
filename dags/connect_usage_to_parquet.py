"""Export CloudBlue Connect usage records to partitioned Parquet, once per usage file version.

Runs when Connect's usage files change: scheduled on the ``connect_usage_files`` Asset, whose
watcher (``ConnectUsageFileEventTrigger``, in the triggerer) fires when a usage file becomes ready,
pending, accepted or closed; and by hand. ``CONNECT_USAGE_SCHEDULE=@daily`` (read at parse time)
keeps the former daily schedule instead (see ``connect_project.events``).

plan -> export_usage_file (mapped, one per usage file, in the ``cloudblue_connect_api`` pool)
-> publish_dataset (emits the ``connect_usage_records`` Asset event with files and rows).

* ``plan`` takes the usage files the triggering events name (or, in a run without events, lists
  the usage files in the configured statuses) and keeps those not exported yet or changed since
  (the manifest beside the data); a manual run with ``usage_file_id`` exports that one file
  whatever the manifest says.
* ``export_usage_file`` is ``ConnectUsageRecordsToParquetOperator``: streaming, atomic publish,
  bad records quarantined up to the param ``max_bad_record_ratio`` (1 % by default; past it the
  file's export fails and publishes nothing), manifest updated.
* ``publish_dataset`` emits the Asset event only when something was exported; the
  ``connect_usage_load`` DAG is scheduled on it.

Settings (params, else Variables, else defaults) are described in
``connect_project.usage_pipeline`` (beside this file); this file only wires tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Param, dag, task
from connect_project import events
from connect_project import usage_pipeline as pipeline
from connect_provider.config import API_POOL, DEFAULT_CONN_ID
from connect_provider.operators.usage import ConnectUsageRecordsToParquetOperator
from connect_provider.usage.exporter import DEFAULT_CONCURRENCY, DEFAULT_MAX_BAD_RECORD_RATIO


@dag(
    dag_id="connect_usage_to_parquet",
    description="Connect usage records -> typed, partitioned Parquet (new or changed usage files only)",
    schedule=events.usage_schedule(),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["cloudblue-connect", "usage"],
    params={
        "usage_file_id": Param(
            None,
            type=["null", "string"],
            title="Usage file id",
            description="Export only this usage file (UF-...), even if it was exported already.",
        ),
        "statuses": Param(
            None,
            type=["null", "array"],
            title="Usage file statuses",
            description="Statuses to export (default: Variable connect_usage_statuses, else "
            "ready, pending, accepted, closed).",
        ),
        "destination": Param(
            None,
            type=["null", "string"],
            title="Destination",
            description="Path or URI of the dataset (default: Variable connect_usage_destination, "
            "else <data folder>/usage_records).",
        ),
        "max_bad_record_ratio": Param(
            DEFAULT_MAX_BAD_RECORD_RATIO,
            type="number",
            minimum=0,
            maximum=1,
            title="Most records set aside",
            description="Share of a usage file's records that may be quarantined (0.01 = 1 %); past "
            "it the export of that file fails and publishes nothing.",
        ),
    },
)
def connect_usage_to_parquet() -> None:
    @task(pool=API_POOL)
    def plan(
        params: dict[str, Any] | None = None, triggering_asset_events: Any = None
    ) -> list[dict[str, str]]:
        from connect_provider.hooks.connect import ConnectHook

        params = params or {}
        named = events.ids_of(events.payloads(triggering_asset_events, "usage_file"), "usage_file_id")
        return pipeline.plan_exports(
            ConnectHook(DEFAULT_CONN_ID),
            usage_file_id=params.get("usage_file_id"),
            statuses=params.get("statuses"),
            destination=params.get("destination"),
            event_file_ids=named or None,
        )

    # [START docs_usage_export]
    exports = ConnectUsageRecordsToParquetOperator.partial(
        task_id="export_usage_file",
        pool=API_POOL,
        # One pool slot per record page fetched side by side: the pool bounds Connect's calls.
        concurrency=DEFAULT_CONCURRENCY,
        pool_slots=DEFAULT_CONCURRENCY,
        connect_conn_id=DEFAULT_CONN_ID,
        max_bad_record_ratio="{{ params.max_bad_record_ratio }}",
    ).expand_kwargs(plan())
    # [END docs_usage_export]

    @task(outlets=[pipeline.USAGE_RECORDS_ASSET], trigger_rule="none_failed")
    def publish_dataset(results: Any, params: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        event = pipeline.dataset_event(
            list(results or []), pipeline.resolve_destination((params or {}).get("destination"))
        )
        if event is None:
            raise AirflowSkipException("no usage file was new or changed: no dataset event")
        context["outlet_events"][pipeline.USAGE_RECORDS_ASSET].extra = event
        return event

    publish_dataset(exports.output)


connect_usage_to_parquet()
