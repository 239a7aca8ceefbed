"""Local input checks: every refusal names the field, every accepted value comes back normalised."""

from __future__ import annotations

import copy
import re

import pytest
from connect_provider import validation as v
from connect_provider.exceptions import ConnectValidationError


def good_tier(**overrides) -> dict:
    tier = {
        "name": "Big Corp",
        "external_id": "76829",
        "contact_info": {
            "address_line1": "Feeney Trace",
            "city": "Baldwin",
            "postal_code": "36507",
            "country": "US",
            "contact": {
                "first_name": "Kadin",
                "last_name": "Reilly",
                "email": "kadin@example.com",
                "phone_number": {"country_code": "+1", "area_code": "201", "phone_number": "5550123"},
            },
        },
    }
    tier.update(overrides)
    return tier


def refused(field: str):
    """Context manager: a ConnectValidationError whose field is ``field``."""
    return pytest.raises(ConnectValidationError, match="^" + re.escape(field) + ": ")


@pytest.mark.parametrize(
    ("value", "expected"), [(5, 5), ("5", 5), (" 7 ", 7), (-1, -1), ("-1", -1), (3.0, 3)]
)
def test_whole_quantities_and_unlimited_are_accepted(value, expected):
    assert v.quantity("quantity", value, allow_zero=False) == expected


@pytest.mark.parametrize("value", ["5.5", 5.5, 0, "0", -2, "-3", True, False, None, "five", "", [5]])
def test_a_purchase_quantity_must_be_positive_whole_or_unlimited(value):
    with pytest.raises(ConnectValidationError) as err:
        v.quantity("items[0].quantity", value, allow_zero=False)
    assert err.value.field == "items[0].quantity"
    assert "-1 for unlimited" in str(err.value)


def test_a_change_may_set_a_quantity_to_zero_but_not_below():
    assert v.quantity("quantity", 0, allow_zero=True) == 0
    with refused("quantity"):
        v.quantity("quantity", -5, allow_zero=True)


@pytest.mark.parametrize("value", ["PRD-276-377-545-0001", "PRD-000-000-000-9999"])
def test_global_item_ids_are_accepted_everywhere(value):
    assert v.item_id("item_id", value, allow_local=False) == value


@pytest.mark.parametrize("value", ["SEATS", "STORAGE_GB", "vault_tb", "X1"])
def test_product_local_item_ids_are_accepted_only_where_allowed(value):
    assert v.item_id("item_id", value, allow_local=True) == value
    with refused("item_id"):
        v.item_id("item_id", value, allow_local=False)


@pytest.mark.parametrize(
    "value", ["PRD-276-377-545", "PRD-276-377-545-1", "prd-276", "SEATS-1", "a b", "", None, 7]
)
def test_malformed_item_ids_are_refused(value):
    with refused("item_id"):
        v.item_id("item_id", value, allow_local=True)


def test_items_normalise_to_connect_shape_and_accept_a_single_pair():
    assert v.items(
        "items",
        [
            {"item_id": "PRD-276-377-545-0001", "quantity": "5"},
            {"id": "PRD-276-377-545-0002", "quantity": -1},
        ],
        allow_local=False,
        allow_zero=False,
    ) == [{"id": "PRD-276-377-545-0001", "quantity": 5}, {"id": "PRD-276-377-545-0002", "quantity": -1}]
    assert v.items(
        "items", None, single_item_id="SEATS", single_quantity=3, allow_local=True, allow_zero=True
    ) == [{"id": "SEATS", "quantity": 3}]
    # One dict instead of a list, and JSON text as a template renders it.
    assert v.items("items", {"item_id": "SEATS", "quantity": 1}, allow_local=True, allow_zero=True) == [
        {"id": "SEATS", "quantity": 1}
    ]
    assert v.items("items", '[{"item_id": "SEATS", "quantity": 2}]', allow_local=True, allow_zero=True) == [
        {"id": "SEATS", "quantity": 2}
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"value": None}, "items"),
        ({"value": []}, "items"),
        ({"value": [{"item_id": "SEATS"}]}, "items[0].quantity"),
        ({"value": [{"quantity": 1}]}, "items[0].item_id"),
        ({"value": [{"item_id": "SEATS", "quantity": 1, "price": 3}]}, "items[0]"),
        (
            {"value": [{"item_id": "SEATS", "quantity": 1}, {"item_id": "SEATS", "quantity": 2}]},
            "items[1].item_id",
        ),
        ({"value": [{"item_id": "SEATS", "quantity": 1}], "single_item_id": "SEATS"}, "items"),
        ({"value": None, "single_quantity": 3}, "item_id"),
        ({"value": None, "single_item_id": "SEATS", "single_quantity": "2.5"}, "quantity"),
        ({"value": "[not json"}, "items"),
        ({"value": ["SEATS"]}, "items[0]"),
    ],
)
def test_bad_items_are_refused_naming_the_entry(kwargs, field):
    value = kwargs.pop("value")
    with refused(field):
        v.items("items", value, allow_local=True, allow_zero=True, **kwargs)


def test_a_good_tier_is_normalised():
    tier = good_tier()
    tier["contact_info"]["country"] = "us"
    tier["contact_info"]["postal_code"] = 36507
    out = v.tier("tier1", tier)
    assert out["contact_info"]["country"] == "US"
    assert out["contact_info"]["postal_code"] == "36507"
    assert out["contact_info"]["contact"]["phone_number"] == {
        "country_code": "+1",
        "area_code": "201",
        "phone_number": "5550123",
        "extension": "",
    }
    assert "external_uid" not in out  # filled in later, from Connect or a stable UUID


def test_a_phone_number_may_be_a_plain_string():
    tier = good_tier()
    tier["contact_info"]["contact"]["phone_number"] = "+34 911 222 333"
    phone = v.tier("customer", tier)["contact_info"]["contact"]["phone_number"]
    assert phone["country_code"] == "+34"
    assert phone["phone_number"] == "911 222 333"


def _without(path: list[str]) -> dict:
    tier = good_tier()
    node = tier
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return tier


@pytest.mark.parametrize(
    "path",
    [
        ["name"],
        ["external_id"],
        ["contact_info"],
        ["contact_info", "address_line1"],
        ["contact_info", "city"],
        ["contact_info", "postal_code"],
        ["contact_info", "country"],
        ["contact_info", "contact"],
        ["contact_info", "contact", "first_name"],
        ["contact_info", "contact", "last_name"],
        ["contact_info", "contact", "email"],
        ["contact_info", "contact", "phone_number"],
    ],
)
def test_every_required_tier_field_is_named_when_missing(path):
    with refused("tier1." + ".".join(path)):
        v.tier("tier1", _without(path))


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["contact_info", "country"], "USA", "customer.contact_info.country"),
        (["contact_info", "country"], "XX", "customer.contact_info.country"),
        (["contact_info", "contact", "email"], "not-an-email", "customer.contact_info.contact.email"),
        (["contact_info", "contact", "email"], "a@b", "customer.contact_info.contact.email"),
        (["contact_info", "contact", "email"], "a b@c.com", "customer.contact_info.contact.email"),
        (
            ["contact_info", "contact", "phone_number"],
            "call me",
            "customer.contact_info.contact.phone_number",
        ),
        (
            ["contact_info", "contact", "phone_number"],
            {"country_code": "one", "phone_number": "5550123"},
            "customer.contact_info.contact.phone_number.country_code",
        ),
        (["contact_info", "nickname"], "x", "customer.contact_info"),
        (["name"], "  ", "customer.name"),
    ],
)
def test_bad_tier_values_are_refused_naming_the_field(path, value, field):
    tier = copy.deepcopy(good_tier())
    node = tier
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with refused(field):
        v.tier("customer", tier)


def test_a_tier_must_be_a_dict():
    with refused("tier1"):
        v.tier("tier1", ["Big Corp"])


@pytest.mark.parametrize("value", ["HB-0000-0001", "HB-1234-5678"])
def test_hub_ids_of_the_documented_form_pass(value):
    assert v.hub_id("hub_id", value) == value


@pytest.mark.parametrize("value", ["HB-1-2", "hub-0000-0001", "", None, "HB-0000-00011"])
def test_malformed_hub_ids_are_refused(value):
    with refused("hub_id"):
        v.hub_id("hub_id", value)


def test_a_marketplace_is_an_id_or_a_name():
    assert v.marketplace("marketplace", "MP-00001") == "MP-00001"
    assert v.marketplace("marketplace", " EU Marketplace ") == "EU Marketplace"
    for bad in ("", "   ", None, "MP-12a"):
        with refused("marketplace"):
            v.marketplace("marketplace", bad)


def test_exactly_one_way_to_name_the_asset():
    assert v.asset_identity("AS-0000-0000-0001", None, None) == ("AS-0000-0000-0001", None, None)
    assert v.asset_identity(None, "sub-1", None) == (None, "sub-1", None)
    assert v.asset_identity(None, "sub-1", "uid-1") == (None, "sub-1", "uid-1")
    with refused("asset_id"):
        v.asset_identity("AS-0000-0000-0001", "sub-1", None)
    with refused("asset_external_id"):
        v.asset_identity(None, None, "")
    with refused("asset_id"):
        v.asset_identity("asset-1", None, None)


def test_params_become_connect_id_value_pairs():
    assert v.params("params", {"seats_note": "hello", "count": 3, "flag": True}) == [
        {"id": "seats_note", "value": "hello"},
        {"id": "count", "value": "3"},
        {"id": "flag", "value": "true"},
    ]
    assert v.params("params", None) == []
    assert v.params("params", [{"id": "a", "value": "b"}]) == [{"id": "a", "value": "b"}]
    # Object values are Connect's structured_value (the Zapier app sends them so).
    assert v.params("params", {"a": {"nested": 1}}) == [{"id": "a", "structured_value": {"nested": 1}}]
    with refused("params.a"):
        v.params("params", {"a": [1, 2]})
    with refused("params"):
        v.params("params", "a=b")


def test_request_type_is_suspend_or_resume():
    assert v.suspend_resume_type("request_type", "suspend") == "suspend"
    for bad in ("cancel", "Suspend", "", None):
        with refused("request_type"):
            v.suspend_resume_type("request_type", bad)
