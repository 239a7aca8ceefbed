"""The request actions, run with a real ConnectHook against the sandbox (no Airflow context)."""

from __future__ import annotations

import time
import uuid

import pytest
from connect_provider import actions
from connect_provider.actions import ActionResult, ConnectRequestStateError
from connect_provider.exceptions import (
    ConnectAmbiguousWriteError,
    ConnectAPIError,
    ConnectError,
    ConnectNotFoundError,
    ConnectValidationError,
)
from connect_provider.hooks.connect import ConnectHook

PRODUCT = "PRD-276-377-545"
SEATS = f"{PRODUCT}-0001"
STORAGE = f"{PRODUCT}-0002"
VAULT = "PRD-684-920-001-0001"
EU_HUB = "HB-0000-0001"
SEEDED_PENDING = "PR-0000-0000-0004-001"
SEEDED_UID = "seed-uid"


def tier(external_id: str, name: str = "Acme GmbH", **extra) -> dict:
    return {
        "name": name,
        "external_id": external_id,
        "contact_info": {
            "address_line1": "Hauptstrasse 1",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE",
            "contact": {
                "first_name": "Ada",
                "last_name": "Muster",
                "email": "ada@acme.example",
                "phone_number": "+49 30123456",
            },
        },
        **extra,
    }


def purchase_args(external_id: str, **overrides) -> dict:
    args = {
        "asset_external_id": external_id,
        "hub_id": EU_HUB,
        "marketplace": "MP-00001",
        "tier1": tier("reseller-1", "Demo Reseller"),
        "customer": tier(f"cust-{external_id}"),
        "items": [{"item_id": SEATS, "quantity": 5}],
    }
    args.update(overrides)
    return args


def calls(sandbox) -> int:
    return sandbox.admin("GET", "stats")["calls"]


def created(sandbox) -> int:
    return sandbox.admin("GET", "stats")["requests_created"]


def wait_decided(hook: ConnectHook, request_id: str, timeout: float = 10.0) -> dict:
    """The sandbox decides API-made requests 0.5 s after creation, on the next read."""
    deadline = time.monotonic() + timeout
    while True:
        request = hook.get_request(request_id)
        if request["status"] != "pending" or time.monotonic() > deadline:
            return request
        time.sleep(0.1)


@pytest.fixture
def hook(sandbox) -> ConnectHook:
    return ConnectHook()


@pytest.fixture
def active_asset(hook) -> dict:
    """A fresh asset bought and approved through the API (5 SEATS)."""
    result = actions.purchase(hook, **purchase_args(f"act-{uuid.uuid4().hex[:8]}"))
    assert wait_decided(hook, result.request_id)["status"] == "approved"
    return hook.get_asset(result.asset_id)


# --------------------------------------------------------------------------- pure behaviour


def test_the_xcom_shape_holds_ids_and_statuses_only():
    result = ActionResult("PR-1", "purchase", "pending", "AS-1", "sub-1", False)
    assert result.to_dict() == {
        "request_id": "PR-1",
        "type": "purchase",
        "status": "pending",
        "asset_id": "AS-1",
        "asset_external_id": "sub-1",
        "reused": False,
    }
    assert result.with_status("approved").to_dict()["status"] == "approved"


def test_the_default_asset_uid_is_stable_per_external_id_and_distinct_between_them():
    first = actions.default_asset_external_uid("sub-42", PRODUCT)
    assert first == actions.default_asset_external_uid("sub-42", PRODUCT)
    assert first != actions.default_asset_external_uid("sub-43", PRODUCT)
    assert uuid.UUID(first).version == 5


@pytest.mark.parametrize(
    ("change_type", "arguments", "field"),
    [
        ("upgrade", {}, "change_type"),
        ("change", [], "arguments"),
        ("change", {"asset_id": "AS-0000-0000-0001", "colour": "red"}, "colour"),
        ("purchase", {"hub_id": EU_HUB}, "asset_external_id"),
        ("purchase", purchase_args("x", hub_id="HB-1"), "hub_id"),
        ("purchase", purchase_args("x", items=[{"item_id": SEATS, "quantity": 0}]), "items[0].quantity"),
        ("purchase", purchase_args("x", items=[{"item_id": "SEATS", "quantity": 1}]), "items[0].item_id"),
        (
            "purchase",
            purchase_args("x", product_id=PRODUCT, items=[{"item_id": VAULT, "quantity": 1}]),
            "items[0].item_id",
        ),
        (
            "purchase",
            purchase_args("x", items=[{"item_id": SEATS, "quantity": 1}, {"item_id": VAULT, "quantity": 1}]),
            "items[1].item_id",
        ),
        ("purchase", purchase_args("x", connection_type="staging"), "connection_type"),
        ("purchase", purchase_args("x", customer=None), "customer"),
        ("purchase", purchase_args("x", marketplace=""), "marketplace"),
        ("purchase", purchase_args("x", asset_external_id="x" * 101), "asset_external_id"),
        ("change", {"asset_external_id": "sub-1001", "item_id": "SEATS", "quantity": "5.5"}, "quantity"),
        ("change", {"asset_external_id": "sub-1001", "item_id": "SEATS", "quantity": True}, "quantity"),
        ("change", {"asset_external_id": "sub-1001"}, "items"),
        ("change", {"item_id": "SEATS", "quantity": 1}, "asset_external_id"),
        ("suspend", {"asset_id": "AS-1", "asset_external_id": "sub-1"}, "asset_id"),
        ("suspend", {"asset_id": "AS-0000-0000-0001", "request_type": "resume"}, "request_type"),
        (
            "cancel",
            {"asset_id": "AS-0000-0000-0001", "reuse_existing_request": "yes"},
            "reuse_existing_request",
        ),
    ],
)
def test_validate_action_names_the_bad_field(change_type, arguments, field):
    with pytest.raises(ConnectValidationError) as err:
        actions.validate_action(change_type, arguments)
    assert err.value.field == field


def test_validate_action_accepts_good_arguments_of_every_type():
    actions.validate_action("purchase", purchase_args("x", items={"item_id": SEATS, "quantity": "-1"}))
    actions.validate_action(
        "change", {"asset_external_id": "sub-1001", "items": [{"item_id": "SEATS", "quantity": 0}]}
    )
    actions.validate_action("suspend", {"asset_external_id": "sub-1001"})
    actions.validate_action("resume", {"asset_id": "AS-0000-0000-0002", "request_type": "resume"})
    actions.validate_action("cancel", {"asset_external_id": "sub-1001", "asset_external_uid": "u"})


# --------------------------------------------------------------------------- against the sandbox


def test_a_bad_argument_is_refused_before_any_call(sandbox, hook):
    before = calls(sandbox)
    with pytest.raises(ConnectValidationError, match=r"tier1\.contact_info\.country"):
        bad = tier("reseller-1")
        bad["contact_info"]["country"] = "Germany"
        actions.purchase(hook, **purchase_args("p-bad", tier1=bad))
    with pytest.raises(ConnectValidationError, match="request_type"):
        actions.suspend_resume(hook, request_type="pause", asset_external_id="sub-1001")
    assert calls(sandbox) == before


def test_a_purchase_resolves_marketplace_connection_product_and_tiers(sandbox, hook):
    result = actions.purchase(
        hook,
        **purchase_args(
            "p-resolve",
            marketplace="EU Marketplace",
            customer=tier("customer-1", "Demo Customer"),
            items=[{"item_id": SEATS, "quantity": "3"}, {"item_id": STORAGE, "quantity": -1}],
            params={"seats_note": "for the Berlin office"},
        ),
    )
    assert result.type == "purchase" and result.status == "pending" and not result.reused
    assert result.asset_external_id == "p-resolve"
    request = hook.get_request(result.request_id)
    asset = request["asset"]
    assert asset["product"]["id"] == PRODUCT  # derived from the items
    assert asset["connection"]["id"] == "CT-0000-0000-0001"  # the production one of HB-0000-0001
    assert request["marketplace"]["id"] == "MP-00001"  # found by name
    assert asset["external_uid"] == actions.default_asset_external_uid("p-resolve", PRODUCT)
    # Tier accounts Connect knows are named by their own uid: no duplicate account appears.
    assert asset["tiers"]["customer"]["id"] == "TA-0000-0000-0002"
    assert asset["tiers"]["tier1"]["id"] == "TA-0000-0000-0001"
    # Request items carry quantities as strings, "unlimited" for -1.
    quantities = {i["global_id"]: i["quantity"] for i in asset["items"]}
    assert quantities == {SEATS: "3", STORAGE: "unlimited"}
    assert {"id": "seats_note", "value": "for the Berlin office"} in [
        {"id": p["id"], "value": p["value"]} for p in asset["params"]
    ]
    assert created(sandbox) == 1


def test_a_new_tier_account_gets_a_stable_uid(hook):
    result = actions.purchase(hook, **purchase_args("p-newtier", customer=tier("brand-new-customer")))
    customer = hook.get_request(result.request_id)["asset"]["tiers"]["customer"]
    assert customer["external_uid"] == actions.default_tier_external_uid("brand-new-customer")


def test_a_purchase_run_twice_creates_one_request(sandbox, hook):
    first = actions.purchase(hook, **purchase_args("p-twice"))
    second = actions.purchase(hook, **purchase_args("p-twice"))
    assert second.request_id == first.request_id
    assert second.reused and not first.reused
    assert created(sandbox) == 1


def test_a_purchase_of_an_existing_external_id_returns_its_purchase_request_whatever_its_status(
    sandbox, hook
):
    result = actions.purchase(hook, **purchase_args("sub-1001"))
    assert result.request_id == "PR-0000-0000-0001-001"
    assert result.status == "approved" and result.reused
    assert created(sandbox) == 0


def test_a_purchase_with_an_explicit_new_uid_is_a_new_asset_even_if_the_external_id_exists(sandbox, hook):
    result = actions.purchase(hook, **purchase_args("sub-1001", asset_external_uid="my-own-uid-1"))
    assert not result.reused and result.asset_id not in {"AS-0000-0000-0001"}
    assert created(sandbox) == 1


def test_without_reuse_a_purchase_always_creates(sandbox, hook):
    actions.purchase(hook, **purchase_args("p-noreuse", asset_external_uid="u-1"))
    actions.purchase(
        hook, **purchase_args("p-noreuse", asset_external_uid="u-2", reuse_existing_request=False)
    )
    assert created(sandbox) == 2


def test_among_assets_sharing_an_external_id_the_one_with_the_derived_uid_is_ours(sandbox, hook):
    # sub-dup already names two seeded assets; a purchase with the default uid makes a third.
    ours = actions.purchase(
        hook,
        **purchase_args("sub-dup", asset_external_uid=actions.default_asset_external_uid("sub-dup", PRODUCT)),
    )
    retry = actions.purchase(hook, **purchase_args("sub-dup"))
    assert retry.request_id == ours.request_id and retry.reused
    assert created(sandbox) == 1


def test_without_reuse_an_asset_request_is_sent_and_connects_409_names_the_open_one(
    sandbox, hook, active_asset
):
    # Connect answers a second suspend with 409 naming the open one: that request is the result.
    first = actions.suspend_resume(hook, request_type="suspend", asset_id=active_asset["id"])
    posts = sandbox.admin("GET", "stats")["calls_by_route"]["POST /requests"]
    again = actions.suspend_resume(
        hook, request_type="suspend", asset_id=active_asset["id"], reuse_existing_request=False
    )
    assert sandbox.admin("GET", "stats")["calls_by_route"]["POST /requests"] == posts + 1  # it was sent
    assert (again.request_id, again.reused) == (first.request_id, True)


def test_a_failed_request_error_survives_pickling():
    import pickle

    error = actions.ConnectRequestFailedError(
        "PR-1 is failed: no", request_id="PR-1", status="failed", reason="no"
    )
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (str(copy), copy.request_id, copy.status, copy.reason) == (str(error), "PR-1", "failed", "no")


def test_an_ambiguous_existing_external_id_is_an_error_listing_the_assets(hook):
    with pytest.raises(ConnectError, match=r"AS-0000-0000-0005.*AS-0000-0000-0006"):
        actions.purchase(hook, **purchase_args("sub-dup"))


def test_a_product_with_two_connections_on_the_hub_is_an_error_listing_them(sandbox, hook):
    with pytest.raises(ConnectError, match=r"CT-0000-0000-0004.*CT-0000-0000-0005"):
        actions.purchase(hook, **purchase_args("p-vault", items=[{"item_id": VAULT, "quantity": 1}]))
    assert created(sandbox) == 0


def test_naming_the_connection_settles_an_ambiguous_one(sandbox, hook):
    with pytest.raises(ConnectError, match="connection_id"):
        actions.purchase(hook, **purchase_args("p-vault2", items=[{"item_id": VAULT, "quantity": 1}]))
    result = actions.purchase(
        hook,
        **purchase_args(
            "p-vault2", items=[{"item_id": VAULT, "quantity": 1}], connection_id="CT-0000-0000-0005"
        ),
    )
    assert hook.get_request(result.request_id)["asset"]["connection"]["id"] == "CT-0000-0000-0005"
    with pytest.raises(ConnectValidationError, match="connection_id"):
        actions.validate_action("purchase", purchase_args("p", connection_id="connection-5"))


def test_a_product_without_a_connection_on_the_hub_is_not_found(hook):
    with pytest.raises(ConnectNotFoundError, match="HB-0000-0002"):
        actions.purchase(
            hook,
            **purchase_args(
                "p-vault-us",
                hub_id="HB-0000-0002",
                marketplace="MP-00002",
                items=[{"item_id": VAULT, "quantity": 1}],
            ),
        )


def test_an_unknown_marketplace_is_not_found(hook):
    with pytest.raises(ConnectNotFoundError, match="Moon Marketplace"):
        actions.purchase(hook, **purchase_args("p-moon", marketplace="Moon Marketplace"))


def test_a_marketplace_of_another_hub_is_refused_naming_the_hub(sandbox, hook):
    with pytest.raises(ConnectValidationError, match="hub_id") as err:
        actions.purchase(hook, **purchase_args("p-mp", marketplace="MP-00002"))
    assert err.value.field == "hub_id"
    assert created(sandbox) == 0


def test_a_change_by_local_item_id_sets_the_new_quantity(hook, active_asset):
    result = actions.change(
        hook, asset_external_id=active_asset["external_id"], item_id="SEATS", quantity="12"
    )
    assert result.type == "change" and result.asset_id == active_asset["id"]
    request = hook.get_request(result.request_id)
    assert {i["global_id"]: float(i["quantity"]) for i in request["asset"]["items"]}[SEATS] == 12
    wait_decided(hook, result.request_id)
    seats = {i["global_id"]: i["quantity"] for i in hook.get_asset(active_asset["id"])["items"]}
    assert float(seats[SEATS]) == 12


def test_a_change_reuses_the_open_change_request_of_the_asset(sandbox, hook, active_asset):
    first = actions.change(hook, asset_id=active_asset["id"], items=[{"item_id": SEATS, "quantity": 8}])
    again = actions.change(hook, asset_id=active_asset["id"], items=[{"item_id": SEATS, "quantity": 8}])
    assert again.request_id == first.request_id and again.reused
    assert created(sandbox) == 2  # the purchase and one change


def test_a_change_already_applied_returns_the_approved_request_instead_of_a_new_one(
    sandbox, hook, active_asset
):
    first = actions.change(hook, asset_id=active_asset["id"], item_id="SEATS", quantity=9)
    assert wait_decided(hook, first.request_id)["status"] == "approved"
    retry = actions.change(hook, asset_id=active_asset["id"], item_id="SEATS", quantity=9)
    assert retry.request_id == first.request_id and retry.reused and retry.status == "approved"
    different = actions.change(hook, asset_id=active_asset["id"], item_id="SEATS", quantity=10)
    assert different.request_id != first.request_id and not different.reused


def test_a_change_naming_an_item_the_asset_does_not_have_is_refused(sandbox, hook, active_asset):
    with pytest.raises(ConnectValidationError, match=r"STORAGE_GB|SEATS") as err:
        actions.change(hook, asset_id=active_asset["id"], item_id="VAULT_TB", quantity=1)
    assert err.value.field == "item_id"
    with pytest.raises(ConnectValidationError, match="not an item of the asset's product"):
        actions.change(hook, asset_id=active_asset["id"], items=[{"item_id": VAULT, "quantity": 1}])


def test_an_asset_named_by_an_ambiguous_external_id_is_an_error_listing_both(sandbox, hook):
    before = created(sandbox)
    with pytest.raises(ConnectError, match=r"2 assets match.*AS-0000-0000-0005.*AS-0000-0000-0006"):
        actions.cancel(hook, asset_external_id="sub-dup")
    assert created(sandbox) == before


def test_an_ambiguous_external_id_with_its_uid_names_one_asset(hook):
    uid = hook.get_asset("AS-0000-0000-0006")["external_uid"]
    result = actions.suspend_resume(
        hook, request_type="suspend", asset_external_id="sub-dup", asset_external_uid=uid
    )
    assert result.asset_id == "AS-0000-0000-0006"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"asset_external_id": "no-such-sub"}, "no-such-sub"), ({"asset_id": "AS-9999-9999-9999"}, "AS-9999")],
)
def test_an_unknown_asset_is_not_found(hook, kwargs, error):
    with pytest.raises(ConnectNotFoundError, match=error):
        actions.cancel(hook, **kwargs)


def test_suspend_then_resume_then_cancel_follow_the_asset(hook, active_asset):
    suspend = actions.suspend_resume(hook, request_type="suspend", asset_id=active_asset["id"])
    assert wait_decided(hook, suspend.request_id)["status"] == "approved"
    assert hook.get_asset(active_asset["id"])["status"] == "suspended"
    # Suspending a suspended asset again answers with the request that did it.
    assert actions.suspend_resume(hook, request_type="suspend", asset_id=active_asset["id"]).request_id == (
        suspend.request_id
    )
    resume = actions.run_action(hook, "resume", {"asset_id": active_asset["id"]})
    assert resume.type == "resume"
    assert wait_decided(hook, resume.request_id)["status"] == "approved"
    cancel = actions.run_action(hook, "cancel", {"asset_external_id": active_asset["external_id"]})
    assert cancel.type == "cancel"
    assert wait_decided(hook, cancel.request_id)["status"] == "approved"
    assert hook.get_asset(active_asset["id"])["status"] == "terminated"


def test_connects_refusal_is_passed_through(hook):
    # sub-1003 is terminated: Connect (here the sandbox) refuses to resume it.
    with pytest.raises(ConnectAPIError) as err:
        actions.suspend_resume(hook, request_type="resume", asset_external_id="sub-1003")
    assert err.value.status == 400
    assert "terminated" in str(err.value)


def test_run_action_dispatches_every_type(sandbox, hook):
    result = actions.run_action(hook, "purchase", purchase_args("p-dispatch"))
    assert result.type == "purchase"
    wait_decided(hook, result.request_id)
    change = actions.run_action(
        hook, "change", {"asset_id": result.asset_id, "item_id": "SEATS", "quantity": 2}
    )
    assert change.type == "change"
    wait_decided(hook, change.request_id)
    assert actions.run_action(hook, "suspend", {"asset_id": result.asset_id}).type == "suspend"


# --------------------------------------------------------------------------- ambiguous writes


class AnswerLosingHook(ConnectHook):
    """A hook whose next ``lose`` creates end with an unknown outcome.

    ``sent=True``: the request reached Connect and only the answer was lost (a dropped connection
    after the write); ``sent=False``: it never arrived.
    """

    def __init__(self, *, lose: int, sent: bool) -> None:
        super().__init__()
        self.lose = lose
        self.sent = sent
        self.creates = 0

    def create_request(self, payload):
        self.creates += 1
        if self.lose > 0:
            self.lose -= 1
            if self.sent:
                super().create_request(payload)
            raise ConnectAmbiguousWriteError("answer lost", method="POST", path="/requests")
        return super().create_request(payload)


@pytest.fixture
def quick_lookups(monkeypatch):
    monkeypatch.setattr(actions, "AMBIGUOUS_LOOKUP_DELAYS", (0.0, 0.0))


@pytest.mark.usefixtures("quick_lookups")
def test_a_purchase_whose_answer_was_lost_is_found_not_sent_again(sandbox):
    hook = AnswerLosingHook(lose=1, sent=True)
    result = actions.purchase(hook, **purchase_args("p-lost"))
    assert hook.creates == 1 and created(sandbox) == 1
    assert hook.get_request(result.request_id)["asset"]["external_id"] == "p-lost"


@pytest.mark.usefixtures("quick_lookups")
def test_a_create_that_never_arrived_is_sent_once_more(sandbox, active_asset):
    hook = AnswerLosingHook(lose=1, sent=False)
    result = actions.suspend_resume(hook, request_type="suspend", asset_id=active_asset["id"])
    assert hook.creates == 2 and created(sandbox) == 2  # the purchase, one suspend
    assert result.type == "suspend" and not result.reused


@pytest.mark.usefixtures("quick_lookups")
def test_a_change_whose_answer_was_lost_is_found_even_after_approval(sandbox, active_asset, monkeypatch):
    hook = AnswerLosingHook(lose=1, sent=True)
    # Look only after the vendor decided: the lost request is no longer open, yet it is found.
    monkeypatch.setattr(actions, "AMBIGUOUS_LOOKUP_DELAYS", (0.7,))
    result = actions.change(hook, asset_id=active_asset["id"], item_id="SEATS", quantity=6)
    assert hook.creates == 1 and created(sandbox) == 2
    assert result.status == "approved"


@pytest.mark.usefixtures("quick_lookups")
def test_two_unknown_outcomes_in_a_row_fail_and_a_retry_creates_exactly_once(sandbox, active_asset):
    hook = AnswerLosingHook(lose=2, sent=False)
    with pytest.raises(ConnectAmbiguousWriteError):
        actions.cancel(hook, asset_id=active_asset["id"])
    assert created(sandbox) == 1
    retry = actions.cancel(hook, asset_id=active_asset["id"])
    again = actions.cancel(hook, asset_id=active_asset["id"])
    assert again.request_id == retry.request_id and again.reused
    assert created(sandbox) == 2


# --------------------------------------------------------------------------- vendor decisions


def test_approve_a_pending_request(hook):
    result = actions.approve(hook, request_id=SEEDED_PENDING, template_id="TL-276-377-545-0001")
    assert result.status == "approved" and not result.reused
    assert hook.get_asset("AS-0000-0000-0004")["status"] == "active"
    # A retry after a lost answer finds the decision made and does not ask again.
    assert actions.approve(hook, request_id=SEEDED_PENDING, template_id="TL-276-377-545-0001").reused


def test_inquire_then_fail_a_request(hook):
    inquired = actions.inquire(hook, request_id=SEEDED_PENDING, template_id="TL-276-377-545-0002")
    assert inquired.status == "inquiring"
    failed = actions.fail(hook, request_id=SEEDED_PENDING, reason="Out of stock")
    assert failed.status == "failed"
    assert hook.get_request(SEEDED_PENDING)["reason"] == "Out of stock"


def test_a_decision_on_a_request_in_the_wrong_status_is_refused_before_asking_connect(sandbox, hook):
    before = sandbox.admin("GET", "stats")["calls_by_route"]
    with pytest.raises(ConnectRequestStateError, match=r"PR-0000-0000-0001-001.*approved.*pending"):
        actions.inquire(hook, request_id="PR-0000-0000-0001-001")
    with pytest.raises(ConnectRequestStateError, match="pending or inquiring"):
        actions.fail(hook, request_id="PR-0000-0000-0001-001", reason="no")
    after = sandbox.admin("GET", "stats")["calls_by_route"]
    assert [k for k in after if k.startswith("POST")] == [k for k in before if k.startswith("POST")]


def test_connects_refusal_of_a_decision_is_passed_through(hook):
    with pytest.raises(ConnectAPIError, match="TL-684-920-001-0001") as err:
        actions.approve(hook, request_id=SEEDED_PENDING, template_id="TL-684-920-001-0001")
    assert err.value.status == 400


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda h: actions.approve(h, request_id="PR-1", template_id="template"), "template_id"),
        (lambda h: actions.approve(h, request_id="req-1", template_id="TL-276-377-545-0001"), "request_id"),
        (lambda h: actions.fail(h, request_id=SEEDED_PENDING, reason="  "), "reason"),
        (lambda h: actions.inquire(h, request_id="", template_id=None), "request_id"),
    ],
)
def test_bad_decision_input_is_refused_before_any_call(sandbox, hook, call, field):
    before = calls(sandbox)
    with pytest.raises(ConnectValidationError) as err:
        call(hook)
    assert err.value.field == field
    assert calls(sandbox) == before
