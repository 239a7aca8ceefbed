"""The machinery of the event triggers: one poll per stream, a watermark per watched asset.

Airflow 3.3's triggerer runs one poll loop for every event trigger whose
:meth:`~airflow.triggers.base.BaseEventTrigger.shared_stream_key` is equal and hands each poll's
raw event (here a :class:`~connect_provider.triggers.feeds.Batch`) to every such trigger's
:meth:`filter_shared_stream` (``airflow/triggers/shared_stream.py``). The key is the connection
and the *server-side* filter (product, marketplace, request types) and the cadence; the statuses a
watcher fires on are its own, so a vendor's "new pending purchases" and an application's
"approved, failed, inquiring" of the same filter share one poll.

What each watcher has seen is its :class:`WatchState`: the watermark (the largest key whose
window it has read whole, in Connect's own clock), and the last status of the items it must
remember (the overlap window, for duplicates; items it still expects to change). It is kept in
the **asset state store** of the watched asset (Airflow 3.3, AIP-103: the triggerer injects
``self.asset_state_store`` into a watcher trigger; ``airflow/jobs/triggerer_job_runner.py``), under
a key of the trigger's own, so it survives a triggerer restart and two watchers of one asset do
not share it. Without a store (a trigger run outside the triggerer) it is kept in memory.

**Written only once durable.** The stream runs in Airflow's *ack mode*
(:meth:`create_shared_stream_producer`): the triggerer reports a poll as advanced once every
watcher moved past it and the events they made from it are stored in the metadata database. A
watcher writes the state it had after poll *n* only when poll *n* is advanced, so a crash between
firing an event and storing it replays that event (a duplicate: the usage export's manifest and
the vendor DAG's status check make it harmless) and never loses it.

**Watchers talk to their stream.** A watcher that joins with an older watermark (after a restart,
or added later) registers it with the stream's :class:`StreamHub`, an in-process object of the
triggerer's one event loop; the next poll reads from the earliest watermark registered, so its
catch-up is that one shared read, not a read of its own. A usage file a watcher tracked but no
longer sees open is named to the hub and read by id in the next poll.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer

from connect_provider.exceptions import ConnectError, ConnectValidationError
from connect_provider.triggers.feeds import AT_BASELINE, Batch, Feed, Observation, later, minus, parse_time

log = logging.getLogger(__name__)

#: Version of the stored state; a state of another version is ignored (the watcher starts again).
STATE_VERSION = 1
#: Seconds a poll waits after being woken (a watcher registered), so watchers starting together
#: are served by one poll.
SETTLE_SECONDS = 0.3
#: Seconds before a poll that failed on an error retrying cannot fix (a refused key, a 404) is
#: tried again: the trigger keeps running, loudly, rather than ending its watch.
PERMANENT_ERROR_WAIT = 300.0


# ------------------------------------------------------------------------------------ state


@dataclass
class WatchState:
    """What one watcher has seen (see the module docstring); JSON via :meth:`dump`/:meth:`load`."""

    started: bool = False
    watermark: str | None = None  # None once started: from the beginning of the collection
    known: dict[str, list[str]] = field(default_factory=dict)  # id -> [status, key]

    def dump(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, "started": self.started, "w": self.watermark, "known": self.known}

    @classmethod
    def load(cls, value: Any) -> WatchState | None:
        if not isinstance(value, Mapping) or value.get("v") != STATE_VERSION:
            return None
        known = value.get("known") if isinstance(value.get("known"), Mapping) else {}
        return cls(
            started=bool(value.get("started")),
            watermark=value.get("w") if isinstance(value.get("w"), str) else None,
            known={
                str(k): [str(v[0]), str(v[1])]
                for k, v in known.items()
                if isinstance(v, Sequence) and len(v) == 2
            },
        )

    def copy(self) -> WatchState:
        return WatchState(self.started, self.watermark, {k: list(v) for k, v in self.known.items()})


@dataclass(frozen=True)
class Rules:
    """How a watcher judges observations: the statuses it fires on and what it keeps in memory."""

    statuses: frozenset[str]
    terminal: frozenset[str]  # statuses an item never leaves
    overlap_seconds: float
    track_all_open: bool  # usage files: remember every non-terminal item (their changes move no key)


def apply(
    state: WatchState, batch: Batch, rules: Rules, since: str | None
) -> tuple[list[Observation], list[str]]:
    """Fold one poll into ``state``: the observations to fire on, and the ids to read again.

    An item fires when it is seen in one of ``rules.statuses`` for the first time, or again after
    being seen in another status. What exists when a watch starts (at or before its baseline, or
    older than ``since`` and never known) is remembered without firing. The watermark moves only
    over a window read whole from it.
    """
    baseline_time: Any = None
    if not state.started:
        if since is not None:
            state.started, state.watermark = True, since
        elif batch.baseline is not None:
            state.started, state.watermark = True, batch.baseline or None
            baseline_time = parse_time(batch.baseline) if batch.baseline else None
            if baseline_time is None:  # an empty collection at the start: everything after is news
                baseline_time = False
        else:
            return [], []  # a poll from before this watcher registered: wait for its baseline
    fire: list[Observation] = []
    floor = minus(state.watermark, rules.overlap_seconds)
    for obs in batch.items:
        previous = state.known.get(obs.id)
        if previous is not None and previous[0] == obs.status:
            previous[1] = obs.key
            continue
        key_time = parse_time(obs.key)
        if baseline_time is not None and baseline_time is not False:
            old = key_time is None or key_time <= baseline_time
        else:
            old = previous is None and floor is not None and key_time is not None and key_time < floor
        if obs.status in rules.statuses and not old:
            fire.append(obs)
        state.known[obs.id] = [obs.status, obs.key]
    if batch.window_read and _covers(batch.window_from, state.watermark):
        state.watermark = later(state.watermark, batch.window_max)
    reread: list[str] = []
    if batch.open_complete:
        present = {obs.id for obs in batch.items}
        reread = [
            i for i, (status, _) in state.known.items() if status not in rules.terminal and i not in present
        ]
    _prune(state, rules)
    return fire, reread


def _covers(window_from: str | None, watermark: str | None) -> bool:
    """True when a window read from ``window_from`` leaves no gap after ``watermark``."""
    if window_from is None:
        return True
    start, mark = parse_time(window_from), parse_time(watermark)
    return start is not None and mark is not None and start <= mark


def _prune(state: WatchState, rules: Rules) -> None:
    """Forget items older than the overlap window that cannot fire again for this watcher."""
    floor = minus(state.watermark, rules.overlap_seconds)
    if floor is None:
        return
    for item_id, (status, key) in list(state.known.items()):
        key_time = parse_time(key)
        if key_time is None or key_time >= floor:
            continue
        if status in rules.terminal:
            del state.known[item_id]
        elif not rules.track_all_open and status not in rules.statuses:
            # A request not in a watched status: if it comes back to one, firing is right anyway.
            del state.known[item_id]


# ------------------------------------------------------------------------------------ the stream


class StreamHub:
    """The in-process meeting point of one stream's poll and its watchers (see module docstring)."""

    def __init__(self) -> None:
        self.watchers: dict[int, WatchState] = {}
        self.fresh: set[int] = set()  # watchers waiting for a baseline
        self.reread: set[str] = set()
        self.durable_seq = 0
        self.registered = asyncio.Event()
        self.wake = asyncio.Event()
        self.last_window_from: str | None = None

    def register(self, token: int, state: WatchState) -> None:
        self.watchers[token] = state
        if not state.started:
            self.fresh.add(token)
        if not state.started or self._behind(state):
            self.wake.set()
        self.registered.set()

    def _behind(self, state: WatchState) -> bool:
        if self.last_window_from is None:
            return False
        mine, read = parse_time(state.watermark), parse_time(self.last_window_from)
        return mine is None or (read is not None and mine < read)

    def update(self, token: int, state: WatchState, reread: Iterable[str]) -> None:
        self.watchers[token] = state
        if state.started:
            self.fresh.discard(token)
        self.reread.update(reread)

    def unregister(self, token: int) -> None:
        self.watchers.pop(token, None)
        self.fresh.discard(token)
        if not self.watchers:
            self.registered.clear()

    def plan(self, overlap_seconds: float) -> tuple[bool, Any, bool, set[str]]:
        """(read a window?, from where, baseline needed?, ids to read again) for the next poll."""
        started = [s for s in self.watchers.values() if s.started]
        baseline = bool(self.fresh)
        reread, self.reread = self.reread, set()
        if not started:
            # Fresh watchers only: the window starts at the baseline the same poll reads.
            return baseline, AT_BASELINE, baseline, reread
        if any(s.watermark is None for s in started):
            return True, None, baseline, reread
        earliest = min(started, key=lambda s: parse_time(s.watermark) or 0).watermark  # type: ignore[arg-type]
        return True, minus(earliest, overlap_seconds), baseline, reread

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a watcher registered that this poll did not serve."""
        try:
            await asyncio.wait_for(self.wake.wait(), timeout=seconds)
            await asyncio.sleep(SETTLE_SECONDS)
        except asyncio.TimeoutError:
            pass
        self.wake.clear()


_HUBS: dict[tuple[int, Hashable], StreamHub] = {}


def hub_for(key: Hashable) -> StreamHub:
    """The hub of a stream key in this event loop (made on first use; the triggerer has one loop)."""
    slot = (id(asyncio.get_running_loop()), key)
    hub = _HUBS.get(slot)
    if hub is None:
        hub = _HUBS[slot] = StreamHub()
    return hub


async def poll_forever(
    feed: Feed, hub: StreamHub, *, poll_interval: float, overlap_seconds: float, label: str
) -> AsyncIterator[Batch]:
    """Poll the feed for as long as the stream lives; errors are logged and retried, never raised.

    A watcher must not end: an ended watcher stops its asset's DAGs silently. Errors retrying can
    fix (Connect unreachable, 5xx, 429, after the hook's own retries) are tried again at the next
    interval; others (a refused key, a wrong host) are logged as errors and tried again every
    :data:`PERMANENT_ERROR_WAIT` seconds, so fixing the connection resumes the watch.
    """
    await hub.registered.wait()
    await asyncio.sleep(SETTLE_SECONDS)
    while True:
        window, since, baseline, reread = hub.plan(overlap_seconds)
        try:
            batch = await feed.poll(window=window, since=since, baseline=baseline, reread_ids=reread)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            hub.reread.update(reread)
            retryable = isinstance(exc, ConnectError) and exc.retryable
            text = feed.hook.redact(f"{type(exc).__name__}: {exc}")
            level = logging.WARNING if retryable else logging.ERROR
            log.log(level, "%s: poll failed (%s); trying again", label, text)
            await asyncio.sleep(poll_interval if retryable else max(poll_interval, PERMANENT_ERROR_WAIT))
            continue
        if batch.window_read:
            hub.last_window_from = batch.window_from
        yield batch
        await hub.wait(poll_interval)


class _Producer(SharedStreamProducer):
    """Ack mode: the stream's polls as ``(batch, seq)``; an advanced seq is durable for every watcher."""

    def __init__(self, feed: Feed, hub: StreamHub, options: Mapping[str, Any], label: str) -> None:
        self.feed, self.hub, self.options, self.label = feed, hub, options, label

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:  # type: ignore[override]
        async for batch in poll_forever(self.feed, self.hub, label=self.label, **self.options):
            yield batch, batch.seq

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        self.hub.durable_seq = max(self.hub.durable_seq, *(int(item.broker_payload) for item in batch))

    async def aclose(self) -> None:
        self.feed.hook.close()


# ------------------------------------------------------------------------------------ the trigger


class ConnectEventTrigger(BaseEventTrigger):
    """Base of the Connect event triggers: serialization, the shared stream, the stored state.

    Subclasses say which feed to read (:meth:`make_feed` from the serialized kwargs), which of
    their kwargs are the server-side filter (:attr:`filter_fields`), and what an event carries
    (:meth:`event_payload`).
    """

    kind: ClassVar[str]
    filter_fields: ClassVar[tuple[str, ...]]
    terminal_statuses: ClassVar[frozenset[str]]
    track_all_open: ClassVar[bool]

    def __init__(
        self,
        *,
        connect_conn_id: str,
        statuses: Iterable[str],
        poll_interval: float,
        since: str | None,
        overlap_seconds: float,
    ) -> None:
        super().__init__()
        self.connect_conn_id = _conn_id(connect_conn_id)
        self.statuses = tuple(statuses)
        self.poll_interval = _positive("poll_interval", poll_interval, low=1.0)
        self.overlap_seconds = _positive("overlap_seconds", overlap_seconds, low=0.0)
        self.since = _since(since)

    # ---------------------------------------------------------------- serialization and keys
    def filter_kwargs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.filter_fields}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "connect_conn_id": self.connect_conn_id,
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.filter_kwargs().items()},
                "statuses": list(self.statuses),
                "poll_interval": self.poll_interval,
                "since": self.since,
                "overlap_seconds": self.overlap_seconds,
            },
        )

    @classmethod
    def stream_key_of(cls, kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
        """The shared stream of these kwargs: the connection, the server-side filter, the cadence."""
        filters = tuple(
            (name, tuple(v) if isinstance(v := kwargs.get(name), list | tuple) else v)
            for name in cls.filter_fields
        )
        return (
            "cloudblue_connect",
            cls.kind,
            kwargs.get("connect_conn_id"),
            filters,
            float(kwargs.get("poll_interval") or 0),
            float(kwargs.get("overlap_seconds") or 0),
        )

    def shared_stream_key(self) -> Hashable | None:
        return self.stream_key_of(self.serialize()[1])

    def state_key(self) -> str:
        """Where this watcher keeps its state in the asset's store: one key per trigger identity."""
        _, kwargs = self.serialize()
        identity = {k: v for k, v in kwargs.items() if k not in ("poll_interval",)}
        digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode(), usedforsecurity=False)
        return f"cloudblue_connect.{self.kind}.{digest.hexdigest()[:16]}"

    def rules(self) -> Rules:
        return Rules(
            frozenset(self.statuses), self.terminal_statuses, self.overlap_seconds, self.track_all_open
        )

    # ---------------------------------------------------------------- what subclasses define
    @classmethod
    def make_feed(cls, kwargs: Mapping[str, Any]) -> Feed:
        raise NotImplementedError

    def event_payload(self, obs: Observation, previous: str | None) -> dict[str, Any]:
        raise NotImplementedError

    # ---------------------------------------------------------------- the shared stream
    @classmethod
    def _options(cls, kwargs: Mapping[str, Any]) -> dict[str, float]:
        return {
            "poll_interval": float(kwargs["poll_interval"]),
            "overlap_seconds": float(kwargs["overlap_seconds"]),
        }

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> SharedStreamProducer:
        key = cls.stream_key_of(kwargs)
        return _Producer(cls.make_feed(kwargs), hub_for(key), cls._options(kwargs), _label(key))

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """The fast path, unused while :meth:`create_shared_stream_producer` is defined."""
        key = cls.stream_key_of(kwargs)
        feed = cls.make_feed(kwargs)
        try:
            async for batch in poll_forever(feed, hub_for(key), label=_label(key), **cls._options(kwargs)):
                yield batch
        finally:
            feed.hook.close()

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """This watcher's events from the stream's polls; its state stored once a poll is durable."""
        hub = hub_for(self.stream_key_of(self.serialize()[1]))
        async for event in self._watch(shared_stream, hub, durable=lambda seq: seq <= hub.durable_seq):
            yield event

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Outside a shared-stream triggerer: a poll loop of its own (state stored after each poll)."""
        kwargs = self.serialize()[1]
        key = self.stream_key_of(kwargs)
        hub = StreamHub()
        feed = self.make_feed(kwargs)
        try:
            stream = poll_forever(feed, hub, label=_label(key), **self._options(kwargs))
            async for event in self._watch(stream, hub, durable=lambda seq: True):
                yield event
        finally:
            feed.hook.close()

    async def _watch(
        self, stream: AsyncIterator[Batch], hub: StreamHub, durable: Any
    ) -> AsyncIterator[TriggerEvent]:
        state = await self._load_state()
        token = id(self)
        hub.register(token, state.copy())
        pending: deque[tuple[int, WatchState]] = deque()
        rules = self.rules()
        try:
            async for batch in stream:
                await self._store_durable(pending, durable)  # earlier polls advanced since
                before = {k: v[0] for k, v in state.known.items()}
                fire, reread = apply(state, batch, rules, self.since)
                hub.update(token, state.copy(), reread)
                pending.append((batch.seq, state.copy()))
                for obs in fire:
                    yield TriggerEvent(self.event_payload(obs, before.get(obs.id)))
                # Standalone (every poll durable): stored once its events were handed over.
                await self._store_durable(pending, durable)
        finally:
            hub.unregister(token)

    # ---------------------------------------------------------------- the asset state store
    def _accessors(self) -> list[Any]:
        """The per-asset accessors of the watched assets (one trigger may watch several)."""
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return []
        per_asset = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
        return per_asset or [store]

    async def _load_state(self) -> WatchState:
        """The stored state; of several watched assets, the one that started earliest."""
        found: list[WatchState] = []
        for accessor in self._accessors():
            try:
                value = await accessor.aget(self.state_key())
            except Exception as exc:  # the store is unreachable: start as if new, say so
                log.warning("%s: could not read the watch state (%s); starting from now", self, exc)
                continue
            state = WatchState.load(value)
            if state is not None:
                found.append(state)
        if not found:
            return WatchState()
        started = [s for s in found if s.started]
        if not started:
            return found[0]
        return min(started, key=lambda s: (s.watermark is not None, parse_time(s.watermark) or 0))  # type: ignore[arg-type]

    async def _store_durable(self, pending: deque[tuple[int, WatchState]], durable: Any) -> None:
        """Write the latest state whose poll is durable; drop the older ones."""
        chosen: WatchState | None = None
        while pending and durable(pending[0][0]):
            chosen = pending.popleft()[1]
        if chosen is None:
            return
        value = chosen.dump()
        for accessor in self._accessors():
            try:
                await accessor.aset(self.state_key(), value)
            except Exception as exc:  # keep watching; the next durable poll writes again
                log.warning("%s: could not store the watch state (%s)", self, exc)


# ------------------------------------------------------------------------------------ checks


def _label(key: tuple[Any, ...]) -> str:
    return f"Connect {key[1]} watch ({key[2]}, {dict(key[3])})"


def _conn_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConnectValidationError("connect_conn_id", "give the id of a cloudblue_connect connection")
    return value.strip()


def _positive(name: str, value: Any, *, low: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConnectValidationError(name, f"{value!r} is not a number of seconds") from None
    if not number >= low or number == float("inf"):
        raise ConnectValidationError(name, f"{value!r}: give a number of seconds of at least {low:g}")
    return number


def _since(value: Any) -> str | None:
    if value is None or value == "":
        return None
    parsed = parse_time(value)
    if parsed is None or (isinstance(value, str) and "T" not in value):
        raise ConnectValidationError(
            "since", f"{value!r} is not an ISO 8601 time such as 2026-10-01T00:00:00+00:00"
        )
    return parsed.isoformat()


def check_choices(
    name: str, values: Any, allowed: Iterable[str], *, empty_ok: bool = False
) -> tuple[str, ...]:
    """``values`` (a list or a comma-separated string) checked against ``allowed``, in order, once each."""
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    try:
        result = tuple(dict.fromkeys(str(v).strip().lower() for v in values))
    except TypeError:
        raise ConnectValidationError(name, f"{values!r}: give a list of values") from None
    known = set(allowed)
    unknown = [v for v in result if v not in known]
    if unknown or (not result and not empty_ok):
        raise ConnectValidationError(
            name, f"{unknown or 'nothing given'}: give values among {', '.join(sorted(known))}"
        )
    return result


def check_id(name: str, value: Any, prefix: str) -> str | None:
    """An optional Connect id (``PRD-...``, ``MP-...``) checked for its shape before any call."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if not text.startswith(prefix) or any(c in text for c in "'\"(),& "):
        raise ConnectValidationError(name, f"{value!r} is not a Connect id of the form {prefix}...")
    return text
