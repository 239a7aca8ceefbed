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
   * an asset already in the state the action asks for (suspended for ``suspend``, active for
     ``resume``, the quantities already set for ``change``...) makes no create call: the result is
     the latest approved request of that type, or else the asset's latest approved request of any
     type (the request its state comes from), with ``reused=True``. Connect refuses such a create
     anyway (409 for suspend/resume/cancel, 400 "asset.items: Item quantities are not changed."
     for a change);
   * a purchase whose asset external id already exists for the product returns that asset's
     purchase request, whatever its status;
   * the purchase's ``asset_external_uid`` defaults to a UUID derived from the product and the
     external id (a fixed UUID5 namespace), so a retry never mints a new identity and one external
     id bought for two products is two assets;
   * when Connect answers a create with 409 naming an existing request (a duplicate purchase, an
     open request, a state the asset is already in), that request is the result (``reused=True``)
     when it is of the action's type, or when the asset already is where the action would take
     it; otherwise (an open request of another type, a change of a suspended asset) the
     :class:`~connect_provider.exceptions.ConnectConflictError` says which request is in the way,
     with Connect's ``params``;
   * when the create's outcome is unknown (:class:`ConnectAmbiguousWriteError`), Connect is asked a
     few times whether the request exists before the create is tried once more (and a 409 on that
     second try names the first one).

Set ``reuse_existing_request=False`` to skip the look-ups of step 3 and always send the create
(Connect's own 409 answers are still honoured: a duplicate is never made).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from connect_provider import validation as v
from connect_provider.arguments import (
    ActionArgs,
    ApproveArgs,
    AssetArgs,
    CancelArgs,
    ChangeArgs,
    FailArgs,
    InquireArgs,
    PurchaseArgs,
    SuspendResumeArgs,
    default_asset_external_uid,
    request_arguments,
)
from connect_provider.enums import AssetStatus, RequestStatus, RequestType
from connect_provider.exceptions import (
    ConnectAmbiguousLookupError,
    ConnectAmbiguousWriteError,
    ConnectAPIError,
    ConnectConflictError,
    ConnectLookupNotFoundError,
    ConnectRequestFailedError,
    ConnectRequestStateError,
    ConnectValidationError,
)
from connect_provider.rql import R, render_value

if TYPE_CHECKING:
    from connect_provider.hooks.connect import ConnectHook

log = logging.getLogger(__name__)

_A = TypeVar("_A", bound=ActionArgs)

__all__ = [
    "ActionResult",
    "ConnectRequestFailedError",
    "ConnectRequestStateError",
    "approve",
    "cancel",
    "change",
    "default_asset_external_uid",
    "default_tier_external_uid",
    "fail",
    "find_assets_by_external_id",
    "inquire",
    "purchase",
    "purchase_look_ups",
    "run",
    "run_action",
    "suspend_resume",
    "validate_action",
]

#: Namespace of the UUID5 that names a tier account that Connect does not know yet.
TIER_UID_NAMESPACE = uuid.UUID("3b8e6f0d-27c4-5b9a-9f43-52a1d0e6c9b2")

#: Seconds to wait between the look-ups that follow an ambiguous create (Connect may need a moment
#: before a request it stored shows in its lists).
AMBIGUOUS_LOOKUP_DELAYS: tuple[float, ...] = (0.0, 0.3, 1.0)

OPEN_STATUSES = tuple(sorted(s.value for s in RequestStatus.open_statuses()))

#: Connect's answer to a change that changes nothing (connect-extension-for-cb-commerce :
#: cbcext/services/fulfillment/base.py _handle_400_errors treats it as done; so do the actions).
ITEMS_UNCHANGED = "asset.items: Item quantities are not changed."

#: Asset statuses in which a request type changes nothing: Connect answers them with 409, and
#: connect-extension-for-cb-commerce treats them as done
#: (cbcext/services/client/apsconnectclient/base.py ASSET_STATUS_IGNORE_REQUEST_TYPES).
ALREADY_THERE: dict[str, tuple[str, ...]] = {
    AssetStatus.ACTIVE.value: (RequestType.RESUME.value,),
    AssetStatus.TERMINATING.value: (RequestType.CANCEL.value, RequestType.SUSPEND.value),
    AssetStatus.TERMINATED.value: (RequestType.CANCEL.value, RequestType.SUSPEND.value),
    AssetStatus.SUSPENDED.value: (RequestType.SUSPEND.value,),
}

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


def default_tier_external_uid(tier_external_id: str) -> str:
    """The external uid of a tier account that Connect does not know yet (stable across retries)."""
    return str(uuid.uuid5(TIER_UID_NAMESPACE, tier_external_id))


# --------------------------------------------------------------------------- by change type


def validate_action(change_type: str, arguments: Mapping[str, Any]) -> None:
    """Check an action's arguments locally (no API call); raise :class:`ConnectValidationError`."""
    request_arguments(change_type, arguments).checked()


def run_action(hook: ConnectHook, change_type: str, arguments: Mapping[str, Any]) -> ActionResult:
    """Run the action named by ``change_type`` (purchase, change, suspend, resume, cancel)."""
    return run(hook, request_arguments(change_type, arguments))


def run(hook: ConnectHook, args: ActionArgs) -> ActionResult:
    """Run the action a declaration is the arguments of (what the operators call)."""
    return _RUNNERS[type(args)](hook, args)


# --------------------------------------------------------------------------- look-ups


def _latest(requests: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    ordered = sorted(requests, key=lambda r: (str(r.get("created") or ""), str(r.get("id") or "")))
    return dict(ordered[-1]) if ordered else None


def _requests_for_asset(hook: ConnectHook, asset_id: str, request_type: str) -> list[dict[str, Any]]:
    return list(hook.list_requests(R(asset__id=asset_id) & R(type=request_type)))


def _resolve_asset(hook: ConnectHook, ref: AssetArgs) -> dict[str, Any]:
    """The one asset ``ref`` names; a clear error when there is none or more than one."""
    if ref.asset_id:
        return hook.get_asset(ref.asset_id)
    looked_for = {"external_id": ref.asset_external_id, "external_uid": ref.asset_external_uid}
    found = list(hook.find_assets(**looked_for))
    if not found:
        raise ConnectLookupNotFoundError(
            f"No asset found with {ref.describe()}; check the id or pass asset_id.",
            what="asset",
            looked_for=looked_for,
        )
    if len(found) > 1:
        listing = ", ".join(
            f"{a.get('id')} (external_uid {a.get('external_uid')}, status {a.get('status')})" for a in found
        )
        raise ConnectAmbiguousLookupError(
            f"{len(found)} assets match {ref.describe()}: {listing}. "
            "Pass asset_id, or asset_external_uid as well, to say which one.",
            what="asset",
            looked_for=looked_for,
            candidates=[str(a.get("id")) for a in found],
        )
    return found[0]


#: External ids per ``GET /assets?in(external_id,(...))``, and the characters they may add to the
#: URL: one listing stays well under the 8 KB that servers and proxies commonly accept.
ASSETS_PER_LOOKUP = 100
ASSET_LOOKUP_CHARS = 3000


def find_assets_by_external_id(
    hook: ConnectHook, external_ids: Iterable[str], *, product_id: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The assets of many external ids in few listings: ``{external_id: [asset, ...]}``.

    Why: finding each row's asset by its own ``GET /assets`` makes a batch of changes cost a
    look-up per row; one ``in(external_id,(...))`` listing (with the product, when given: the
    purchase's own filter) answers a whole chunk, paged lazily through the hook. Every id asked
    for is a key (an empty list: no such asset), in the listing's order, as
    :meth:`ConnectHook.find_assets` would have returned them one id at a time. Ids RQL cannot quote
    are left out (their own look-up refuses them with the reason).
    """
    wanted: list[str] = []
    for external_id in dict.fromkeys(str(x) for x in external_ids):
        try:
            render_value(external_id, field="external_id")
        except ConnectValidationError:
            continue
        wanted.append(external_id)
    found: dict[str, list[dict[str, Any]]] = {x: [] for x in wanted}
    for part in _url_sized(wanted):
        query = R(external_id__in=part)
        if product_id is not None:
            query = query & R(product__id=product_id)
        for asset in hook.iter_items("/assets", query):
            matches = found.get(str(asset.get("external_id")))
            if matches is not None:
                matches.append(asset)
    return found


def _url_sized(values: list[str]) -> Iterable[list[str]]:
    """``values`` cut into runs of at most ASSETS_PER_LOOKUP and about ASSET_LOOKUP_CHARS characters."""
    part: list[str] = []
    size = 0
    for value in values:
        if part and (len(part) >= ASSETS_PER_LOOKUP or size + len(value) > ASSET_LOOKUP_CHARS):
            yield part
            part, size = [], 0
        part.append(value)
        size += len(value) + 1
    if part:
        yield part


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
        ours = [
            a for a in assets if a.get("external_uid") == default_asset_external_uid(external_id, product_id)
        ]
        assets = ours or assets
    if len(assets) > 1:
        listing = ", ".join(f"{a.get('id')} (external_uid {a.get('external_uid')})" for a in assets)
        raise ConnectAmbiguousLookupError(
            f"{len(assets)} assets of product {product_id} have external_id {external_id!r}: {listing}. "
            "Pass asset_external_uid to say which purchase is meant.",
            what="asset",
            looked_for={"external_id": external_id, "product_id": product_id},
            candidates=[str(a.get("id")) for a in assets],
        )
    asset = assets[0]
    request = _latest(_requests_for_asset(hook, asset["id"], RequestType.PURCHASE.value))
    if request is None:
        raise ConnectLookupNotFoundError(
            f"Asset {asset['id']} (external_id {external_id!r}) exists but has no purchase request; "
            "it cannot be bought again under the same external id.",
            what="purchase request",
            looked_for={"asset_id": asset["id"], "type": RequestType.PURCHASE.value},
        )
    return asset, request


def _already_in_state(
    request_type: str, asset: Mapping[str, Any], items: list[dict[str, Any]] | None
) -> bool:
    """Whether the asset already is where a request of ``request_type`` would take it."""
    status = asset.get("status")
    if request_type in ALREADY_THERE.get(str(status), ()):
        return True
    if request_type == RequestType.CHANGE.value and items:
        current = _current_quantities(asset)
        return all(current.get(item["id"], 0) == item["quantity"] for item in items)
    return False


def _as_int(value: Any) -> int | None:
    """A quantity as Connect sends it (``25.0``, ``"1"``, ``"unlimited"``...) as a whole number."""
    return v.parse_quantity(value)


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
    settle: Callable[[ConnectAPIError], dict[str, Any] | None],
) -> tuple[dict[str, Any], bool]:
    """Create a request; after an ambiguous write, find it before ever sending it again.

    Returns ``(request, reused)``. ``find_own`` returns the request this create may have made (or
    ``None``). ``settle`` turns Connect's refusal into the existing request it names (a 409 naming
    one, a change that changes nothing) or ``None`` to let the error through. The create is sent at
    most twice; if the second outcome is unknown too, the error propagates (a task retry will run
    the whole action again, which finds the request if it exists).
    """
    for attempt in (1, 2):
        try:
            return hook.create_request(payload), False
        except ConnectAPIError as exc:
            existing = settle(exc)
            if existing is None:
                raise
            log.info("Creating %s: Connect names the existing request %s.", what, existing.get("id"))
            return existing, True
        except ConnectAmbiguousWriteError as exc:
            log.warning("Creating %s: outcome unknown (%s); looking for it before retrying.", what, exc)
            for delay in AMBIGUOUS_LOOKUP_DELAYS:
                if delay:
                    time.sleep(delay)
                found = find_own()
                if found is not None:
                    log.info("Creating %s: the earlier attempt did create %s.", what, found.get("id"))
                    return found, False
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _named_request(hook: ConnectHook, exc: ConnectAPIError) -> dict[str, Any] | None:
    """The request a 409's ``params`` name (``None`` for any other error, or a 409 naming none)."""
    if not isinstance(exc, ConnectConflictError):
        return None
    request_id = exc.params.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        return None
    return hook.get_request(request_id)


def _in_the_way(exc: ConnectConflictError, named: Mapping[str, Any], what: str) -> ConnectConflictError:
    """The 409 re-worded: which request keeps ``what`` from being created, and what to do."""
    status = named.get("status")
    open_now = status in OPEN_STATUSES
    advice = (
        "Connect keeps one open request per asset: wait until it is decided, then run this again"
        if open_now
        else "the asset is not in a state this request can start from"
    )
    detail = "; ".join(exc.errors)
    return exc.reworded(
        f"Connect refused {what}: request {named.get('id')} ({named.get('type')}, {status}) of asset "
        f"{exc.params.get('asset_id')} ({exc.params.get('asset_status')}) is in the way"
        f"{f' ({detail})' if detail else ''}; {advice}"
    )


def _asset_request(
    hook: ConnectHook,
    *,
    request_type: str,
    ref: AssetArgs,
    build_payload: Callable[[dict[str, Any]], dict[str, Any]],
    target_items: Callable[[dict[str, Any]], list[dict[str, Any]] | None] = lambda asset: None,
) -> ActionResult:
    """Find or create a request of ``request_type`` on the asset ``ref`` names (see the module doc)."""
    asset = _resolve_asset(hook, ref)
    asset_id = str(asset["id"])
    payload = build_payload(asset)  # may still refuse input (e.g. an item the asset does not have)
    existing = _requests_for_asset(hook, asset_id, request_type)
    if ref.reuse_existing_request:
        done = _nothing_to_create(hook, request_type, asset, existing, target_items(asset))
        if done is not None:
            return done
    known = {r.get("id") for r in existing}
    what = f"a {request_type} request for asset {asset_id}"

    def find_own() -> dict[str, Any] | None:
        return _latest(
            r for r in _requests_for_asset(hook, asset_id, request_type) if r.get("id") not in known
        )

    def settle(exc: ConnectAPIError) -> dict[str, Any] | None:
        return _settle_asset_request(hook, request_type, asset_id, what, exc)

    request, reused = _create_once(hook, payload, find_own, what, settle)
    if reused:
        log.info(
            "Connect named %s request %s for asset %s.", request.get("type"), request.get("id"), asset_id
        )
    else:
        log.info("Created %s request %s for asset %s.", request_type, request.get("id"), asset_id)
    return ActionResult.from_request(request, reused=reused, asset=asset)


def _nothing_to_create(
    hook: ConnectHook,
    request_type: str,
    asset: dict[str, Any],
    existing: list[dict[str, Any]],
    items: list[dict[str, Any]] | None,
) -> ActionResult | None:
    """The open request to reuse, or the approved one the asset's state already comes from; or None."""
    asset_id = str(asset["id"])
    open_request = _latest(r for r in existing if r.get("status") in OPEN_STATUSES)
    if open_request is not None:
        log.info("Reusing open %s request %s of asset %s.", request_type, open_request["id"], asset_id)
        return ActionResult.from_request(open_request, reused=True, asset=asset)
    if not _already_in_state(request_type, asset, items):
        return None
    done = _latest(
        r for r in existing if r.get("status") == RequestStatus.APPROVED.value
    ) or _latest_approved(hook, asset_id)
    if done is None:
        return None
    log.info(
        "Asset %s is already %s; no %s request is needed. Returning approved request %s (%s).",
        asset_id,
        asset.get("status"),
        request_type,
        done["id"],
        done.get("type"),
    )
    return ActionResult.from_request(done, reused=True, asset=asset)


def _settle_asset_request(
    hook: ConnectHook, request_type: str, asset_id: str, what: str, exc: ConnectAPIError
) -> dict[str, Any] | None:
    """Connect's refusal of an asset request as the request it names, or None to let it through."""
    if request_type == RequestType.CHANGE.value and exc.status == 400 and ITEMS_UNCHANGED in exc.errors:
        # The quantities were set meanwhile: the asset's state is the answer, as above (None lets
        # Connect's refusal through).
        return _latest_approved(hook, asset_id)
    named = _named_request(hook, exc)
    if named is None:
        return None
    if (named.get("asset") or {}).get("id") not in (None, asset_id):
        return None
    if named.get("type") == request_type:
        return named
    if request_type in ALREADY_THERE.get(str(exc.params.get("asset_status")), ()):
        return named  # nothing to do: the asset already is where this request would take it
    raise _in_the_way(exc, named, what) from exc  # type: ignore[arg-type]


def _latest_approved(hook: ConnectHook, asset_id: str) -> dict[str, Any] | None:
    """The asset's latest approved request of any type: the one its current state comes from."""
    return _latest(
        r
        for r in hook.list_requests(R(asset__id=asset_id) & R(status=RequestStatus.APPROVED.value))
        if r.get("status") == RequestStatus.APPROVED.value
    )


# --------------------------------------------------------------------------- the actions


def _declared(declaration: type[_A], args: _A | None, arguments: Mapping[str, Any]) -> _A:
    """The checked arguments of an action called with its declaration or with keyword arguments."""
    if args is not None and arguments:
        raise TypeError(f"give a {declaration.__name__} or keyword arguments, not both")
    if args is None:
        args = declaration.of(arguments)
    return args.checked()


def purchase(hook: ConnectHook, args: PurchaseArgs | None = None, /, **arguments: Any) -> ActionResult:
    """Create (or find) the purchase request of a new asset; the arguments are :class:`PurchaseArgs`.

    ``items`` is a list of ``{"item_id", "quantity"}`` (or give one ``item_id`` with ``quantity``);
    the product is the items' product unless ``product_id`` is given; the connection is the one of
    ``connection_type`` between the product and ``hub_id`` (or ``connection_id``, when the product
    has several such connections); ``marketplace`` (required, as Connect requires
    ``marketplace.id``) is an id or a name. ``tier2`` is the second-level reseller, when there is
    one. A tier without ``external_uid`` takes the uid of the account with its external id on the
    hub (``/tier/accounts`` filtered by ``hub.id``). Parameters with object values go as
    ``structured_value``.

    Connect refuses a second asset with the same ``external_uid`` (409 naming it): that answer is
    the existing purchase (``reused=True``), unless the asset is another product's, which is an
    error naming it.
    """
    spec = _declared(PurchaseArgs, args, arguments)
    if spec.reuse_existing_request:
        existing = _existing_purchase(hook, spec)
        if existing is not None:
            return existing
    request, reused = _create_once(
        hook,
        _purchase_payload(hook, spec),
        lambda: _own_purchase(hook, spec),
        f"the purchase of {spec.asset_external_id!r}",
        lambda exc: _settle_purchase(hook, spec, exc),
    )
    if reused:
        log.info(
            "Connect names purchase request %s (%s) for external_id %r: returning it.",
            request.get("id"),
            request.get("status"),
            spec.asset_external_id,
        )
    else:
        log.info("Created purchase request %s for external_id %r.", request.get("id"), spec.asset_external_id)
    return ActionResult.from_request(request, reused=reused, asset={"external_id": spec.asset_external_id})


def _existing_purchase(hook: ConnectHook, spec: PurchaseArgs) -> ActionResult | None:
    """The purchase of an asset that already has this external id (and uid) for the product."""
    found = _purchase_for_existing_asset(
        hook,
        external_id=spec.asset_external_id,
        external_uid=spec.asset_external_uid if spec.uid_given else None,
        product_id=spec.product_id,
    )
    if found is None:
        return None
    asset, request = found
    log.info(
        "Asset %s already exists with external_id %r; returning its purchase request %s (%s).",
        asset["id"],
        spec.asset_external_id,
        request["id"],
        request.get("status"),
    )
    return ActionResult.from_request(request, reused=True, asset=asset)


def _purchase_payload(hook: ConnectHook, spec: PurchaseArgs) -> dict[str, Any]:
    """Resolve the marketplace, the connection and the tiers' uids; the body of the create."""
    mp = hook.find_marketplace(spec.marketplace)
    _check_marketplace_serves_hub(mp, spec.hub_id)
    if spec.connection_id is None:
        try:
            connection_id = hook.find_connection(spec.product_id, spec.hub_id, spec.connection_type)["id"]
        except ConnectAmbiguousLookupError as exc:
            raise exc.with_hint("pass connection_id to choose one") from None
    else:
        connection_id = spec.connection_id  # Connect checks it belongs to the product and hub
    tiers = {
        "customer": _tier_payload(hook, spec.customer, spec.hub_id),
        "tier1": _tier_payload(hook, spec.tier1, spec.hub_id),
    }
    if spec.tier2 is not None:
        tiers["tier2"] = _tier_payload(hook, spec.tier2, spec.hub_id)
    return spec.connect_payload(marketplace_id=mp["id"], connection_id=connection_id, tiers=tiers)


def purchase_look_ups(spec: PurchaseArgs) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The configuration look-ups a purchase's create makes, as ``(hook method, args, kwargs)``.

    The calls :func:`_purchase_payload` makes, in the same shape (a batch of purchases that
    remembers them answers its rows from them): the marketplace, the connection unless
    ``connection_id`` is given, and the tier accounts of tiers without ``external_uid``. Why: a
    batch can make them all at once before its rows, instead of its first purchase making them
    one after another while the others wait for the answers.
    """
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [("find_marketplace", (spec.marketplace,), {})]
    if spec.connection_id is None:
        calls.append(("find_connection", (spec.product_id, spec.hub_id, spec.connection_type), {}))
    for tier in (spec.customer, spec.tier1, spec.tier2):
        if tier is not None and not tier.get("external_uid"):
            calls.append(("find_tier_account", (tier["external_id"],), {"hub_id": spec.hub_id}))
    return calls


def _own_purchase(hook: ConnectHook, spec: PurchaseArgs) -> dict[str, Any] | None:
    """The purchase an earlier attempt of this create made: our own uid can only come from one."""
    assets = hook.find_assets(
        external_id=spec.asset_external_id, external_uid=spec.external_uid, product_id=spec.product_id
    )
    for candidate in assets:
        if candidate.get("external_uid") == spec.external_uid:
            return _latest(_requests_for_asset(hook, candidate["id"], RequestType.PURCHASE.value))
    return None


def _settle_purchase(hook: ConnectHook, spec: PurchaseArgs, exc: ConnectAPIError) -> dict[str, Any] | None:
    """Connect's 409 on a purchase as the purchase it names; another product's asset is an error."""
    named = _named_request(hook, exc)
    if named is None:
        return None
    their = named.get("asset") or {}
    their_product = (their.get("product") or {}).get("id")
    if their_product not in (None, spec.product_id):
        raise cast("ConnectConflictError", exc).reworded(  # only a 409 names a request
            f"Connect refused the purchase of {spec.asset_external_id!r}: asset {their.get('id')} of "
            f"product {their_product} already has external_uid {spec.external_uid!r}; an "
            f"external uid names one asset, so give this product's purchase another "
            "asset_external_uid"
        ) from exc
    if named.get("type") == RequestType.PURCHASE.value:
        return named
    if their.get("id"):
        return _latest(_requests_for_asset(hook, str(their["id"]), RequestType.PURCHASE.value)) or named
    return named


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


def _tier_payload(hook: ConnectHook, tier: dict[str, Any], hub_id: str) -> dict[str, Any]:
    """The tier as sent; a missing ``external_uid`` comes from Connect's account, else a stable UUID5.

    Accounts are looked up within the purchase's hub: an external id is the commerce system's,
    and one hub's account is not another's (the Zapier app filters ``external_id`` and
    ``hub.id``: connect-fulfillment-zapier-app : lib/connect/api/helpers/lookups.js).
    """
    out = dict(tier)
    if not out.get("external_uid"):
        account = hook.find_tier_account(out["external_id"], hub_id=hub_id)
        if account and account.get("external_uid"):
            out["external_uid"] = account["external_uid"]
        else:
            out["external_uid"] = default_tier_external_uid(out["external_id"])
    return out


def change(hook: ConnectHook, args: ChangeArgs | None = None, /, **arguments: Any) -> ActionResult:
    """Create (or find) a change request setting new quantities; the arguments are :class:`ChangeArgs`.

    Items are named by global id (``PRD-XXX-XXX-XXX-XXXX``) or by the product-local id the asset
    knows them by (``SEATS``); a quantity is a whole number >= 0, or -1 for unlimited.
    """
    spec = _declared(ChangeArgs, args, arguments)

    def items(asset: dict[str, Any]) -> list[dict[str, Any]]:
        return _items_for_asset(asset, spec.items, spec.items_field)

    return _asset_request(
        hook,
        request_type=RequestType.CHANGE.value,
        ref=spec,
        build_payload=lambda asset: spec.connect_payload(asset, items(asset)),
        target_items=items,
    )


def suspend_resume(
    hook: ConnectHook, args: SuspendResumeArgs | None = None, /, **arguments: Any
) -> ActionResult:
    """Create (or find) a suspend or resume request (``request_type`` ``"suspend"``/``"resume"``)."""
    spec = _declared(SuspendResumeArgs, args, arguments)
    return _asset_request(hook, request_type=spec.request_type, ref=spec, build_payload=spec.connect_payload)


def cancel(hook: ConnectHook, args: CancelArgs | None = None, /, **arguments: Any) -> ActionResult:
    """Create (or find) a cancel request, which terminates the asset once approved."""
    spec = _declared(CancelArgs, args, arguments)
    return _asset_request(hook, request_type=spec.request_type, ref=spec, build_payload=spec.connect_payload)


# --------------------------------------------------------------------------- vendor decisions


def _vendor_decision(
    hook: ConnectHook,
    decision: str,
    request_id: str,
    act: Callable[[Mapping[str, Any]], dict[str, Any]],
    when_already: Callable[[Mapping[str, Any]], None] | None = None,
) -> ActionResult:
    request = hook.get_request(request_id)
    status = request.get("status")
    if status == VENDOR_RESULT_STATUS[decision]:
        # A retry after a lost answer: the decision is already there, do not ask Connect twice.
        log.info("Request %s is already %s; nothing to %s.", request_id, status, decision)
        if when_already is not None:
            when_already(request)
        return ActionResult.from_request(request, reused=True)
    allowed = VENDOR_ALLOWED_FROM[decision]
    if status not in allowed:
        raise ConnectRequestStateError(
            f"Cannot {decision} request {request_id}: it is {status}; {decision} needs a request that is "
            f"{' or '.join(allowed)}."
        )
    return ActionResult.from_request(act(request), reused=False, asset=request.get("asset"))


def approve(hook: ConnectHook, args: ApproveArgs | None = None, /, **arguments: Any) -> ActionResult:
    """Approve a pending request with an activation template (vendor side; :class:`ApproveArgs`)."""
    spec = _declared(ApproveArgs, args, arguments)
    rid, tid, date = spec.request_id, spec.template_id, spec.effective_date
    return _vendor_decision(hook, "approve", rid, lambda _request: hook.approve_request(rid, tid, date))


def fail(hook: ConnectHook, args: FailArgs | None = None, /, **arguments: Any) -> ActionResult:
    """Fail a pending or inquiring request with a reason the requester will read (:class:`FailArgs`)."""
    spec = _declared(FailArgs, args, arguments)
    rid, why = spec.request_id, spec.reason
    return _vendor_decision(hook, "fail", rid, lambda _request: hook.fail_request(rid, why))


def inquire(hook: ConnectHook, args: InquireArgs | None = None, /, **arguments: Any) -> ActionResult:
    """Move a pending request to inquiring, asking the requester for more information (vendor side).

    ``param_errors`` (``{param_id: message}``) says what to fix: as CloudBlue's own clients do, the
    messages are written to the parameters' ``value_error`` first (``PUT /requests/{id}`` with
    ``{"asset": {"params": [{"id", "value_error"}]}}``), then the request is inquired
    (cloudblue/connect-javascript-sdk @ 78b3ba3c9d7855cbca427e4667de1fab86abfe7b :
    lib/connect/ops/fulfillment.js ``inquireRequest``; the legacy Python SDK's fulfillment
    automation). Parameter ids the request does not have are refused before any write.
    """
    spec = _declared(InquireArgs, args, arguments)
    rid, tid, errors = spec.request_id, spec.template_id, spec.param_errors

    def write_errors(request: Mapping[str, Any]) -> None:
        if not errors:
            return
        known = [str(p.get("id")) for p in (request.get("asset") or {}).get("params") or ()]
        for entry in errors:
            if entry["id"] not in known:
                raise ConnectValidationError(
                    f"param_errors.{entry['id']}",
                    f"request {rid} has no parameter {entry['id']!r}; its parameters are "
                    f"{', '.join(known) or '(none)'}",
                )
        hook.put(f"/requests/{rid}", json={"asset": {"params": errors}})

    def act(request: Mapping[str, Any]) -> dict[str, Any]:
        write_errors(request)
        return hook.inquire_request(rid, tid)

    # Already inquiring (a retry, or the vendor's own inquiry): the errors are written all the same.
    return _vendor_decision(hook, "inquire", rid, act, when_already=write_errors)


_RUNNERS: dict[type[ActionArgs], Callable[[ConnectHook, Any], ActionResult]] = {
    PurchaseArgs: purchase,
    ChangeArgs: change,
    SuspendResumeArgs: suspend_resume,
    CancelArgs: cancel,
    ApproveArgs: approve,
    FailArgs: fail,
    InquireArgs: inquire,
}
