"""Wait for a Connect request (created elsewhere, or by an operator that did not wait) to end."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf

from connect_provider import validation as v
from connect_provider.actions import ConnectRequestFailedError
from connect_provider.config import DEFAULT_CONN_ID
from connect_provider.exceptions import ConnectError
from connect_provider.operators.requests import REQUEST_ID_XCOM_KEY, ConnectRequestLink, portal_request_url
from connect_provider.triggers.requests import ConnectRequestTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from connect_provider.hooks.connect import ConnectHook


class ConnectRequestSensor(BaseSensorOperator):
    """Succeed when a request reaches one of ``target_statuses``; fail on ``failure_statuses``.

    A failure status is the vendor's answer, so the task fails without retries
    (:class:`ConnectRequestFailedError`). With ``deferrable=True`` the wait runs in the triggerer
    (:class:`ConnectRequestTrigger`), every ``poke_interval`` seconds until ``timeout``.

    :param request_id: the request ``PR-...`` to watch (templated).
    :param target_statuses: statuses that end the wait successfully (default ``approved``).
    :param failure_statuses: statuses that fail the task (default ``failed`` and ``revoked``, the
        two final statuses that are not a success: connect-extension-for-cb-commerce's request
        tracker treats both as failures, cbcext/services/fulfillment/request_tracker.py).
    :param connect_conn_id: the Connect connection.
    :param deferrable: wait in the triggerer instead of on a worker.

    XCom: ``{"request_id", "type", "status", "asset_id", "asset_external_id"}``.
    """

    template_fields: Sequence[str] = ("connect_conn_id", "request_id")
    operator_extra_links = (ConnectRequestLink(),)

    def __init__(
        self,
        *,
        request_id: str,
        target_statuses: Iterable[str] = ("approved",),
        failure_statuses: Iterable[str] = ("failed", "revoked"),
        connect_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request_id = request_id
        self.target_statuses = tuple(target_statuses)
        self.failure_statuses = tuple(failure_statuses)
        overlap = set(self.target_statuses) & set(self.failure_statuses)
        if not self.target_statuses:
            raise ValueError("target_statuses must name at least one status")
        if overlap:
            raise ValueError(f"statuses {sorted(overlap)} are both target and failure statuses")
        self.connect_conn_id = connect_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> ConnectHook:
        from connect_provider.hooks.connect import ConnectHook

        return ConnectHook(self.connect_conn_id)

    def _xcom(self, request: dict[str, Any]) -> dict[str, Any]:
        asset = request.get("asset") or {}
        return {
            "request_id": self.request_id,
            "type": request.get("type"),
            "status": request.get("status"),
            "asset_id": asset.get("id"),
            "asset_external_id": asset.get("external_id"),
        }

    def _fail(self, status: str | None, reason: str | None) -> ConnectRequestFailedError:
        return ConnectRequestFailedError(
            f"Request {self.request_id} is {status}" + (f": {reason}" if reason else "."),
            request_id=self.request_id,
            status=str(status),
            reason=reason,
        )

    def execute(self, context: Context) -> Any:
        self.request_id = v.request_id("request_id", self.request_id)
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is not None:
            ti.xcom_push(key=REQUEST_ID_XCOM_KEY, value=self.request_id)
        self.log.info("Watching request %s: %s", self.request_id, portal_request_url(self.request_id))
        if not self.deferrable:
            return super().execute(context)
        # One look first: no deferral (and no triggerer round trip) when the request already ended.
        request = self.hook.get_request(self.request_id)
        status = request.get("status")
        if status in self.target_statuses:
            return self._xcom(request)
        if status in self.failure_statuses:
            raise self._fail(status, request.get("reason"))
        self.defer(
            trigger=ConnectRequestTrigger(
                request_id=self.request_id,
                connect_conn_id=self.connect_conn_id,
                target_statuses=self.target_statuses,
                failure_statuses=self.failure_statuses,
                poll_interval=self.poke_interval,
                end_time=time.time() + self.timeout,
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        request = self.hook.get_request(self.request_id)
        status = request.get("status")
        if status in self.target_statuses:
            return PokeReturnValue(is_done=True, xcom_value=self._xcom(request))
        if status in self.failure_statuses:
            raise self._fail(status, request.get("reason"))
        self.log.info("Request %s is %s.", self.request_id, status)
        return False

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        kind = event.get("status")
        if kind == "success":
            return self._xcom(self.hook.get_request(self.request_id))
        if kind == "failed":
            raise self._fail(event.get("request_status"), event.get("reason"))
        if kind == "timeout":
            raise ConnectError(
                f"Request {self.request_id} is still {event.get('request_status')} after {self.timeout:g} s."
            )
        raise ConnectError(event.get("message") or f"Watching request {self.request_id} failed: {event!r}")
