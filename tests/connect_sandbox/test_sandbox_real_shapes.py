"""The sandbox's answers have the shapes of Connect's real documents (tests/fixtures/real/).

The fixtures are documents CloudBlue's own repositories hold (sources in
tests/fixtures/real/README.md, "Requests and assets"). Each sandbox answer is compared with them
recursively: the same keys (every key all real samples carry is there; no key none of them
carries appears) and the same JSON types (a real ``null`` accepts any type; int and float are
both numbers). Several real samples of one kind are merged, so a key some documents carry and
others do not is optional. What the sandbox knowingly does differently is listed in
``ALLOWED``, each with its reason; anything else fails, so the sandbox cannot drift from Connect's
shapes unnoticed.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"

#: (document kind, path pattern, "extra" | "missing" | "type" | "empty") -> why it is allowed.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("request", "assignee", "type"): (
        "the spec declares a string and the spec-conformance test holds the sandbox to it; real "
        "requests show the assigned user as an object. No client of ours reads it."
    ),
    ("request", "template", "missing"): (
        "the real sample is a purchase that came with an activation-form template; the sandbox "
        "attaches a template only when one is used (approve, inquire)"
    ),
    ("request", "effective_date", "extra"): "declared by the spec; in the adobe_reports copy of the sample",
    ("request", "planned_date", "extra"): "in the adobe_reports copy of the sample (null until scheduled)",
    ("request", "previous_approved_request", "extra"): "declared by the spec and in adobe_reports' copy",
    ("*", "*items[].params", "missing"): "item parameters: the sandbox's products have none",
    ("*", "*tiers.tier2", "empty"): "no tier 2: Connect sends an empty object (the request sample's tier2)",
    ("*", "*tiers.*.contact_info.contact.phone_number.extension", "extra"): (
        "the seed's and the provider's phones always carry an extension; the request sample shows "
        "it, the asset samples leave it out when empty, and the sandbox leaves it out then too"
    ),
    ("asset", "tiers.*.tax_id", "type"): "real assets have null or a string; the seed gives a string",
    ("asset", "params[].constraints.hint", "missing"): (
        "a help text only some parameters have (the one asset sample with constraints has one)"
    ),
    ("*", "*params[].constraints.*", "extra"): (
        "which constraints a parameter shows depends on the parameter; the sandbox's come from the "
        "union of the samples' (hidden, readonly, reconciliation, required, meta)"
    ),
    ("*", "*params[].structured_value.*", "extra"): "a structured value's keys are the parameter's own",
    ("*", "*params[].structured_value.*", "missing"): "a structured value's keys are the parameter's own",
    ("tier_account", "type", "extra"): "declared by the spec (customer|reseller); ta_list.json has it",
    ("tier_account", "db", "extra"): "declared by the spec (dp.TierAccountDetail.db)",
    ("tier_account", "parent", "extra"): "declared by the spec (dp.TierAccountDetail.parent)",
    ("tier_account", "marketplace", "missing"): (
        "ta_account.json names a marketplace; the spec does not declare one and ta_list.json has none"
    ),
    ("tier_account", "owner.icon", "extra"): "declared by the spec (the owner's icon)",
    ("marketplace", "*", "extra"): (
        "the marketplace sample is a short list entry; the sandbox serves the spec's dp.Marketplace "
        "(active_contracts, capabilities, stats, events, locales, ...)"
    ),
    ("marketplace", "sourcing", "missing"): "not declared by the spec",
    ("marketplace", "attributes", "type"): "the spec declares an object; the sample has an empty list",
    ("marketplace", "owner.icon", "extra"): "declared by the spec (the owner's icon)",
    ("*", "*.provider.icon", "extra"): "the seed's provider and vendor references carry their icon",
    ("*", "*.vendor.icon", "extra"): "the seed's provider and vendor references carry their icon",
}


def load(name: str) -> Any:
    return json.loads((REAL / name).read_text())


def jtype(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def allowed(kind: str, path: str, what: str) -> bool:
    return any(
        fnmatch.fnmatchcase(kind, k) and fnmatch.fnmatchcase(path, p) and w == what for (k, p, w) in ALLOWED
    )


def differences(kind: str, actual: Any, samples: list[Any], path: str = "") -> list[str]:
    """Where ``actual`` leaves the shape the real ``samples`` (values at the same path) share."""
    here = path or "(document)"
    real = [s for s in samples if s is not None]
    if not real:
        return []  # Connect sent null (or nothing) here: any value is allowed
    types = {jtype(s) for s in real}
    if actual is None:
        return [] if len(real) < len(samples) else [f"{here}: null where Connect sends {sorted(types)}"]
    if jtype(actual) not in types:
        if allowed(kind, path, "type"):
            return []
        return [f"{here}: {jtype(actual)} where Connect sends {sorted(types)}"]
    out: list[str] = []
    if isinstance(actual, dict):
        dicts = [s for s in real if isinstance(s, dict)]
        union = set().union(*dicts)
        common = set.intersection(*(set(d) for d in dicts))
        if not actual and common and allowed(kind, path, "empty"):
            return []
        for key in sorted(set(actual) - union):
            sub = f"{path}.{key}" if path else key
            if not allowed(kind, sub, "extra"):
                out.append(f"{sub}: the sandbox sends it, Connect's documents do not")
        for key in sorted(common - set(actual)):
            sub = f"{path}.{key}" if path else key
            if not allowed(kind, sub, "missing"):
                out.append(f"{sub}: Connect's documents always carry it, the sandbox does not")
        for key in sorted(set(actual) & union):
            sub = f"{path}.{key}" if path else key
            out.extend(differences(kind, actual[key], [d[key] for d in dicts if key in d], sub))
    elif isinstance(actual, list):
        elements = [e for s in real if isinstance(s, list) for e in s]
        if elements:
            for element in actual:
                out.extend(differences(kind, element, elements, f"{path}[]"))
    return sorted(set(out))


@pytest.fixture
def answers(api, sandbox, purchase) -> dict[str, Any]:
    """Sandbox answers of every kind: seeded objects and ones made through the API."""
    sandbox.admin("POST", "reset", {"auto_approve_delay": -1})
    body = purchase(
        "shape-1",
        external_uid="uid-shape-1",
        items=[{"id": "SEATS", "quantity": 3}, {"id": "STORAGE_GB", "quantity": -1}],
    )
    body["asset"]["params"] = [
        {"id": "seats_note", "value": "shapes"},
        {
            "id": "billing_address",
            "structured_value": {
                "address_line1": "1 Main",
                "city": "Austin",
                "state": "TX",
                "postal_code": "73301",
                "country": "US",
            },
        },
    ]
    made = api.post("/requests", body).json()
    approved = api.post(f"/requests/{made['id']}/approve", {"template_id": "TL-276-377-545-0001"}).json()
    return {
        "assets": [api.get(f"/assets/{aid}").json() for aid in ("AS-0000-0000-0001", made["asset"]["id"])],
        "requests": [api.get("/requests/PR-0000-0000-0004-001").json(), made, approved],
        "tier_accounts": api.get("/tier/accounts").json(),
        "marketplaces": api.get("/marketplaces").json(),
        "conflict": api.post("/requests", body),
        "unchanged": api.post(
            "/requests",
            {
                "type": "change",
                "asset": {"id": "AS-0000-0000-0001", "items": [{"id": "SEATS", "quantity": 10}]},
            },
        ),
    }


class TestTheSandboxAnswersInConnectsShapes:
    def test_assets_as_get_assets_returns_them(self, answers) -> None:
        samples = [load("asset_microsoft.json"), load("asset_adobe.json")]
        for asset in answers["assets"]:
            assert differences("asset", asset, samples) == [], asset["id"]

    def test_requests_and_the_asset_they_embed(self, answers) -> None:
        request = load("request_purchase_pending.json")
        embedded = [request.pop("asset"), load("request_asset_unlimited.json")]
        for r in answers["requests"]:
            top = {k: v for k, v in r.items() if k != "asset"}
            assert differences("request", top, [request]) == [], r["id"]
            assert differences("request_asset", r["asset"], embedded) == [], r["id"]

    def test_tier_accounts(self, answers) -> None:
        samples = [load("tier_account.json"), *load("tier_account_list.json")]
        for account in answers["tier_accounts"]:
            assert differences("tier_account", account, samples) == [], account["id"]

    def test_marketplaces(self, answers) -> None:
        for marketplace in answers["marketplaces"]:
            assert differences("marketplace", marketplace, load("marketplace_list.json")) == []

    def test_a_conflict_and_an_unchanged_change(self, answers) -> None:
        assert answers["conflict"].status_code == 409
        assert (
            differences("error", answers["conflict"].json(), [load("error_409_existing_request.json")]) == []
        )
        assert answers["unchanged"].status_code == 400
        assert answers["unchanged"].json() == load("error_400_items_unchanged.json")

    def test_a_usage_file_added_and_moved_to_closed_while_the_sandbox_runs(self, sandbox) -> None:
        added = sandbox.add_usage_file(3, status="ready")
        for status in ("accepted", "closed"):  # ready -> pending -> accepted -> closed
            moved = sandbox.admin("POST", f"usage-files/{added['id']}/status", {"status": status})
        assert list(moved["events"]) == ["created", "uploaded", "submitted", "accepted", "closed"]
        assert differences("usage_file", moved, [load("usage_file.json")]) == []


class TestTheComparisonItself:
    """The comparison must see what matters, or the tests above prove nothing."""

    @pytest.mark.parametrize(
        ("actual", "problem"),
        [
            ({"id": "X", "quantity": "25", "extra": 1}, "quantity: string where Connect sends ['number']"),
            ({"id": "X", "quantity": 25.0, "extra": 1}, "extra: the sandbox sends it"),
            ({"quantity": 25.0}, "id: Connect's documents always carry it"),
        ],
        ids=["type", "extra-key", "missing-key"],
    )
    def test_it_reports_types_extra_and_missing_keys(self, actual, problem) -> None:
        found = differences("x", actual, [{"id": "A", "quantity": 1.0}, {"id": "B", "quantity": 2, "opt": 1}])
        assert any(problem in p for p in found), found

    def test_a_key_only_some_documents_carry_is_optional_and_null_accepts_anything(self) -> None:
        samples = [{"id": "A", "opt": None}, {"id": "B"}]
        assert differences("x", {"id": "C", "opt": "text"}, samples) == []
        assert differences("x", {"id": "C"}, samples) == []
