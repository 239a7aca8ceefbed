"""Every CloudBlue Connect request operator in one DAG: a subscription's whole life, and vendor decisions.

Runs against the sandbox out of the box (``connect-sandbox``, demo seed; point the connection
``cloudblue_connect_default`` at ``http://127.0.0.1:8765/public/v1`` with the demo API key). The
ids below are the sandbox demo seed's; against a real Connect account, put yours.

* Customer side: buy a subscription for an external id derived from the run id, follow it to
  approval (in the triggerer), raise its seats, suspend it, resume it, cancel it and wait for the
  cancellation with a sensor. Each step names the subscription by the same external id, so a
  retried task finds the request it already made instead of creating another.
* Vendor side: approve one purchase; question another, saying which parameter to fix
  (``param_errors``, written to the parameter's ``value_error``; ``inquire-`` external ids are
  moved to inquiring by the sandbox's vendor as well, which the operator treats as already done,
  still writing the errors), then refuse it.

Nothing here runs at import time: the file only wires operators (no network, no database).
"""

from __future__ import annotations

from datetime import datetime, timedelta

# [START docs_imports]
from airflow.sdk import DAG
from connect_provider.operators.requests import (
    ConnectApproveRequestOperator,
    ConnectCancelRequestOperator,
    ConnectChangeRequestOperator,
    ConnectFailRequestOperator,
    ConnectInquireRequestOperator,
    ConnectPurchaseRequestOperator,
    ConnectSuspendResumeRequestOperator,
)
from connect_provider.sensors.requests import ConnectRequestSensor

# [END docs_imports]

HUB_ID = "HB-0000-0001"
MARKETPLACE = "EU Marketplace"
SEATS_ITEM = "PRD-276-377-545-0001"
ACTIVATION_TEMPLATE = "TL-276-377-545-0001"
INQUIRE_TEMPLATE = "TL-276-377-545-0002"

# [START docs_tiers]
RESELLER = {
    "name": "Demo Reseller",
    "external_id": "reseller-1",
    "contact_info": {
        "address_line1": "1 Demo Street",
        "city": "Madrid",
        "postal_code": "28001",
        "country": "ES",
        "contact": {
            "first_name": "Rita",
            "last_name": "Reseller",
            "email": "rita@reseller.example",
            "phone_number": "+34 911222333",
        },
    },
}
CUSTOMER = {
    "name": "Example Customer",
    "external_id": "example-customer",
    "contact_info": {
        "address_line1": "5 Example Road",
        "city": "Berlin",
        "postal_code": "10115",
        "country": "DE",
        "contact": {
            "first_name": "Erika",
            "last_name": "Example",
            "email": "erika@customer.example",
            "phone_number": {"country_code": "+49", "area_code": "30", "phone_number": "1234567"},
        },
    },
}
# [END docs_tiers]

# [START docs_subscription]
# One subscription per run; every step names it the same way.
SUBSCRIPTION = "demo-{{ run_id }}"
FOLLOW = {"wait_for_completion": True, "poll_interval": 1.0, "timeout": 600}
# [END docs_subscription]


def _request_of(task_id: str) -> str:
    return "{{ ti.xcom_pull(task_ids='" + task_id + "')['request_id'] }}"


# [START docs_first_dag]
with DAG(
    dag_id="connect_request_examples",
    description="Purchase, change, suspend, resume and cancel a Connect subscription; vendor decisions.",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10)},
    tags=["cloudblue-connect", "example"],
):
    # [START docs_customer_side]
    purchase = ConnectPurchaseRequestOperator(
        task_id="purchase",
        asset_external_id=SUBSCRIPTION,
        hub_id=HUB_ID,
        marketplace=MARKETPLACE,
        tier1=RESELLER,
        customer=CUSTOMER,
        items=[{"item_id": SEATS_ITEM, "quantity": 5}],
        asset_params={"seats_note": "bought by Airflow run {{ run_id }}"},
        deferrable=True,
        **FOLLOW,
    )
    more_seats = ConnectChangeRequestOperator(
        task_id="change", asset_external_id=SUBSCRIPTION, item_id="SEATS", quantity=8, **FOLLOW
    )
    suspend = ConnectSuspendResumeRequestOperator(
        task_id="suspend",
        request_type="suspend",
        asset_id="{{ ti.xcom_pull(task_ids='purchase')['asset_id'] }}",
        **FOLLOW,
    )
    resume = ConnectSuspendResumeRequestOperator(
        task_id="resume", request_type="resume", asset_external_id=SUBSCRIPTION, **FOLLOW
    )
    cancel = ConnectCancelRequestOperator(task_id="cancel", asset_external_id=SUBSCRIPTION)
    # [START docs_sensor]
    cancelled = ConnectRequestSensor(
        task_id="cancel_approved",
        request_id=_request_of("cancel"),
        poke_interval=1.0,
        timeout=600,
        deferrable=True,
    )
    # [END docs_sensor]
    purchase >> more_seats >> suspend >> resume >> cancel >> cancelled
    # [END docs_customer_side]
    # [END docs_first_dag]

    # [START docs_vendor_side]
    to_approve = ConnectPurchaseRequestOperator(
        task_id="purchase_to_approve",
        asset_external_id="approve-{{ run_id }}",
        hub_id=HUB_ID,
        marketplace=MARKETPLACE,
        tier1=RESELLER,
        customer=CUSTOMER,
        item_id=SEATS_ITEM,
        quantity=1,
    )
    approve = ConnectApproveRequestOperator(
        task_id="approve", request_id=_request_of("purchase_to_approve"), template_id=ACTIVATION_TEMPLATE
    )
    to_question = ConnectPurchaseRequestOperator(
        task_id="purchase_to_question",
        asset_external_id="inquire-{{ run_id }}",
        hub_id=HUB_ID,
        marketplace=MARKETPLACE,
        tier1=RESELLER,
        customer=CUSTOMER,
        item_id=SEATS_ITEM,
        quantity=1,
    )
    inquire = ConnectInquireRequestOperator(
        task_id="inquire",
        request_id=_request_of("purchase_to_question"),
        template_id=INQUIRE_TEMPLATE,
        param_errors={"admin_email": "Give the e-mail address of the customer's administrator."},
    )
    refuse = ConnectFailRequestOperator(
        task_id="fail",
        request_id=_request_of("purchase_to_question"),
        reason="Refused by the example DAG: the reseller must confirm the customer's VAT id.",
    )
    to_approve >> approve
    to_question >> inquire >> refuse
    # [END docs_vendor_side]
