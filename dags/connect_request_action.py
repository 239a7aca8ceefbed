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

The defaults are the sandbox's demo data (hub HB-0000-0001, marketplace MP-00001, item
PRD-276-377-545-0001, reseller ``reseller-1``, customer ``customer-1``). This file only wires the
task; the logic lives in ``connect_provider.forms.run_form_action`` and ``connect_provider.actions``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import Param, dag, task
from connect_provider import forms
from connect_provider.config import DEFAULT_CONN_ID

ASSET = "Asset"
ORDER = "Purchase and change"
TIER1 = "Tier 1 (reseller) - purchase"
TIER2 = "Tier 2 (second-level reseller) - purchase, optional"
CUSTOMER = "Customer (end customer) - purchase"


def _text(default: str | None, title: str, description: str, section: str, **schema) -> Param:
    return Param(
        default, type=["null", "string"], title=title, description=description, section=section, **schema
    )


@dag(
    dag_id="connect_request_action",
    description="Create one purchase, change, suspend, resume or cancel request on CloudBlue Connect",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["cloudblue-connect", "ui"],
    params={
        "action": Param(
            "purchase",
            type="string",
            enum=["purchase", "change", "suspend", "resume", "cancel"],
            values_display={
                "purchase": "Purchase a new subscription",
                "change": "Change item quantities",
                "suspend": "Suspend",
                "resume": "Resume",
                "cancel": "Cancel (terminate)",
            },
            title="Action",
            description="The request to create. Each action uses only the fields it needs (see below).",
        ),
        "asset_external_id": _text(
            "demo-ui-0001",
            "Asset external id",
            "Your system's id of the subscription. Required for a purchase; for the other actions "
            "it names the asset unless Asset id is given.",
            ASSET,
            maxLength=100,
        ),
        "asset_external_uid": _text(
            None,
            "Asset external uid",
            "Optional: tells apart assets sharing one external id. Left empty for a purchase, a "
            "stable UUID is derived from the external id.",
            ASSET,
        ),
        "asset_id": _text(
            None,
            "Asset id",
            "Connect's asset id (AS-...). Change, suspend, resume, cancel: use it instead of the "
            "external id.",
            ASSET,
        ),
        "hub_id": _text("HB-0000-0001", "Hub", "Purchase: the hub (HB-XXXX-XXXX) of the connection.", ORDER),
        "marketplace": _text("MP-00001", "Marketplace", "Purchase: marketplace id (MP-...) or name.", ORDER),
        "product_id": _text(
            None, "Product", "Purchase, optional: PRD-XXX-XXX-XXX; by default the item's product.", ORDER
        ),
        "item_id": _text(
            "PRD-276-377-545-0001",
            "Item",
            "Purchase and change: item global id (PRD-XXX-XXX-XXX-XXXX); change also takes the "
            "item's local id (e.g. SEATS).",
            ORDER,
        ),
        "quantity": Param(
            5,
            type=["null", "integer"],
            title="Quantity",
            description="Purchase and change: the item's quantity (-1: unlimited; 0 removes it in a change).",
            section=ORDER,
        ),
        "tier1_name": _text("Demo Reseller", "Name", "Tier 1 company name.", TIER1),
        "tier1_external_id": _text("reseller-1", "External id", "Tier 1 id in your system.", TIER1),
        "tier1_email": _text("reseller@example.com", "E-mail", "Contact e-mail.", TIER1),
        "tier1_first_name": _text("Rita", "First name", "Contact first name.", TIER1),
        "tier1_last_name": _text("Reseller", "Last name", "Contact last name.", TIER1),
        "tier1_phone": _text("+1 2015550123", "Phone", "Contact phone, e.g. +1 2015550123.", TIER1),
        "tier1_address_line1": _text("1 Demo Street", "Address", "Street and number.", TIER1),
        "tier1_city": _text("Springfield", "City", "City.", TIER1),
        "tier1_postal_code": _text("10001", "Postal code", "Postal code.", TIER1),
        "tier1_country": _text("US", "Country", "Two-letter ISO country code (US, DE...).", TIER1),
        "tier2_name": _text(
            None, "Name", "Tier 2 company name; leave all tier 2 fields empty if none.", TIER2
        ),
        "tier2_external_id": _text(None, "External id", "Tier 2 id in your system.", TIER2),
        "tier2_email": _text(None, "E-mail", "Contact e-mail.", TIER2),
        "tier2_first_name": _text(None, "First name", "Contact first name.", TIER2),
        "tier2_last_name": _text(None, "Last name", "Contact last name.", TIER2),
        "tier2_phone": _text(None, "Phone", "Contact phone, e.g. +1 2015550123.", TIER2),
        "tier2_address_line1": _text(None, "Address", "Street and number.", TIER2),
        "tier2_city": _text(None, "City", "City.", TIER2),
        "tier2_postal_code": _text(None, "Postal code", "Postal code.", TIER2),
        "tier2_country": _text(None, "Country", "Two-letter ISO country code (US, DE...).", TIER2),
        "customer_name": _text("Demo Customer", "Name", "End customer company name.", CUSTOMER),
        "customer_external_id": _text(
            "customer-1", "External id", "End customer id in your system.", CUSTOMER
        ),
        "customer_email": _text("carl@example.com", "E-mail", "Contact e-mail.", CUSTOMER),
        "customer_first_name": _text("Carl", "First name", "Contact first name.", CUSTOMER),
        "customer_last_name": _text("Customer", "Last name", "Contact last name.", CUSTOMER),
        "customer_phone": _text("+1 2015550124", "Phone", "Contact phone, e.g. +1 2015550123.", CUSTOMER),
        "customer_address_line1": _text("2 Client Road", "Address", "Street and number.", CUSTOMER),
        "customer_city": _text("Springfield", "City", "City.", CUSTOMER),
        "customer_postal_code": _text("10002", "Postal code", "Postal code.", CUSTOMER),
        "customer_country": _text("US", "Country", "Two-letter ISO country code (US, DE...).", CUSTOMER),
        "connect_conn_id": Param(
            DEFAULT_CONN_ID,
            type="string",
            title="Connect connection",
            description="The cloudblue_connect connection to use.",
            section="Advanced",
        ),
    },
)
def connect_request_action() -> None:
    @task
    def create_request(params: dict | None = None) -> dict:
        return forms.run_form_action(params or {})

    create_request()


connect_request_action()
