"""The demo rows of the outbox: ``include/sql/demo_changes.sql``, one INSERT per kind of change.

They are this project's (``make demo``, the tests and the benchmarks run them against the sandbox),
not the provider's: the provider ships the table's DDL and nothing to put in it.
"""

from __future__ import annotations

import os
from pathlib import Path

from connect_provider.outbox import Outbox

DEMO_CHANGES_FILE = "demo_changes.sql"


def project_sql_dir() -> Path:
    """The project's SQL folder: ``$CONNECT_SQL_DIR`` (the image's ``/opt/airflow/include/sql``),
    else ``include/sql`` of this checkout."""
    explicit = os.environ.get("CONNECT_SQL_DIR")
    return Path(explicit) if explicit else Path(__file__).resolve().parents[2] / "include" / "sql"


def seed_demo_changes(outbox: Outbox) -> list[int]:
    """Create the table if needed and add the demo rows of ``include/sql/demo_changes.sql``.

    Returns the ids of the rows added (the demo and the tests run them against the sandbox).
    """
    outbox.create_schema()
    before = {row.id for row in outbox.all()}
    outbox.execute_script((project_sql_dir() / DEMO_CHANGES_FILE).read_text())
    return [row.id for row in outbox.all() if row.id not in before]


#: The trigger form's defaults of ``connect_request_action``: the sandbox's demo data, so a
#: purchase can be triggered straight away (hub, marketplace, item, reseller and customer).
DEMO_FORM: dict[str, object] = {
    "action": "purchase",
    "asset_external_id": "demo-ui-0001",
    "hub_id": "HB-0000-0001",
    "marketplace": "MP-00001",
    "item_id": "PRD-276-377-545-0001",
    "quantity": 5,
    "tier1_name": "Demo Reseller",
    "tier1_external_id": "reseller-1",
    "tier1_email": "reseller@example.com",
    "tier1_first_name": "Rita",
    "tier1_last_name": "Reseller",
    "tier1_phone": "+1 2015550123",
    "tier1_address_line1": "1 Demo Street",
    "tier1_city": "Springfield",
    "tier1_postal_code": "10001",
    "tier1_country": "US",
    "customer_name": "Demo Customer",
    "customer_external_id": "customer-1",
    "customer_email": "carl@example.com",
    "customer_first_name": "Carl",
    "customer_last_name": "Customer",
    "customer_phone": "+1 2015550124",
    "customer_address_line1": "2 Client Road",
    "customer_city": "Springfield",
    "customer_postal_code": "10002",
    "customer_country": "US",
}
