"""Event triggers for Airflow's event-driven scheduling: run a DAG when Connect changes.

Use them as an :class:`~airflow.sdk.AssetWatcher`'s trigger; every event becomes an event of the
asset, with the trigger's payload in its ``extra["payload"]``::

    from airflow.sdk import Asset, AssetWatcher
    from connect_provider.triggers.events import ConnectUsageFileEventTrigger

    usage_files = Asset(
        "connect_usage_files",
        watchers=[AssetWatcher(
            name="connect_usage_files_watcher",
            trigger=ConnectUsageFileEventTrigger(product_id="PRD-276-377-545", statuses=["ready"]),
        )],
    )

* :class:`ConnectUsageFileEventTrigger`: one event per usage file that is new or whose status
  changed into one of ``statuses`` (Workato's "New Usage File" trigger, which sees a file only
  when it is created, and in a status given then);
* :class:`ConnectRequestEventTrigger`: one event per request of ``types`` that enters one of
  ``statuses`` (Workato's "Updated Requests", Zapier's "New" and "New or updated Asset Request").

How they poll, why nothing is missed across ties, clock skew and pages read while Connect
changes, and where the watermark lives: :mod:`connect_provider.triggers.feeds` and
:mod:`connect_provider.triggers.watch`. A duplicate event is possible after a triggerer crash (an
event fired but not yet stored is fired again); the DAGs these triggers start treat an event as
"look at this id", which is harmless twice.

Everything that can be checked is checked when the trigger is built (at DAG parse time, so a bad
value is an import error naming the argument): statuses and types against Connect's enums, ids by
their shape, ``since`` as an ISO 8601 time, the intervals as numbers of seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from connect_provider.config import DEFAULT_CONN_ID
from connect_provider.enums import RequestStatus, UsageFileStatus
from connect_provider.triggers.feeds import (
    FINAL_REQUEST_STATUSES,
    TERMINAL_FILE_STATUSES,
    Feed,
    Observation,
    RequestFeed,
    UsageFileFeed,
)
from connect_provider.triggers.watch import ConnectEventTrigger, check_choices, check_id

#: The usage export's default statuses: a file is worth exporting once its records are processed.
DEFAULT_USAGE_FILE_STATUSES = ("ready", "pending", "accepted", "closed")
#: Request types Connect lists (``GET /requests`` type filter, spec v37).
REQUEST_TYPES = ("purchase", "change", "suspend", "resume", "cancel", "adjustment", "renew", "transfer")
DEFAULT_POLL_INTERVAL = 60.0
#: How far before its watermark every poll reads again (seconds): covers Connect servers whose
#: clocks differ and transactions committed after a later one. Re-read items are dropped as
#: duplicates.
DEFAULT_OVERLAP_SECONDS = 300.0


def _hook(kwargs: Mapping[str, Any]) -> Any:
    from connect_provider.hooks.connect import ConnectHook

    return ConnectHook(str(kwargs.get("connect_conn_id") or DEFAULT_CONN_ID))


class ConnectUsageFileEventTrigger(ConnectEventTrigger):
    """Fire once per usage file that appears in, or moves into, one of ``statuses``.

    :param connect_conn_id: the ``cloudblue_connect`` connection.
    :param product_id: only files of this product (``PRD-...``).
    :param marketplace_id: only files of this marketplace (``MP-...``).
    :param statuses: the statuses that fire (default: those the usage export exports).
    :param poll_interval: seconds between two polls (watchers of the same connection, product,
        marketplace and interval share one poll, whatever their statuses).
    :param since: an ISO 8601 time: on the first start, files created since then count as new
        (default: only what happens after the watch starts).
    :param overlap_seconds: how far before its watermark each poll reads again.

    Event payload: ``{"kind": "usage_file", "usage_file_id", "status", "previous_status",
    "changed_at", "created_at", "product_id", "marketplace_id", "period_from",
    "connect_conn_id"}``; ``changed_at`` is Connect's time of the event that brought the status
    (``events.uploaded.at`` for ready, ``submitted`` for pending, ...).
    """

    kind: ClassVar[str] = "usage_file"
    filter_fields: ClassVar[tuple[str, ...]] = ("product_id", "marketplace_id")
    terminal_statuses: ClassVar[frozenset[str]] = TERMINAL_FILE_STATUSES
    track_all_open: ClassVar[bool] = True

    def __init__(
        self,
        *,
        connect_conn_id: str = DEFAULT_CONN_ID,
        product_id: str | None = None,
        marketplace_id: str | None = None,
        statuses: Iterable[str] | str = DEFAULT_USAGE_FILE_STATUSES,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        since: str | None = None,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    ) -> None:
        super().__init__(
            connect_conn_id=connect_conn_id,
            statuses=check_choices("statuses", statuses, [s.value for s in UsageFileStatus]),
            poll_interval=poll_interval,
            since=since,
            overlap_seconds=overlap_seconds,
        )
        self.product_id = check_id("product_id", product_id, "PRD-")
        self.marketplace_id = check_id("marketplace_id", marketplace_id, "MP-")

    @classmethod
    def make_feed(cls, kwargs: Mapping[str, Any]) -> Feed:
        return UsageFileFeed(
            _hook(kwargs), product_id=kwargs.get("product_id"), marketplace_id=kwargs.get("marketplace_id")
        )

    def event_payload(self, obs: Observation, previous: str | None) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "usage_file_id": obs.id,
            "status": obs.status,
            "previous_status": previous,
            "changed_at": obs.changed_at,
            "created_at": obs.key or None,
            **obs.fields,
            "connect_conn_id": self.connect_conn_id,
        }


class ConnectRequestEventTrigger(ConnectEventTrigger):
    """Fire once per request of ``types`` that enters one of ``statuses``.

    For a vendor: ``types=["purchase"], statuses=["pending"]`` (new purchases to decide); for the
    application that makes the requests: ``statuses=["approved", "failed", "inquiring"]``.

    :param connect_conn_id: the ``cloudblue_connect`` connection.
    :param statuses: the statuses that fire (required).
    :param types: only requests of these types (default: every type).
    :param product_id: only requests of assets of this product (``PRD-...``).
    :param marketplace_id: only requests of this marketplace (``MP-...``).
    :param poll_interval: seconds between two polls (watchers of the same connection, types,
        product, marketplace and interval share one poll, whatever their statuses).
    :param since: an ISO 8601 time: on the first start, requests updated since then are looked at
        (default: only what happens after the watch starts).
    :param overlap_seconds: how far before its watermark each poll reads again.

    A request fires when it is first seen in a watched status, and again whenever it comes back
    to one after another status (pending, inquiring, pending again). Event payload:
    ``{"kind": "request", "request_id", "type", "status", "previous_status", "changed_at",
    "asset_id", "asset_external_id", "product_id", "marketplace_id", "connect_conn_id"}``;
    ``changed_at`` is the request's ``updated``.
    """

    kind: ClassVar[str] = "request"
    filter_fields: ClassVar[tuple[str, ...]] = ("types", "product_id", "marketplace_id")
    terminal_statuses: ClassVar[frozenset[str]] = FINAL_REQUEST_STATUSES
    track_all_open: ClassVar[bool] = False

    def __init__(
        self,
        *,
        statuses: Iterable[str] | str,
        connect_conn_id: str = DEFAULT_CONN_ID,
        types: Iterable[str] | str | None = None,
        product_id: str | None = None,
        marketplace_id: str | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        since: str | None = None,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    ) -> None:
        super().__init__(
            connect_conn_id=connect_conn_id,
            statuses=check_choices("statuses", statuses, [s.value for s in RequestStatus]),
            poll_interval=poll_interval,
            since=since,
            overlap_seconds=overlap_seconds,
        )
        self.types = tuple(sorted(check_choices("types", types or (), REQUEST_TYPES, empty_ok=True)))
        self.product_id = check_id("product_id", product_id, "PRD-")
        self.marketplace_id = check_id("marketplace_id", marketplace_id, "MP-")

    @classmethod
    def make_feed(cls, kwargs: Mapping[str, Any]) -> Feed:
        return RequestFeed(
            _hook(kwargs),
            types=tuple(kwargs.get("types") or ()),
            product_id=kwargs.get("product_id"),
            marketplace_id=kwargs.get("marketplace_id"),
        )

    def event_payload(self, obs: Observation, previous: str | None) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "request_id": obs.id,
            "status": obs.status,
            "previous_status": previous,
            "changed_at": obs.changed_at,
            **obs.fields,
            "connect_conn_id": self.connect_conn_id,
        }
