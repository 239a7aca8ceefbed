"""The sandbox's routes, one router per resource: Connect's public API and the ``/_sandbox`` admin API."""

from __future__ import annotations

from fastapi import APIRouter

from ..faults import Faults
from ..store import Store
from . import admin, catalogue, requests, usage


def routers(store: Store, faults: Faults, max_limit: int) -> list[APIRouter]:
    return [
        requests.router(store, max_limit),
        catalogue.router(store, max_limit),
        usage.router(store, max_limit),
        admin.router(store, faults),
    ]
