"""A look-up that finds none or several is a ConnectLookupError carrying what was looked for and found."""

from __future__ import annotations

import pickle

import pytest
from connect_provider import actions
from connect_provider.exceptions import (
    ConnectAmbiguousLookupError,
    ConnectLookupError,
    ConnectLookupNotFoundError,
    ConnectNotFoundError,
)
from connect_provider.hooks.connect import ConnectHook

TIER = {
    "name": "Demo Reseller", "external_id": "reseller-1",
    "contact_info": {"address_line1": "1 Demo Street", "city": "Springfield", "postal_code": "10001",
                     "country": "US", "contact": {"first_name": "Rita", "last_name": "Reseller",
                                                  "email": "rita@example.com",
                                                  "phone_number": "+1 2015550123"}},
}  # fmt: skip


class TestTheLookUpError:
    """Its kind, what it looked for and the candidates survive pickling; none found is also a 404 kind."""

    @pytest.mark.parametrize(
        "error",
        [
            ConnectLookupNotFoundError("none", what="asset", looked_for={"external_id": "x"}, path="/assets"),
            ConnectAmbiguousLookupError("two", what="asset", looked_for={"external_id": "x"},
                                        candidates=["A", "B"]),
        ],
        ids=["not found", "ambiguous"],
    )  # fmt: skip
    def test_it_comes_back_whole_and_is_not_retryable(self, error: ConnectLookupError) -> None:
        clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
        assert type(clone) is type(error) and vars(clone) == vars(error) and str(clone) == str(error)
        assert clone.retryable is False
        assert clone.kind in (ConnectLookupError.NOT_FOUND, ConnectLookupError.AMBIGUOUS)

    def test_none_found_is_also_a_not_found_error(self) -> None:
        assert issubclass(ConnectLookupNotFoundError, ConnectNotFoundError)
        assert not issubclass(ConnectAmbiguousLookupError, ConnectNotFoundError)


class TestLookUpsAgainstTheSandbox:
    """The hook's and the actions' look-ups say what they looked for and, when several, which."""

    def test_an_asset_external_id_two_assets_share(self, sandbox) -> None:
        with pytest.raises(ConnectAmbiguousLookupError) as raised:
            actions.cancel(ConnectHook(), asset_external_id="sub-dup")
        error = raised.value
        assert (error.kind, error.what) == ("ambiguous", "asset")
        assert error.looked_for["external_id"] == "sub-dup"
        assert error.candidates == ["AS-0000-0000-0005", "AS-0000-0000-0006"]

    def test_an_asset_that_is_not_there(self, sandbox) -> None:
        with pytest.raises(ConnectLookupNotFoundError) as raised:
            actions.suspend_resume(ConnectHook(), request_type="suspend", asset_external_id="sub-9999")
        assert (raised.value.what, raised.value.looked_for["external_id"]) == ("asset", "sub-9999")

    def test_a_product_with_two_connections_to_the_hub(self, sandbox) -> None:
        with pytest.raises(ConnectAmbiguousLookupError, match="pass connection_id to choose one") as raised:
            actions.purchase(
                ConnectHook(), asset_external_id="lookup-1", hub_id="HB-0000-0001", marketplace="MP-00001",
                tier1=TIER, customer=TIER, item_id="PRD-684-920-001-0001", quantity=1,
            )  # fmt: skip
        assert raised.value.what == "connection"
        assert raised.value.candidates == ["CT-0000-0000-0004", "CT-0000-0000-0005"]

    def test_a_marketplace_that_is_not_there(self, sandbox) -> None:
        with pytest.raises(ConnectLookupNotFoundError) as raised:
            ConnectHook().find_marketplace("Atlantis Marketplace")
        assert raised.value.what == "marketplace"
        assert raised.value.looked_for == {"name": "Atlantis Marketplace"}
