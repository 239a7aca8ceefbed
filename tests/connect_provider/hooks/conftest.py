"""Fixtures of the hook tests: log capture at DEBUG, sandbox stats, a purchase payload."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs


@pytest.fixture
def hook_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[[], list[str]]]:
    """``hook_logs()``: every log line emitted so far in the test, DEBUG included, as text.

    Airflow 3 hooks log through structlog, whose level filter sits in Airflow's logging module;
    the level is lowered to DEBUG for the test and the events are captured before any renderer or
    secret masker sees them, so a key formatted into a message would be caught here. Standard
    library records (urllib3's) come from caplog.
    """
    wrapper = structlog.get_config()["wrapper_class"]
    levels = getattr(sys.modules[wrapper.__module__], "PER_LOGGER_LEVELS", None)
    assert levels is not None, "Airflow's structlog level table moved; update this fixture"
    monkeypatch.setitem(levels, "", logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:

        def lines() -> list[str]:
            rendered = [f"{e.get('log_level')}: {e.get('event')} {e}" for e in events]
            return rendered + [f"{r.levelname.lower()}: {r.getMessage()}" for r in caplog.records]

        yield lines


@pytest.fixture
def stats(sandbox) -> Callable[[], dict[str, Any]]:
    """The sandbox's call and fault counters."""
    return lambda: sandbox.admin("GET", "stats")


def _purchase_payload(external_id: str) -> dict[str, Any]:
    return {
        "type": "purchase",
        "asset": {
            "external_id": external_id,
            "connection": {"id": "CT-0000-0000-0001"},
            "items": [{"id": "PRD-276-377-545-0001", "quantity": 3}],
            "tiers": {"customer": {"id": "TA-0000-0000-0002"}, "tier1": {"id": "TA-0000-0000-0001"}},
        },
        "marketplace": {"id": "MP-00001"},
    }


@pytest.fixture
def purchase() -> Callable[[str], dict[str, Any]]:
    """``purchase(external_id)``: a purchase of the demo 'Cloud Seats' via its EU production connection."""
    return _purchase_payload
