"""What the store's parts share: the objects, one lock, and the clock that stamps events.

:class:`connect_sandbox.store.Store` is made of parts (rendering, purchases, the request
lifecycle, usage files), each a class of its own module over this state, so that each module
reads as one concern while every part sees the same objects under the same lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable

from .usage import RecordSource, iso_of_us

OPEN_REQUEST_STATUSES = ("draft", "tiers_setup", "pending", "inquiring", "scheduled", "revoking")
DECIDED_STATUSES = ("approved", "failed", "revoked")
# Requests of assets whose external id starts with this are never decided by the demo vendor: a
# vendor-side DAG (or test) decides them through the public API.
MANUAL_PREFIX = "manual-"


class State:
    """The sandbox's objects in their internal shape (ids pointing at each other)."""

    lock: threading.RLock
    #: Monotonic seconds, for the vendor's decision delays (tests may pass their own).
    clock: Callable[[], float]
    seed_name: str
    auto_approve_delay: float
    products: dict[str, dict]
    hubs: dict[str, dict]
    marketplaces: dict[str, dict]
    connections: dict[str, dict]
    listings: set[tuple[str, str]]
    tier_accounts: dict[str, dict]
    assets: dict[str, dict]
    requests: dict[str, dict]
    usage_files: dict[str, dict]
    record_sources: dict[str, RecordSource]
    asset_counter: itertools.count
    tier_counter: itertools.count
    file_counter: itertools.count
    stats_created: Counter[str]
    #: The last event time handed out (microseconds since the epoch); see :meth:`now_us`.
    last_event_us: int = 0

    def now_us(self) -> int:
        """Now, in microseconds since the epoch, strictly later than every time handed out before.

        Events stamped one after another under the lock (two requests, a usage file and its move)
        therefore sort in the order they happened, whatever the wall clock's resolution; a usage
        file's records take the microseconds after their file's creation (see
        :meth:`connect_sandbox.usage.RecordSource.created_time`), which :meth:`reserve` skips.
        """
        self.last_event_us = max(time.time_ns() // 1000, self.last_event_us + 1)
        return self.last_event_us

    def now(self) -> str:
        """:meth:`now_us` as ISO 8601 text, UTC with microseconds (Connect's documents show whole
        seconds; the sandbox's own events have always carried microseconds)."""
        return iso_of_us(self.now_us())

    def reserve(self, last_us: int) -> None:
        """No event is stamped at or before ``last_us`` from now on."""
        self.last_event_us = max(self.last_event_us, last_us)

    # ----------------------------------------------------------------------------- requests
    def _next_request_id(self, a: dict) -> str:
        a["_requests"] = a.get("_requests", 0) + 1
        return f"PR-{a['id'].removeprefix('AS-')}-{a['_requests']:03d}"

    @staticmethod
    def _request_item(gid: str, quantity: int, old_quantity: int) -> dict:
        """A request's item, kept as numbers (rendered to Connect's strings on the way out)."""
        return {"global_id": gid, "quantity": quantity, "old_quantity": old_quantity}

    def _add_request(
        self,
        a: dict,
        rtype: str,
        items: list[dict],
        *,
        status: str = "pending",
        created: str | None = None,
        updated: str | None = None,
        auto: bool = True,
        template: dict | None = None,
        note: str = "",
        previous_status: str | None = None,
        reason: str = "",
    ) -> dict:
        rid = self._next_request_id(a)
        ts = created or self.now()
        previous = self._latest_request_of(a["id"], ("approved",))
        r = {
            "id": rid,
            "type": rtype,
            "status": status,
            "asset_id": a["id"],
            "marketplace_id": a["marketplace_id"],
            "items": items,
            "note": note,
            "reason": reason,
            "created": ts,
            "updated": updated or ts,
            # Not nullable in the spec; Connect fills it from creation until a decision sets it.
            "effective_date": ts,
            "planned_date": None,
            "activation_key": template["body"] if template else "",
            "template": template_ref(template) if template else None,
            "previous_approved_request": previous["id"] if previous else None,
            "created_mono": self.clock(),
            "decided": not auto or status in DECIDED_STATUSES or _manual(a),
            "previous_asset_status": previous_status,
        }
        self.requests[rid] = r
        return r

    def _open_request_of(self, aid: str) -> dict | None:
        for r in self.requests.values():
            if r["asset_id"] == aid and r["status"] in OPEN_REQUEST_STATUSES:
                return r
        return None

    def _latest_request_of(
        self, aid: str, statuses: tuple[str, ...] | None = None, rtype: str | None = None
    ) -> dict | None:
        """The asset's most recent request (in creation order), optionally of these statuses/type."""
        for r in reversed(list(self.requests.values())):
            if r["asset_id"] != aid:
                continue
            if (statuses is None or r["status"] in statuses) and (rtype is None or r["type"] == rtype):
                return r
        return None

    def _existing_request_params(self, a: dict, r: dict) -> dict:
        """The ``params`` of a 409: the request that already exists, and its asset."""
        return {
            "request_id": r["id"],
            "asset_id": a["id"],
            "request_status": r["status"],
            "asset_status": a["status"],
        }

    def _state_request(self, a: dict) -> dict:
        """The request an asset's current state comes from: its open one, else its latest approved one."""
        found = (
            self._open_request_of(a["id"])
            or self._latest_request_of(a["id"], ("approved",))
            or self._latest_request_of(a["id"])
        )
        assert found is not None  # every asset is made by its purchase request
        return found


def _manual(a: dict) -> bool:
    """True when the demo vendor leaves the asset's requests to someone else (``manual-...``)."""
    return (a["external_id"] or "").startswith(MANUAL_PREFIX)


def template_ref(template: dict) -> dict:
    """A template as a request embeds it: ``{id, name, message}`` (connect-reports ff_request.json)."""
    return {"id": template["id"], "name": template["name"], "message": template["body"]}
