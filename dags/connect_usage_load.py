"""Load newly exported usage Parquet into the table the data team queries.

Scheduled on the ``connect_usage_records`` Asset (emitted by ``connect_usage_to_parquet``). Loads
every export the database has not loaded yet into ``usage_records``: a DuckDB file by default
(``<data folder>/usage.duckdb``, Variable ``connect_usage_duckdb_path``), or the PostgreSQL
connection named by the Variable ``connect_usage_db_conn_id``. Reloading a usage file replaces its
rows (delete by ``usage_file_id`` then insert, in one transaction). The logic lives in
``connect_project.usage_pipeline`` and ``connect_project.usage_load`` (beside this file).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import dag, task
from connect_project import usage_pipeline as pipeline


@dag(
    dag_id="connect_usage_load",
    description="Exported usage Parquet -> usage_records table (DuckDB, or PostgreSQL when configured)",
    schedule=[pipeline.USAGE_RECORDS_ASSET],
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["cloudblue-connect", "usage"],
)
def connect_usage_load() -> None:
    @task
    def load(**context: Any) -> dict[str, Any]:
        events: list[Any] = []
        for asset_events in (context.get("triggering_asset_events") or {}).values():
            events.extend(asset_events)
        return pipeline.load_from_events(events)

    load()


connect_usage_load()
