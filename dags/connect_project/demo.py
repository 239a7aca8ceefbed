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
