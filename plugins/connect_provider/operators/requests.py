"""Operators that create, follow and decide CloudBlue Connect asset requests.

They are thin: the request logic (validation, look-ups, idempotent find-or-create) lives in
:mod:`connect_provider.actions`, shared with the outbox DAG. An operator adds what Airflow users
expect around it:

* keyword-only, templated arguments, declared once per action in :mod:`connect_provider.arguments`
  (the keywords, ``template_fields`` and ``:param:`` docs come from there);
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

import inspect
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator, BaseOperatorLink
from airflow.sdk.configuration import conf

from connect_provider import CONNECT_PORTAL_URL, actions
from connect_provider.actions import ActionResult, ConnectRequestFailedError
from connect_provider.arguments import (
    ActionArgs,
    ApproveArgs,
    CancelArgs,
    ChangeArgs,
    FailArgs,
    InquireArgs,
    PurchaseArgs,
    SuspendResumeArgs,
)
from connect_provider.config import DEFAULT_CONN_ID
from connect_provider.enums import RequestStatus
from connect_provider.exceptions import ConnectError
from connect_provider.lineage import ConnectLineageMixin
from connect_provider.triggers.requests import ConnectRequestTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

    from connect_provider.hooks.connect import ConnectHook

#: XCom key under which an operator records the request its extra link points to.
REQUEST_ID_XCOM_KEY = "connect_request_id"

SUCCESS_STATUSES: tuple[str, ...] = (RequestStatus.APPROVED.value,)
FAILURE_STATUSES: tuple[str, ...] = (RequestStatus.FAILED.value, RequestStatus.REVOKED.value)


def portal_request_url(request_id: str) -> str:
    """The Connect portal page of a request (``[connect] portal_url``, declared by the provider)."""
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


class _ConnectActionOperator(ConnectLineageMixin, _ConnectOperator):
    """An operator over one action: its keywords, ``template_fields`` and docs come from a declaration.

    A subclass names its declaration (``arguments = PurchaseArgs``, :mod:`connect_provider.arguments`);
    its ``__init__`` is then made from it, keyword-only, with the declaration's required arguments
    required (so Airflow's ``default_args`` fill them as for any operator) and every argument kept
    as an attribute of the same name (``asset_params`` for the argument ``params``); its
    ``template_fields`` are the arguments declared templated; its docstring gets their
    ``:param:`` lines.
    """

    arguments: ClassVar[type[ActionArgs]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declaration = cls.__dict__.get("arguments")
        if declaration is None:
            return
        cls.template_fields = ("connect_conn_id", *declaration.template_fields())
        cls.__doc__ = f"{inspect.cleandoc(cls.__doc__ or '')}\n\n{declaration.param_docs()}"
        cls.__init__ = _declared_init(cls, declaration)  # type: ignore[method-assign]

    def action_arguments(self) -> ActionArgs:
        """The declaration filled from this operator's (rendered) attributes."""
        declaration = type(self).arguments
        return declaration(**{f.name: getattr(self, declaration.keyword(f)) for f in declaration.declared()})

    def run_action(self) -> ActionResult:
        """Run the operator's action with its arguments (validated there, before any call)."""
        return actions.run(self.hook, self.action_arguments())


def _declared_init(cls: type[_ConnectActionOperator], declaration: type[ActionArgs]) -> Callable[..., None]:
    """An ``__init__`` taking the declaration's arguments as keywords, the rest for the base class."""
    fields = declaration.declared()

    def __init__(self: _ConnectActionOperator, **kwargs: Any) -> None:
        values = {declaration.keyword(f): kwargs.pop(declaration.keyword(f), f.default) for f in fields}
        super(cls, self).__init__(**kwargs)
        for name, value in values.items():
            setattr(self, name, value)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for f in fields:
        default = inspect.Parameter.empty if f.metadata["required"] else f.default
        parameters.append(
            inspect.Parameter(declaration.keyword(f), inspect.Parameter.KEYWORD_ONLY, default=default)
        )
    parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    __init__.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


class _ConnectAssetRequestOperator(_ConnectActionOperator):
    """Create-or-reuse, then optionally follow, one asset request."""

    def __init__(
        self,
        *,
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
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = deferrable
        self.fail_on_inquiring = fail_on_inquiring

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
    """Create the purchase request of a new asset (subscription), or find the one a retry made."""

    arguments = PurchaseArgs


class ConnectChangeRequestOperator(_ConnectAssetRequestOperator):
    """Create (or find) a change request setting new item quantities of an asset."""

    arguments = ChangeArgs


class ConnectSuspendResumeRequestOperator(_ConnectAssetRequestOperator):
    """Create (or find) a suspend or resume request of an asset."""

    arguments = SuspendResumeArgs


class ConnectCancelRequestOperator(_ConnectAssetRequestOperator):
    """Create (or find) a cancel request, which terminates the asset once approved."""

    arguments = CancelArgs


class _ConnectVendorDecisionOperator(_ConnectActionOperator):
    """A vendor's decision on a request: checked against its status, idempotent on retry."""

    def execute(self, context: Context) -> dict[str, Any]:
        result = self.run_action()
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
    """Approve a pending request with an activation template (vendor side)."""

    arguments = ApproveArgs


class ConnectFailRequestOperator(_ConnectVendorDecisionOperator):
    """Fail a pending or inquiring request, with the reason the requester will read (vendor side)."""

    arguments = FailArgs


class ConnectInquireRequestOperator(_ConnectVendorDecisionOperator):
    """Ask the requester for more information: a pending request moves to inquiring (vendor side)."""

    arguments = InquireArgs
