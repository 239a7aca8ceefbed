"""The sandbox's state and Connect's subscription-request lifecycle, behind one lock.

uvicorn runs sync endpoints in a thread pool, so every read and write goes through ``Store.lock``.
Objects are kept in an internal shape (ids pointing at each other) and rendered to Connect's
response shapes on the way out, so a change to an asset shows in every request that embeds it.

The store is made of parts, one module each: :mod:`~connect_sandbox.state` (the objects, the
lock, the clock of events, request bookkeeping), :mod:`~connect_sandbox.rendering` (Connect's
shapes), :mod:`~connect_sandbox.purchases` and :mod:`~connect_sandbox.lifecycle` (requests and
the vendor's decisions), :mod:`~connect_sandbox.usage_files` (usage files and their moves).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from . import seed
from .errors import ApiError, bad, not_found
from .lifecycle import Lifecycle
from .usage_files import FIRST_GENERATED_FILE, UsageFiles

__all__ = ["ApiError", "Store"]

SEEDS = ("demo", "empty")
# The seeded usage files were created at these minutes after seed.SEED_EPOCH, one a minute.
SEEDED_FILES_MINUTE = 24 * 60 * 40


class Store(Lifecycle, UsageFiles):
    """Everything the sandbox serves, from a seed (:mod:`connect_sandbox.seed`)."""

    def __init__(
        self,
        seed_name: str = "demo",
        auto_approve_delay: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.initial_seed = seed_name
        self.initial_delay = float(auto_approve_delay)
        self.usage_records_arg = 0
        self.reset()

    # ----------------------------------------------------------------------------- state
    def reset(self, seed_name: str | None = None, auto_approve_delay: float | None = None) -> None:
        """Back to a seed; what is not given comes from the start-up flags, not the last reset."""
        seed_name = self.initial_seed if seed_name is None else seed_name
        if seed_name not in SEEDS:
            raise bad(f"seed: unknown seed {seed_name!r}; use 'demo' or 'empty'.")
        with self.lock:
            self.seed_name = seed_name
            self.auto_approve_delay = (
                self.initial_delay if auto_approve_delay is None else float(auto_approve_delay)
            )
            cat = seed.catalogue()
            self.products = cat["products"]
            self.hubs = cat["hubs"]
            self.marketplaces = cat["marketplaces"]
            self.connections = cat["connections"]
            self.listings = cat["listings"]
            self.tier_accounts = {}
            self.assets = {}
            self.requests = {}
            self.usage_files = {}
            self.record_sources = {}
            self.asset_counter = itertools.count(1)
            self.tier_counter = itertools.count(1)
            self.file_counter = itertools.count(FIRST_GENERATED_FILE)
            self.stats_created = Counter()
            self.calls: Counter[str] = Counter()
            # Calls served now are not forgotten by a reset: only the most at once starts again.
            self.in_flight: int = getattr(self, "in_flight", 0)
            self.max_in_flight = self.in_flight
            self.faults: Counter[str] = Counter({"429": 0, "500": 0, "drop": 0})
            if self.seed_name == "demo":
                self._load_demo()
            if self.usage_records_arg:
                self.add_usage_file(self.usage_records_arg)

    def _load_demo(self) -> None:
        self.tier_accounts = seed.tier_accounts()
        self.tier_counter = itertools.count(len(self.tier_accounts) + 1)
        for a in seed.demo_assets():
            purchase_status = a.pop("purchase_status")
            self.assets[a["id"]] = a
            next(self.asset_counter)
            product = self.products[a["product_id"]]
            self._add_request(
                a,
                "purchase",
                [self._request_item(gid, q, 0) for gid, q in a["items"].items()],
                status=purchase_status,
                created=a["created"],
                updated=a["updated"],
                auto=False,
                template=None if purchase_status == "pending" else product["templates"][0],
            )
        for fid, product_id, status, pfrom, pto, count in seed.DEMO_USAGE_FILES:
            created = seed.seed_time(SEEDED_FILES_MINUTE + len(self.usage_files))
            self._create_usage_file(fid, product_id, status, (pfrom, pto), count, created=created)

    # ----------------------------------------------------------------------------- listing
    def list_objects(self, kind: str, product_id: str | None = None) -> list[dict]:
        """Everything of one kind, rendered; filtering and paging happen in the app."""
        with self.lock:
            self.auto_decide()
            if kind in ("connections", "templates"):
                return self._of_product(kind, self.product(product_id or ""))
            render: Callable[[str], dict] | None = {
                "requests": self.render_request,
                "assets": self.render_asset,
                "usage_files": self.render_usage_file,
            }.get(kind)
            if render is not None:
                return [render(oid) for oid in getattr(self, kind)]
            if kind in ("tier_accounts", "marketplaces", "hubs"):
                return list(getattr(self, kind).values())
            raise KeyError(kind)

    def _of_product(self, kind: str, product: dict) -> list[dict]:
        if kind == "templates":
            return list(product["templates"])
        ids = [cid for cid, c in self.connections.items() if c["product_id"] == product["id"]]
        return [self.render_connection(cid) for cid in ids]

    def product(self, product_id: str) -> dict:
        p = self.products.get(product_id)
        if p is None:
            raise not_found("Product", product_id)
        return p

    def get(self, kind: str, oid: str, **kw: Any) -> dict:
        with self.lock:
            self.auto_decide()
            if kind == "requests":
                return self.render_request(oid)
            if kind == "assets":
                return self.render_asset(oid, **kw)
            if kind == "usage_files":
                return self.render_usage_file(oid, detail=True)
            raise KeyError(kind)

    # ----------------------------------------------------------------------------- stats
    def stats(self) -> dict:
        with self.lock:
            return {
                "requests_created": sum(self.stats_created.values()),
                "requests_by_type": dict(self.stats_created),
                "calls": sum(self.calls.values()),
                "calls_by_route": dict(self.calls),
                "faults_injected": dict(self.faults),
                "max_in_flight": self.max_in_flight,
            }

    def count_call(self, route: str) -> None:
        with self.lock:
            self.calls[route] += 1

    def call_started(self) -> None:
        """One public call more being served; the most at once since the reset is kept.

        Why: a client that claims to run N calls side by side can be checked from the stats
        (``max_in_flight``), with no timing in the test.
        """
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def call_finished(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def count_fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] += 1
