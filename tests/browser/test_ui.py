"""The Airflow UI path, as a person uses it, in a real browser (Debian's Chromium via Playwright).

Against the stack ``make airflow`` runs (started by the ``stack`` fixture on free ports):

* the connection form for type ``cloudblue_connect`` shows the API key labelled and masked as the
  provider declares it, and "Save" stores what was typed;
* the ``connect_request_action`` trigger form creates a purchase request on the sandbox;
* a bad quantity fails the run, with the field named in the task log and nothing sent to Connect.

Every step leaves a screenshot in test-artifacts/browser/. With ``UPDATE_DOCS_SCREENSHOTS=1`` the
two README screenshots in docs/images/ are refreshed from this run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from connect_provider import get_provider_info

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails under CI) with the reason
    expect = None

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DOCS_IMAGES = ROOT / "docs" / "images"
DAG_ID = "connect_request_action"
TASK_ID = "create_request"
FORM_CONN_ID = "connect_ui_form"

# The purchase the trigger-form test asks for: the demo seed's US marketplace and hub (connection
# CT-0000-0000-0002 of "Cloud Seats"), its SEATS item, and the seeded tier accounts.
PURCHASE = {
    "marketplace": "MP-00002",
    "hub_id": "HB-0000-0002",
    "item_id": "PRD-276-377-545-0001",
    "tier1": {
        "name": "Demo Reseller",
        "external_id": "reseller-1",
        "email": "rita@reseller.example",
        "first_name": "Rita",
        "last_name": "Reseller",
        "phone": "+1 2015550123",
        "address_line1": "1 Demo Street",
        "city": "Madrid",
        "postal_code": "10001",
        "country": "ES",
    },
    "customer": {
        "name": "Demo Customer",
        "external_id": "customer-1",
        "email": "carl@customer.example",
        "first_name": "Carl",
        "last_name": "Customer",
        "phone": "+1 2015550123",
        "address_line1": "1 Demo Street",
        "city": "Berlin",
        "postal_code": "10001",
        "country": "DE",
    },
}


# ------------------------------------------------------------------------------------- helpers
def shot(page: Any, name: str, docs_name: str | None = None, *, height: int | None = None) -> Path:
    """Screenshot the page into the artifacts folder (``docs_name``: also the README's copy).

    ``height`` resizes the viewport for this one picture, so a tall dialog fits whole (the full
    page does not grow with a modal; the viewport does).
    """
    path = ARTIFACTS / f"{name}.png"
    size = page.viewport_size
    if height:
        page.set_viewport_size({"width": size["width"], "height": height})
    try:
        page.screenshot(path=str(path), full_page=not height, animations="disabled")
    finally:
        if height:
            page.set_viewport_size(size)
    if docs_name and os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / docs_name)
    return path


def log_in(page: Any, launcher: ModuleType) -> None:
    page.goto("/")
    expect(page.get_by_text("Sign into Airflow")).to_be_visible()
    page.get_by_label("Username").fill(launcher.ADMIN_USER)
    page.get_by_label("Password").fill(launcher.ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    expect(page.get_by_role("button", name="Admin")).to_be_visible()


def open_trigger_form(page: Any) -> Any:
    """From the DAG list, open connect_request_action and its trigger form; returns the dialog."""
    page.goto("/dags")
    page.get_by_role("link", name=DAG_ID, exact=True).click()
    page.wait_for_url(re.compile(rf".*/dags/{DAG_ID}$"))
    trigger = page.get_by_role("button", name="Trigger Dag")
    expect(trigger).to_have_count(1)  # the list's per-row buttons are gone once the DAG page shows
    trigger.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Trigger Dag - {DAG_ID}")).to_be_visible()
    return dialog


def show_field(dialog: Any, selector: str) -> Any:
    """The form field ``selector``, with the collapsed section that holds it expanded.

    Found by the field, not by the section's title, so the DAG can regroup its form freely.
    """
    field = dialog.locator(selector)
    expect(field).to_have_count(1)
    # ``has`` is matched inside each accordion item, so it takes a page-rooted locator of the field;
    # the innermost item around the field comes last in document order.
    inside = dialog.page.locator(selector)
    sections = dialog.locator("[data-scope=accordion][data-part=item]").filter(has=inside)
    if sections.count():
        trigger = sections.last.locator("[data-part=item-trigger]").first
        if trigger.get_attribute("aria-expanded") != "true":
            trigger.click()
        expect(trigger).to_have_attribute("aria-expanded", "true")
    expect(field).to_be_visible()
    return field


def fill_purchase(
    dialog: Any, page: Any, *, asset_external_id: str, quantity: str, run_id: str, dag_paused: bool
) -> None:
    """Fill the trigger form for a purchase, field by field, as a person would."""
    dialog.get_by_role("combobox").click()
    page.get_by_role("option", name="Purchase a new subscription").click()
    show_field(dialog, "#element_asset_external_id").fill(asset_external_id)
    show_field(dialog, "#element_marketplace").fill(PURCHASE["marketplace"])
    show_field(dialog, "#element_hub_id").fill(PURCHASE["hub_id"])
    show_field(dialog, "#element_item_id").fill(PURCHASE["item_id"])
    show_field(dialog, "[name=element_quantity]").fill(quantity)
    for tier in ("tier1", "customer"):
        for key, value in PURCHASE[tier].items():
            show_field(dialog, f"#element_{tier}_{key}").fill(value)
    if dag_paused:
        # Paused at creation: the form's own checkbox (ticked by default) unpauses it with this run.
        expect(dialog.get_by_role("checkbox", name=f"Unpause {DAG_ID} on trigger")).to_be_checked()
    show_field(dialog, "[name=dagRunId]").fill(run_id)
    # The sections open one at a time: back to the order fields, for the screenshot.
    show_field(dialog, "#element_marketplace")


def submit_trigger(dialog: Any, page: Any, run_id: str) -> None:
    dialog.get_by_test_id("trigger-dag-submit").click()
    page.wait_for_url(re.compile(rf".*/dags/{DAG_ID}/runs/{re.escape(run_id)}$"))


def is_paused(stack: Any) -> bool:
    return bool(stack.api("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"])


def wait_for_run(stack: Any, run_id: str, timeout: float = 150) -> dict:
    """Poll the REST API until the run has finished; returns the run."""
    deadline = time.monotonic() + timeout
    run: dict = {}
    while time.monotonic() < deadline:
        run = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} still {run.get('state')!r} after {timeout:.0f}s")


def task_log(stack: Any, run_id: str) -> str:
    """The task's log as the REST API serves it (structured events, as JSON text)."""
    body = stack.api(
        "GET",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/logs/1?full_content=true",
    )
    return body if isinstance(body, str) else json.dumps(body)


def sandbox_requests(stack: Any, launcher: ModuleType, asset_external_id: str) -> list[dict]:
    """Connect's public API on the sandbox: the requests of one asset external id."""
    query = urllib.parse.urlencode({"asset.external_id": asset_external_id})
    req = urllib.request.Request(
        f"{stack.sandbox_api_url}/requests?{query}",
        headers={"Authorization": launcher.SANDBOX_API_KEY, "Accept": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def sandbox_stats(stack: Any) -> dict:
    with urllib.request.urlopen(f"{stack.sandbox_url}/_sandbox/stats", timeout=30) as r:
        return json.loads(r.read())


def _declared_form() -> dict:
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "cloudblue_connect"
    return conn_type["ui-field-behaviour"]


def _short_id() -> str:
    return uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------------------- tests
def test_the_connection_form_labels_and_masks_the_api_key_and_saves_it(
    page: Any, stack: Any, launcher: ModuleType
) -> None:
    declared = _declared_form()
    assert declared["relabeling"]["password"] == "API key"

    log_in(page, launcher)
    shot(page, "01_logged_in")

    page.get_by_role("button", name="Admin").click()
    page.get_by_role("menuitem", name="Connections").click()
    page.wait_for_url(re.compile(r".*/connections$"))
    # The launcher's connection is in the list, pointing at the sandbox.
    default_row = page.get_by_role("row").filter(has_text=launcher.CONN_ID)
    expect(default_row).to_contain_text(stack.sandbox_api_url)
    shot(page, "02_connections")

    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill(FORM_CONN_ID)
    dialog.get_by_role("combobox").click()
    page.keyboard.type("CloudBlue")
    page.get_by_role("option", name="CloudBlue Connect", exact=True).click()

    api_key = dialog.get_by_label(declared["relabeling"]["password"], exact=True)
    expect(api_key).to_have_attribute("type", "password")
    expect(api_key).to_have_attribute("placeholder", declared["placeholders"]["password"])
    host = dialog.get_by_label(declared["relabeling"]["host"], exact=True)
    expect(host).to_have_attribute("placeholder", declared["placeholders"]["host"])
    for hidden in ("Login", "Port", "Schema"):
        expect(dialog.get_by_label(hidden, exact=True)).to_have_count(0)

    host.fill(stack.sandbox_api_url)
    api_key.fill(launcher.SANDBOX_API_KEY)
    expect(api_key).to_have_attribute("type", "password")  # still masked once typed
    show_field(dialog, "[name=element_page_size]")  # a conn-field of the provider, under "Extra Fields"
    dialog.get_by_label("Page size").fill("250")

    # Back to the standard fields (the sections open one at a time): the key shows masked.
    show_field(dialog, "[name=password]")
    shot(page, "03_connection_form", docs_name="connection-form.png", height=900)

    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("row").filter(has_text=FORM_CONN_ID)).to_contain_text(stack.sandbox_api_url)
    shot(page, "04_connection_saved")

    saved = stack.api("GET", f"/api/v2/connections/{FORM_CONN_ID}")
    assert saved["conn_type"] == "cloudblue_connect"
    assert saved["host"] == stack.sandbox_api_url
    assert json.loads(saved["extra"])["page_size"] == 250
    # The key was stored, and the API shows it masked, never in clear.
    assert saved["password"] and launcher.SANDBOX_API_KEY not in json.dumps(saved)


def test_a_purchase_triggered_from_the_form_creates_the_request_on_connect(
    page: Any, stack: Any, launcher: ModuleType
) -> None:
    asset_external_id = f"ui-purchase-{_short_id()}"
    run_id = f"ui_purchase_{_short_id()}"
    assert sandbox_requests(stack, launcher, asset_external_id) == []

    log_in(page, launcher)
    dialog = open_trigger_form(page)
    shot(page, "05_trigger_form_opened")
    fill_purchase(
        dialog,
        page,
        asset_external_id=asset_external_id,
        quantity="7",
        run_id=run_id,
        dag_paused=is_paused(stack),
    )
    shot(page, "06_trigger_form_purchase", docs_name="trigger-form.png", height=1450)
    submit_trigger(dialog, page, run_id)

    run = wait_for_run(stack, run_id)
    assert run["state"] == "success", (
        f"run {run_id} {run['state']}; task log:\n{task_log(stack, run_id)[-3000:]}"
    )
    assert run["conf"]["asset_external_id"] == asset_external_id
    page.reload()
    expect(page.get_by_text("Success").first).to_be_visible()
    shot(page, "07_purchase_run_succeeded")

    (request,) = sandbox_requests(stack, launcher, asset_external_id)
    assert request["type"] == "purchase"
    assert request["marketplace"]["id"] == PURCHASE["marketplace"]
    asset = request["asset"]
    assert asset["connection"]["hub"]["id"] == PURCHASE["hub_id"]
    # Connect lists items by local id, with the global id beside it, and quantities as strings.
    bought = [(i["global_id"], int(i["quantity"])) for i in asset["items"] if int(i["quantity"])]
    assert bought == [(PURCHASE["item_id"], 7)]
    assert asset["tiers"]["tier1"]["external_id"] == PURCHASE["tier1"]["external_id"]
    assert asset["tiers"]["customer"]["external_id"] == PURCHASE["customer"]["external_id"]
    # The key that reached Connect never reaches the task log.
    assert launcher.SANDBOX_API_KEY.split(":")[-1] not in task_log(stack, run_id)
    # The run's XCom names the same request.
    xcom = stack.api(
        "GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}/xcomEntries/return_value"
    )
    assert request["id"] in json.dumps(xcom["value"])


def test_a_bad_quantity_fails_the_run_naming_the_field_in_the_log(
    page: Any, stack: Any, launcher: ModuleType
) -> None:
    asset_external_id = f"ui-bad-{_short_id()}"
    run_id = f"ui_bad_quantity_{_short_id()}"
    posts_before = sandbox_stats(stack)["calls_by_route"].get("POST /requests", 0)

    log_in(page, launcher)
    dialog = open_trigger_form(page)
    fill_purchase(
        dialog,
        page,
        asset_external_id=asset_external_id,
        quantity="0",
        run_id=run_id,
        dag_paused=is_paused(stack),
    )
    shot(page, "08_trigger_form_bad_quantity", height=1450)
    submit_trigger(dialog, page, run_id)

    run = wait_for_run(stack, run_id)
    assert run["state"] == "failed"
    log = task_log(stack, run_id)
    assert "ConnectValidationError" in log
    assert re.search(r"quantity: must be [^\"]*got 0", log), log[-3000:]

    # The same message, where a person reads it: the task's log in the UI.
    page.goto(f"/dags/{DAG_ID}/runs/{run_id}/tasks/{TASK_ID}")
    expect(page.get_by_text(re.compile(r"ConnectValidationError: quantity: ")).first).to_be_visible()
    shot(page, "09_bad_quantity_log")

    # Refused before any call that could create something.
    assert sandbox_requests(stack, launcher, asset_external_id) == []
    assert sandbox_stats(stack)["calls_by_route"].get("POST /requests", 0) == posts_before
