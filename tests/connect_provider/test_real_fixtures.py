"""The actions read Connect's real documents (tests/fixtures/real/, sources in its README).

Pure parsing runs on the documents themselves; the 409 path runs against a small local HTTP
server that answers with the real documents, so Connect's conflict body goes through the hook and
the actions as it would in production.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from connect_provider import actions
from connect_provider.actions import ActionResult
from connect_provider.exceptions import ConnectConflictError, ConnectValidationError
from connect_provider.hooks.connect import ConnectHook
from local_http import LocalServer, QuietHandler

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


def load(name: str) -> Any:
    return json.loads((REAL / name).read_text())


class TestQuantitiesAsRealAssetsCarryThem:
    def test_a_get_assets_document_gives_whole_numbers_by_every_name_of_the_item(self) -> None:
        quantities = actions._current_quantities(load("asset_microsoft.json"))
        assert quantities["PRD-183-233-565-0171"] == 25  # sent as 25.0
        assert quantities["PRD_183_233_565_0171"] == 25  # the local id in `id`
        assert quantities["CFQ7TTC0LF8R:0008_P1M:None"] == 25  # the MPN

    def test_unlimited_is_minus_one_and_numeric_strings_are_numbers(self) -> None:
        quantities = actions._current_quantities(load("request_asset_unlimited.json"))
        assert quantities["PRD-276-377-546-0001"] == -1  # "unlimited"
        assert quantities["PRD-276-377-545-0005"] == 5  # "5"
        assert quantities["PRD-276-377-545-0002"] == 0  # "0"

    @pytest.mark.parametrize(
        ("wanted", "already"),
        [
            ([{"id": "PRD-183-233-565-0171", "quantity": 25}], True),
            ([{"id": "PRD-183-233-565-0171", "quantity": 26}], False),
            ([{"id": "PRD-183-233-565-0999", "quantity": 0}], True),  # an item the asset lacks is at 0
        ],
        ids=["same", "different", "absent-item-at-zero"],
    )
    def test_a_change_to_what_the_asset_holds_is_already_done(self, wanted, already) -> None:
        assert actions._already_in_state("change", load("asset_microsoft.json"), wanted) is already

    def test_unlimited_to_unlimited_is_no_change(self) -> None:
        asset = load("request_asset_unlimited.json")
        assert actions._already_in_state("change", asset, [{"id": "PRD-276-377-546-0001", "quantity": -1}])


class TestItemsNamedByEitherId:
    @pytest.mark.parametrize(
        "name",
        ["PRD_183_233_565_0171", "PRD-183-233-565-0171"],
        ids=["local-id", "global-id"],
    )
    def test_an_item_of_a_real_asset_is_found_by_its_local_or_global_id(self, name) -> None:
        asset = load("asset_microsoft.json")
        wanted = [{"id": name, "quantity": 30}]
        assert actions._items_for_asset(asset, wanted, "items") == [
            {"id": "PRD-183-233-565-0171", "quantity": 30}
        ]

    def test_an_item_the_asset_does_not_know_lists_the_names_it_does(self) -> None:
        with pytest.raises(ConnectValidationError, match="PRD_183_233_565_0171") as err:
            actions._items_for_asset(load("asset_microsoft.json"), [{"id": "SEATS", "quantity": 1}], "items")
        assert err.value.field == "items[0].item_id"


class TestActionResultOfARealRequest:
    def test_ids_and_status_come_from_the_request(self) -> None:
        result = ActionResult.from_request(load("request_purchase_pending.json"), reused=True)
        assert result.to_dict() == {
            "request_id": "PR-1895-0864-1238-001",
            "type": "purchase",
            "status": "pending",
            "asset_id": "AS-1895-0864-1238",
            "asset_external_id": "1147660",
            "reused": True,
        }


class RealConnect(QuietHandler):
    """Answers with the real documents: a 409 to every create, the request it names, the marketplaces."""

    documents: dict[str, Any] = {}
    creates = 0

    def _send(self, status: int, body: Any, content_range: str | None = None) -> None:
        headers = {"Content-Range": content_range} if content_range else None
        self.reply(status, json.dumps(body).encode(), headers=headers)

    def do_POST(self) -> None:
        self.read_body()
        type(self).creates += 1
        self._send(409, self.documents["conflict"])

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].removeprefix("/public/v1")
        request = self.documents["request"]
        if path == f"/requests/{request['id']}":
            self._send(200, request)
        elif path == "/marketplaces":
            page = self.documents["marketplaces"]
            self._send(200, page, f"items 0-{len(page) - 1}/{len(page)}")
        else:
            self._send(404, {"error_code": "NFND_001", "errors": [f"{path} not found."]})


@pytest.fixture
def real_connect(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[RealConnect]]:
    RealConnect.documents = {
        "conflict": load("error_409_existing_request.json"),
        "request": load("request_purchase_pending.json"),
        "marketplaces": load("marketplace_list.json"),
    }
    RealConnect.creates = 0
    with LocalServer(RealConnect) as server:
        conn = server.connection_json("ApiKey SU-000-000-000:sandbox-demo-key", max_wait=0, max_retries=0)
        monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", conn)
        yield RealConnect


def real_purchase(**overrides: Any) -> dict[str, Any]:
    """A purchase of the real request's product on its hub and marketplace (no look-ups needed)."""
    request = load("request_purchase_pending.json")
    tiers = request["asset"]["tiers"]

    def tier(level: str) -> dict[str, Any]:
        t = tiers[level]
        contact = t["contact_info"]
        return {
            "name": t["name"],
            "external_id": t["external_id"],
            "external_uid": t["external_uid"],
            "contact_info": {k: v for k, v in contact.items() if v is not None},
        }

    args = {
        "asset_external_id": request["asset"]["external_id"],
        "asset_external_uid": request["asset"]["external_uid"],
        "hub_id": "HB-0309-9389",
        "marketplace": "MP-91673",
        "connection_id": request["asset"]["connection"]["id"],
        "tier1": tier("tier1"),
        "customer": tier("customer"),
        "items": [{"item_id": "PRD-276-377-545-0001", "quantity": 1}],
        "reuse_existing_request": False,
    }
    args.update(overrides)
    return args


class TestARealConflictBody:
    def test_the_purchase_it_names_is_the_result(self, real_connect) -> None:
        result = actions.purchase(ConnectHook(), **real_purchase())
        assert (result.request_id, result.status, result.reused) == ("PR-1895-0864-1238-001", "pending", True)
        assert result.asset_id == "AS-1895-0864-1238"
        assert real_connect.creates == 1

    def test_a_purchase_of_another_product_named_by_it_is_an_error_not_a_result(self, real_connect) -> None:
        other = real_purchase(items=[{"item_id": "PRD-684-920-001-0001", "quantity": 1}])
        with pytest.raises(ConnectConflictError, match="another asset_external_uid") as err:
            actions.purchase(ConnectHook(), **other)
        assert err.value.params["request_id"] == "PR-1895-0864-1238-001"
