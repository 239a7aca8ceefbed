"""The settings of this project's changes DAG, read when the DAG file is parsed.

They come from environment variables only: a DAG file must not read Airflow Variables (a database
or API call) at import time. Per-run values (batch and chunk size, lease, follow timeout, missing
checks) are DAG params too, with these as defaults, so a manual run can override them.

Project glue, not the provider's: the provider's functions take these values as arguments
(:mod:`connect_provider.outbox.processing`, :mod:`connect_provider.outbox.follow`) and its
defaults are named there; only this project decides to read them from ``CONNECT_CHANGES_*``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connect_provider import validation as v
from connect_provider.outbox.follow import DEFAULT_FOLLOW_TIMEOUT, DEFAULT_MAX_MISSING_CHECKS
from connect_provider.outbox.processing import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, DEFAULT_CONCURRENCY
from connect_provider.outbox.table import DEFAULT_LEASE_SECONDS


@dataclass(frozen=True)
class DagSettings:
    """Settings of the changes DAG that must be known when the file is parsed.

    They come from environment variables only: a DAG file must not read Airflow Variables (a
    database or API call) at import time. Per-run values (batch and chunk size, follow timeout)
    are DAG params too, with these as defaults, so a manual run can override them.
    """

    schedule: str | None
    batch_size: int
    chunk_size: int
    lease_seconds: int
    follow_timeout_seconds: int
    follow_poke_seconds: float
    max_missing_checks: int = DEFAULT_MAX_MISSING_CHECKS
    #: Rows one ``submit_chunk`` task works on side by side; the task takes as many pool slots.
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DagSettings:
        env = os.environ if environ is None else environ
        schedule = env.get("CONNECT_CHANGES_SCHEDULE", "*/5 * * * *").strip()
        return cls(
            schedule=None if schedule.lower() in ("", "none", "manual") else schedule,
            batch_size=v.positive_int(
                "CONNECT_CHANGES_BATCH_SIZE", env.get("CONNECT_CHANGES_BATCH_SIZE", DEFAULT_BATCH_SIZE)
            ),
            chunk_size=v.positive_int(
                "CONNECT_CHANGES_CHUNK_SIZE", env.get("CONNECT_CHANGES_CHUNK_SIZE", DEFAULT_CHUNK_SIZE)
            ),
            lease_seconds=v.positive_int(
                "CONNECT_CHANGES_LEASE_SECONDS",
                env.get("CONNECT_CHANGES_LEASE_SECONDS", DEFAULT_LEASE_SECONDS),
            ),
            follow_timeout_seconds=v.positive_int(
                "CONNECT_CHANGES_FOLLOW_TIMEOUT",
                env.get("CONNECT_CHANGES_FOLLOW_TIMEOUT", DEFAULT_FOLLOW_TIMEOUT),
            ),
            follow_poke_seconds=float(env.get("CONNECT_CHANGES_FOLLOW_POKE_SECONDS", 30)),
            max_missing_checks=v.positive_int(
                "CONNECT_CHANGES_MAX_MISSING_CHECKS",
                env.get("CONNECT_CHANGES_MAX_MISSING_CHECKS", DEFAULT_MAX_MISSING_CHECKS),
            ),
            concurrency=v.positive_int(
                "CONNECT_CHANGES_CONCURRENCY", env.get("CONNECT_CHANGES_CONCURRENCY", DEFAULT_CONCURRENCY)
            ),
        )


def follow_deadline(run_start: Any, follow_timeout_seconds: Any) -> float | None:
    """``time.time()`` at which following stops: the run's start plus the follow timeout."""
    if run_start is None:
        return None
    return float(run_start.timestamp()) + v.positive_int("follow_timeout_seconds", follow_timeout_seconds)
