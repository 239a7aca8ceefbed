"""A one-off request from a flat trigger form: the form's fields to an action's arguments.

A trigger form is flat (one box per field: ``tier1_email``, ``quantity``...) where an action wants
Connect's nested shapes (``tier1.contact_info.contact.email``, ``items``). :func:`form_arguments`
maps one to the other; :func:`run_form_action` checks the result before any call to Connect, names
the *form* field in every error (``tier1_email: ... (argument tier1.contact_info.contact.email)``),
then creates (or reuses) the one request the form asks for. This project's DAG
``connect_request_action`` is one task over :func:`run_form_action`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connect_provider import actions
from connect_provider.config import DEFAULT_CONN_ID
from connect_provider.exceptions import ConnectValidationError
from connect_provider.outbox.table import CHANGE_TYPES

log = logging.getLogger(__name__)

FORM_TIER_FIELDS = (
    "name",
    "external_id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "address_line1",
    "city",
    "postal_code",
    "country",
)


def _tier_from_form(form: Mapping[str, Any], prefix: str) -> dict[str, Any] | None:
    """A tier account in Connect's shape from flat form fields ``<prefix>_name``...; None if all blank."""
    values = {key: form.get(f"{prefix}_{key}") for key in FORM_TIER_FIELDS}
    if all(value in (None, "") for value in values.values()):
        return None
    return {
        "name": values["name"],
        "external_id": values["external_id"],
        "contact_info": {
            "address_line1": values["address_line1"],
            "city": values["city"],
            "postal_code": values["postal_code"],
            "country": values["country"],
            "contact": {
                "first_name": values["first_name"],
                "last_name": values["last_name"],
                "email": values["email"],
                "phone_number": values["phone"],
            },
        },
    }


def form_arguments(form: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The (action, arguments) a trigger form asks for; only the fields that action takes.

    The form is flat (one field per box in the UI); the action wants Connect's nested shapes.
    Blank fields are left out, so the action's own checks name what is missing.
    """
    action = form.get("action")
    if action not in CHANGE_TYPES:
        raise ConnectValidationError(
            "action", f"must be one of purchase, change, suspend, resume, cancel; got {action!r}"
        )

    def given(key: str) -> bool:
        return form.get(key) not in (None, "")

    arguments: dict[str, Any] = {}
    if action == "purchase":
        for key in ("asset_external_id", "asset_external_uid", "hub_id", "marketplace", "product_id"):
            if given(key):
                arguments[key] = form[key]
        if given("item_id") or given("quantity"):
            arguments["item_id"] = form.get("item_id")
            arguments["quantity"] = form.get("quantity")
        for level in ("tier1", "tier2", "customer"):
            account = _tier_from_form(form, level)
            if account is not None:
                arguments[level] = account
        return action, arguments
    if given("asset_id"):
        arguments["asset_id"] = form["asset_id"]
    else:
        for key in ("asset_external_id", "asset_external_uid"):
            if given(key):
                arguments[key] = form[key]
    if action == "change" and (given("item_id") or given("quantity")):
        arguments["item_id"] = form.get("item_id")
        arguments["quantity"] = form.get("quantity")
    return action, arguments


def form_field(field: str) -> str:
    """The trigger-form field an argument path comes from (``tier1.contact_info.city`` -> ``tier1_city``)."""
    head, _, rest = field.partition(".")
    if head in ("tier1", "tier2", "customer"):
        leaf = rest.split(".")[-1] if rest else "name"
        leaf = "phone" if rest.startswith("contact_info.contact.phone_number") else leaf
        return f"{head}_{leaf}" if leaf in FORM_TIER_FIELDS else head
    if head.startswith("items"):
        return "quantity" if field.endswith("quantity") else "item_id"
    return field


def _as_form_error(exc: ConnectValidationError) -> ConnectValidationError:
    message = str(exc)[len(exc.field) + 2 :] if str(exc).startswith(f"{exc.field}: ") else str(exc)
    name = form_field(exc.field)
    if name != exc.field:
        message = f"{message} (argument {exc.field})"
    return ConnectValidationError(name, message)


def run_form_action(form: Mapping[str, Any], *, connect_conn_id: str | None = None) -> dict[str, Any]:
    """Validate the trigger form, then create (or reuse) the one request it asks for.

    Returns :meth:`ActionResult.to_dict` (request id and status: the task's XCom).
    """
    from connect_provider.hooks.connect import ConnectHook

    action, arguments = form_arguments(form)
    try:
        actions.validate_action(action, arguments)  # names the field before any API call
    except ConnectValidationError as exc:
        raise _as_form_error(exc) from exc
    hook = ConnectHook(connect_conn_id or form.get("connect_conn_id") or DEFAULT_CONN_ID)
    result = actions.run_action(hook, action, arguments)
    log.info(
        "%s request %s is %s (asset %s%s).",
        action.capitalize(),
        result.request_id,
        result.status,
        result.asset_id or result.asset_external_id,
        ", an existing request was reused" if result.reused else "",
    )
    return result.to_dict()
