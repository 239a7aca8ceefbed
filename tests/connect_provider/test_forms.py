"""A one-off request from the flat trigger form (connect_provider.forms), against the sandbox.
"""

from __future__ import annotations

import pytest
from connect_provider import forms
from connect_provider.exceptions import (
    ConnectValidationError,
)


def _stats(sandbox) -> dict:
    return sandbox.admin("GET", "stats")


FORM = {
    "action": "purchase",
    "asset_external_id": "form-1",
    "hub_id": "HB-0000-0001",
    "marketplace": "MP-00001",
    "item_id": "PRD-276-377-545-0001",
    "quantity": 2,
    **{
        f"tier1_{k}": v
        for k, v in {
            "name": "Demo Reseller",
            "external_id": "reseller-1",
            "email": "rita@example.com",
            "first_name": "Rita",
            "last_name": "Reseller",
            "phone": "+1 2015550123",
            "address_line1": "1 Demo Street",
            "city": "Springfield",
            "postal_code": "10001",
            "country": "US",
        }.items()
    },
    **{
        f"customer_{k}": v
        for k, v in {
            "name": "Demo Customer",
            "external_id": "customer-1",
            "email": "carl@example.com",
            "first_name": "Carl",
            "last_name": "Customer",
            "phone": "+1 2015550124",
            "address_line1": "2 Client Road",
            "city": "Springfield",
            "postal_code": "10002",
            "country": "US",
        }.items()
    },
}

def test_the_form_creates_one_purchase_and_returns_its_id_and_status(sandbox) -> None:
    result = forms.run_form_action(FORM)
    again = forms.run_form_action(FORM)
    assert result["request_id"].startswith("PR-") and result["status"] == "pending"
    assert again["request_id"] == result["request_id"] and again["reused"] is True
    assert _stats(sandbox)["requests_created"] == 1

def test_a_form_suspend_uses_only_the_asset_fields(sandbox) -> None:
    result = forms.run_form_action({**FORM, "action": "suspend", "asset_external_id": "sub-1001"})
    assert result["type"] == "suspend" and result["asset_id"] == "AS-0000-0000-0001"

@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"tier1_email": "nobody"}, "tier1_email"),
        ({"tier1_country": "Atlantis"}, "tier1_country"),
        ({"quantity": 0}, "quantity"),
        ({"hub_id": None}, "hub_id"),
        ({"action": "change", "asset_external_id": None}, "asset_external_id"),
        ({"action": "refund"}, "action"),
    ],
)
def test_bad_form_input_fails_naming_the_form_field_before_any_call(sandbox, overrides, field) -> None:
    with pytest.raises(ConnectValidationError) as raised:
        forms.run_form_action({**FORM, **overrides})
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert _stats(sandbox)["calls"] == 0
