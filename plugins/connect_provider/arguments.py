"""One declaration per action's arguments: what it accepts, how it is checked, what Connect receives.

Each action (purchase, change, suspend/resume, cancel; the vendor's approve, fail, inquire) has
one frozen dataclass here. Its fields *are* the action's arguments, and each field's metadata says
the rest of what anything needs to know about it:

* ``doc``: the Sphinx ``:param:`` line of the operator's docstring;
* ``templated``: whether the operator renders it (its ``template_fields``);
* ``keyword``: the operator's keyword when it differs from the argument (``params`` is Airflow's own
  operator argument, so the operator takes ``asset_params``);
* ``required`` (and why): the operator's signature requires it, and the local check names it;
* ``form``: the trigger-form field it comes from (:class:`FormField`, or :class:`TierForm` for a
  tier account spread over ``<prefix>_name``, ``<prefix>_email``...).

The declaration's :meth:`~ActionArgs.checked` validates and normalises, locally and before any
call to Connect (raising :class:`~connect_provider.exceptions.ConnectValidationError` that names
the field), and a ``connect_payload`` method builds the body Connect receives. The operators
(:mod:`connect_provider.operators.requests`: keywords, ``template_fields``, docstrings), the
actions (:mod:`connect_provider.actions`), the outbox's payload parsing (:meth:`ActionArgs.of`)
and the trigger form (:mod:`connect_provider.forms`) all read these declarations, so adding an
argument is one field here (and its use in the payload builder).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from connect_provider import validation as v
from connect_provider.enums import RequestType
from connect_provider.exceptions import ConnectValidationError

_A = TypeVar("_A", bound="ActionArgs")

#: Namespace of the UUID5 that names an asset when no ``asset_external_uid`` is given.
ASSET_UID_NAMESPACE = uuid.UUID("6f1c2a4e-9a51-5d0e-8a77-0c0e5c1b7a11")


def default_asset_external_uid(asset_external_id: str, product_id: str) -> str:
    """The asset external uid used when none is given: stable across retries, one per product.

    A subscription's identity is per product (the Zapier app buys one external id once per product
    of an order: connect-fulfillment-zapier-app : lib/connect/api/assetRequests/create.js), and
    Connect refuses a second asset with an external_uid already taken: deriving the uid from the
    external id alone would make the second product's purchase collide with the first one's.
    """
    return str(uuid.uuid5(ASSET_UID_NAMESPACE, f"{product_id}/{asset_external_id}"))


# --------------------------------------------------------------------------- form metadata

ASSET = "Asset"
ORDER = "Purchase and change"
TIER1 = "Tier 1 (reseller) - purchase"
TIER2 = "Tier 2 (second-level reseller) - purchase, optional"
CUSTOMER = "Customer (end customer) - purchase"


@dataclass(frozen=True)
class FormField:
    """One box of the trigger form: its name, title, help text, section and JSON-schema type."""

    name: str
    title: str
    description: str
    section: str
    type: str = "string"
    max_length: int | None = None


#: The leaves of a tier account in the form: ``<prefix>_<leaf>`` -> its path in the account.
TIER_FORM_LEAVES: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "external_id": ("external_id",),
    "email": ("contact_info", "contact", "email"),
    "first_name": ("contact_info", "contact", "first_name"),
    "last_name": ("contact_info", "contact", "last_name"),
    "phone": ("contact_info", "contact", "phone_number"),
    "address_line1": ("contact_info", "address_line1"),
    "city": ("contact_info", "city"),
    "postal_code": ("contact_info", "postal_code"),
    "country": ("contact_info", "country"),
}
_TIER_LEAF_TEXT = {
    "email": ("E-mail", "Contact e-mail."),
    "first_name": ("First name", "Contact first name."),
    "last_name": ("Last name", "Contact last name."),
    "phone": ("Phone", "Contact phone, e.g. +1 2015550123."),
    "address_line1": ("Address", "Street and number."),
    "city": ("City", "City."),
    "postal_code": ("Postal code", "Postal code."),
    "country": ("Country", "Two-letter ISO country code (US, DE...)."),
}


@dataclass(frozen=True)
class TierForm:
    """A tier account spread over flat form fields ``<prefix>_<leaf>`` (:data:`TIER_FORM_LEAVES`)."""

    prefix: str
    who: str
    section: str
    note: str = ""

    def fields(self) -> list[FormField]:
        """The form fields of this tier account, in the form's order."""
        texts = {
            "name": ("Name", f"{self.who} company name{self.note}."),
            "external_id": ("External id", f"{self.who} id in your system."),
            **_TIER_LEAF_TEXT,
        }
        return [
            FormField(f"{self.prefix}_{leaf}", *texts[leaf], section=self.section)
            for leaf in TIER_FORM_LEAVES
        ]


ASSET_EXTERNAL_ID_FORM = FormField(
    "asset_external_id",
    "Asset external id",
    "Your system's id of the subscription. Required for a purchase; for the other actions it names "
    "the asset unless Asset id is given.",
    ASSET,
    max_length=100,
)
ASSET_EXTERNAL_UID_FORM = FormField(
    "asset_external_uid",
    "Asset external uid",
    "Optional: tells apart assets sharing one external id. Left empty for a purchase, a stable UUID "
    "is derived from the external id.",
    ASSET,
)
ASSET_ID_FORM = FormField(
    "asset_id",
    "Asset id",
    "Connect's asset id (AS-...). Change, suspend, resume, cancel: use it instead of the external id.",
    ASSET,
)
ITEM_ID_FORM = FormField(
    "item_id",
    "Item",
    "Purchase and change: item global id (PRD-XXX-XXX-XXX-XXXX); change also takes the item's local "
    "id (e.g. SEATS).",
    ORDER,
)
QUANTITY_FORM = FormField(
    "quantity",
    "Quantity",
    "Purchase and change: the item's quantity (-1: unlimited; 0 removes it in a change).",
    ORDER,
    type="integer",
)


def arg(
    doc: str,
    *,
    default: Any = None,
    templated: bool = True,
    required: bool | str = False,
    keyword: str | None = None,
    form: FormField | TierForm | None = None,
) -> Any:
    """A declared argument: a dataclass field whose metadata the operators, actions and form read.

    ``required`` is True, or the reason Connect needs the argument (said in the error when missing).
    """
    metadata = {"doc": doc, "templated": templated, "required": required, "keyword": keyword, "form": form}
    return field(default=default, metadata=metadata)


def _internal(default: Any) -> Any:
    """A field the checks fill in (not an argument: no keyword, no form, no docs)."""
    return field(default=default, repr=False, compare=False, metadata={"internal": True})


# --------------------------------------------------------------------------- the base


@dataclass(frozen=True)
class ActionArgs:
    """What every declaration offers; subclasses declare the fields and :meth:`checked`."""

    #: The Connect action (request type or vendor decision) this declaration is the arguments of.
    action: ClassVar[str]

    @classmethod
    def declared(cls) -> tuple[dataclasses.Field, ...]:
        """The declared arguments, in declaration order (internal fields left out)."""
        return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("internal"))

    @classmethod
    def names(cls) -> frozenset[str]:
        """The argument names, as the actions and an outbox payload spell them."""
        return frozenset(f.name for f in cls.declared())

    @staticmethod
    def keyword(f: dataclasses.Field) -> str:
        """The operator's keyword (and attribute) for a declared argument."""
        return f.metadata.get("keyword") or f.name

    @classmethod
    def template_fields(cls) -> tuple[str, ...]:
        """The operator attributes rendered by Airflow: the declared arguments marked templated."""
        return tuple(cls.keyword(f) for f in cls.declared() if f.metadata["templated"])

    @classmethod
    def param_docs(cls) -> str:
        """Sphinx ``:param:`` lines of the operator's docstring, from the fields' docs."""
        lines = []
        for f in cls.declared():
            templated = "(templated) " if f.metadata["templated"] else ""
            lines.append(f":param {cls.keyword(f)}: {templated}{f.metadata['doc']}")
        return "\n".join(lines)

    @classmethod
    def of(cls: type[_A], arguments: Any, *, action: str | None = None) -> _A:
        """The declaration filled from a mapping of arguments (an outbox payload, keyword arguments).

        A key that is not an argument of the action is refused, naming it and the known ones.
        """
        what = action or cls.action
        if not isinstance(arguments, Mapping):
            raise ConnectValidationError(
                "arguments", f"must be a dict of the action's arguments, got {arguments!r}"
            )
        unknown = set(arguments) - cls.names()
        if unknown:
            raise ConnectValidationError(
                sorted(unknown)[0], f"is not an argument of a {what} request; known: {sorted(cls.names())}"
            )
        return cls(**dict(arguments))

    def given(self) -> dict[str, Any]:
        """The arguments that are set (not None), by name."""
        return {f.name: getattr(self, f.name) for f in self.declared() if getattr(self, f.name) is not None}

    @classmethod
    def require(cls, given: set[str] | frozenset[str]) -> None:
        """Refuse a required argument missing from ``given`` (the keys of a payload), naming it.

        Only missing keys: an argument given as None is the field check's to refuse, with its own
        message (a template that rendered nothing, say).
        """
        for f in cls.declared():
            required = f.metadata["required"]
            if required and f.name not in given:
                why = f": {required}" if isinstance(required, str) else ""
                raise ConnectValidationError(f.name, f"is required for a {cls.action}{why}")

    def checked(self: _A) -> _A:  # pragma: no cover - every declaration defines it
        """A copy with every argument validated and normalised, or ConnectValidationError."""
        raise NotImplementedError


# --------------------------------------------------------------------------- requests


def _given(value: Any) -> bool:
    return value not in (None, "", {})


@dataclass(frozen=True)
class PurchaseArgs(ActionArgs):
    """The purchase request of a new asset (subscription)."""

    action: ClassVar[str] = RequestType.PURCHASE.value

    asset_external_id: Any = arg("the asset's id in your system.", required=True, form=ASSET_EXTERNAL_ID_FORM)
    hub_id: Any = arg(
        "the hub ``HB-XXXX-XXXX`` that, with the product, selects the connection and in which tier "
        "accounts are looked up.",
        required="the hub (HB-XXXX-XXXX) selects the product's connection",
        form=FormField("hub_id", "Hub", "Purchase: the hub (HB-XXXX-XXXX) of the connection.", ORDER),
    )
    marketplace: Any = arg(
        "marketplace id ``MP-...`` or name; required, as Connect requires ``marketplace.id``.",
        required="Connect refuses a purchase without its marketplace (an MP-... id or its exact name)",
        form=FormField("marketplace", "Marketplace", "Purchase: marketplace id (MP-...) or name.", ORDER),
    )
    tier1: Any = arg(
        "the reseller tier: ``{name, external_id, external_uid?, tax_id?, contact_info{address_line1, "
        "address_line2?, city, state?, postal_code, country, contact{first_name, last_name, email, "
        "phone_number}}}``.",
        required=True,
        form=TierForm("tier1", "Tier 1", TIER1),
    )
    items: Any = arg(
        '``[{"item_id": "PRD-XXX-XXX-XXX-XXXX", "quantity": 5}]``; or give ``item_id`` and '
        "``quantity`` for a single item."
    )
    item_id: Any = arg(
        "the one item's global id, with ``quantity``, instead of ``items``.", form=ITEM_ID_FORM
    )
    quantity: Any = arg("the one item's quantity (-1: unlimited).", form=QUANTITY_FORM)
    customer: Any = arg(
        "the end customer's tier account, same shape as ``tier1``; Connect needs it, so a purchase "
        "without it is refused before any call.",
        form=TierForm("customer", "End customer", CUSTOMER),
    )
    tier2: Any = arg(
        "the second-level reseller, same shape as ``tier1``, when there is one.",
        form=TierForm("tier2", "Tier 2", TIER2, "; leave all tier 2 fields empty if none"),
    )
    product_id: Any = arg(
        "the product; by default the items' product.",
        form=FormField(
            "product_id",
            "Product",
            "Purchase, optional: PRD-XXX-XXX-XXX; by default the item's product.",
            ORDER,
        ),
    )
    asset_external_uid: Any = arg(
        "default: a UUID derived from the product and ``asset_external_id``; ids that render to "
        '``"None"``/``"null"`` (a template of an unset value) are refused before any call.',
        form=ASSET_EXTERNAL_UID_FORM,
    )
    params: Any = arg(
        "ordering parameters ``{param_id: value}``; a dict value goes as the parameter's "
        "``structured_value``. Not ``params``: Airflow takes an operator's ``params`` argument as its "
        "own run parameters (``Param``).",
        keyword="asset_params",
    )
    connection_type: Any = arg("``production`` (default), ``test`` or ``preview``.", default="production")
    connection_id: Any = arg(
        "the connection ``CT-...`` to use, when the product has several of that type on the hub; by "
        "default the one connection found."
    )
    note: Any = arg("a note for the vendor, kept on the request (Connect's purchase ``note``).")
    reuse_existing_request: Any = arg(
        "return the purchase of an asset with this external id instead of creating another (default True).",
        default=True,
        templated=False,
    )
    #: Set by :meth:`checked`: the single item came as ``item_id`` + ``quantity``.
    from_single_item: bool = _internal(False)

    def checked(self) -> PurchaseArgs:
        ext = v.external_id("asset_external_id", self.asset_external_id)
        uid = v.optional_text("asset_external_uid", self.asset_external_uid)
        hub = v.hub_id("hub_id", self.hub_id)
        marketplace = v.marketplace("marketplace", self.marketplace)
        items = v.items(
            "items", self.items, single_item_id=self.item_id, single_quantity=self.quantity,
            allow_local=False, allow_zero=False,
        )  # fmt: skip
        single = self.items in (None, "")
        product = self._product_of(items, single)
        if uid is not None:
            v.rql_text("asset_external_uid", uid)
        return dataclasses.replace(
            self,
            asset_external_id=ext,
            asset_external_uid=uid,
            hub_id=hub,
            marketplace=marketplace,
            items=items,
            item_id=None,
            quantity=None,
            product_id=product,
            tier1=v.tier("tier1", self.tier1),
            customer=_required_customer(self.customer),
            tier2=v.tier("tier2", self.tier2) if _given(self.tier2) else None,
            params=v.params("params", self.params),
            connection_type=v.connection_type("connection_type", self.connection_type),
            connection_id=v.connection_id("connection_id", self.connection_id)
            if _given(self.connection_id)
            else None,
            note=v.optional_text("note", self.note),
            reuse_existing_request=v.boolean("reuse_existing_request", self.reuse_existing_request),
            from_single_item=single,
        )

    def _product_of(self, items: list[dict[str, Any]], single: bool) -> str:
        """The product given, else the items'; every item must be of it (one purchase, one product)."""
        if _given(self.product_id):
            product = v.product_id("product_id", self.product_id)
        else:
            product = v.product_of_item(items[0]["id"])
        for index, item in enumerate(items):
            if v.product_of_item(item["id"]) != product:
                raise ConnectValidationError(
                    "item_id" if single else f"items[{index}].item_id",
                    f"{item['id']} is not an item of product {product}; one purchase buys one product",
                )
        return product

    @property
    def uid_given(self) -> bool:
        """Whether the caller named the asset's external uid (else it is derived)."""
        return self.asset_external_uid is not None

    @property
    def external_uid(self) -> str:
        """The asset's external uid: as given, else derived from the product and the external id."""
        return self.asset_external_uid or default_asset_external_uid(self.asset_external_id, self.product_id)

    def connect_payload(
        self, *, marketplace_id: str, connection_id: str, tiers: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The ``POST /requests`` body of this (checked) purchase."""
        asset = {
            "external_id": self.asset_external_id,
            "external_uid": self.external_uid,
            "product": {"id": self.product_id},
            "connection": {"id": connection_id},
            "items": self.items,
            "params": self.params,
            "tiers": dict(tiers),
        }
        body = {"type": self.action, "asset": asset, "marketplace": {"id": marketplace_id}}
        if self.note is not None:
            body["note"] = self.note
        return body


def _required_customer(customer: Any) -> dict[str, Any]:
    # Connect refuses a purchase without the end customer's tier account (the sandbox does too):
    # say so before any call, naming the argument.
    if not _given(customer):
        raise ConnectValidationError(
            "customer",
            "a purchase needs the end customer's tier account: give customer={name, external_id, "
            "contact_info} (the same shape as tier1)",
        )
    return v.tier("customer", customer)


@dataclass(frozen=True)
class AssetArgs(ActionArgs):
    """The arguments of a request on an existing asset: the asset, named exactly one way."""

    asset_external_id: Any = arg(
        "the asset's external id; or name it by ``asset_id``.", form=ASSET_EXTERNAL_ID_FORM
    )
    asset_external_uid: Any = arg(
        "the asset's external uid, to tell apart assets sharing one external id.",
        form=ASSET_EXTERNAL_UID_FORM,
    )
    asset_id: Any = arg("the asset ``AS-...``.", form=ASSET_ID_FORM)
    reuse_existing_request: Any = arg(
        "return an open request of the same type for the asset instead of creating another (default True).",
        default=True,
        templated=False,
    )

    def _checked_asset(self: _A, **more: Any) -> _A:
        asset_id, ext, uid = v.asset_identity(self.asset_id, self.asset_external_id, self.asset_external_uid)
        return dataclasses.replace(
            self,
            asset_id=asset_id,
            asset_external_id=ext,
            asset_external_uid=uid,
            reuse_existing_request=v.boolean("reuse_existing_request", self.reuse_existing_request),
            **more,
        )

    def describe(self) -> str:
        """How the (checked) asset is named, for messages: ``asset_id=...`` or its external ids."""
        if self.asset_id:
            return f"asset_id={self.asset_id}"
        parts = []
        if self.asset_external_id:
            parts.append(f"external_id={self.asset_external_id!r}")
        if self.asset_external_uid:
            parts.append(f"external_uid={self.asset_external_uid!r}")
        return ", ".join(parts)

    def connect_payload(self, asset: Mapping[str, Any]) -> dict[str, Any]:
        """The ``POST /requests`` body for the resolved ``asset``."""
        return {"type": self.request_type, "asset": {"id": asset["id"]}}

    @property
    def request_type(self) -> str:
        return self.action


@dataclass(frozen=True)
class ChangeArgs(AssetArgs):
    """A change request setting new quantities of the asset's items."""

    action: ClassVar[str] = RequestType.CHANGE.value

    items: Any = arg(
        '``[{"item_id": "SEATS" or "PRD-...-0001", "quantity": 12}]``; or give ``item_id`` and '
        "``quantity`` for one item. A quantity is a whole number >= 0, or -1 for unlimited."
    )
    item_id: Any = arg("the one item's global or local id, with ``quantity``.", form=ITEM_ID_FORM)
    quantity: Any = arg("the one item's new quantity.", form=QUANTITY_FORM)
    #: Set by :meth:`checked`: the single item came as ``item_id`` + ``quantity``.
    from_single_item: bool = _internal(False)

    def checked(self) -> ChangeArgs:
        asset = self._checked_asset()  # the asset first: it is what a change is about
        items = v.items(
            "items", self.items, single_item_id=self.item_id, single_quantity=self.quantity,
            allow_local=True, allow_zero=True,
        )  # fmt: skip
        single = self.items in (None, "")
        return dataclasses.replace(asset, items=items, item_id=None, quantity=None, from_single_item=single)

    @property
    def items_field(self) -> str:
        """The argument errors about the items name: ``items`` or ``item_id``."""
        return "item_id" if self.from_single_item else "items"

    def connect_payload(self, asset: Mapping[str, Any], items: list[dict[str, Any]] | None = None) -> dict:
        """The ``POST /requests`` body: the asset and its items by global id (``items``)."""
        return {"type": self.action, "asset": {"id": asset["id"], "items": items}}


@dataclass(frozen=True)
class SuspendResumeArgs(AssetArgs):
    """A suspend or resume request of an asset."""

    action: ClassVar[str] = "suspend or resume"

    request_type: Any = arg('``"suspend"`` or ``"resume"``.', required=True)

    def checked(self) -> SuspendResumeArgs:
        kind = v.suspend_resume_type("request_type", self.request_type)
        return self._checked_asset(request_type=kind)

    def connect_payload(self, asset: Mapping[str, Any]) -> dict[str, Any]:
        return {"type": self.request_type, "asset": {"id": asset["id"]}}


@dataclass(frozen=True)
class CancelArgs(AssetArgs):
    """A cancel request, which terminates the asset once approved."""

    action: ClassVar[str] = RequestType.CANCEL.value

    def checked(self) -> CancelArgs:
        return self._checked_asset()


# --------------------------------------------------------------------------- vendor decisions


@dataclass(frozen=True)
class ApproveArgs(ActionArgs):
    """Approve a pending request with an activation template."""

    action: ClassVar[str] = "approve"

    request_id: Any = arg("the request ``PR-...``; must be pending (approved: no-op).", required=True)
    template_id: Any = arg("the activation template ``TL-...``.", required=True)
    effective_date: Any = arg("optional ISO date-time the approval takes effect.")

    def checked(self) -> ApproveArgs:
        return dataclasses.replace(
            self,
            request_id=v.request_id("request_id", self.request_id),
            template_id=v.template_id("template_id", self.template_id),
            effective_date=v.optional_text("effective_date", self.effective_date),
        )


@dataclass(frozen=True)
class FailArgs(ActionArgs):
    """Fail a pending or inquiring request, with the reason the requester will read."""

    action: ClassVar[str] = "fail"

    request_id: Any = arg("the request ``PR-...``.", required=True)
    reason: Any = arg("why it is refused.", required=True)

    def checked(self) -> FailArgs:
        return dataclasses.replace(
            self,
            request_id=v.request_id("request_id", self.request_id),
            reason=v.require_text("reason", self.reason, "a non-empty reason"),
        )


@dataclass(frozen=True)
class InquireArgs(ActionArgs):
    """Ask the requester for more information: a pending request moves to inquiring."""

    action: ClassVar[str] = "inquire"

    request_id: Any = arg("the request ``PR-...``.", required=True)
    template_id: Any = arg("optional inquire template ``TL-...``.")
    param_errors: Any = arg(
        "``{param_id: message}``, what the requester must fix: written to those parameters' "
        "``value_error`` before the request is inquired, as CloudBlue's SDKs do."
    )

    def checked(self) -> InquireArgs:
        return dataclasses.replace(
            self,
            request_id=v.request_id("request_id", self.request_id),
            template_id=v.template_id("template_id", self.template_id) if _given(self.template_id) else None,
            param_errors=v.param_errors("param_errors", self.param_errors),
        )


#: The declaration of each request type an outbox row or the trigger form may ask for.
REQUEST_ARGUMENTS: dict[str, type[ActionArgs]] = {
    RequestType.PURCHASE.value: PurchaseArgs,
    RequestType.CHANGE.value: ChangeArgs,
    RequestType.SUSPEND.value: SuspendResumeArgs,
    RequestType.RESUME.value: SuspendResumeArgs,
    RequestType.CANCEL.value: CancelArgs,
}


def request_arguments(change_type: Any, arguments: Any) -> ActionArgs:
    """The (unchecked) declaration of the request ``change_type`` asks for, filled from ``arguments``.

    ``suspend`` and ``resume`` share a declaration: its ``request_type`` is the change type, and an
    argument that says otherwise is refused.
    """
    if change_type not in REQUEST_ARGUMENTS:
        raise ConnectValidationError(
            "change_type", f"must be one of {', '.join(REQUEST_ARGUMENTS)}, got {change_type!r}"
        )
    declaration = REQUEST_ARGUMENTS[change_type]
    filled = declaration.of(arguments, action=change_type)
    # A suspend's or resume's request_type is its change type.
    declaration.require(set(arguments) | ({"request_type"} if declaration is SuspendResumeArgs else set()))
    if isinstance(filled, SuspendResumeArgs):
        given = change_type if filled.request_type is None else filled.request_type
        if given != change_type:
            raise ConnectValidationError(
                "request_type", f"is {given!r} but the change type is {change_type!r}"
            )
        filled = dataclasses.replace(filled, request_type=change_type)
    return filled
