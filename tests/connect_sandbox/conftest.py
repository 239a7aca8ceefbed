"""Fixtures for talking to the sandbox over real HTTP, as a Connect client would.

Helpers are handed out as fixtures (``api``, ``purchase``, ``tier``) rather than imported, so
the test modules need nothing on ``sys.path``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import requests

TIER = {
    "name": "New Customer Ltd",
    "external_id": "cust-new",
    "contact_info": {
        "address_line1": "5 Main St",
        "city": "Austin",
        "postal_code": "73301",
        "country": "US",
        "contact": {
            "first_name": "Ann",
            "last_name": "Lee",
            "email": "ann@example.com",
            "phone_number": {
                "country_code": "+1",
                "area_code": "512",
                "phone_number": "5550100",
                "extension": "",
            },
        },
    },
}


def purchase_body(external_id: str = "new-sub-1", **asset_overrides: Any) -> dict:
    """A purchase in the spec's own example shape (connection id, items by global id, marketplace)."""
    asset = {
        "external_id": external_id,
        "connection": {"id": "CT-0000-0000-0001"},
        "items": [{"id": "PRD-276-377-545-0001", "quantity": 3}],
        "tiers": {"customer": dict(TIER), "tier1": {"id": "TA-0000-0000-0001"}},
    }
    asset.update(asset_overrides)
    return {"type": "purchase", "asset": asset, "marketplace": {"id": "MP-00001"}}


class Api:
    """``requests`` bound to the sandbox's public API with the demo key."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.headers = {"Authorization": key}

    def get(self, path: str, query: str | None = None, **kw: Any) -> requests.Response:
        url = f"{self.base}{path}" + (f"?{query}" if query else "")
        return requests.get(url, headers=self.headers, timeout=60, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return requests.post(f"{self.base}{path}", json=body, headers=self.headers, timeout=60, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return requests.put(f"{self.base}{path}", json=body, headers=self.headers, timeout=60, **kw)


@pytest.fixture
def api(sandbox) -> Api:
    return Api(sandbox.api_url, sandbox.api_key)


@pytest.fixture
def purchase() -> Callable[..., dict]:
    return purchase_body


@pytest.fixture
def tier() -> dict:
    return copy.deepcopy(TIER)
