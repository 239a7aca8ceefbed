"""The vendor side: decide each new pending purchase as soon as Connect has it.

Scheduled on the ``connect_pending_purchases`` Asset, whose watcher
(``ConnectRequestEventTrigger(types=["purchase"], statuses=["pending"])``, in the triggerer) fires
once per purchase that becomes pending. ``decide`` approves or inquires each purchase the run's
events name, by the demo rule of ``connect_project.vendor`` (approve whole quantities up to the
param ``max_quantity``; inquire the rest). Against the sandbox, the demo vendor decides every
request itself except those of assets whose external id starts with ``manual-``: those wait for
this DAG. A manual run with ``request_ids`` decides those requests.

This file only wires the task; the rule and the calls live in ``connect_project.vendor`` and the
provider's ``actions``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import Param, dag, task
from connect_project import events
from connect_project import vendor as rules
from connect_provider.config import API_POOL, DEFAULT_CONN_ID


@dag(
    dag_id="connect_vendor_purchases",
    description="Vendor: approve or inquire each new pending purchase (event-driven)",
    schedule=[events.PENDING_PURCHASES_ASSET],
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["cloudblue-connect", "vendor", "events"],
    params={
        "request_ids": Param(
            [], type="array", title="Requests", description="Decide these requests (PR-...) in a manual run."
        ),
        "max_quantity": Param(
            rules.DEFAULT_MAX_QUANTITY,
            type="integer",
            minimum=0,
            title="Largest quantity approved",
            description="A purchase asking for more of an item (or for unlimited) is inquired.",
        ),
    },
)
def connect_vendor_purchases() -> None:
    # [START docs_vendor_events]
    @task(pool=API_POOL)
    def decide(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException
        from connect_provider.hooks.connect import ConnectHook

        p = params or {}
        named = events.ids_of(events.payloads(triggering_asset_events, "request"), "request_id")
        request_ids = [*named, *(p.get("request_ids") or [])]
        if not request_ids:
            raise AirflowException(
                "no request to decide: this run has no pending-purchase event and no request_ids param"
            )
        done = rules.decide_purchases(
            ConnectHook(DEFAULT_CONN_ID), request_ids, max_quantity=int(p.get("max_quantity", 100))
        )
        if done.failed:
            reasons = "; ".join(f"{rid}: {why}" for rid, why in done.failed.items())
            raise AirflowException(
                f"{len(done.failed)} of {len(request_ids)} request(s) not decided: {reasons}"
            )
        return done.to_dict()
    # [END docs_vendor_events]

    decide()


connect_vendor_purchases()
