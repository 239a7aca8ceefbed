"""Subscription requests as Connect runs them: creation rules, transitions and refusals."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests


def asset_status(api, asset_id: str) -> str:
    return api.get(f"/assets/{asset_id}").json()["status"]


def no_auto_decision(sandbox) -> None:
    sandbox.admin("POST", "reset", {"auto_approve_delay": -1})


# ------------------------------------------------------------------------------------ purchase
def test_a_purchase_creates_a_processing_asset_and_a_pending_request(api, sandbox, purchase) -> None:
    no_auto_decision(sandbox)
    r = api.post("/requests", purchase("new-sub-1"))
    assert r.status_code == 201
    req = r.json()
    assert req["id"] == "PR-0000-0000-0007-001"
    assert req["type"] == "purchase" and req["status"] == "pending"
    asset = req["asset"]
    assert asset["id"] == "AS-0000-0000-0007" and asset["status"] == "processing"
    assert asset["external_id"] == "new-sub-1" and asset["external_uid"]
    assert asset["connection"]["id"] == "CT-0000-0000-0001"
    assert asset["items"] == [
        {
            "id": "SEATS",
            "global_id": "PRD-276-377-545-0001",
            "mpn": "SEATS",
            "old_quantity": "0",
            "quantity": "3",
            "type": "seat",  # the unit, as in Connect's request items
            "display_name": "Seats",
            "period": "Monthly",
            "item_type": "Reservation",
        }
    ]
    assert asset_status(api, "AS-0000-0000-0007") == "processing"
    assert sandbox.admin("GET", "stats")["requests_by_type"] == {"purchase": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.pop("marketplace"), "Field 'marketplace.id' is required."),
        (
            lambda b: b.update(marketplace={"id": "MP-99999"}),
            "marketplace.id: marketplace MP-99999 does not exist.",
        ),
        (lambda b: b["asset"].pop("connection"), "asset.connection.id: This field is required."),
        (
            lambda b: b["asset"].update(connection={"type": "production"}, product={"id": "PRD-276-377-545"}),
            "asset.connection.id: This field is required.",
        ),
        (
            lambda b: (
                b["asset"].update(
                    connection={"id": "CT-0000-0000-0004"}, items=[{"id": "VAULT_TB", "quantity": 1}]
                )
                or b.update(marketplace={"id": "MP-00002"})
            ),
            "There is no Listing for specified Product and Marketplace.",
        ),
        (
            lambda b: b.update(marketplace={"id": "MP-00002"}),
            "marketplace.id: marketplace MP-00002 is not served by hub HB-0000-0001",
        ),
    ],
    ids=[
        "no-marketplace",
        "unknown-marketplace",
        "no-connection",
        "connection-by-type-only",
        "no-listing",
        "other-hub",
    ],
)
def test_a_purchase_infers_no_required_field(api, sandbox, change, message, purchase) -> None:
    # Connect's own words where integrations match them (connect-extension-for-cb-commerce base.py).
    body = purchase("strict")
    change(body)
    r = api.post("/requests", body)
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "VAL_001"
    assert r.json()["errors"][0].startswith(message)
    assert api.get("/assets", "external_id=strict&limit=0").headers["Content-Range"].endswith("/0")


@pytest.mark.parametrize("missing", ["tier1", "customer"])
def test_a_purchase_needs_tier1_and_customer(api, missing, purchase) -> None:
    body = purchase("no-tier")
    del body["asset"]["tiers"][missing]
    r = api.post("/requests", body)
    assert r.status_code == 400
    assert f"asset.tiers.{missing}" in r.json()["errors"][0]


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([{"id": "PRD-684-920-001-0001", "quantity": 1}], "does not belong"),
        ([{"id": "SEATS", "quantity": 1.5}], "whole number"),
        ([{"id": "SEATS", "quantity": "-2"}], "negative"),
        ([{"id": "SEATS", "quantity": "lots"}], "not a number"),
        ([{"id": "SEATS"}], "required"),
        ([{"quantity": 1}], "id or global_id"),
        (
            [{"id": "SEATS", "quantity": 1}, {"global_id": "PRD-276-377-545-0001", "quantity": 2}],
            "more than once",
        ),
        ([], "This list may not be empty."),
        ([{"id": "SEATS", "quantity": 0}], "This list may not be empty."),
        ([{"id": "SEATS", "quantity": 2**31}], "less than or equal to 2147483647"),
    ],
)
def test_bad_items_are_refused_naming_the_field(api, items, field, purchase) -> None:
    r = api.post("/requests", purchase("bad-items", items=items))
    assert r.status_code == 400
    assert "asset.items" in r.json()["errors"][0]
    assert field in r.json()["errors"][0]


@pytest.mark.parametrize(
    "item",
    [
        {"id": "PRD-276-377-545-0001", "quantity": 4},
        {"global_id": "PRD-276-377-545-0001", "quantity": "4"},
        {"id": "SEATS", "quantity": "4"},
        {"id": "SEATS", "quantity": 4.0},
    ],
)
def test_items_are_accepted_by_id_global_id_or_local_id_with_number_or_string_quantities(
    api, item, purchase
) -> None:
    r = api.post("/requests", purchase("shapes", items=[item]))
    assert r.status_code == 201, r.text
    assert r.json()["asset"]["items"][0]["quantity"] == "4"


def test_unlimited_quantity_is_minus_one_and_requests_show_it_as_unlimited(api, purchase) -> None:
    # Request items say "unlimited" (cloudblue/adobe_reports tests/requests_asset.json).
    for quantity in (-1, "unlimited"):
        r = api.post(
            "/requests", purchase(f"unlimited-{quantity}", items=[{"id": "STORAGE_GB", "quantity": quantity}])
        )
        assert r.status_code == 201, r.text
        assert r.json()["asset"]["items"][0]["quantity"] == "unlimited"


def test_a_purchase_with_an_existing_external_id_is_accepted(api, sandbox, purchase) -> None:
    no_auto_decision(sandbox)
    r = api.post("/requests", purchase("sub-1001"))
    assert r.status_code == 201
    found = api.get("/assets", "external_id=sub-1001").json()
    assert sorted(a["id"] for a in found) == ["AS-0000-0000-0001", "AS-0000-0000-0007"]


def test_a_new_tier_account_is_created_and_found_again_by_external_id(api, sandbox, purchase, tier) -> None:
    no_auto_decision(sandbox)
    assert api.post("/requests", purchase("tiers-1")).status_code == 201
    assert api.post("/requests", purchase("tiers-2")).status_code == 201
    accounts = api.get("/tier/accounts", f"external_id={tier['external_id']}").json()
    assert [a["id"] for a in accounts] == ["TA-0000-0000-0003"]


# ------------------------------------------------------------------------- vendor decisions
def test_approve_moves_a_purchase_to_approved_and_its_asset_to_active(api) -> None:
    r = api.post("/requests/PR-0000-0000-0004-001/approve", {"template_id": "TL-276-377-545-0001"})
    assert r.status_code == 200
    assert r.json()["status"] == "approved"
    assert r.json()["template"]["id"] == "TL-276-377-545-0001"
    assert r.json()["activation_key"]
    assert asset_status(api, "AS-0000-0000-0004") == "active"


def test_approve_needs_a_template_of_the_product(api) -> None:
    for body in ({}, {"template_id": "TL-684-920-001-0001"}):
        r = api.post("/requests/PR-0000-0000-0004-001/approve", body)
        assert r.status_code == 400
        assert "template_id" in r.json()["errors"][0]
    assert api.get("/requests/PR-0000-0000-0004-001").json()["status"] == "pending"


def test_fail_moves_a_purchase_to_failed_and_terminates_its_asset(api) -> None:
    r = api.post("/requests/PR-0000-0000-0004-001/fail", {"reason": "Out of stock"})
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["reason"]) == ("failed", "Out of stock")
    assert asset_status(api, "AS-0000-0000-0004") == "terminated"


def test_fail_needs_a_reason(api) -> None:
    r = api.post("/requests/PR-0000-0000-0004-001/fail", {})
    assert r.status_code == 400 and "reason" in r.json()["errors"][0]


def test_inquire_then_pend_returns_a_request_to_pending(api) -> None:
    r = api.post("/requests/PR-0000-0000-0004-001/inquire", {"template_id": "TL-276-377-545-0002"})
    assert r.json()["status"] == "inquiring"
    assert asset_status(api, "AS-0000-0000-0004") == "processing"
    r = api.post("/requests/PR-0000-0000-0004-001/pend")
    assert r.json()["status"] == "pending"


def test_an_inquiring_request_can_be_failed_but_not_approved(api) -> None:
    api.post("/requests/PR-0000-0000-0004-001/inquire", {})
    assert (
        api.post(
            "/requests/PR-0000-0000-0004-001/approve", {"template_id": "TL-276-377-545-0001"}
        ).status_code
        == 400
    )
    assert (
        api.post("/requests/PR-0000-0000-0004-001/fail", {"reason": "no answer"}).json()["status"] == "failed"
    )


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("approve", {"template_id": "TL-276-377-545-0001"}),
        ("fail", {"reason": "late"}),
        ("inquire", {}),
        ("pend", None),
    ],
)
def test_decided_requests_cannot_be_decided_again(api, action, body) -> None:
    r = api.post(f"/requests/PR-0000-0000-0001-001/{action}", body)
    assert r.status_code == 400
    assert r.json()["error_code"] == "REQ_001"
    assert api.get("/requests/PR-0000-0000-0001-001").json()["status"] == "approved"


def test_actions_on_an_unknown_request_are_404(api) -> None:
    assert api.post("/requests/PR-0000-0000-0099-001/approve", {"template_id": "x"}).status_code == 404


# ----------------------------------------------------------------------- existing assets
@pytest.mark.parametrize(
    ("rtype", "asset_id", "pending_status", "approved_status"),
    [
        ("suspend", "AS-0000-0000-0001", "active", "suspended"),
        ("resume", "AS-0000-0000-0002", "suspended", "active"),
        ("cancel", "AS-0000-0000-0001", "terminating", "terminated"),
        ("cancel", "AS-0000-0000-0002", "terminating", "terminated"),
    ],
)
def test_suspend_resume_and_cancel_move_the_asset_when_approved(
    api, sandbox, rtype, asset_id, pending_status, approved_status
) -> None:
    no_auto_decision(sandbox)
    r = api.post("/requests", {"type": rtype, "asset": {"id": asset_id}})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"
    assert asset_status(api, asset_id) == pending_status
    approved = api.post(f"/requests/{r.json()['id']}/approve", {"template_id": "TL-276-377-545-0001"})
    assert approved.json()["status"] == "approved"
    assert asset_status(api, asset_id) == approved_status


def test_a_failed_cancel_gives_the_asset_its_status_back(api, sandbox) -> None:
    no_auto_decision(sandbox)
    rid = api.post("/requests", {"type": "cancel", "asset": {"id": "AS-0000-0000-0002"}}).json()["id"]
    api.post(f"/requests/{rid}/fail", {"reason": "contract term"})
    assert asset_status(api, "AS-0000-0000-0002") == "suspended"


@pytest.mark.parametrize(
    ("rtype", "asset_id", "request_id"),
    [
        ("suspend", "AS-0000-0000-0002", "PR-0000-0000-0002-001"),  # already suspended
        ("resume", "AS-0000-0000-0001", "PR-0000-0000-0001-001"),  # active
        ("change", "AS-0000-0000-0002", "PR-0000-0000-0002-001"),  # suspended: no change allowed
        ("suspend", "AS-0000-0000-0003", "PR-0000-0000-0003-001"),  # terminated
        ("cancel", "AS-0000-0000-0003", "PR-0000-0000-0003-001"),
    ],
    ids=["suspend-suspended", "resume-active", "change-suspended", "suspend-terminated", "cancel-terminated"],
)
def test_requests_for_a_state_the_asset_is_already_in_are_a_conflict_naming_its_request(
    api, rtype, asset_id, request_id
) -> None:
    body = {"type": rtype, "asset": {"id": asset_id, "items": [{"id": "SEATS", "quantity": 1}]}}
    r = api.post("/requests", body)
    assert r.status_code == 409
    assert r.json()["error_code"] == "REQ_003"
    assert r.json()["params"]["request_id"] == request_id
    assert r.json()["params"]["asset_id"] == asset_id
    assert sandbox_created(api) == 0


@pytest.mark.parametrize(
    ("rtype", "asset_id"),
    [
        ("resume", "AS-0000-0000-0003"),  # terminated: nothing is allowed
        ("change", "AS-0000-0000-0003"),
        ("cancel", "AS-0000-0000-0004"),  # still processing
    ],
    ids=["resume-terminated", "change-terminated", "cancel-processing"],
)
def test_requests_on_an_asset_in_the_wrong_state_are_refused(api, rtype, asset_id) -> None:
    body = {"type": rtype, "asset": {"id": asset_id, "items": [{"id": "SEATS", "quantity": 1}]}}
    r = api.post("/requests", body)
    assert r.status_code == 400
    assert r.json()["error_code"] == "REQ_003"
    assert asset_id in r.json()["errors"][0]
    assert sandbox_created(api) == 0


def sandbox_created(api) -> int:
    return int(api.get("/requests", "limit=0").headers["Content-Range"].rsplit("/", 1)[1]) - 6


def test_a_second_request_while_one_is_open_is_refused(api, sandbox) -> None:
    no_auto_decision(sandbox)
    assert api.post("/requests", {"type": "suspend", "asset": {"id": "AS-0000-0000-0001"}}).status_code == 201
    r = api.post("/requests", {"type": "cancel", "asset": {"id": "AS-0000-0000-0001"}})
    assert r.status_code == 409
    assert r.json()["error_code"] == "REQ_004"
    assert "PR-0000-0000-0001-002" in r.json()["errors"][0]
    assert r.json()["params"] == {
        "request_id": "PR-0000-0000-0001-002",
        "asset_id": "AS-0000-0000-0001",
        "request_status": "pending",
        "asset_status": "active",
    }


def test_a_change_is_applied_on_approval_with_old_and_new_quantities(api, sandbox) -> None:
    no_auto_decision(sandbox)
    r = api.post(
        "/requests",
        {
            "type": "change",
            "asset": {
                "id": "AS-0000-0000-0001",
                "items": [{"global_id": "PRD-276-377-545-0001", "quantity": "12"}],
            },
        },
    )
    assert r.status_code == 201
    item = r.json()["asset"]["items"][0]
    assert (item["old_quantity"], item["quantity"]) == ("10", "12")
    assert api.get("/assets/AS-0000-0000-0001").json()["items"][0]["quantity"] == 10
    api.post(f"/requests/{r.json()['id']}/approve", {"template_id": "TL-276-377-545-0001"})
    assert api.get("/assets/AS-0000-0000-0001").json()["items"][0]["quantity"] == 12


@pytest.mark.parametrize(
    "asset",
    [
        {"external_id": "sub-1001"},
        {"external_uid": None},  # filled in below with the seeded uid
        {"external_id": "sub-1001", "external_uid": None},
        {"id": "AS-0000-0000-0001", "external_id": "sub-1001"},
    ],
)
def test_an_asset_is_found_by_id_or_external_ids(api, sandbox, asset) -> None:
    no_auto_decision(sandbox)
    uid = api.get("/assets/AS-0000-0000-0001").json()["external_uid"]
    asset = {k: (uid if v is None else v) for k, v in asset.items()}
    r = api.post("/requests", {"type": "suspend", "asset": asset})
    assert r.status_code == 201, r.text
    assert r.json()["asset"]["id"] == "AS-0000-0000-0001"


def test_an_ambiguous_external_id_is_refused_and_the_external_uid_settles_it(api, sandbox) -> None:
    no_auto_decision(sandbox)
    r = api.post("/requests", {"type": "suspend", "asset": {"external_id": "sub-dup"}})
    assert r.status_code == 400
    assert "AS-0000-0000-0005" in r.json()["errors"][0] and "AS-0000-0000-0006" in r.json()["errors"][0]
    uid = api.get("/assets/AS-0000-0000-0006").json()["external_uid"]
    r = api.post("/requests", {"type": "suspend", "asset": {"external_id": "sub-dup", "external_uid": uid}})
    assert r.json()["asset"]["id"] == "AS-0000-0000-0006"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "upgrade", "asset": {"id": "AS-0000-0000-0001"}},
        {"type": "suspend"},
        {"type": "suspend", "asset": {}},
        {"type": "suspend", "asset": {"id": "AS-0000-0000-0099"}},
        {"type": "suspend", "asset": {"id": "AS-0000-0000-0001", "external_id": "sub-1002"}},
        [1, 2],
    ],
)
def test_malformed_requests_are_refused_with_connects_error_shape(api, body) -> None:
    r = api.post("/requests", body)
    assert r.status_code == 400
    assert set(r.json()) == {"error_code", "errors"}


def test_a_body_that_is_not_json_is_refused(api) -> None:
    r = requests.post(
        f"{api.base}/requests",
        data=b"{not json",
        timeout=30,
        headers={**api.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error_code"] == "VAL_001"


# -------------------------------------------------------------------- automatic decisions
def wait_for_status(api, rid: str, status: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        req = api.get(f"/requests/{rid}").json()
        if req["status"] == status or time.monotonic() > deadline:
            return req
        time.sleep(0.1)


def test_the_vendor_approves_api_created_requests_after_the_delay(api, purchase) -> None:
    created = api.post("/requests", purchase("auto-1")).json()
    rid = created["id"]
    # The create's own answer: a read after it may already come after the delay on a busy machine.
    assert created["status"] == "pending"
    req = wait_for_status(api, rid, "approved")
    assert req["status"] == "approved"
    assert req["asset"]["status"] == "active"


def test_the_vendor_fails_assets_marked_fail(api, purchase) -> None:
    rid = api.post("/requests", purchase("fail-42")).json()["id"]
    req = wait_for_status(api, rid, "failed")
    assert req["reason"] == "Vendor refused: the demo marks fail-* assets"
    assert req["asset"]["status"] == "terminated"


def test_the_vendor_inquires_assets_marked_inquire(api, purchase) -> None:
    rid = api.post("/requests", purchase("inquire-7")).json()["id"]
    assert wait_for_status(api, rid, "inquiring")["status"] == "inquiring"


def test_seeded_pending_requests_are_never_decided_automatically(api) -> None:
    time.sleep(0.7)  # longer than the session sandbox's 0.5 s delay
    assert api.get("/requests/PR-0000-0000-0004-001").json()["status"] == "pending"


def test_a_negative_delay_disables_automatic_decisions(api, sandbox, purchase) -> None:
    sandbox.admin("POST", "reset", {"auto_approve_delay": -1})
    rid = api.post("/requests", purchase("manual")).json()["id"]
    time.sleep(0.7)
    assert api.get(f"/requests/{rid}").json()["status"] == "pending"


def test_reset_restores_the_seed_and_the_start_up_delay(api, sandbox, purchase) -> None:
    sandbox.admin("POST", "reset", {"auto_approve_delay": -1})
    api.post("/requests", purchase("gone-after-reset"))
    reply = sandbox.admin("POST", "reset")
    assert reply["auto_approve_delay"] == 0.5
    assert api.get("/assets", "external_id=gone-after-reset").json() == []
    assert sandbox.admin("GET", "stats")["requests_created"] == 0


def test_the_empty_seed_keeps_the_catalogue_but_no_subscriptions(api, sandbox, purchase, tier) -> None:
    sandbox.admin("POST", "reset", {"seed": "empty"})
    assert api.get("/assets").json() == []
    assert api.get("/usage/files").json() == []
    assert len(api.get("/marketplaces").json()) == 2
    body = purchase("first", tiers={"customer": dict(tier), "tier1": dict(tier, external_id="t1")})
    assert api.post("/requests", body).json()["asset"]["id"] == "AS-0000-0000-0001"


def test_concurrent_creates_get_distinct_ids_and_are_all_counted(api, sandbox, purchase) -> None:
    sandbox.admin("POST", "reset", {"auto_approve_delay": -1})
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda n: api.post("/requests", purchase(f"parallel-{n}")), range(24)))
    assert all(r.status_code == 201 for r in replies)
    assert len({r.json()["id"] for r in replies}) == 24
    assert len({r.json()["asset"]["id"] for r in replies}) == 24
    assert sandbox.admin("GET", "stats")["requests_created"] == 24
