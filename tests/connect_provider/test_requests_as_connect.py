"""Requests as the real Connect handles them, end to end against the sandbox.

Each class is one behaviour CloudBlue's own integrations show (evidence in the modules under
test): Connect's 409 answers, a change that changes nothing, purchases as Connect checks them,
per-product identity, inquiring with parameter errors, final statuses and the administrative
hold, template renderings of unset values, and the limits of what can be sent.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from connect_provider import actions, forms
from connect_provider.actions import ConnectRequestFailedError
from connect_provider.exceptions import ConnectConflictError, ConnectValidationError
from connect_provider.hooks.connect import ConnectHook
from connect_provider.operators.requests import (
    ConnectApproveRequestOperator,
    ConnectCancelRequestOperator,
    ConnectChangeRequestOperator,
    ConnectFailRequestOperator,
    ConnectInquireRequestOperator,
    ConnectPurchaseRequestOperator,
    ConnectSuspendResumeRequestOperator,
)
from connect_provider.outbox import Outbox, processing
from connect_provider.sensors.requests import ConnectRequestSensor

PRODUCT = "PRD-276-377-545"
SEATS = f"{PRODUCT}-0001"
VAULT_PRODUCT = "PRD-684-920-001"
VAULT = f"{VAULT_PRODUCT}-0001"
SEEDED_PENDING = "PR-0000-0000-0004-001"


def tier(external_id: str, name: str = "Acme GmbH") -> dict:
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
    }


def purchase_args(external_id: str, **overrides) -> dict:
    args = {
        "asset_external_id": external_id,
        "hub_id": "HB-0000-0001",
        "marketplace": "MP-00001",
        "tier1": tier("reseller-1", "Demo Reseller"),
        "customer": tier(f"cust-{external_id}"),
        "items": [{"item_id": SEATS, "quantity": 5}],
    }
    args.update(overrides)
    return args


def stats(sandbox) -> dict:
    return sandbox.admin("GET", "stats")


def creates(sandbox) -> int:
    return stats(sandbox)["calls_by_route"].get("POST /requests", 0)


def wait_decided(hook: ConnectHook, request_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        request = hook.get_request(request_id)
        if request["status"] not in ("pending", "tiers_setup") or time.monotonic() > deadline:
            return request
        time.sleep(0.1)


@pytest.fixture
def hook(sandbox) -> ConnectHook:
    return ConnectHook()


@pytest.fixture
def outbox(tmp_path: Path):
    box = Outbox.sqlite(tmp_path / "changes.sqlite")
    box.create_schema()
    yield box
    box.close()


class HookWhoseListsLag(ConnectHook):
    """Connect stored the write, but its lists do not show it yet: look-ups find nothing."""

    def __init__(self, *, lose: int) -> None:
        super().__init__()
        self.lose = lose

    def create_request(self, payload):
        if self.lose > 0:
            self.lose -= 1
            super().create_request(payload)  # it arrives; only the answer is lost
            from connect_provider.exceptions import ConnectAmbiguousWriteError

            raise ConnectAmbiguousWriteError("answer lost", method="POST", path="/requests")
        return super().create_request(payload)

    def find_assets(self, *args, **kwargs):
        return []

    def list_requests(self, query=None):
        return []


class TestConnectsConflictAnswers:
    def test_a_retry_after_an_ambiguous_purchase_ends_with_the_request_connect_names(
        self, sandbox, monkeypatch
    ) -> None:
        monkeypatch.setattr(actions, "AMBIGUOUS_LOOKUP_DELAYS", (0.0,))
        result = actions.purchase(HookWhoseListsLag(lose=1), **purchase_args("p-lagging"))
        assert result.reused and stats(sandbox)["requests_created"] == 1
        request = ConnectHook().get_request(result.request_id)
        assert request["asset"]["external_id"] == "p-lagging"

    def test_a_retry_after_an_ambiguous_suspend_ends_with_the_request_connect_names(
        self, sandbox, hook, monkeypatch
    ) -> None:
        monkeypatch.setattr(actions, "AMBIGUOUS_LOOKUP_DELAYS", (0.0,))
        result = actions.suspend_resume(
            HookWhoseListsLag(lose=1), request_type="suspend", asset_id="AS-0000-0000-0001"
        )
        assert result.reused and result.type == "suspend"
        assert stats(sandbox)["requests_created"] == 1
        assert hook.get_request(result.request_id)["status"] == "pending"

    @pytest.mark.parametrize("reuse", [True, False], ids=["reuse", "no-reuse"])
    def test_resuming_an_active_asset_ends_with_the_request_its_state_comes_from(
        self, sandbox, reuse
    ) -> None:
        xcom = ConnectSuspendResumeRequestOperator(
            task_id="resume",
            request_type="resume",
            asset_id="AS-0000-0000-0001",
            reuse_existing_request=reuse,
        ).execute({})
        assert (xcom["request_id"], xcom["status"], xcom["reused"]) == (
            "PR-0000-0000-0001-001",
            "approved",
            True,
        )
        assert stats(sandbox)["requests_created"] == 0
        assert creates(sandbox) == (0 if reuse else 1)  # without reuse it is sent, and Connect says 409

    def test_a_duplicate_purchase_sent_anyway_gets_the_existing_request(self, sandbox, hook) -> None:
        first = actions.purchase(hook, **purchase_args("p-again"))
        again = actions.purchase(hook, **purchase_args("p-again", reuse_existing_request=False))
        assert (again.request_id, again.reused) == (first.request_id, True)
        assert stats(sandbox)["requests_created"] == 1

    def test_an_open_request_of_another_type_is_named_in_the_error(self, sandbox, hook) -> None:
        suspend = actions.suspend_resume(hook, request_type="suspend", asset_id="AS-0000-0000-0001")
        with pytest.raises(ConnectConflictError, match=rf"{suspend.request_id} \(suspend, pending\)") as err:
            actions.cancel(hook, asset_id="AS-0000-0000-0001")
        assert err.value.params["request_id"] == suspend.request_id
        assert "wait until it is decided" in str(err.value)


class TestTheOutboxAndConnectsConflicts:
    def run_chunk(self, outbox: Outbox, hook: ConnectHook, run=None) -> processing.ChunkReport:
        token = f"test/{uuid.uuid4().hex}"
        ids = outbox.claim(token, 100)
        return processing.submit_chunk(outbox, hook, token, ids, run=run, retry_delays=())

    def test_a_409_naming_the_rows_request_is_recorded_never_rejected(self, sandbox, hook, outbox) -> None:
        first = actions.purchase(hook, **purchase_args("o-dup"))
        row = outbox.add("purchase", {**purchase_args("o-dup"), "reuse_existing_request": False})
        resume = outbox.add("resume", {"asset_id": "AS-0000-0000-0001"})
        report = self.run_chunk(outbox, hook)
        assert report.rejected == 0 and report.reused == 2
        row_change, resume_change = outbox.get([row, resume])
        assert row_change.connect_request_id == first.request_id
        assert (resume_change.status, resume_change.connect_request_id) == (
            "approved",
            "PR-0000-0000-0001-001",
        )

    def test_a_409_naming_an_open_request_of_another_type_leaves_the_row_pending(
        self, sandbox, hook, outbox
    ) -> None:
        suspend = actions.suspend_resume(hook, request_type="suspend", asset_id="AS-0000-0000-0001")
        row = outbox.add("cancel", {"asset_id": "AS-0000-0000-0001"})
        report = self.run_chunk(outbox, hook)
        assert (report.rejected, report.retry_later) == (0, 1)
        (change,) = outbox.get([row])
        assert change.status == "pending" and suspend.request_id in change.error


class TestAChangeThatChangesNothing:
    @pytest.mark.parametrize("quantity", [10, "10", 10.0, "10.0"], ids=["int", "str", "float", "float-str"])
    def test_makes_no_create_call_and_returns_the_assets_state(self, sandbox, hook, quantity) -> None:
        result = actions.change(hook, asset_id="AS-0000-0000-0001", item_id="SEATS", quantity=quantity)
        assert (result.request_id, result.status, result.reused) == (
            "PR-0000-0000-0001-001",
            "approved",
            True,
        )
        assert creates(sandbox) == 0

    def test_through_the_operator_too(self, sandbox) -> None:
        xcom = ConnectChangeRequestOperator(
            task_id="c", asset_external_id="sub-1001", items=[{"item_id": SEATS, "quantity": 10}]
        ).execute({})
        assert xcom["reused"] and xcom["status"] == "approved"
        assert creates(sandbox) == 0

    def test_connects_refusal_of_one_sent_anyway_is_the_same_answer(self, sandbox, hook) -> None:
        result = actions.change(
            hook, asset_id="AS-0000-0000-0001", item_id="SEATS", quantity=10, reuse_existing_request=False
        )
        assert (result.request_id, result.reused) == ("PR-0000-0000-0001-001", True)
        assert creates(sandbox) == 1 and stats(sandbox)["requests_created"] == 0


class TestPurchaseAsConnectChecksIt:
    @pytest.mark.parametrize("marketplace", [None, "", "  "], ids=["none", "empty", "blank"])
    def test_a_purchase_without_a_marketplace_fails_locally_naming_the_argument(
        self, sandbox, hook, marketplace
    ):
        with pytest.raises(ConnectValidationError, match=r"Connect requires marketplace\.id") as err:
            actions.purchase(hook, **purchase_args("p-nomp", marketplace=marketplace))
        assert err.value.field == "marketplace"
        args = purchase_args("p-nomp")
        del args["marketplace"]
        with pytest.raises(
            ConnectValidationError, match="Connect refuses a purchase without its marketplace"
        ):
            actions.validate_action("purchase", args)
        assert stats(sandbox)["calls"] == 0

    def test_tier2_is_sent(self, sandbox, hook) -> None:
        result = actions.purchase(hook, **purchase_args("p-t2", tier2=tier("sub-reseller-9", "Sub Reseller")))
        tiers = hook.get_request(result.request_id)["asset"]["tiers"]
        assert tiers["tier2"]["name"] == "Sub Reseller"
        assert tiers["tier2"]["external_uid"] == actions.default_tier_external_uid("sub-reseller-9")

    def test_tier2_goes_through_the_operator_and_the_outbox_payload(self, sandbox) -> None:
        xcom = ConnectPurchaseRequestOperator(
            task_id="p", **purchase_args("op-t2", tier2=tier("sub-reseller-8", "Sub Eight"))
        ).execute({})
        assert ConnectHook().get_request(xcom["request_id"])["asset"]["tiers"]["tier2"]["name"] == "Sub Eight"
        actions.validate_action("purchase", purchase_args("row-t2", tier2=tier("sub-reseller-7")))

    def test_tier_accounts_are_looked_up_within_the_purchases_hub(self, sandbox, hook) -> None:
        seeded = hook.find_tier_account("reseller-1")
        result = actions.purchase(
            hook, **purchase_args("p-us", hub_id="HB-0000-0002", marketplace="MP-00002")
        )
        tier1 = hook.get_request(result.request_id)["asset"]["tiers"]["tier1"]
        assert tier1["external_uid"] != seeded["external_uid"]  # HB-0000-0001's account is not this hub's
        assert tier1["id"] != seeded["id"]

    def test_object_parameters_go_as_structured_value(self, sandbox, hook) -> None:
        address = {
            "address_line1": "1 Main",
            "city": "Austin",
            "state": "TX",
            "postal_code": "1",
            "country": "US",
        }
        result = actions.purchase(
            hook, **purchase_args("p-obj", params={"billing_address": address, "seats_note": "x"})
        )
        params = {p["id"]: p for p in hook.get_request(result.request_id)["asset"]["params"]}
        assert params["billing_address"]["structured_value"] == address
        assert params["seats_note"]["value"] == "x"


class TestIdentityIsPerProduct:
    def test_one_external_id_bought_for_two_products_is_two_assets_each_found_again(
        self, sandbox, hook
    ) -> None:
        seats = actions.purchase(hook, **purchase_args("shared-ext"))
        vault = actions.purchase(
            hook,
            **purchase_args(
                "shared-ext", items=[{"item_id": VAULT, "quantity": 1}], connection_id="CT-0000-0000-0004"
            ),
        )
        assert seats.asset_id != vault.asset_id and not vault.reused
        uids = {hook.get_asset(a)["external_uid"] for a in (seats.asset_id, vault.asset_id)}
        assert len(uids) == 2
        again = actions.purchase(
            hook,
            **purchase_args(
                "shared-ext", items=[{"item_id": VAULT, "quantity": 1}], connection_id="CT-0000-0000-0004"
            ),
        )
        assert (again.request_id, again.reused) == (vault.request_id, True)

    def test_the_derived_uid_depends_on_the_product(self) -> None:
        assert actions.default_asset_external_uid("x", PRODUCT) != actions.default_asset_external_uid(
            "x", VAULT_PRODUCT
        )


class TestInquireWithParameterErrors:
    def test_the_errors_are_written_before_the_request_is_inquired(self, sandbox, hook) -> None:
        xcom = ConnectInquireRequestOperator(
            task_id="i", request_id=SEEDED_PENDING, param_errors={"admin_email": "Give a company address."}
        ).execute({})
        assert xcom["status"] == "inquiring"
        params = {p["id"]: p for p in hook.get_request(SEEDED_PENDING)["asset"]["params"]}
        assert params["admin_email"]["value_error"] == "Give a company address."
        routes = stats(sandbox)["calls_by_route"]
        assert (
            routes["PUT /requests/{request_id}"] == 1 and routes["POST /requests/{request_id}/inquire"] == 1
        )

    def test_a_request_already_inquiring_still_gets_the_errors(self, sandbox, hook) -> None:
        hook.inquire_request(SEEDED_PENDING)
        result = actions.inquire(hook, request_id=SEEDED_PENDING, param_errors={"seats_note": "Too vague."})
        assert (result.status, result.reused) == ("inquiring", True)
        params = {p["id"]: p for p in hook.get_request(SEEDED_PENDING)["asset"]["params"]}
        assert params["seats_note"]["value_error"] == "Too vague."

    @pytest.mark.parametrize(
        ("param_errors", "field"),
        [
            ({"no_such_param": "x"}, "param_errors.no_such_param"),
            ({"admin_email": " "}, "param_errors.admin_email"),
            (["admin_email"], "param_errors"),
        ],
        ids=["unknown-parameter", "blank-message", "not-a-dict"],
    )
    def test_bad_errors_are_refused_before_any_write(self, sandbox, hook, param_errors, field) -> None:
        with pytest.raises(ConnectValidationError) as err:
            actions.inquire(hook, request_id=SEEDED_PENDING, param_errors=param_errors)
        assert err.value.field == field
        assert not [r for r in stats(sandbox)["calls_by_route"] if not r.startswith("GET")]


class TestFinalStatusesAndTheAdministrativeHold:
    def test_the_sensor_fails_on_a_revoked_request_by_default(self, sandbox, hook) -> None:
        suspend = actions.suspend_resume(hook, request_type="suspend", asset_id="AS-0000-0000-0001")
        hook.post(
            f"/requests/{suspend.request_id}/schedule", json={"planned_date": "2027-01-01T00:00:00+00:00"}
        )
        hook.post(f"/requests/{suspend.request_id}/revoke", json={"reason": "not needed after all"})
        sensor = ConnectRequestSensor(task_id="w", request_id=suspend.request_id)
        with pytest.raises(ConnectRequestFailedError, match="revoked: not needed after all"):
            sensor.poke({})

    def test_a_scheduled_request_is_followed_not_failed(self, sandbox, hook) -> None:
        suspend = actions.suspend_resume(hook, request_type="suspend", asset_id="AS-0000-0000-0001")
        hook.post(
            f"/requests/{suspend.request_id}/schedule", json={"planned_date": "2027-01-01T00:00:00+00:00"}
        )
        assert ConnectRequestSensor(task_id="w", request_id=suspend.request_id).poke({}) is False
        again = actions.suspend_resume(hook, request_type="suspend", asset_id="AS-0000-0000-0001")
        assert (again.request_id, again.status, again.reused) == (suspend.request_id, "scheduled", True)

    def test_suspending_a_product_without_hold_fails_the_task_with_connects_reason(
        self, sandbox, hook
    ) -> None:
        bought = actions.purchase(
            hook,
            **purchase_args(
                "p-vault-hold", items=[{"item_id": VAULT, "quantity": 1}], connection_id="CT-0000-0000-0004"
            ),
        )
        assert wait_decided(hook, bought.request_id)["status"] == "approved"
        op = ConnectSuspendResumeRequestOperator(
            task_id="s",
            request_type="suspend",
            asset_id=bought.asset_id,
            wait_for_completion=True,
            poll_interval=0.1,
        )
        with pytest.raises(ConnectRequestFailedError, match="doesn't support suspend/resume"):
            op.execute({})
        assert hook.get_asset(bought.asset_id)["status"] == "active"


# Every operator's id argument, as a template of an unset value renders it.
UNSET = ["None", "null", " None ", "NULL"]
OPERATORS = [
    (
        "purchase",
        lambda v: ConnectPurchaseRequestOperator(task_id="t", **purchase_args(v)),
        "asset_external_id",
    ),
    (
        "purchase-uid",
        lambda v: ConnectPurchaseRequestOperator(task_id="t", **purchase_args("p-uid", asset_external_uid=v)),
        "asset_external_uid",
    ),
    (
        "change",
        lambda v: ConnectChangeRequestOperator(task_id="t", asset_external_id=v, item_id="SEATS", quantity=3),
        "asset_external_id",
    ),
    (
        "suspend",
        lambda v: ConnectSuspendResumeRequestOperator(task_id="t", request_type="suspend", asset_id=v),
        "asset_id",
    ),
    (
        "resume",
        lambda v: ConnectSuspendResumeRequestOperator(
            task_id="t", request_type="resume", asset_external_id="sub-1002", asset_external_uid=v
        ),
        "asset_external_uid",
    ),
    ("cancel", lambda v: ConnectCancelRequestOperator(task_id="t", asset_external_id=v), "asset_external_id"),
    (
        "approve",
        lambda v: ConnectApproveRequestOperator(task_id="t", request_id=v, template_id="TL-276-377-545-0001"),
        "request_id",
    ),
    ("fail", lambda v: ConnectFailRequestOperator(task_id="t", request_id=v, reason="no"), "request_id"),
    ("inquire", lambda v: ConnectInquireRequestOperator(task_id="t", request_id=v), "request_id"),
    (
        "inquire-template",
        lambda v: ConnectInquireRequestOperator(task_id="t", request_id=SEEDED_PENDING, template_id=v),
        "template_id",
    ),
    ("sensor", lambda v: ConnectRequestSensor(task_id="t", request_id=v), "request_id"),
]


class TestIdsRenderedFromUnsetValues:
    @pytest.mark.parametrize("rendered", UNSET, ids=["None", "null", "padded", "upper"])
    @pytest.mark.parametrize(("make", "field"), [o[1:] for o in OPERATORS], ids=[o[0] for o in OPERATORS])
    def test_every_operator_refuses_them_before_any_call_naming_the_argument(
        self, sandbox, make, field, rendered
    ) -> None:
        with pytest.raises(ConnectValidationError, match="renders for a value that is not set") as err:
            make(rendered).execute({})
        assert err.value.field == field
        assert stats(sandbox)["calls"] == 0

    def test_a_real_template_of_an_unset_param_is_caught(self, sandbox, airflow_db) -> None:
        from airflow.sdk import DAG

        with DAG("unset_sid", schedule=None):
            op = ConnectPurchaseRequestOperator(task_id="t", **purchase_args("{{ params.sid }}"))
        op.render_template_fields({"params": {"sid": None}})  # a DAG param left at its default None
        assert op.asset_external_id == "None"
        with pytest.raises(ConnectValidationError) as err:
            op.execute({})
        assert err.value.field == "asset_external_id"
        assert stats(sandbox)["calls"] == 0

    @pytest.mark.parametrize(
        ("form", "field"),
        [
            ({"action": "purchase", "asset_external_id": "None"}, "asset_external_id"),
            ({"action": "suspend", "asset_external_id": "null"}, "asset_external_id"),
            ({"action": "cancel", "asset_id": "None"}, "asset_id"),
            (
                {"action": "change", "asset_external_id": "sub-1001", "item_id": "None", "quantity": 2},
                "item_id",
            ),
            (
                {"action": "purchase", "asset_external_id": "p-form", "tier1_external_id": "None"},
                "tier1_external_id",
            ),
        ],
        ids=["purchase", "suspend", "cancel-by-id", "change-item", "tier-external-id"],
    )
    def test_the_form_refuses_them_naming_the_form_field(self, sandbox, form, field) -> None:
        defaults = {
            "hub_id": "HB-0000-0001",
            "marketplace": "MP-00001",
            "item_id": SEATS,
            "quantity": 5,
            **{f"tier1_{k}": v for k, v in FORM_TIER.items()},
            **{f"customer_{k}": v for k, v in FORM_TIER.items()},
        }
        with pytest.raises(ConnectValidationError) as err:
            forms.run_form_action({**defaults, **form})
        assert err.value.field == field
        assert stats(sandbox)["calls"] == 0


FORM_TIER = {
    "name": "Demo",
    "external_id": "reseller-1",
    "email": "a@example.com",
    "first_name": "A",
    "last_name": "B",
    "phone": "+1 2015550123",
    "address_line1": "1 St",
    "city": "Town",
    "postal_code": "1",
    "country": "US",
}


class TestWhatCannotBeSent:
    @pytest.mark.parametrize("quantity", [10**30, 2**31, "99999999999"], ids=["1e30", "2^31", "string"])
    def test_a_quantity_above_what_connect_holds_is_refused_naming_the_field(
        self, sandbox, hook, quantity
    ) -> None:
        with pytest.raises(ConnectValidationError, match="at most 2147483647") as err:
            actions.purchase(
                hook, **purchase_args("p-huge", items=[{"item_id": SEATS, "quantity": quantity}])
            )
        assert err.value.field == "items[0].quantity"
        assert stats(sandbox)["calls"] == 0

    def test_the_largest_quantity_is_accepted(self, sandbox, hook) -> None:
        result = actions.purchase(
            hook, **purchase_args("p-max", items=[{"item_id": SEATS, "quantity": 2**31 - 1}])
        )
        assert not result.reused

    @pytest.mark.parametrize(
        ("call", "field"),
        [
            (lambda h: actions.purchase(h, **purchase_args("""it's "odd\"""")), "asset_external_id"),
            (
                lambda h: actions.change(h, asset_external_id="""it's "odd\"""", item_id="SEATS", quantity=2),
                "asset_external_id",
            ),
            (lambda h: actions.cancel(h, asset_external_uid="""u'"1"""), "asset_external_uid"),
            (
                lambda h: actions.purchase(h, **purchase_args("p-q", marketplace="""Joe's "Market\"""")),
                "marketplace",
            ),
            (
                lambda h: actions.purchase(h, **purchase_args("p-q", tier1=tier("""r'"1"""))),
                "tier1.external_id",
            ),
        ],
        ids=["purchase", "change", "uid", "marketplace-name", "tier-external-id"],
    )
    def test_an_id_with_both_quote_kinds_is_refused_naming_the_callers_argument(
        self, sandbox, hook, call, field
    ) -> None:
        with pytest.raises(ConnectValidationError, match="both a double quote and a single quote") as err:
            call(hook)
        assert err.value.field == field
        assert stats(sandbox)["calls"] == 0
