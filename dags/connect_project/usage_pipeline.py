"""The glue of this project's usage DAGs: Variables, the Asset, what to export, what to load.

Kept out of the DAG files so it is unit-tested without a DAG run, and out of the provider because
it is this project's choice of settings (Airflow Variables) and of downstream table
(:mod:`connect_project.usage_load`); the export itself is the provider's
(:mod:`connect_provider.usage.exporter`).

``connect_usage_to_parquet``: :func:`plan_exports` (which usage files to export, where) ->
the mapped ``ConnectUsageRecordsToParquetOperator`` -> :func:`dataset_event` (the Asset event's
metadata). ``connect_usage_load`` (scheduled on :data:`USAGE_RECORDS_ASSET`): :func:`load_from_events`.

Settings, read at run time (never at DAG parse time): the DAG's params first, then Airflow
Variables, then defaults.

* ``connect_usage_statuses`` (Variable; param ``statuses``): usage file statuses to export,
  default ``ready, pending, accepted, closed``;
* ``connect_usage_destination`` (Variable; param ``destination``): where the dataset lives,
  default ``data_dir()/usage_records``;
* ``connect_usage_db_conn_id`` (Variable): a PostgreSQL connection to load into instead of DuckDB;
* ``connect_usage_duckdb_path`` (Variable): the DuckDB file, default ``data_dir()/usage.duckdb``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset
from connect_provider.usage.exporter import DEFAULT_STATUSES, list_usage_files, validate_statuses
from connect_provider.usage.manifest import select_for_export
from connect_provider.usage.writer import DatasetLayout, check_destination, check_partition_value

from connect_project.usage_load import LoadSummary, load_exports, make_target

if TYPE_CHECKING:
    from connect_provider.hooks.connect import ConnectHook

#: The usage records dataset. Its events carry ``{"destination", "files", "rows", "quarantined"}``.
USAGE_RECORDS_ASSET = Asset(name="connect_usage_records")

STATUSES_VARIABLE = "connect_usage_statuses"
DESTINATION_VARIABLE = "connect_usage_destination"
DB_CONN_ID_VARIABLE = "connect_usage_db_conn_id"
DUCKDB_PATH_VARIABLE = "connect_usage_duckdb_path"


def variable(key: str) -> str | None:
    """An Airflow Variable, or None (read inside tasks only)."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(key, default=None)
    except Exception:  # no Variable backend reachable: behave as unset
        return None
    return value or None


def resolve_statuses(param: Any = None) -> list[str]:
    """Statuses from the param (list or comma-separated), else the Variable, else the defaults."""
    if param:
        return validate_statuses(param)
    configured = variable(STATUSES_VARIABLE)
    if configured:
        try:
            parsed = json.loads(configured)
        except ValueError:
            parsed = configured
        return validate_statuses(parsed)
    return list(DEFAULT_STATUSES)


def resolve_destination(param: Any = None) -> str:
    """Destination from the param, else the Variable, else ``data_dir()/usage_records``."""
    chosen = param or variable(DESTINATION_VARIABLE)
    return str(DatasetLayout(chosen).root)


def plan_exports(
    hook: ConnectHook,
    *,
    usage_file_id: str | None = None,
    statuses: Any = None,
    destination: Any = None,
    event_file_ids: Iterable[str] | None = None,
) -> list[dict[str, str]]:
    """The ``expand_kwargs`` of the mapped export: one ``{"usage_file_id", "destination"}`` per file.

    With ``usage_file_id`` (a manual run from the UI) that file is exported whatever the manifest
    says. With ``event_file_ids`` (a run started by the usage-file watcher's events) those files,
    read again now, when they are in ``statuses`` and new or changed since their export: a
    duplicate event, or one for a file exported meanwhile, exports nothing. Otherwise every usage
    file in ``statuses`` that is new or changed since its export.
    """
    target = resolve_destination(destination)
    check_destination(target)  # before any call to Connect: a bad destination costs nothing there
    if usage_file_id:
        file_id = check_partition_value("usage_file_id", str(usage_file_id).strip())
        hook.get_usage_file(file_id)  # fails early, with Connect's 404, on a wrong id
        return [{"usage_file_id": file_id, "destination": target}]
    if event_file_ids is not None:
        files = files_named(hook, event_file_ids, resolve_statuses(statuses))
    else:
        files = list_usage_files(hook, resolve_statuses(statuses))
    chosen = select_for_export(DatasetLayout(target), files)
    return [{"usage_file_id": file_id, "destination": target} for file_id in chosen]


def files_named(hook: ConnectHook, file_ids: Iterable[str], statuses: list[str]) -> list[dict[str, Any]]:
    """The usage files of these ids as Connect has them now, those in ``statuses`` (100 ids a call)."""
    from connect_provider.rql import R

    ids = [check_partition_value("usage_file_id", str(i).strip()) for i in dict.fromkeys(file_ids)]
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 100):
        query = R().id.in_(ids[start : start + 100]) & R().status.in_(statuses)
        found.extend(hook.iter_items("/usage/files", query, ordering=("created.at", "id")))
    return found


def dataset_event(results: Iterable[Mapping[str, Any] | None], destination: str) -> dict[str, Any] | None:
    """Metadata of the Asset event from the mapped exports' results; None when nothing was exported."""
    done = [r for r in results if r]
    if not done:
        return None
    return {
        "destination": destination,
        "files": sorted(str(r["usage_file_id"]) for r in done),
        "rows": sum(int(r["rows"]) for r in done),
        "quarantined": sum(int(r["quarantined"]) for r in done),
        "bytes": sum(int(r["bytes"]) for r in done),
    }


def destinations_from_events(events: Iterable[Any]) -> list[str]:
    """Destinations named by triggering asset events (their ``extra``), default when none."""
    found: list[str] = []
    for event in events:
        extra = getattr(event, "extra", None) or (event.get("extra") if isinstance(event, Mapping) else None)
        destination = (extra or {}).get("destination")
        if destination and destination not in found:
            found.append(str(destination))
    return found or [resolve_destination()]


def load_from_events(events: Iterable[Any]) -> dict[str, Any]:
    """Load what the exports published into the configured database (one target per run)."""
    target = make_target(variable(DB_CONN_ID_VARIABLE), variable(DUCKDB_PATH_VARIABLE))
    total = LoadSummary()
    try:
        for destination in destinations_from_events(events):
            summary = load_exports(target, destination)
            total.loaded.extend(summary.loaded)
            total.rows += summary.rows
            total.unchanged += summary.unchanged
            total.stale += summary.stale
    finally:
        target.close()
    return total.to_dict()
