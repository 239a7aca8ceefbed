"""Fixtures of the hook tests: sandbox stats, a purchase payload (log capture: ../conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


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
