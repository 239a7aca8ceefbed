"""One-off CloudBlue Connect request from the Airflow UI: purchase, change, suspend, resume or cancel.

Trigger it with the form ("Trigger DAG"): pick the action, name the asset, fill in what that
action needs. The task checks the form before any call to Connect (a wrong or missing field fails
with a message naming it), creates the request (or returns the open one already there for that
asset, so triggering twice never makes two), and logs and returns the request id and status.

Which fields each action uses:

* purchase: asset_external_id, hub_id, marketplace, item_id, quantity, the tier 1 and customer
  fields (optionally asset_external_uid, product_id, and the tier 2 fields when a second-level
  reseller sells it);
* change: the asset (asset_id, or asset_external_id/asset_external_uid), item_id, quantity;
* suspend, resume, cancel: the asset only.

The defaults are the sandbox's demo data (``connect_project.demo.DEMO_FORM``: hub HB-0000-0001,
marketplace MP-00001, item PRD-276-377-545-0001, reseller ``reseller-1``, customer ``customer-1``).
This file only wires the task; the form's boxes come from the actions' declarations
(``connect_provider.arguments``, through ``connect_provider.forms.form_params``) and the logic lives
in ``connect_provider.forms.run_form_action`` and ``connect_provider.actions``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import dag, task
from connect_project.demo import DEMO_FORM
from connect_provider import forms


@dag(
    dag_id="connect_request_action",
    description="Create one purchase, change, suspend, resume or cancel request on CloudBlue Connect",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["cloudblue-connect", "ui"],
    # The form's boxes are declared with the actions' arguments (connect_provider.arguments).
    params=forms.form_params(DEMO_FORM),
)
def connect_request_action() -> None:
    @task
    def create_request(params: dict | None = None) -> dict:
        return forms.run_form_action(params or {})

    create_request()


connect_request_action()
