"""Subscription requests as Connect answers them, beyond the happy path: conflicts, refusals that
integrations match on, parameters, statuses and the product's capabilities.

Evidence for each behaviour is named in ``connect_sandbox.store`` and ``connect_sandbox.seed``.
"""

from __future__ import annotations

import time

import pytest

VAULT_CONNECTION = "CT-0000-0000-0004"


def no_auto_decision(sandbox) -> None:
    sandbox.admin("POST", "reset", {"auto_approve_delay": -1})


def created(sandbox) -> int:
    return sandbox.admin("GET", "stats")["requests_created"]


def vault_purchase(purchase, external_id: str) -> dict:
    return purchase(
        external_id,
        connection={"id": VAULT_CONNECTION},
        items=[{"id": "VAULT_TB", "quantity": 2}],
    )


def approved(api, body: dict) -> dict:
    """Create a request and approve it as the vendor; returns the approved request."""
    r = api.post("/requests", body)
    assert r.status_code == 201, r.text
    template = "TL-684-920-001-0001" if "VAULT" in str(body) else "TL-276-377-545-0001"
    done = api.post(f"/requests/{r.json()['id']}/approve", {"template_id": template})
    assert done.status_code == 200, done.text
    return done.json()


class TestDuplicatePurchase:
    def test_a_purchase_with_an_external_uid_an_asset_has_is_a_conflict_naming_its_purchase(
        self, api, sandbox, purchase
    ) -> None:
        no_auto_decision(sandbox)
        first = api.post("/requests", purchase("dup-1", external_uid="uid-dup-1")).json()
        again = api.post("/requests", purchase("dup-1", external_uid="uid-dup-1"))
        assert again.status_code == 409
        assert again.json()["error_code"] == "REQ_004"
        assert again.json()["params"] == {
            "request_id": first["id"],
            "asset_id": first["asset"]["id"],
            "request_status": "pending",
            "asset_status": "processing",
        }
        assert created(sandbox) == 1

    def test_the_uid_of_a_seeded_asset_is_taken_whatever_the_external_id(
        self, api, sandbox, purchase
    ) -> None:
        uid = api.get("/assets/AS-0000-0000-0001").json()["external_uid"]
        r = api.post("/requests", purchase("another-id", external_uid=uid))
        assert r.status_code == 409
        assert r.json()["params"]["request_id"] == "PR-0000-0000-0001-001"
        assert r.json()["params"]["request_status"] == "approved"

    def test_an_external_uid_is_unique_across_products(self, api, sandbox, purchase) -> None:
        no_auto_decision(sandbox)
        assert api.post("/requests", purchase("both", external_uid="uid-both")).status_code == 201
        body = vault_purchase(purchase, "both")
        body["asset"]["external_uid"] = "uid-both"
        assert api.post("/requests", body).status_code == 409

    def test_assets_may_share_an_external_id_under_different_uids(self, api, sandbox, purchase) -> None:
        no_auto_decision(sandbox)
        for uid in ("uid-a", "uid-b"):
            assert api.post("/requests", purchase("shared", external_uid=uid)).status_code == 201
        assert len(api.get("/assets", "external_id=shared").json()) == 2

    def test_a_refused_duplicate_creates_no_tier_account(self, api, sandbox, purchase, tier) -> None:
        no_auto_decision(sandbox)
        api.post("/requests", purchase("dup-tiers", external_uid="uid-dup-tiers"))
        before = len(api.get("/tier/accounts").json())
        body = purchase("dup-tiers", external_uid="uid-dup-tiers")
        body["asset"]["tiers"]["customer"] = dict(tier, external_id="someone-new")
        assert api.post("/requests", body).status_code == 409
        assert len(api.get("/tier/accounts").json()) == before


class TestChangeThatChangesNothing:
    @pytest.mark.parametrize(
        "items",
        [
            [{"id": "SEATS", "quantity": 10}],
            [{"global_id": "PRD-276-377-545-0001", "quantity": "10"}],
            [{"id": "SEATS", "quantity": 10.0}],
        ],
        ids=["local-id", "global-id-string", "float"],
    )
    def test_is_refused_with_connects_words_and_creates_nothing(self, api, sandbox, items) -> None:
        r = api.post("/requests", {"type": "change", "asset": {"id": "AS-0000-0000-0001", "items": items}})
        assert r.status_code == 400
        assert r.json()["errors"] == ["asset.items: Item quantities are not changed."]
        assert created(sandbox) == 0

    def test_one_changed_item_among_unchanged_ones_is_a_change(self, api, sandbox) -> None:
        items = [{"id": "SEATS", "quantity": 10}, {"id": "STORAGE_GB", "quantity": 3}]
        r = api.post("/requests", {"type": "change", "asset": {"id": "AS-0000-0000-0001", "items": items}})
        assert r.status_code == 201, r.text


class TestAdministrativeHold:
    def test_a_product_without_hold_gets_its_suspend_created_failed_and_the_asset_stays(
        self, api, sandbox, purchase
    ) -> None:
        # (Its assets are never suspended, so a resume meets an active asset: a 409, tested above.)
        no_auto_decision(sandbox)
        asset = approved(api, vault_purchase(purchase, "vault-suspend"))["asset"]
        r = api.post("/requests", {"type": "suspend", "asset": {"id": asset["id"]}})
        assert r.status_code == 201
        assert (r.json()["status"], r.json()["reason"]) == (
            "failed",
            "The product doesn't support suspend/resume operations.",
        )
        assert api.get(f"/assets/{asset['id']}").json()["status"] == "active"
        # Failed is final: nothing stays open, so a cancel may follow.
        assert api.post("/requests", {"type": "cancel", "asset": {"id": asset["id"]}}).status_code == 201

    def test_a_product_with_hold_is_suspended_normally(self, api, sandbox) -> None:
        no_auto_decision(sandbox)
        r = api.post("/requests", {"type": "suspend", "asset": {"id": "AS-0000-0000-0001"}})
        assert r.json()["status"] == "pending"


class TestStatuses:
    def test_a_scheduled_request_is_open_until_approved(self, api, sandbox) -> None:
        no_auto_decision(sandbox)
        rid = api.post("/requests", {"type": "suspend", "asset": {"id": "AS-0000-0000-0001"}}).json()["id"]
        r = api.post(f"/requests/{rid}/schedule", {"planned_date": "2027-01-01T00:00:00+00:00"})
        assert (r.json()["status"], r.json()["planned_date"]) == ("scheduled", "2027-01-01T00:00:00+00:00")
        other = api.post("/requests", {"type": "cancel", "asset": {"id": "AS-0000-0000-0001"}})
        assert other.status_code == 409 and other.json()["params"]["request_status"] == "scheduled"
        done = api.post(f"/requests/{rid}/approve", {"template_id": "TL-276-377-545-0001"})
        assert done.json()["status"] == "approved"

    @pytest.mark.parametrize("body", [{}, {"planned_date": "next tuesday"}], ids=["missing", "not-a-date"])
    def test_scheduling_needs_a_planned_date(self, api, body) -> None:
        r = api.post("/requests/PR-0000-0000-0004-001/schedule", body)
        assert r.status_code == 400 and "planned_date" in r.json()["errors"][0]

    def test_a_revoked_request_is_final_and_gives_the_asset_back(self, api, sandbox) -> None:
        no_auto_decision(sandbox)
        rid = api.post("/requests", {"type": "cancel", "asset": {"id": "AS-0000-0000-0001"}}).json()["id"]
        api.post(f"/requests/{rid}/schedule", {"planned_date": "2027-01-01T00:00:00+00:00"})
        r = api.post(f"/requests/{rid}/revoke", {"reason": "the customer changed their mind"})
        assert (r.json()["status"], r.json()["reason"]) == ("revoked", "the customer changed their mind")
        assert api.get("/assets/AS-0000-0000-0001").json()["status"] == "active"
        again = api.post(f"/requests/{rid}/approve", {"template_id": "TL-276-377-545-0001"})
        assert again.status_code == 400 and again.json()["error_code"] == "REQ_001"

    def test_a_purchase_waiting_for_its_tiers_is_tiers_setup_then_pending_then_decided(
        self, api, sandbox, purchase
    ) -> None:
        sandbox.admin("POST", "reset", {"auto_approve_delay": 0.3})
        rid = api.post("/requests", purchase("setup-1")).json()["id"]
        seen = [api.get(f"/requests/{rid}").json()["status"]]
        deadline = time.monotonic() + 10
        while seen[-1] != "approved" and time.monotonic() < deadline:
            time.sleep(0.05)
            status = api.get(f"/requests/{rid}").json()["status"]
            if status != seen[-1]:
                seen.append(status)
        assert seen == ["tiers_setup", "pending", "approved"]


class TestParameterUpdates:
    def test_value_errors_are_written_and_shown_on_the_request(self, api, sandbox) -> None:
        body = {"asset": {"params": [{"id": "admin_email", "value_error": "Use a company address."}]}}
        r = api.put("/requests/PR-0000-0000-0004-001", body)
        assert r.status_code == 200, r.text
        param = next(p for p in r.json()["asset"]["params"] if p["id"] == "admin_email")
        assert param["value_error"] == "Use a company address."
        shown = api.get("/requests/PR-0000-0000-0004-001").json()["asset"]["params"]
        assert next(p for p in shown if p["id"] == "admin_email")["value_error"] == "Use a company address."

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ({"asset": {"params": [{"id": "nope", "value_error": "x"}]}}, "asset.params[1].id: nope is not"),
            (
                {"asset": {"params": [{"id": "seats_note", "title": "Renamed"}]}},
                "asset.params[1].title: only value, structured_value or value_error",
            ),
            ({"asset": {"items": []}}, "asset.items: only asset.params"),
            ({"status": "approved"}, "status: only asset.params and note"),
            (
                {"asset": {"params": [{"id": "billing_address", "structured_value": "1 Main St"}]}},
                "asset.params[1].structured_value: must be an object",
            ),
        ],
        ids=["unknown-id", "other-field", "other-asset-field", "other-top-field", "structured-not-object"],
    )
    def test_anything_but_values_and_errors_is_refused_and_nothing_is_applied(
        self, api, body, message
    ) -> None:
        body = {**body}
        if "asset" in body and "params" in body["asset"]:
            # A valid entry first: it must not be applied when a later one is refused.
            body["asset"] = {
                "params": [{"id": "seats_note", "value_error": "first"}, *body["asset"]["params"]]
            }
        r = api.put("/requests/PR-0000-0000-0004-001", body)
        assert r.status_code == 400
        assert message in r.json()["errors"][0]
        params = api.get("/requests/PR-0000-0000-0004-001").json()["asset"]["params"]
        assert all(p["value_error"] == "" for p in params)

    def test_a_decided_request_cannot_be_updated(self, api) -> None:
        body = {"asset": {"params": [{"id": "seats_note", "value_error": "late"}]}}
        r = api.put("/requests/PR-0000-0000-0001-001", body)
        assert r.status_code == 400 and r.json()["error_code"] == "REQ_001"

    def test_an_unknown_request_is_404(self, api) -> None:
        assert api.put("/requests/PR-0000-0000-0099-001", {"asset": {"params": []}}).status_code == 404


class TestPurchaseParameters:
    def test_object_parameters_take_a_structured_value(self, api, sandbox, purchase) -> None:
        address = {
            "address_line1": "1 Main",
            "city": "Austin",
            "state": "TX",
            "postal_code": "1",
            "country": "US",
        }
        body = purchase("structured", params=[{"id": "billing_address", "structured_value": address}])
        r = api.post("/requests", body)
        assert r.status_code == 201, r.text
        param = next(p for p in r.json()["asset"]["params"] if p["id"] == "billing_address")
        assert param["structured_value"] == address

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ([{"id": "colour", "value": "red"}], "asset.params[0].id: colour is not a parameter of product"),
            ([{"id": "seats_note", "value": {"a": 1}}], "asset.params[0].value: must be a string"),
        ],
        ids=["unknown", "object-as-value"],
    )
    def test_bad_parameters_are_refused_naming_them(self, api, purchase, params, message) -> None:
        r = api.post("/requests", purchase("bad-params", params=params))
        assert r.status_code == 400
        assert r.json()["errors"][0].startswith(message)


class TestTierAccountsBelongToAHub:
    def test_an_external_id_known_on_another_hub_is_a_new_account_on_this_one(
        self, api, sandbox, purchase, tier
    ) -> None:
        no_auto_decision(sandbox)
        body = purchase(
            "us-purchase",
            connection={"id": "CT-0000-0000-0002"},
            tiers={"customer": dict(tier), "tier1": dict(tier, external_id="reseller-1")},
        )
        body["marketplace"] = {"id": "MP-00002"}
        r = api.post("/requests", body)
        assert r.status_code == 201, r.text
        tier1 = r.json()["asset"]["tiers"]["tier1"]
        assert tier1["id"] != "TA-0000-0000-0001"  # the seeded reseller-1 is on HB-0000-0001
        accounts = api.get("/tier/accounts", "external_id=reseller-1").json()
        assert sorted(a["hub"]["id"] for a in accounts) == ["HB-0000-0001", "HB-0000-0002"]

    def test_a_tier_account_of_another_hub_is_refused(self, api, purchase) -> None:
        body = purchase("us-by-id", connection={"id": "CT-0000-0000-0002"})
        body["marketplace"] = {"id": "MP-00002"}
        r = api.post("/requests", body)  # tier1 is TA-0000-0000-0001, of HB-0000-0001
        assert r.status_code == 400
        assert r.json()["errors"][0].startswith(
            "asset.tiers.tier1.id: tier account TA-0000-0000-0001 belongs"
        )


class TestAssetShape:
    def test_items_carry_the_local_id_the_global_id_and_a_number(self, api) -> None:
        item = api.get("/assets/AS-0000-0000-0001").json()["items"][0]
        assert (item["id"], item["global_id"], item["quantity"]) == ("SEATS", "PRD-276-377-545-0001", 10.0)
        assert isinstance(item["quantity"], float)

    def test_an_asset_has_billing_and_no_configuration(self, api) -> None:
        asset = api.get("/assets/AS-0000-0000-0001").json()
        assert "configuration" not in asset and asset["billing"]["period"] == {"delta": 1.0, "uom": "monthly"}
        assert api.get("/requests/PR-0000-0000-0001-001").json()["asset"]["configuration"] == {"params": []}
