"""The subscription-changes outbox: a component a target application adopts to reach Connect.

The application INSERTs one row per subscription change into ``connect_subscription_changes`` and
reads back its ``status``; it never calls Connect itself. Three modules, one job each:

* :mod:`~connect_provider.outbox.table`: the table (its DDL, shipped with this package), DB-API
  access on SQLite and PostgreSQL, claims, per-attempt holds and conditional write-backs;
* :mod:`~connect_provider.outbox.processing`: claim a batch, cut it into chunks, create each row's
  request through :mod:`connect_provider.actions` and write the result back;
* :mod:`~connect_provider.outbox.follow`: follow the submitted rows until Connect decides them.

None of them needs a task context: a DAG (this project's ``connect_subscription_changes``) or any
other scheduler composes them.
"""

from __future__ import annotations

from connect_provider.outbox.table import (
    CHANGE_TYPES,
    DEFAULT_LEASE_SECONDS,
    TABLE,
    Change,
    ChangeStatus,
    Outbox,
    OutboxError,
    Outcome,
    attempt_token,
)

__all__ = [
    "CHANGE_TYPES",
    "DEFAULT_LEASE_SECONDS",
    "TABLE",
    "Change",
    "ChangeStatus",
    "Outbox",
    "OutboxError",
    "Outcome",
    "attempt_token",
]
