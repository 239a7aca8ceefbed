"""One function per Connect request action: validate locally, resolve, find or create.

These functions are the single home of the request logic: the operators in
:mod:`connect_provider.operators.requests` and the outbox DAG's batch task both call them, with a
:class:`~connect_provider.hooks.connect.ConnectHook` and plain arguments, and no task context.

Every action runs in three steps:

1. **Validate locally** (:mod:`connect_provider.validation`): anything that can be checked without
   Connect is checked first, so a typo costs no API call and the error names the field.
2. **Resolve** what the request refers to: the asset (by id, or by external id/uid, exactly one
   match), the marketplace (id or name), the connection (product + hub), the tier accounts'
   external uids.
3. **Find or create**, so that running an action twice never creates two requests (Airflow retries
   tasks, and an HTTP call may time out after Connect stored the request):

   * an *open* request (draft, tiers_setup, pending, inquiring, scheduled) of the same type for the
     same asset is returned instead of a new one (``reused=True``);
   * an asset already in the state the action asks for (suspended for ``suspend``, the quantities
     already set for ``change``...) returns the latest approved request of that type, because the
     request that got it there is, most likely, the one a previous attempt created;
   * a purchase whose asset external id already exists for the product returns that asset's
     purchase request, whatever its status;
   * the purchase's ``asset_external_uid`` defaults to a UUID derived from the external id (a fixed
     UUID5 namespace), so a retry never mints a new identity;
   * when the create's outcome is unknown (:class:`ConnectAmbiguousWriteError`), Connect is asked a
     few times whether the request exists before the create is tried once more.

Set ``reuse_existing_request=False`` to skip the look-ups of step 3 and always create (the
ambiguous-write recovery stays on: it never creates a duplicate of its own write).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from connect_provider import validation as v
from connect_provider.enums import AssetStatus, RequestStatus, RequestType
from connect_provider.exceptions import (
    ConnectAmbiguousWriteError,
    ConnectError,
    ConnectNotFoundError,
    ConnectValidationError,
)
from connect_provider.rql import R

if TYPE_CHECKING:
    from connect_provider.hooks.connect import ConnectHook

log = logging.getLogger(__name__)

#: Namespace of the UUID5 that names an asset when no ``asset_external_uid`` is given.
ASSET_UID_NAMESPACE = uuid.UUID("6f1c2a4e-9a51-5d0e-8a77-0c0e5c1b7a11")
#: Namespace of the UUID5 that names a tier account that Connect does not know yet.
TIER_UID_NAMESPACE = uuid.UUID("3b8e6f0d-27c4-5b9a-9f43-52a1d0e6c9b2")

#: Seconds to wait between the look-ups that follow an ambiguous create (Connect may need a moment
#: before a request it stored shows in its lists).
AMBIGUOUS_LOOKUP_DELAYS: tuple[float, ...] = (0.0, 0.3, 1.0)

OPEN_STATUSES = tuple(sorted(s.value for s in RequestStatus.open_statuses()))

VENDOR_ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "approve": (RequestStatus.PENDING.value,),
    "inquire": (RequestStatus.PENDING.value,),
    "fail": (RequestStatus.PENDING.value, RequestStatus.INQUIRING.value),
}
VENDOR_RESULT_STATUS = {
    "approve": RequestStatus.APPROVED.value,
    "inquire": RequestStatus.INQUIRING.value,
    "fail": RequestStatus.FAILED.value,
}


class ConnectRequestStateError(ConnectError):
    """The request is not in a status that allows the asked vendor decision."""


class ConnectRequestFailedError(ConnectError, AirflowFailException):
    """The request ended without success (failed, revoked, or inquiring where that counts as failure).

    It is the vendor's answer, not a glitch: retrying the task would only read the same answer, so
    it fails the task without retries (``AirflowFailException``).
    """

    def __init__(self, message: str, *, request_id: str, status: str, reason: str | None = None) -> None:
        self.request_id = request_id
        self.status = status
        self.reason = reason
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_failed, (str(self), self.request_id, self.status, self.reason))


def _rebuild_failed(
    message: str, request_id: str, status: str, reason: str | None
) -> ConnectRequestFailedError:
    return ConnectRequestFailedError(message, request_id=request_id, status=status, reason=reason)


@dataclass(frozen=True)
class ActionResult:
    """What an action did: the request it created or reused, and its status at that moment."""

    request_id: str
    type: str
    status: str
    asset_id: str | None
    asset_external_id: str | None
    reused: bool

    def to_dict(self) -> dict[str, Any]:
        """The XCom shape: ids and statuses only, never the request body."""
        return asdict(self)

    def with_status(self, status: str) -> ActionResult:
        return ActionResult(
            request_id=self.request_id,
            type=self.type,
            status=status,
            asset_id=self.asset_id,
            asset_external_id=self.asset_external_id,
            reused=self.reused,
        )

    @classmethod
    def from_request(
        cls, request: Mapping[str, Any], *, reused: bool, asset: Mapping | None = None
    ) -> ActionResult:
        req_asset = request.get("asset") or {}
        asset = asset or {}
        return cls(
            request_id=str(request["id"]),
            type=str(request.get("type") or ""),
            status=str(request.get("status") or ""),
            asset_id=req_asset.get("id") or asset.get("id"),
            asset_external_id=req_asset.get("external_id") or asset.get("external_id"),
            reused=reused,
        )


def default_asset_external_uid(asset_external_id: str) -> str:
    """The asset external uid used when none is given: stable for one external id, across retries."""
    return str(uuid.uuid5(ASSET_UID_NAMESPACE, asset_external_id))


def default_tier_external_uid(tier_external_id: str) -> str:
    """The external uid of a tier account that Connect does not know yet (stable across retries)."""
    return str(uuid.uuid5(TIER_UID_NAMESPACE, tier_external_id))


# --------------------------------------------------------------------------- validation (pure)


@dataclass(frozen=True)
class _PurchaseSpec:
    asset_external_id: str
    asset_external_uid: str
    uid_given: bool
    hub_id: str
    marketplace: str
    tier1: dict[str, Any]
    customer: dict[str, Any]
    product_id: str
    items: list[dict[str, Any]]
    params: list[dict[str, str]]
    connection_type: str
    connection_id: str | None
    reuse: bool


@dataclass(frozen=True)
class _AssetRef:
    asset_id: str | None
    external_id: str | None
    external_uid: str | None

    def describe(self) -> str:
        if self.asset_id:
            return f"asset_id={self.asset_id}"
        parts = []
        if self.external_id:
            parts.append(f"external_id={self.external_id!r}")
        if self.external_uid:
            parts.append(f"external_uid={self.external_uid!r}")
        return ", ".join(parts)


def _purchase_spec(
    *,
    asset_external_id: Any,
    hub_id: Any,
    marketplace: Any,
    tier1: Any,
    items: Any = None,
    customer: Any = None,
    product_id: Any = None,
    asset_external_uid: Any = None,
    params: Any = None,
    connection_type: Any = "production",
    reuse_existing_request: Any = True,
    item_id: Any = None,
    quantity: Any = None,
    connection_id: Any = None,
) -> _PurchaseSpec:
    ext = v.external_id("asset_external_id", asset_external_id)
    uid = v.optional_text("asset_external_uid", asset_external_uid)
    hub = v.hub_id("hub_id", hub_id)
    mp = v.marketplace("marketplace", marketplace)
    normalised = v.items(
        "items", items, single_item_id=item_id, single_quantity=quantity, allow_local=False, allow_zero=False
    )
    if product_id is not None and product_id != "":
        product = v.product_id("product_id", product_id)
    else:
        product = v.product_of_item(normalised[0]["id"])
    for index, item in enumerate(normalised):
        if v.product_of_item(item["id"]) != product:
            field = f"items[{index}].item_id" if items not in (None, "") else "item_id"
            raise ConnectValidationError(
                field, f"{item['id']} is not an item of product {product}; one purchase buys one product"
            )
    return _PurchaseSpec(
        asset_external_id=ext,
        asset_external_uid=uid or default_asset_external_uid(ext),
        uid_given=uid is not None,
        hub_id=hub,
        marketplace=mp,
        tier1=v.tier("tier1", tier1),
        customer=_required_customer(customer),
        product_id=product,
        items=normalised,
        params=v.params("params", params),
        connection_type=v.connection_type("connection_type", connection_type),
        connection_id=v.connection_id("connection_id", connection_id)
        if connection_id not in (None, "")
        else None,
        reuse=v.boolean("reuse_existing_request", reuse_existing_request),
    )


def _required_customer(customer: Any) -> dict[str, Any]:
    # Connect refuses a purchase without the end customer's tier account (the sandbox does too):
    # say so before any call, naming the argument.
    if customer in (None, "", {}):
        raise ConnectValidationError(
            "customer",
            "a purchase needs the end customer's tier account: give customer={name, external_id, "
            "contact_info} (the same shape as tier1)",
        )
    return v.tier("customer", customer)


def _asset_ref(asset_id: Any, asset_external_id: Any, asset_external_uid: Any) -> _AssetRef:
    return _AssetRef(*v.asset_identity(asset_id, asset_external_id, asset_external_uid))


def _change_items(items: Any, item_id: Any, quantity: Any) -> list[dict[str, Any]]:
    return v.items(
        "items", items, single_item_id=item_id, single_quantity=quantity, allow_local=True, allow_zero=True
    )


_ACTION_ARGUMENTS: dict[str, frozenset[str]] = {
    "purchase": frozenset(
        {
            "asset_external_id",
            "hub_id",
            "marketplace",
            "tier1",
            "items",
            "customer",
            "product_id",
            "asset_external_uid",
            "params",
            "connection_type",
            "reuse_existing_request",
            "item_id",
            "quantity",
            "connection_id",
        }
    ),
    "change": frozenset(
        {
            "asset_external_id",
            "asset_external_uid",
            "asset_id",
            "items",
            "item_id",
            "quantity",
            "reuse_existing_request",
        }
    ),
    "suspend": frozenset(
        {"asset_external_id", "asset_external_uid", "asset_id", "reuse_existing_request", "request_type"}
    ),
    "resume": frozenset(
        {"asset_external_id", "asset_external_uid", "asset_id", "reuse_existing_request", "request_type"}
    ),
    "cancel": frozenset({"asset_external_id", "asset_external_uid", "asset_id", "reuse_existing_request"}),
}


def _checked_arguments(change_type: Any, arguments: Any) -> tuple[str, dict[str, Any]]:
    if change_type not in _ACTION_ARGUMENTS:
        raise ConnectValidationError(
            "change_type", f"must be one of {', '.join(_ACTION_ARGUMENTS)}, got {change_type!r}"
        )
    if not isinstance(arguments, Mapping):
        raise ConnectValidationError(
            "arguments", f"must be a dict of the action's arguments, got {arguments!r}"
        )
    unknown = set(arguments) - _ACTION_ARGUMENTS[change_type]
    if unknown:
        name = sorted(unknown)[0]
        raise ConnectValidationError(
            name,
            f"is not an argument of a {change_type} request; known: {sorted(_ACTION_ARGUMENTS[change_type])}",
        )
    args = dict(arguments)
    if change_type in ("suspend", "resume"):
        given = args.pop("request_type", change_type)
        if given != change_type:
            raise ConnectValidationError(
                "request_type", f"is {given!r} but the change type is {change_type!r}"
            )
    return change_type, args


def validate_action(change_type: str, arguments: Mapping[str, Any]) -> None:
    """Check an action's arguments locally (no API call); raise :class:`ConnectValidationError`."""
    change_type, args = _checked_arguments(change_type, arguments)
    if change_type == "purchase":
        missing = [k for k in ("asset_external_id", "hub_id", "marketplace", "tier1") if k not in args]
        if missing:
            raise ConnectValidationError(missing[0], "is required for a purchase")
        _purchase_spec(**args)
        return
    _asset_ref(args.get("asset_id"), args.get("asset_external_id"), args.get("asset_external_uid"))
    v.boolean("reuse_existing_request", args.get("reuse_existing_request", True))
    if change_type == "change":
        _change_items(args.get("items"), args.get("item_id"), args.get("quantity"))


def run_action(hook: ConnectHook, change_type: str, arguments: Mapping[str, Any]) -> ActionResult:
    """Run the action named by ``change_type`` (purchase, change, suspend, resume, cancel)."""
    change_type, args = _checked_arguments(change_type, arguments)
    if change_type == "purchase":
        return purchase(hook, **args)
    if change_type == "change":
        return change(hook, **args)
    if change_type in ("suspend", "resume"):
        return suspend_resume(hook, request_type=change_type, **args)
    return cancel(hook, **args)


# --------------------------------------------------------------------------- look-ups


def _latest(requests: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    ordered = sorted(requests, key=lambda r: (str(r.get("created") or ""), str(r.get("id") or "")))
    return dict(ordered[-1]) if ordered else None


def _requests_for_asset(hook: ConnectHook, asset_id: str, request_type: str) -> list[dict[str, Any]]:
    return list(hook.list_requests(R(asset__id=asset_id) & R(type=request_type)))


def _resolve_asset(hook: ConnectHook, ref: _AssetRef) -> dict[str, Any]:
    """The one asset ``ref`` names; a clear error when there is none or more than one."""
    if ref.asset_id:
        return hook.get_asset(ref.asset_id)
    found = list(hook.find_assets(external_id=ref.external_id, external_uid=ref.external_uid))
    if not found:
        raise ConnectNotFoundError(f"No asset found with {ref.describe()}; check the id or pass asset_id.")
    if len(found) > 1:
        listing = ", ".join(
            f"{a.get('id')} (external_uid {a.get('external_uid')}, status {a.get('status')})" for a in found
        )
        raise ConnectError(
            f"{len(found)} assets match {ref.describe()}: {listing}. "
            "Pass asset_id, or asset_external_uid as well, to say which one."
        )
    return found[0]


def _purchase_for_existing_asset(
    hook: ConnectHook, *, external_id: str, external_uid: str | None, product_id: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The (asset, purchase request) of an asset with this external id (and uid) for the product."""
    assets = list(hook.find_assets(external_id=external_id, external_uid=external_uid, product_id=product_id))
    if external_uid is not None:
        assets = [a for a in assets if a.get("external_uid") == external_uid]
    if not assets:
        return None
    if len(assets) > 1:
        # Several assets share the external id; the one with our derived uid is ours, if any.
        ours = [a for a in assets if a.get("external_uid") == default_asset_external_uid(external_id)]
        assets = ours or assets
    if len(assets) > 1:
        listing = ", ".join(f"{a.get('id')} (external_uid {a.get('external_uid')})" for a in assets)
        raise ConnectError(
            f"{len(assets)} assets of product {product_id} have external_id {external_id!r}: {listing}. "
            "Pass asset_external_uid to say which purchase is meant."
        )
    asset = assets[0]
    request = _latest(_requests_for_asset(hook, asset["id"], RequestType.PURCHASE.value))
    if request is None:
        raise ConnectError(
            f"Asset {asset['id']} (external_id {external_id!r}) exists but has no purchase request; "
            "it cannot be bought again under the same external id."
        )
    return asset, request


def _already_in_state(
    request_type: str, asset: Mapping[str, Any], items: list[dict[str, Any]] | None
) -> bool:
    """Whether the asset already is where a request of ``request_type`` would take it."""
    status = asset.get("status")
    if request_type == RequestType.SUSPEND.value:
        return status == AssetStatus.SUSPENDED.value
    if request_type == RequestType.RESUME.value:
        return status == AssetStatus.ACTIVE.value
    if request_type == RequestType.CANCEL.value:
        return status in (AssetStatus.TERMINATED.value, AssetStatus.TERMINATING.value)
    if request_type == RequestType.CHANGE.value and items:
        current = _current_quantities(asset)
        return all(current.get(item["id"], 0) == item["quantity"] for item in items)
    return False


def _as_int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def _item_keys(item: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(global id, every name the item is known by) of one item of an asset."""
    names = [str(item[k]) for k in ("global_id", "id", "local_id", "mpn") if item.get(k)]
    global_id = next((n for n in names if v.ITEM_GLOBAL_ID_RE.match(n)), None)
    return global_id, names


def _current_quantities(asset: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in asset.get("items") or ():
        global_id, names = _item_keys(item)
        qty = _as_int(item.get("quantity"))
        if qty is None:
            continue
        for name in [global_id, *names]:
            if name:
                out[name] = qty
    return out


def _items_for_asset(
    asset: Mapping[str, Any], items: list[dict[str, Any]], field: str
) -> list[dict[str, Any]]:
    """Map product-local item ids (``SEATS``) to global ids through the asset's own items."""
    by_name: dict[str, str] = {}
    for item in asset.get("items") or ():
        global_id, names = _item_keys(item)
        if global_id:
            for name in names:
                by_name[name] = global_id
    product = (asset.get("product") or {}).get("id")
    out = []
    for index, item in enumerate(items):
        name = item["id"]
        where = f"{field}[{index}].item_id" if field == "items" else "item_id"
        if v.ITEM_GLOBAL_ID_RE.match(name):
            if product and v.product_of_item(name) != product:
                raise ConnectValidationError(where, f"{name} is not an item of the asset's product {product}")
            out.append({"id": name, "quantity": item["quantity"]})
        elif name in by_name:
            out.append({"id": by_name[name], "quantity": item["quantity"]})
        else:
            known = sorted(by_name) or ["(the asset has no items)"]
            raise ConnectValidationError(
                where,
                f"{name!r} is not an item of asset {asset.get('id')}; use the global id PRD-XXX-XXX-XXX-XXXX "
                f"to add an item, or one of {', '.join(known)}",
            )
    return out


# --------------------------------------------------------------------------- creating safely


def _create_once(
    hook: ConnectHook,
    payload: dict[str, Any],
    find_own: Callable[[], dict[str, Any] | None],
    what: str,
) -> dict[str, Any]:
    """Create a request; after an ambiguous write, find it before ever sending it again.

    ``find_own`` returns the request this create may have made (or ``None``). The create is sent at
    most twice; if the second outcome is unknown too, the error propagates (a task retry will run
    the whole action again, which finds the request if it exists).
    """
    for attempt in (1, 2):
        try:
            return hook.create_request(payload)
        except ConnectAmbiguousWriteError as exc:
            log.warning("Creating %s: outcome unknown (%s); looking for it before retrying.", what, exc)
            for delay in AMBIGUOUS_LOOKUP_DELAYS:
                if delay:
                    time.sleep(delay)
                found = find_own()
                if found is not None:
                    log.info("Creating %s: the earlier attempt did create %s.", what, found.get("id"))
                    return found
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _asset_request(
    hook: ConnectHook,
    *,
    request_type: str,
    ref: _AssetRef,
    reuse: bool,
    build_payload: Callable[[dict[str, Any]], dict[str, Any]],
    target_items: Callable[[dict[str, Any]], list[dict[str, Any]] | None] = lambda asset: None,
) -> ActionResult:
    asset = _resolve_asset(hook, ref)
    asset_id = str(asset["id"])
    payload = build_payload(asset)  # may still refuse input (e.g. an item the asset does not have)
    existing = _requests_for_asset(hook, asset_id, request_type)
    if reuse:
        open_request = _latest(r for r in existing if r.get("status") in OPEN_STATUSES)
        if open_request is not None:
            log.info("Reusing open %s request %s of asset %s.", request_type, open_request["id"], asset_id)
            return ActionResult.from_request(open_request, reused=True, asset=asset)
        if _already_in_state(request_type, asset, target_items(asset)):
            done = _latest(r for r in existing if r.get("status") == RequestStatus.APPROVED.value)
            if done is not None:
                log.info(
                    "Asset %s is already %s; returning the approved %s request %s.",
                    asset_id,
                    asset.get("status"),
                    request_type,
                    done["id"],
                )
                return ActionResult.from_request(done, reused=True, asset=asset)
    known = {r.get("id") for r in existing}

    def find_own() -> dict[str, Any] | None:
        return _latest(
            r for r in _requests_for_asset(hook, asset_id, request_type) if r.get("id") not in known
        )

    request = _create_once(hook, payload, find_own, f"a {request_type} request for asset {asset_id}")
    log.info("Created %s request %s for asset %s.", request_type, request.get("id"), asset_id)
    return ActionResult.from_request(request, reused=False, asset=asset)


# --------------------------------------------------------------------------- the actions


def purchase(
    hook: ConnectHook,
    *,
    asset_external_id: str,
    hub_id: str,
    marketplace: str,
    tier1: Mapping[str, Any],
    items: list[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    customer: Mapping[str, Any] | None = None,
    product_id: str | None = None,
    asset_external_uid: str | None = None,
    params: Mapping[str, Any] | None = None,
    connection_type: str = "production",
    reuse_existing_request: bool = True,
    item_id: str | None = None,
    quantity: int | str | None = None,
    connection_id: str | None = None,
) -> ActionResult:
    """Create (or find) the purchase request of a new asset.

    ``items`` is a list of ``{"item_id", "quantity"}`` (or give one ``item_id`` with ``quantity``);
    the product is the items' product unless ``product_id`` is given; the connection is the one of
    ``connection_type`` between the product and ``hub_id`` (or ``connection_id``, when the product
    has several such connections); ``marketplace`` is an id or a name.
    """
    spec = _purchase_spec(
        asset_external_id=asset_external_id,
        hub_id=hub_id,
        marketplace=marketplace,
        tier1=tier1,
        items=items,
        customer=customer,
        product_id=product_id,
        asset_external_uid=asset_external_uid,
        params=params,
        connection_type=connection_type,
        reuse_existing_request=reuse_existing_request,
        item_id=item_id,
        quantity=quantity,
        connection_id=connection_id,
    )
    if spec.reuse:
        found = _purchase_for_existing_asset(
            hook,
            external_id=spec.asset_external_id,
            external_uid=spec.asset_external_uid if spec.uid_given else None,
            product_id=spec.product_id,
        )
        if found is not None:
            asset, request = found
            log.info(
                "Asset %s already exists with external_id %r; returning its purchase request %s (%s).",
                asset["id"],
                spec.asset_external_id,
                request["id"],
                request.get("status"),
            )
            return ActionResult.from_request(request, reused=True, asset=asset)

    mp = hook.find_marketplace(spec.marketplace)
    _check_marketplace_serves_hub(mp, spec.hub_id)
    if spec.connection_id is None:
        try:
            connection_ref = hook.find_connection(spec.product_id, spec.hub_id, spec.connection_type)["id"]
        except ConnectError as exc:
            if type(exc) is not ConnectError:  # not found, transport, API errors: as they are
                raise
            raise ConnectError(f"{exc} (pass connection_id to choose one)") from None
    else:
        connection_ref = spec.connection_id  # Connect checks it belongs to the product and hub
    tiers = {"customer": _tier_payload(hook, spec.customer), "tier1": _tier_payload(hook, spec.tier1)}
    asset: dict[str, Any] = {
        "external_id": spec.asset_external_id,
        "external_uid": spec.asset_external_uid,
        "product": {"id": spec.product_id},
        "connection": {"id": connection_ref},
        "items": spec.items,
        "params": spec.params,
        "tiers": tiers,
    }
    payload = {"type": RequestType.PURCHASE.value, "asset": asset, "marketplace": {"id": mp["id"]}}

    def find_own() -> dict[str, Any] | None:
        # Our own uid: a purchase with it can only come from an earlier attempt of this create.
        assets = hook.find_assets(
            external_id=spec.asset_external_id,
            external_uid=spec.asset_external_uid,
            product_id=spec.product_id,
        )
        for candidate in assets:
            if candidate.get("external_uid") == spec.asset_external_uid:
                return _latest(_requests_for_asset(hook, candidate["id"], RequestType.PURCHASE.value))
        return None

    request = _create_once(hook, payload, find_own, f"the purchase of {spec.asset_external_id!r}")
    log.info("Created purchase request %s for external_id %r.", request.get("id"), spec.asset_external_id)
    return ActionResult.from_request(request, reused=False, asset={"external_id": spec.asset_external_id})


def _check_marketplace_serves_hub(mp: Mapping[str, Any], hub: str) -> None:
    hubs = mp.get("hubs")
    if not hubs:
        return  # Connect did not say; let it judge the request.
    ids = {((h.get("hub") or {}).get("id") or h.get("id")) for h in hubs if isinstance(h, Mapping)}
    if ids and hub not in ids:
        raise ConnectValidationError(
            "hub_id",
            f"marketplace {mp.get('id')} ({mp.get('name')}) is served by {', '.join(sorted(ids))}, not {hub}",
        )


def _tier_payload(hook: ConnectHook, tier: dict[str, Any]) -> dict[str, Any]:
    """The tier as sent; a missing ``external_uid`` comes from Connect's account, else a stable UUID5."""
    out = dict(tier)
    if not out.get("external_uid"):
        account = hook.find_tier_account(out["external_id"])
        if account and account.get("external_uid"):
            out["external_uid"] = account["external_uid"]
        else:
            out["external_uid"] = default_tier_external_uid(out["external_id"])
    return out


def change(
    hook: ConnectHook,
    *,
    asset_external_id: str | None = None,
    asset_external_uid: str | None = None,
    asset_id: str | None = None,
    items: list[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    item_id: str | None = None,
    quantity: int | str | None = None,
    reuse_existing_request: bool = True,
) -> ActionResult:
    """Create (or find) a change request setting new quantities of the asset's items.

    Items are named by global id (``PRD-XXX-XXX-XXX-XXXX``) or by the product-local id the asset
    knows them by (``SEATS``); a quantity is a whole number >= 0, or -1 for unlimited.
    """
    ref = _asset_ref(asset_id, asset_external_id, asset_external_uid)
    wanted = _change_items(items, item_id, quantity)
    reuse = v.boolean("reuse_existing_request", reuse_existing_request)
    field = "items" if items not in (None, "") else "item_id"

    def payload(asset: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": RequestType.CHANGE.value,
            "asset": {"id": asset["id"], "items": _items_for_asset(asset, wanted, field)},
        }

    return _asset_request(
        hook,
        request_type=RequestType.CHANGE.value,
        ref=ref,
        reuse=reuse,
        build_payload=payload,
        target_items=lambda asset: _items_for_asset(asset, wanted, field),
    )


def suspend_resume(
    hook: ConnectHook,
    *,
    request_type: str,
    asset_external_id: str | None = None,
    asset_external_uid: str | None = None,
    asset_id: str | None = None,
    reuse_existing_request: bool = True,
) -> ActionResult:
    """Create (or find) a suspend or resume request (``request_type`` ``"suspend"``/``"resume"``)."""
    kind = v.suspend_resume_type("request_type", request_type)
    ref = _asset_ref(asset_id, asset_external_id, asset_external_uid)
    reuse = v.boolean("reuse_existing_request", reuse_existing_request)
    return _asset_request(
        hook,
        request_type=kind,
        ref=ref,
        reuse=reuse,
        build_payload=lambda asset: {"type": kind, "asset": {"id": asset["id"]}},
    )


def cancel(
    hook: ConnectHook,
    *,
    asset_external_id: str | None = None,
    asset_external_uid: str | None = None,
    asset_id: str | None = None,
    reuse_existing_request: bool = True,
) -> ActionResult:
    """Create (or find) a cancel request, which terminates the asset once approved."""
    ref = _asset_ref(asset_id, asset_external_id, asset_external_uid)
    reuse = v.boolean("reuse_existing_request", reuse_existing_request)
    return _asset_request(
        hook,
        request_type=RequestType.CANCEL.value,
        ref=ref,
        reuse=reuse,
        build_payload=lambda asset: {"type": RequestType.CANCEL.value, "asset": {"id": asset["id"]}},
    )


# --------------------------------------------------------------------------- vendor decisions


def _vendor_decision(
    hook: ConnectHook, decision: str, request_id: str, act: Callable[[], dict[str, Any]]
) -> ActionResult:
    request = hook.get_request(request_id)
    status = request.get("status")
    if status == VENDOR_RESULT_STATUS[decision]:
        # A retry after a lost answer: the decision is already there, do not ask Connect twice.
        log.info("Request %s is already %s; nothing to %s.", request_id, status, decision)
        return ActionResult.from_request(request, reused=True)
    allowed = VENDOR_ALLOWED_FROM[decision]
    if status not in allowed:
        raise ConnectRequestStateError(
            f"Cannot {decision} request {request_id}: it is {status}; {decision} needs a request that is "
            f"{' or '.join(allowed)}."
        )
    return ActionResult.from_request(act(), reused=False, asset=request.get("asset"))


def approve(
    hook: ConnectHook, *, request_id: str, template_id: str, effective_date: str | None = None
) -> ActionResult:
    """Approve a pending request with an activation template (vendor side)."""
    rid = v.request_id("request_id", request_id)
    tid = v.template_id("template_id", template_id)
    date = v.optional_text("effective_date", effective_date)
    return _vendor_decision(hook, "approve", rid, lambda: hook.approve_request(rid, tid, date))


def fail(hook: ConnectHook, *, request_id: str, reason: str) -> ActionResult:
    """Fail a pending or inquiring request with a reason the requester will read (vendor side)."""
    rid = v.request_id("request_id", request_id)
    why = v.require_text("reason", reason, "a non-empty reason")
    return _vendor_decision(hook, "fail", rid, lambda: hook.fail_request(rid, why))


def inquire(hook: ConnectHook, *, request_id: str, template_id: str | None = None) -> ActionResult:
    """Move a pending request to inquiring, asking the requester for more information (vendor side)."""
    rid = v.request_id("request_id", request_id)
    tid = v.template_id("template_id", template_id) if template_id not in (None, "") else None
    return _vendor_decision(hook, "inquire", rid, lambda: hook.inquire_request(rid, tid))
