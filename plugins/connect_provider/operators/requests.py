"""Operators that create, follow and decide CloudBlue Connect asset requests.

They are thin: the request logic (validation, look-ups, idempotent find-or-create) lives in
:mod:`connect_provider.actions`, shared with the outbox DAG. An operator adds what Airflow users
expect around it:

* keyword-only, templated identity and quantity arguments (``template_fields``);
* a connection id (``connect_conn_id``, default ``cloudblue_connect_default``) and a cached hook;
* ``reuse_existing_request`` (default on): a retry finds the request an earlier attempt created;
* ``wait_for_completion`` (default off): follow the request until ``approved`` (success),
  ``failed`` (the task fails with Connect's reason, without retries) or, unless
  ``fail_on_inquiring=False``, ``inquiring``; either on the worker (``poll_interval``, ``timeout``)
  or, with ``deferrable=True`` (default: ``[operators] default_deferrable``), in the triggerer;
* the XCom ``{"request_id", "type", "status", "asset_id", "asset_external_id", "reused"}``;
* an extra link to the request in the Connect portal (:class:`ConnectRequestLink`).

``execute(context)`` reads nothing from the context but the task instance (to record the link's
request id, when there is one), so ``op.execute({})`` works as well as a DAG run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink
from airflow.sdk.configuration import conf

from connect_provider import actions
from connect_provider.actions import ActionResult, ConnectRequestFailedError
from connect_provider.config import DEFAULT_CONN_ID
from connect_provider.enums import RequestStatus
from connect_provider.exceptions import ConnectError
from connect_provider.triggers.requests import ConnectRequestTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

    from connect_provider.hooks.connect import ConnectHook

#: Portal of the production Connect. Requests open at ``<portal>/subscriptions/fulfillment/<id>``
#: (the path CloudBlue's own extensions link to); set ``[connect] portal_url`` for another portal.
CONNECT_PORTAL_URL = "https://portal.connect.cloudblue.com"
#: XCom key under which an operator records the request its extra link points to.
REQUEST_ID_XCOM_KEY = "connect_request_id"

#: The three ways to name an existing asset: ``asset_id``, or its external id (and/or uid).
ASSET_TEMPLATE_FIELDS: tuple[str, ...] = ("asset_id", "asset_external_id", "asset_external_uid")
SUCCESS_STATUSES: tuple[str, ...] = (RequestStatus.APPROVED.value,)
FAILURE_STATUSES: tuple[str, ...] = (RequestStatus.FAILED.value, RequestStatus.REVOKED.value)


def portal_request_url(request_id: str) -> str:
    """The Connect portal page of a request."""
    base = conf.get("connect", "portal_url", fallback=CONNECT_PORTAL_URL) or CONNECT_PORTAL_URL
    return f"{base.rstrip('/')}/subscriptions/fulfillment/{request_id}"


class ConnectRequestLink(BaseOperatorLink):
    """The "Connect request" button: the request the task created, reused or decided, in the portal."""

    name = "Connect request"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        request_id = XCom.get_value(ti_key=ti_key, key=REQUEST_ID_XCOM_KEY)
        return portal_request_url(request_id) if request_id else ""


def _remember_request(context: Context | dict[str, Any], request_id: str) -> None:
    """Record the request id for the extra link as soon as it is known (even if waiting fails later)."""
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is not None:
        ti.xcom_push(key=REQUEST_ID_XCOM_KEY, value=request_id)


def outcome(
    result: ActionResult, status: str, reason: str | None, *, fail_on_inquiring: bool
) -> dict[str, Any] | None:
    """The XCom when ``status`` ends the wait successfully, ``None`` while it must go on.

    Raises :class:`ConnectRequestFailedError` for failed/revoked requests, and for inquiring ones
    when ``fail_on_inquiring``.
    """
    if status in SUCCESS_STATUSES:
        return result.with_status(status).to_dict()
    failing = FAILURE_STATUSES + ((RequestStatus.INQUIRING.value,) if fail_on_inquiring else ())
    if status in failing:
        if status == RequestStatus.INQUIRING.value:
            message = (
                f"{result.type} request {result.request_id} is inquiring: the vendor asks for more "
                "information (fill the parameters in the portal, or set fail_on_inquiring=False to wait)."
            )
        else:
            message = f"{result.type} request {result.request_id} is {status}" + (
                f": {reason}" if reason else "."
            )
        raise ConnectRequestFailedError(message, request_id=result.request_id, status=status, reason=reason)
    return None


class _ConnectOperator(BaseOperator):
    """Connection handling and the portal link shared by every Connect request operator."""

    operator_extra_links = (ConnectRequestLink(),)
    ui_color = "#e8f1fb"

    def __init__(self, *, connect_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connect_conn_id = connect_conn_id

    @cached_property
    def hook(self) -> ConnectHook:
        from connect_provider.hooks.connect import ConnectHook

        return ConnectHook(self.connect_conn_id)


class _ConnectAssetRequestOperator(_ConnectOperator):
    """Create-or-reuse, then optionally follow, one asset request."""

    def __init__(
        self,
        *,
        reuse_existing_request: bool = True,
        wait_for_completion: bool = False,
        poll_interval: float = 10.0,
        timeout: float = 60 * 60 * 24,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        fail_on_inquiring: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.reuse_existing_request = reuse_existing_request
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = deferrable
        self.fail_on_inquiring = fail_on_inquiring

    def run_action(self) -> ActionResult:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def execute(self, context: Context) -> dict[str, Any]:
        result = self.run_action()
        _remember_request(context, result.request_id)
        self.log.info(
            "%s request %s (%s) for asset %s%s; portal: %s",
            result.type,
            result.request_id,
            result.status,
            result.asset_id or result.asset_external_id,
            " (reused)" if result.reused else "",
            portal_request_url(result.request_id),
        )
        if not self.wait_for_completion:
            return result.to_dict()
        reason = None
        if result.status in FAILURE_STATUSES:
            # Created (or found) already failed, e.g. a suspend of a product without administrative
            # hold: the task fails with Connect's reason, which the result does not carry.
            reason = self.hook.get_request(result.request_id).get("reason")
        done = outcome(result, result.status, reason, fail_on_inquiring=self.fail_on_inquiring)
        if done is not None:
            return done
        if self.deferrable:
            self.defer(
                trigger=ConnectRequestTrigger(
                    request_id=result.request_id,
                    connect_conn_id=self.connect_conn_id,
                    target_statuses=SUCCESS_STATUSES,
                    failure_statuses=self._failure_statuses(),
                    poll_interval=self.poll_interval,
                    end_time=time.time() + self.timeout,
                ),
                method_name="execute_complete",
                kwargs={"result": result.to_dict()},
            )
        return self._poll(result)

    def _failure_statuses(self) -> tuple[str, ...]:
        return FAILURE_STATUSES + ((RequestStatus.INQUIRING.value,) if self.fail_on_inquiring else ())

    def _poll(self, result: ActionResult) -> dict[str, Any]:
        """Follow the request on the worker until it ends, or ``timeout`` seconds."""
        deadline = time.monotonic() + self.timeout
        while True:
            request = self.hook.get_request(result.request_id)
            status = str(request.get("status"))
            done = outcome(result, status, request.get("reason"), fail_on_inquiring=self.fail_on_inquiring)
            if done is not None:
                self.log.info("Request %s is %s.", result.request_id, status)
                return done
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectError(
                    f"Request {result.request_id} is still {status} after {self.timeout:g} s; "
                    "it stays open in Connect, and a retry of this task follows it again."
                )
            self.log.info(
                "Request %s is %s; next look in %.1f s.", result.request_id, status, self.poll_interval
            )
            time.sleep(min(self.poll_interval, remaining))

    def execute_complete(
        self, context: Context, event: dict[str, Any], result: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume after the trigger fired: turn its event into the XCom or a clear failure."""
        request_id = event.get("request_id")
        base = ActionResult(**result) if result else None
        if base is None:  # resumed without the original result: rebuild what the request says
            base = ActionResult.from_request(self.hook.get_request(request_id), reused=False)
        kind = event.get("status")
        if kind in ("success", "failed"):
            done = outcome(
                base,
                event.get("request_status"),
                event.get("reason"),
                fail_on_inquiring=self.fail_on_inquiring,
            )
            if done is not None:
                return done
        if kind == "timeout":
            raise ConnectError(
                f"Request {request_id} is still {event.get('request_status')} after {self.timeout:g} s; "
                "it stays open in Connect, and a retry of this task follows it again."
            )
        raise ConnectError(event.get("message") or f"Following request {request_id} failed: {event!r}")


class ConnectPurchaseRequestOperator(_ConnectAssetRequestOperator):
    """Create the purchase request of a new asset (subscription), or find the one a retry made.

    :param asset_external_id: the asset's id in your system (templated).
    :param hub_id: the hub ``HB-XXXX-XXXX`` that, with the product, selects the connection and in
        which tier accounts are looked up (templated).
    :param marketplace: marketplace id ``MP-...`` or name (templated); required, as Connect requires
        ``marketplace.id``.
    :param tier1: the reseller tier: ``{name, external_id, external_uid?, tax_id?, contact_info{
        address_line1, address_line2?, city, state?, postal_code, country, contact{first_name,
        last_name, email, phone_number}}}`` (templated).
    :param items: ``[{"item_id": "PRD-XXX-XXX-XXX-XXXX", "quantity": 5}]`` (templated); or give
        ``item_id`` and ``quantity`` for a single item.
    :param customer: the end customer's tier account, same shape as ``tier1`` (templated); Connect
        needs it, so a purchase without it is refused before any call.
    :param tier2: the second-level reseller, same shape as ``tier1``, when there is one (templated).
    :param product_id: the product; by default the items' product (templated).
    :param asset_external_uid: default: a UUID derived from the product and ``asset_external_id``
        (templated).
    :param asset_params: ordering parameters ``{param_id: value}`` (templated); a dict value goes as
        the parameter's ``structured_value``. Not ``params``: Airflow takes an operator's ``params``
        argument as its own run parameters (``Param``).

    Ids that render to ``"None"``/``"null"`` (a template of an unset value) are refused before any
    call, naming the argument.
    :param connection_type: ``production`` (default), ``test`` or ``preview``.
    :param connection_id: the connection ``CT-...`` to use, when the product has several of that
        type on the hub (templated); by default the one connection found.
    """

    template_fields: Sequence[str] = (
        "asset_external_id",
        "asset_external_uid",
        "hub_id",
        "marketplace",
        "tier1",
        "customer",
        "tier2",
        "items",
        "item_id",
        "quantity",
        "product_id",
        "asset_params",
        "connection_type",
        "connection_id",
    )

    def __init__(
        self,
        *,
        asset_external_id: str,
        hub_id: str,
        marketplace: str,
        tier1: dict[str, Any],
        items: list[dict[str, Any]] | dict[str, Any] | None = None,
        item_id: str | None = None,
        quantity: int | str | None = None,
        customer: dict[str, Any] | None = None,
        product_id: str | None = None,
        asset_external_uid: str | None = None,
        asset_params: dict[str, Any] | None = None,
        connection_type: str = "production",
        connection_id: str | None = None,
        tier2: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset_external_id = asset_external_id
        self.hub_id = hub_id
        self.marketplace = marketplace
        self.tier1 = tier1
        self.items = items
        self.item_id = item_id
        self.quantity = quantity
        self.customer = customer
        self.product_id = product_id
        self.asset_external_uid = asset_external_uid
        self.asset_params = asset_params
        self.connection_type = connection_type
        self.connection_id = connection_id
        self.tier2 = tier2

    def run_action(self) -> ActionResult:
        return actions.purchase(
            self.hook,
            asset_external_id=self.asset_external_id,
            hub_id=self.hub_id,
            marketplace=self.marketplace,
            tier1=self.tier1,
            items=self.items,
            item_id=self.item_id,
            quantity=self.quantity,
            customer=self.customer,
            product_id=self.product_id,
            asset_external_uid=self.asset_external_uid,
            params=self.asset_params,
            connection_type=self.connection_type,
            connection_id=self.connection_id,
            tier2=self.tier2,
            reuse_existing_request=self.reuse_existing_request,
        )


class ConnectChangeRequestOperator(_ConnectAssetRequestOperator):
    """Create (or find) a change request setting new item quantities of an asset.

    :param asset_id: the asset ``AS-...``; or name it by ``asset_external_id`` (and
        ``asset_external_uid``) instead (templated).
    :param items: ``[{"item_id": "SEATS" or "PRD-...-0001", "quantity": 12}]`` (templated); or give
        ``item_id`` and ``quantity`` for one item. A quantity is a whole number >= 0, or -1 for
        unlimited.
    """

    template_fields: Sequence[str] = (*ASSET_TEMPLATE_FIELDS, "items", "item_id", "quantity")

    def __init__(
        self,
        *,
        asset_external_id: str | None = None,
        asset_external_uid: str | None = None,
        asset_id: str | None = None,
        items: list[dict[str, Any]] | dict[str, Any] | None = None,
        item_id: str | None = None,
        quantity: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset_external_id = asset_external_id
        self.asset_external_uid = asset_external_uid
        self.asset_id = asset_id
        self.items = items
        self.item_id = item_id
        self.quantity = quantity

    def run_action(self) -> ActionResult:
        return actions.change(
            self.hook,
            asset_external_id=self.asset_external_id,
            asset_external_uid=self.asset_external_uid,
            asset_id=self.asset_id,
            items=self.items,
            item_id=self.item_id,
            quantity=self.quantity,
            reuse_existing_request=self.reuse_existing_request,
        )


class ConnectSuspendResumeRequestOperator(_ConnectAssetRequestOperator):
    """Create (or find) a suspend or resume request of an asset.

    :param request_type: ``"suspend"`` or ``"resume"`` (templated).
    :param asset_id: the asset ``AS-...``; or ``asset_external_id``/``asset_external_uid`` (templated).
    """

    template_fields: Sequence[str] = ("request_type", *ASSET_TEMPLATE_FIELDS)

    def __init__(
        self,
        *,
        request_type: str,
        asset_external_id: str | None = None,
        asset_external_uid: str | None = None,
        asset_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request_type = request_type
        self.asset_external_id = asset_external_id
        self.asset_external_uid = asset_external_uid
        self.asset_id = asset_id

    def run_action(self) -> ActionResult:
        return actions.suspend_resume(
            self.hook,
            request_type=self.request_type,
            asset_external_id=self.asset_external_id,
            asset_external_uid=self.asset_external_uid,
            asset_id=self.asset_id,
            reuse_existing_request=self.reuse_existing_request,
        )


class ConnectCancelRequestOperator(_ConnectAssetRequestOperator):
    """Create (or find) a cancel request, which terminates the asset once approved.

    :param asset_id: the asset ``AS-...``; or ``asset_external_id``/``asset_external_uid`` (templated).
    """

    template_fields: Sequence[str] = ASSET_TEMPLATE_FIELDS

    def __init__(
        self,
        *,
        asset_external_id: str | None = None,
        asset_external_uid: str | None = None,
        asset_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset_external_id = asset_external_id
        self.asset_external_uid = asset_external_uid
        self.asset_id = asset_id

    def run_action(self) -> ActionResult:
        return actions.cancel(
            self.hook,
            asset_external_id=self.asset_external_id,
            asset_external_uid=self.asset_external_uid,
            asset_id=self.asset_id,
            reuse_existing_request=self.reuse_existing_request,
        )


class _ConnectVendorDecisionOperator(_ConnectOperator):
    """A vendor's decision on a request: checked against its status, idempotent on retry."""

    def decide(self) -> ActionResult:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def execute(self, context: Context) -> dict[str, Any]:
        result = self.decide()
        _remember_request(context, result.request_id)
        self.log.info(
            "Request %s is %s%s; portal: %s",
            result.request_id,
            result.status,
            " (already)" if result.reused else "",
            portal_request_url(result.request_id),
        )
        return result.to_dict()


class ConnectApproveRequestOperator(_ConnectVendorDecisionOperator):
    """Approve a pending request with an activation template (vendor side).

    :param request_id: the request ``PR-...`` (templated); must be pending (approved: no-op).
    :param template_id: the activation template ``TL-...`` (templated).
    :param effective_date: optional ISO date-time the approval takes effect (templated).
    """

    template_fields: Sequence[str] = ("request_id", "template_id", "effective_date")

    def __init__(
        self, *, request_id: str, template_id: str, effective_date: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.request_id = request_id
        self.template_id = template_id
        self.effective_date = effective_date

    def decide(self) -> ActionResult:
        return actions.approve(
            self.hook,
            request_id=self.request_id,
            template_id=self.template_id,
            effective_date=self.effective_date,
        )


class ConnectFailRequestOperator(_ConnectVendorDecisionOperator):
    """Fail a pending or inquiring request, with the reason the requester will read (vendor side).

    :param request_id: the request ``PR-...`` (templated).
    :param reason: why it is refused (templated).
    """

    template_fields: Sequence[str] = ("request_id", "reason")

    def __init__(self, *, request_id: str, reason: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request_id = request_id
        self.reason = reason

    def decide(self) -> ActionResult:
        return actions.fail(self.hook, request_id=self.request_id, reason=self.reason)


class ConnectInquireRequestOperator(_ConnectVendorDecisionOperator):
    """Ask the requester for more information: a pending request moves to inquiring (vendor side).

    :param request_id: the request ``PR-...`` (templated).
    :param template_id: optional inquire template ``TL-...`` (templated).
    :param param_errors: ``{param_id: message}``, what the requester must fix (templated): written
        to those parameters' ``value_error`` before the request is inquired, as CloudBlue's SDKs do.
    """

    template_fields: Sequence[str] = ("request_id", "template_id", "param_errors")

    def __init__(
        self,
        *,
        request_id: str,
        template_id: str | None = None,
        param_errors: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request_id = request_id
        self.template_id = template_id
        self.param_errors = param_errors

    def decide(self) -> ActionResult:
        return actions.inquire(
            self.hook,
            request_id=self.request_id,
            template_id=self.template_id,
            param_errors=self.param_errors,
        )
