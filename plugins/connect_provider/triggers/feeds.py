"""What one poll of Connect sees, for the event triggers: usage files and requests, as observations.

A *feed* reads one collection for one server-side filter (a connection, a product, a marketplace,
request types) and turns what it read into a :class:`Batch` of :class:`Observation` (id, status,
the feed's key, when the status was entered). It keeps no memory of its own between polls: what a
watcher has seen lives in :mod:`connect_provider.triggers.watch`, so one feed serves every watcher
of the same filter (Airflow's shared poll stream) whatever their statuses and progress.

Why the reads are shaped this way (Connect's RQL as the sandbox enforces it, from the spec v37,
``include/connect_sandbox/filter_table.py``):

* ``GET /usage/files`` declares ``created.at`` with ``ge gt le lt`` and ``ordering(created.at, id)``,
  and no filter on a change time at all. New files are read by ``ge(created.at, W)``; a status
  change of an older file is seen by listing the files not yet ``closed``/``deleted``
  (``out(status,(closed,deleted))``, every poll) and, for a file that left that list, by reading it
  again by id (``in(id,(...))``). CloudBlue's Workato connector reads only
  ``ge(created.at, cursor)`` with ``in(status,(...))`` (ivan-pencic-devtech/connect-extension-workato
  @ e3bf775 : cloudblue_connect.custom_adapter.rb, ``new_usage_files``), so it never sees a file
  enter a status after its creation poll, nor one created in another status.
* ``GET /requests`` declares ``updated`` with ``ge`` and ``ordering(updated, created)``; ``id`` is
  not orderable. A request's ``updated`` moves with every change, its status included, so
  ``ge(updated, W)`` finds every request that changed. Workato reads ``gt(updated, cursor)``, the
  cursor the last item's ``updated`` of one unordered page (same file, ``new_or_updated_asset_request``);
  Zapier reads every page unordered and keeps ``sha1(id + updated)`` as the dedup key
  (cloudblue/connect-fulfillment-zapier-app @ d6b7645 : lib/triggers/assetRequests/new_updated_requests.js).
* **Pages by key, not by offset.** A request updated while the pages are read moves to the end of
  an ``ordering(updated)`` list; with offsets every later item would shift by one and one would be
  skipped. Each page here starts at ``ge(key, <last key read>)`` (re-reading the items of that key,
  which the watchers drop as duplicates); only a page whose items all share one key continues by
  offset within that key.
* **Ties and clock skew.** Connect stamps whole seconds (the real documents in
  ``tests/fixtures/real/``), so many items share a key: the bound is ``ge``, never ``gt``, and the
  watchers deduplicate by id. Connect's own servers stamp the keys, so the triggerer's clock is
  never compared with them; a key stamped a little before an earlier-committed one (another
  Connect server, a long transaction) is still read because every window starts ``overlap``
  seconds before the watermark.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connect_provider.enums import RequestStatus, UsageFileStatus
from connect_provider.rql import R

if TYPE_CHECKING:
    from connect_provider.hooks.connect import ConnectHook

#: Usage file statuses a file never leaves (the usage module's state machine; a rejected or
#: invalid file may be uploaded again, so those are not terminal).
TERMINAL_FILE_STATUSES = frozenset({UsageFileStatus.CLOSED.value, UsageFileStatus.DELETED.value})
#: Request statuses a request never leaves.
FINAL_REQUEST_STATUSES = frozenset(s.value for s in RequestStatus.terminal_statuses())
#: Items per page of a poll: the largest page the hook allows, so ties rarely fill a page.
POLL_PAGE_SIZE = 1000
#: Ids per ``in(id,(...))`` read (keeps the URL well under 8 KB).
IDS_PER_CALL = 100
#: The event of ``events`` that a usage file records when it enters each status (the usage
#: module's events; ``processing`` and ``ready`` have none, their time is the upload's).
FILE_STATUS_EVENT = {
    "draft": "created",
    "uploading": "uploaded",
    "uploaded": "uploaded",
    "processing": "uploaded",
    "invalid": "uploaded",
    "ready": "uploaded",
    "pending": "submitted",
    "accepted": "accepted",
    "rejected": "rejected",
    "closed": "closed",
    "deleted": "deleted",
}

_SEQ = itertools.count(1)
#: ``since`` of a poll whose window starts at the baseline that same poll reads.
AT_BASELINE = "baseline"


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 time as Connect sends it (``...+00:00`` or ``...Z``), aware; None if absent/bad."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _dig(obj: Mapping[str, Any], *path: str) -> Any:
    for part in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)  # type: ignore[assignment]
    return obj


@dataclass(frozen=True)
class Observation:
    """One item as one poll saw it: enough to decide whether it is news, and to say so in an event."""

    id: str
    status: str
    key: str  # the feed's key as Connect sent it: created.at (usage files) or updated (requests)
    changed_at: str | None  # when Connect says the item entered its status
    fields: Mapping[str, Any] = field(default_factory=dict)  # ids carried by the event


@dataclass(frozen=True)
class Batch:
    """What one poll read, shared read-only by every watcher of the stream.

    ``window_from`` is the inclusive lower bound of the key window read (``None``: the window
    started at the beginning of the collection; ``window_read`` False: no window was read);
    ``window_max`` the largest key in it. ``baseline`` is the newest key when the poll was asked
    for one (for watchers that start now), ``""`` when the collection was empty.
    ``open_complete`` says ``items`` hold every item not yet in a terminal status (usage files).
    """

    seq: int
    items: tuple[Observation, ...]
    window_read: bool = False
    window_from: str | None = None
    window_max: str | None = None
    baseline: str | None = None
    open_complete: bool = False


def later(a: str | None, b: str | None) -> str | None:
    """The later of two keys (either may be None)."""
    if a is None:
        return b
    if b is None:
        return a
    ta, tb = parse_time(a), parse_time(b)
    if ta is None or tb is None:
        return a if tb is None else b
    return a if ta >= tb else b


def minus(key: str | None, seconds: float) -> dt.datetime | None:
    """``key`` moved ``seconds`` back, as an aware datetime (None stays None)."""
    parsed = parse_time(key)
    return None if parsed is None else parsed - dt.timedelta(seconds=seconds)


class Feed:
    """One collection read for one server-side filter; subclasses say which and how."""

    path: str
    key_field: str  # the RQL name of the key (created.at, updated)
    ordering: tuple[str, ...]

    def __init__(self, hook: ConnectHook, *, page_size: int | None = None) -> None:
        self.hook = hook
        self.page_size = page_size or POLL_PAGE_SIZE

    # ---------------------------------------------------------------- what a subclass defines
    def base_query(self) -> R:
        raise NotImplementedError

    def key_of(self, item: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def observe(self, item: Mapping[str, Any]) -> Observation | None:
        raise NotImplementedError

    async def extra_reads(self, reread_ids: Iterable[str]) -> tuple[list[dict[str, Any]], bool]:
        """Reads beyond the key window (the usage files' open set); (items, open set complete)."""
        return [], False

    # ---------------------------------------------------------------- the poll
    async def newest_key(self) -> str:
        """The largest key in the collection now (``""`` when it is empty): a watcher's start."""
        page = await self.hook.aget_page(
            self.path, self.base_query(), ordering=tuple(f"-{f}" for f in self.ordering), limit=1
        )
        return self.key_of(page.items[0]) if page.items else ""

    async def read_window(self, since: dt.datetime | None) -> list[dict[str, Any]]:
        """Every item with key >= ``since`` (all of them when None), paged by key (module docstring)."""
        return await self.read_by_key(self.base_query(), since)

    async def read_by_key(self, base: R, since: dt.datetime | None) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        lower: dt.datetime | None = since
        skip = 0
        while True:
            query = base if lower is None else base & R().n(self.key_field).ge(lower)
            page = await self.hook.aget_page(
                self.path, query, ordering=self.ordering, limit=self.page_size, offset=skip
            )
            for item in page.items:
                found[str(item.get("id"))] = item
            if len(page.items) < self.page_size:
                return list(found.values())
            last = parse_time(self.key_of(page.items[-1]))
            if last is None:  # no key to page by: fall back to offsets (never seen from Connect)
                skip += len(page.items)
            elif lower is not None and last == lower:
                skip += len(page.items)  # a whole page of one key: go on within that key
            else:
                lower = last
                skip = sum(1 for it in page.items if parse_time(self.key_of(it)) == last)

    async def poll(
        self,
        *,
        window: bool,
        since: dt.datetime | str | None,
        baseline: bool,
        reread_ids: Iterable[str] = (),
    ) -> Batch:
        """One poll: the baseline if asked, the key window if asked, the extra reads; one Batch.

        ``since`` is where the window starts: a time, None (the beginning), or :data:`AT_BASELINE`.
        """
        newest = await self.newest_key() if baseline or since == AT_BASELINE else None
        if since == AT_BASELINE:
            since = parse_time(newest)
        assert not isinstance(since, str)
        seen: dict[str, dict[str, Any]] = {}
        window_max: str | None = None
        if window:
            for item in await self.read_window(since):
                seen[str(item.get("id"))] = item
                window_max = later(window_max, self.key_of(item))
        extra, open_complete = await self.extra_reads(reread_ids)
        for item in extra:
            seen[str(item.get("id"))] = item
        observations = tuple(o for o in (self.observe(item) for item in seen.values()) if o is not None)
        return Batch(
            seq=next(_SEQ),
            items=observations,
            window_read=window,
            window_from=since.isoformat() if (window and since is not None) else None,
            window_max=window_max,
            baseline=newest,
            open_complete=open_complete,
        )


class UsageFileFeed(Feed):
    """``GET /usage/files`` of a product and/or marketplace: new files, and every status change."""

    path = "/usage/files"
    key_field = "created.at"
    ordering = ("created.at", "id")

    def __init__(
        self,
        hook: ConnectHook,
        *,
        product_id: str | None = None,
        marketplace_id: str | None = None,
        page_size: int | None = None,
    ) -> None:
        super().__init__(hook, page_size=page_size)
        self.product_id = product_id
        self.marketplace_id = marketplace_id

    def base_query(self) -> R:
        query = R()
        if self.product_id:
            query = query & R().product.id.eq(self.product_id)
        if self.marketplace_id:
            query = query & R().marketplace.id.eq(self.marketplace_id)
        return query

    def key_of(self, item: Mapping[str, Any]) -> str:
        return str(_dig(item, "events", "created", "at") or "")

    def observe(self, item: Mapping[str, Any]) -> Observation | None:
        fid, status = item.get("id"), item.get("status")
        if not isinstance(fid, str) or not isinstance(status, str):
            return None
        events = item.get("events") if isinstance(item.get("events"), Mapping) else {}
        entered = _dig(events, FILE_STATUS_EVENT.get(status, "created"), "at")
        if entered is None:  # the status's own event is missing: the latest event Connect recorded
            entered = max(
                (str(e["at"]) for e in events.values() if isinstance(e, Mapping) and e.get("at")),
                key=lambda at: parse_time(at) or dt.datetime.min.replace(tzinfo=dt.timezone.utc),
                default=None,
            )
        return Observation(
            id=fid,
            status=status,
            key=self.key_of(item),
            changed_at=entered,
            fields={
                "product_id": _dig(item, "product", "id"),
                "marketplace_id": _dig(item, "marketplace", "id"),
                "period_from": _dig(item, "period", "from"),
            },
        )

    async def extra_reads(self, reread_ids: Iterable[str]) -> tuple[list[dict[str, Any]], bool]:
        """The files not yet closed or deleted (their current status), and files named by id."""
        open_files = await self.read_by_key(
            self.base_query() & R().status.out(sorted(TERMINAL_FILE_STATUSES)), None
        )
        wanted = sorted(set(reread_ids) - {str(f.get("id")) for f in open_files})
        found: list[dict[str, Any]] = list(open_files)
        for chunk in _chunks(wanted, IDS_PER_CALL):
            page = await self.hook.aget_page(
                self.path, R().id.in_(chunk), ordering=self.ordering, limit=len(chunk)
            )
            found.extend(page.items)
        return found, True


class RequestFeed(Feed):
    """``GET /requests`` of some types, a product and/or marketplace: every request that changed."""

    path = "/requests"
    key_field = "updated"
    ordering = ("updated", "created")

    def __init__(
        self,
        hook: ConnectHook,
        *,
        types: Sequence[str] = (),
        product_id: str | None = None,
        marketplace_id: str | None = None,
        page_size: int | None = None,
    ) -> None:
        super().__init__(hook, page_size=page_size)
        self.types = tuple(types)
        self.product_id = product_id
        self.marketplace_id = marketplace_id

    def base_query(self) -> R:
        query = R()
        if self.types:
            query = query & R().type.in_(list(self.types))
        if self.product_id:
            query = query & R().asset.product.id.eq(self.product_id)
        if self.marketplace_id:
            query = query & R().marketplace.id.eq(self.marketplace_id)
        return query

    def key_of(self, item: Mapping[str, Any]) -> str:
        return str(item.get("updated") or "")

    def observe(self, item: Mapping[str, Any]) -> Observation | None:
        rid, status = item.get("id"), item.get("status")
        if not isinstance(rid, str) or not isinstance(status, str):
            return None
        return Observation(
            id=rid,
            status=status,
            key=self.key_of(item),
            changed_at=self.key_of(item) or None,
            fields={
                "type": item.get("type"),
                "asset_id": _dig(item, "asset", "id"),
                "asset_external_id": _dig(item, "asset", "external_id"),
                "product_id": _dig(item, "asset", "product", "id"),
                "marketplace_id": _dig(item, "marketplace", "id"),
            },
        )


def _chunks(values: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])
