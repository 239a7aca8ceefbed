"""A one-off request from a flat trigger form: the form's fields to an action's arguments.

A trigger form is flat (one box per field: ``tier1_email``, ``quantity``...) where an action wants
Connect's nested shapes (``tier1.contact_info.contact.email``, ``items``). Which argument each box
fills is declared with the argument itself (the ``form`` metadata of
:mod:`connect_provider.arguments`), so this module holds no list of its own:

* :func:`form_params` builds the DAG's ``params`` (the form) from the declarations;
* :func:`form_arguments` maps a submitted form to the action and its arguments;
* :func:`run_form_action` checks them before any call to Connect, names the *form* field in every
  error (``tier1_email: ... (argument tier1.contact_info.contact.email)``), then creates (or
  reuses) the one request the form asks for.

This project's DAG ``connect_request_action`` is :func:`form_params` and one task over
:func:`run_form_action`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from connect_provider import actions
from connect_provider.arguments import (
    ASSET,
    CUSTOMER,
    ORDER,
    REQUEST_ARGUMENTS,
    TIER1,
    TIER2,
    TIER_FORM_LEAVES,
    FormField,
    TierForm,
)
from connect_provider.config import DEFAULT_CONN_ID
from connect_provider.exceptions import ConnectValidationError

log = logging.getLogger(__name__)

ACTION_FIELD = "action"
CONN_ID_FIELD = "connect_conn_id"
#: The form's sections, in the order the form shows them.
SECTIONS = (ASSET, ORDER, TIER1, TIER2, CUSTOMER)
ACTION_TITLES = {
    "purchase": "Purchase a new subscription",
    "change": "Change item quantities",
    "suspend": "Suspend",
    "resume": "Resume",
    "cancel": "Cancel (terminate)",
}


def _form_of(f: dataclasses.Field) -> FormField | TierForm | None:
    return f.metadata.get("form")


def _tier_forms() -> dict[str, TierForm]:
    found: dict[str, TierForm] = {}
    for declaration in REQUEST_ARGUMENTS.values():
        for f in declaration.declared():
            form = _form_of(f)
            if isinstance(form, TierForm):
                found[form.prefix] = form
    return found


def form_fields() -> list[FormField]:
    """Every box of the form, once each, section by section, from the declarations."""
    seen: dict[str, FormField] = {}
    for declaration in REQUEST_ARGUMENTS.values():
        for f in declaration.declared():
            form = _form_of(f)
            for box in form.fields() if isinstance(form, TierForm) else [form] if form else []:
                seen.setdefault(box.name, box)
    return sorted(seen.values(), key=lambda box: SECTIONS.index(box.section))


def form_params(defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The trigger form as DAG ``params``: the action, every declared box, the Connect connection.

    ``defaults`` pre-fills boxes by name (a project's demo data, say); the others start empty.
    """
    from airflow.sdk import Param

    values = dict(defaults or {})
    params: dict[str, Any] = {
        ACTION_FIELD: Param(
            values.get(ACTION_FIELD, "purchase"),
            type="string",
            enum=list(REQUEST_ARGUMENTS),
            values_display=ACTION_TITLES,
            title="Action",
            description="The request to create. Each action uses only the fields it needs (see below).",
        )
    }
    for box in form_fields():
        schema: dict[str, Any] = {"maxLength": box.max_length} if box.max_length else {}
        params[box.name] = Param(
            values.get(box.name),
            type=["null", box.type],
            title=box.title,
            description=box.description,
            section=box.section,
            **schema,
        )
    params[CONN_ID_FIELD] = Param(
        values.get(CONN_ID_FIELD, DEFAULT_CONN_ID),
        type="string",
        title="Connect connection",
        description="The cloudblue_connect connection to use.",
        section="Advanced",
    )
    return params


def _given(value: Any) -> bool:
    return value not in (None, "")


def _tier_from_form(form: Mapping[str, Any], prefix: str) -> dict[str, Any] | None:
    """A tier account in Connect's shape from flat form fields ``<prefix>_name``...; None if all blank."""
    values = {leaf: form.get(f"{prefix}_{leaf}") for leaf in TIER_FORM_LEAVES}
    if not any(_given(value) for value in values.values()):
        return None
    account: dict[str, Any] = {}
    for leaf, path in TIER_FORM_LEAVES.items():
        node = account
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = values[leaf]
    return account


def _filled(declaration_fields: tuple[dataclasses.Field, ...], form: Mapping[str, Any]) -> Iterator[tuple]:
    """(argument, value) for every argument whose form box (or tier boxes) the form filled."""
    for f in declaration_fields:
        box = _form_of(f)
        if isinstance(box, TierForm):
            account = _tier_from_form(form, box.prefix)
            if account is not None:
                yield f.name, account
        elif box is not None and _given(form.get(box.name)):
            yield f.name, form[box.name]


def form_arguments(form: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The (action, arguments) a trigger form asks for; only the fields that action takes.

    Blank fields are left out, so the action's own checks name what is missing. An ``asset_id``
    names the asset alone: the form's external-id boxes may still hold their defaults.
    """
    action = form.get(ACTION_FIELD)
    if action not in REQUEST_ARGUMENTS:
        raise ConnectValidationError(
            ACTION_FIELD, f"must be one of {', '.join(REQUEST_ARGUMENTS)}; got {action!r}"
        )
    arguments = dict(_filled(REQUEST_ARGUMENTS[action].declared(), form))
    if "asset_id" in arguments:
        arguments.pop("asset_external_id", None)
        arguments.pop("asset_external_uid", None)
    return action, arguments


def form_field(field: str) -> str:
    """The trigger-form field an argument path comes from (``tier1.contact_info.city`` -> ``tier1_city``)."""
    head, _, rest = field.partition(".")
    tiers = _tier_forms()
    if head in tiers:
        parts = tuple(rest.split(".")) if rest else ("name",)
        for leaf, path in TIER_FORM_LEAVES.items():
            if parts[: len(path)] == path:
                return f"{tiers[head].prefix}_{leaf}"
        return head
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
    hook = ConnectHook(connect_conn_id or form.get(CONN_ID_FIELD) or DEFAULT_CONN_ID)
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
