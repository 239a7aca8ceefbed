"""This project's event-driven scheduling: the watched Assets, their settings, reading their events.

Each Asset here has an :class:`~airflow.sdk.AssetWatcher` whose trigger polls Connect in the
triggerer (:mod:`connect_provider.triggers.events`); a DAG scheduled on the Asset runs when an
event comes, its run's ``triggering_asset_events`` carrying the trigger payloads (``extra["payload"]``).

* :data:`USAGE_FILES_ASSET` (``connect_usage_files``): a usage file became ready, pending,
  accepted or closed -> ``connect_usage_to_parquet`` exports the files the events name;
* :data:`PENDING_PURCHASES_ASSET` (``connect_pending_purchases``): a purchase became pending ->
  ``connect_vendor_purchases`` approves or inquires it;
* :data:`REQUEST_OUTCOMES_ASSET` (``connect_request_outcomes``): a request was approved, failed,
  revoked or inquired -> ``connect_subscription_outcomes`` writes the outcomes back to the outbox
  (when ``CONNECT_CHANGES_FOLLOW=events``).

Settings, read when the DAG files are parsed (environment variables only: a DAG file makes no
database or API call at import time):

* ``CONNECT_USAGE_SCHEDULE``: ``events`` (default: the usage-file Asset), a cron or preset such as
  ``@daily`` (the export's former schedule: every run lists every usage file), or ``none``;
* ``CONNECT_USAGE_WATCH_STATUSES``: the usage file statuses that fire (default: the export's,
  ``ready,pending,accepted,closed``); ``CONNECT_USAGE_WATCH_PRODUCT``: only this product's files;
* ``CONNECT_CHANGES_FOLLOW``: ``poll`` (default: the changes DAG's ``follow`` sensor) or ``events``;
* ``CONNECT_EVENTS_POLL_SECONDS``: how often the watchers poll Connect (default 60);
* ``CONNECT_EVENTS_CONN_ID``: the Connect connection the watchers use (default the provider's).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow.sdk import Asset, AssetWatcher
from connect_provider import validation as v
from connect_provider.config import DEFAULT_CONN_ID
from connect_provider.triggers.events import (
    DEFAULT_USAGE_FILE_STATUSES,
    ConnectRequestEventTrigger,
    ConnectUsageFileEventTrigger,
)

EVENTS = "events"


@dataclass(frozen=True)
class EventSettings:
    """The parse-time settings above, checked (a bad value is the DAG file's import error)."""

    usage_schedule: str | None  # EVENTS, a cron/preset, or None
    usage_statuses: tuple[str, ...]
    usage_product_id: str | None
    changes_follow: str  # "poll" or EVENTS
    poll_seconds: float
    conn_id: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EventSettings:
        env = os.environ if environ is None else environ
        schedule = env.get("CONNECT_USAGE_SCHEDULE", EVENTS).strip()
        follow = env.get("CONNECT_CHANGES_FOLLOW", "poll").strip().lower()
        if follow not in ("poll", EVENTS):
            raise ValueError(f"CONNECT_CHANGES_FOLLOW: {follow!r}; use 'poll' (the default) or 'events'")
        statuses = env.get("CONNECT_USAGE_WATCH_STATUSES", ",".join(DEFAULT_USAGE_FILE_STATUSES))
        return cls(
            usage_schedule=None if schedule.lower() in ("", "none", "manual") else schedule,
            usage_statuses=tuple(s.strip() for s in statuses.split(",") if s.strip()),
            usage_product_id=env.get("CONNECT_USAGE_WATCH_PRODUCT", "").strip() or None,
            changes_follow=follow,
            poll_seconds=float(
                v.positive_int("CONNECT_EVENTS_POLL_SECONDS", env.get("CONNECT_EVENTS_POLL_SECONDS", 60))
            ),
            conn_id=env.get("CONNECT_EVENTS_CONN_ID", "").strip() or DEFAULT_CONN_ID,
        )


SETTINGS = EventSettings.from_env()

# [START docs_usage_files_asset]
USAGE_FILES_ASSET = Asset(
    name="connect_usage_files",
    watchers=[
        AssetWatcher(
            name="connect_usage_files_watcher",
            trigger=ConnectUsageFileEventTrigger(
                connect_conn_id=SETTINGS.conn_id,
                product_id=SETTINGS.usage_product_id,
                statuses=SETTINGS.usage_statuses,
                poll_interval=SETTINGS.poll_seconds,
            ),
        )
    ],
)
# [END docs_usage_files_asset]

# [START docs_pending_purchases_asset]
PENDING_PURCHASES_ASSET = Asset(
    name="connect_pending_purchases",
    watchers=[
        AssetWatcher(
            name="connect_pending_purchases_watcher",
            trigger=ConnectRequestEventTrigger(
                connect_conn_id=SETTINGS.conn_id,
                types=["purchase"],
                statuses=["pending"],
                poll_interval=SETTINGS.poll_seconds,
            ),
        )
    ],
)
# [END docs_pending_purchases_asset]

REQUEST_OUTCOMES_ASSET = Asset(
    name="connect_request_outcomes",
    watchers=[
        AssetWatcher(
            name="connect_request_outcomes_watcher",
            trigger=ConnectRequestEventTrigger(
                connect_conn_id=SETTINGS.conn_id,
                statuses=["approved", "failed", "revoked", "inquiring"],
                poll_interval=SETTINGS.poll_seconds,
            ),
        )
    ],
)


def usage_schedule(settings: EventSettings = SETTINGS) -> Any:
    """The export DAG's ``schedule``: the usage-file Asset, a cron/preset, or None."""
    if settings.usage_schedule == EVENTS:
        return [USAGE_FILES_ASSET]
    return settings.usage_schedule


def payloads(triggering_asset_events: Any, kind: str) -> list[dict[str, Any]]:
    """The trigger payloads of a run's triggering asset events of one ``kind`` (oldest first).

    An Asset event a watcher made carries ``{"from_trigger": true, "payload": {...}}`` as its extra;
    other events (an event posted by hand, another DAG's outlet) carry none and are skipped.
    """
    found: list[dict[str, Any]] = []
    for events in _event_lists(triggering_asset_events):
        for event in events:
            extra = getattr(event, "extra", None)
            if extra is None and isinstance(event, Mapping):
                extra = event.get("extra")
            payload = (extra or {}).get("payload")
            if isinstance(payload, Mapping) and payload.get("kind") == kind:
                found.append(dict(payload))
    return found


def _event_lists(triggering_asset_events: Any) -> Iterable[Iterable[Any]]:
    if not triggering_asset_events:
        return []
    if isinstance(triggering_asset_events, Mapping):
        return list(triggering_asset_events.values())
    return [triggering_asset_events]


def ids_of(payloads_: Iterable[Mapping[str, Any]], field: str) -> list[str]:
    """The distinct ids of ``field`` in the payloads, in order (duplicate events count once)."""
    return list(dict.fromkeys(str(p[field]) for p in payloads_ if p.get(field)))
