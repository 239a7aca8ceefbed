"""Injected failures: rate limits, server errors, dropped connections and latency.

A spec reads ``429=0.1,500=0.05,drop=0.02,latency_ms=20,seed=7``: probabilities per public call,
a fixed added latency, and a seed that makes the sequence of decisions repeatable.

Dropping needs the socket: an ASGI application never sees its connection, so the server runs
with ``DroppingProtocol`` (a uvicorn HTTP protocol that records each connection's transport by
client address) and the fault middleware aborts that transport, sending no response byte at all.
For POSTs the request is handled (and committed) first, which is the case that makes writes
ambiguous for clients: the create happened, the answer never came.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass
from typing import Any

KINDS = ("429", "500", "drop")


@dataclass(frozen=True)
class FaultSpec:
    p429: float = 0.0
    p500: float = 0.0
    pdrop: float = 0.0
    latency_ms: float = 0.0
    seed: int | None = None

    @property
    def active(self) -> bool:
        return bool(self.p429 or self.p500 or self.pdrop or self.latency_ms)


def parse_spec(text: str | None) -> FaultSpec:
    """Parse ``429=p,500=p,drop=p,latency_ms=N,seed=N``; ``""`` means no faults."""
    values: dict[str, Any] = {}
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise ValueError(f"fault {part!r}: expected key=value")
        if key in ("429", "500", "drop"):
            try:
                p = float(value)
            except ValueError:
                raise ValueError(f"fault {key}: {value!r} is not a probability") from None
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"fault {key}: probability {p} is outside 0..1")
            values[{"429": "p429", "500": "p500", "drop": "pdrop"}[key]] = p
        elif key == "latency_ms":
            try:
                ms = float(value)
            except ValueError:
                raise ValueError(f"fault latency_ms: {value!r} is not a number") from None
            if ms < 0:
                raise ValueError("fault latency_ms: must be >= 0")
            values["latency_ms"] = ms
        elif key == "seed":
            try:
                values["seed"] = int(value)
            except ValueError:
                raise ValueError(f"fault seed: {value!r} is not an integer") from None
        else:
            raise ValueError(f"fault {key!r}: unknown; use 429, 500, drop, latency_ms or seed")
    spec = FaultSpec(**values)
    if spec.p429 + spec.p500 + spec.pdrop > 1.0:
        raise ValueError("faults: 429 + 500 + drop probabilities add up to more than 1")
    return spec


class Faults:
    """The current spec and its random source; one decision per public call."""

    def __init__(self, spec: FaultSpec | None = None) -> None:
        self._lock = threading.Lock()
        self.set(spec or FaultSpec())

    def set(self, spec: FaultSpec) -> None:
        with self._lock:
            self.spec = spec
            self._rng = random.Random(spec.seed)

    def decide(self) -> str | None:
        spec = self.spec
        if not (spec.p429 or spec.p500 or spec.pdrop):
            return None
        with self._lock:
            r = self._rng.random()
        if r < spec.p429:
            return "429"
        if r < spec.p429 + spec.p500:
            return "500"
        if r < spec.p429 + spec.p500 + spec.pdrop:
            return "drop"
        return None


# ------------------------------------------------------------------------- dropping connections
_TRANSPORTS: dict[tuple[str, int], asyncio.BaseTransport] = {}


def drop_connection(client: Any) -> bool:
    """Abort the TCP connection of ``client`` (the ASGI scope's ``client``); True if it was found."""
    if not client:
        return False
    transport = _TRANSPORTS.get((client[0], client[1]))
    if transport is None:
        return False
    transport.abort()
    return True


def dropping_protocol_class(base: type) -> type:
    """A subclass of a uvicorn HTTP protocol class whose connections the app can abort."""

    class DroppingProtocol(base):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            if peer:
                self._sandbox_peer = (peer[0], peer[1])
                _TRANSPORTS[self._sandbox_peer] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            peer = getattr(self, "_sandbox_peer", None)
            if peer is not None:
                _TRANSPORTS.pop(peer, None)
            super().connection_lost(exc)

    DroppingProtocol.__name__ = f"Dropping{base.__name__}"
    return DroppingProtocol


def default_protocol_class() -> type:
    """httptools when installed (faster), else h11, with drop support either way."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return dropping_protocol_class(HttpToolsProtocol)
    except ImportError:  # pragma: no cover - httptools is optional in uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return dropping_protocol_class(H11Protocol)
