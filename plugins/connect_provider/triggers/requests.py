"""Follow a Connect request in the triggerer, so a waiting task holds no worker slot.

The trigger polls ``GET /requests/{id}`` through :meth:`ConnectHook.aget_request`, the hook's
async path, which looks the connection up with Airflow's async-safe API: a trigger must never call
the synchronous connection lookup inside the triggerer's event loop. It fires exactly one event:

``{"status": "success" | "failed" | "timeout" | "error", "request_id", "request_status", "reason",
"message"}``

* ``success``: the request reached one of ``target_statuses`` (default ``approved``);
* ``failed``: it reached one of ``failure_statuses`` (default ``failed``; the operators add
  ``inquiring`` when told to fail on it); ``reason`` is Connect's reason;
* ``timeout``: ``end_time`` (a UNIX timestamp, so a triggerer restart does not extend the wait)
  passed first;
* ``error``: Connect could not be asked (after the hook's own retries); ``message`` says why,
  never with the API key (even when the server echoed it: the hook scrubs its errors against the
  connection's key, on this async path as on the sync one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from connect_provider.config import DEFAULT_CONN_ID


class ConnectRequestTrigger(BaseTrigger):
    """Poll a Connect request until it reaches a target or failure status, or ``end_time``.

    :param request_id: the request to follow (``PR-...``).
    :param connect_conn_id: the Airflow connection of the Connect API.
    :param target_statuses: statuses that end the wait successfully.
    :param failure_statuses: statuses that end the wait with a failure.
    :param poll_interval: seconds between two reads of the request.
    :param end_time: UNIX time after which the trigger gives up (``None``: wait for ever).
    """

    def __init__(
        self,
        *,
        request_id: str,
        connect_conn_id: str = DEFAULT_CONN_ID,
        target_statuses: Iterable[str] = ("approved",),
        failure_statuses: Iterable[str] = ("failed",),
        poll_interval: float = 10.0,
        end_time: float | None = None,
    ) -> None:
        super().__init__()
        self.request_id = request_id
        self.connect_conn_id = connect_conn_id
        self.target_statuses = tuple(target_statuses)
        self.failure_statuses = tuple(failure_statuses)
        self.poll_interval = float(poll_interval)
        self.end_time = end_time

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "connect_conn_id": self.connect_conn_id,
                "target_statuses": list(self.target_statuses),
                "failure_statuses": list(self.failure_statuses),
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    def _event(
        self, status: str, request_status: str | None, reason: str | None, message: str
    ) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "request_id": self.request_id,
                "request_status": request_status,
                "reason": reason,
                "message": message,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Imported here: the hook module is only needed where the trigger actually runs.
        from connect_provider.hooks.connect import ConnectHook

        hook = ConnectHook(self.connect_conn_id)
        while True:
            try:
                request = await hook.aget_request(self.request_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure to read ends the wait with a clear event
                # The hook's errors are scrubbed of the key already; the event is stored in the
                # metadata DB and shown in the task's log, so its text is scrubbed once more.
                message = hook.redact(f"Could not read request {self.request_id}: {exc}")
                yield self._event("error", None, None, message)
                return
            status = request.get("status")
            if status in self.target_statuses:
                yield self._event(
                    "success", status, request.get("reason"), f"Request {self.request_id} is {status}."
                )
                return
            if status in self.failure_statuses:
                reason = request.get("reason")
                message = f"Request {self.request_id} is {status}" + (f": {reason}" if reason else ".")
                yield self._event("failed", status, reason, message)
                return
            now = time.time()
            if self.end_time is not None and now >= self.end_time:
                yield self._event(
                    "timeout", status, None, f"Request {self.request_id} is still {status} after the timeout."
                )
                return
            delay = self.poll_interval
            if self.end_time is not None:
                delay = min(delay, max(self.end_time - now, 0.0))
            self.log.debug("Request %s is %s; next look in %.1f s.", self.request_id, status, delay)
            await asyncio.sleep(delay)
