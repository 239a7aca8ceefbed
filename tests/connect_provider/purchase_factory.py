"""Builders of purchases made through the actions against the sandbox's demo catalogue.

The trigger tests and the project's event tests need real requests to watch; they buy them here,
one way, so the demo ids (hub, marketplace, item) and the tier accounts live in one place.
Registered as ``purchase_factory`` by ``tests/conftest.py`` (test modules cannot import their
neighbours under ``--import-mode=importlib``).
"""

from __future__ import annotations

from connect_provider import actions
from connect_provider.hooks.connect import ConnectHook


def tier(external_id: str) -> dict:
    """A tier account with every contact field Connect requires."""
    return {
        "name": f"Tier {external_id}",
        "external_id": external_id,
        "contact_info": {
            "address_line1": "1 Main St",
            "city": "Madrid",
            "postal_code": "28001",
            "country": "ES",
            "contact": {
                "first_name": "Eva",
                "last_name": "Ruiz",
                "email": "eva@example.es",
                "phone_number": "911222333",
            },
        },
    }


def buy(external_id: str, quantity: int = 1) -> str:
    """Purchase ``quantity`` of the demo item for a new asset ``external_id``; its request id."""
    return actions.purchase(
        ConnectHook(),
        asset_external_id=external_id,
        hub_id="HB-0000-0001",
        marketplace="MP-00001",
        tier1=tier("reseller-1"),
        customer=tier("customer-1"),
        item_id="PRD-276-377-545-0001",
        quantity=quantity,
    ).request_id
