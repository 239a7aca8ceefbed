"""``GET /usage/records``: which records of which files a query selects, in which order, one page.

The records of a file are created in row order when the file is processed, so creation order
(what ``ordering(created_time)`` asks for, and the order without an ``ordering()``) is: files in
the order they were created, then each file's rows. That order is served by index arithmetic; any
other ordering sorts the matches (stably: ties keep creation order).

Per file, the matching records are a sequence of indexes that is cheap to address:

* ``usagefile.id`` (or ``usage_file``) ``eq``/``in`` picks the files;
* ``created_time`` compared with ``eq``/``ge``/``gt``/``le``/``lt`` at the top level of the filter
  narrows each file to a window of rows, found by bisection (a record's creation time grows with
  its row: :meth:`connect_sandbox.usage.RecordSource.created_time`);
* what is left is the whole window, an arithmetic class view when it reads only what is the same
  for every record of an (item, asset) class, or else the rows a scan finds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi.responses import Response

from . import rql
from .answers import DEFAULT_LIMIT, allowed, dumps
from .endpoints import F_USAGE_RECORDS
from .store import Store
from .usage import RecordSource, class_view, join_page

USAGE_FILE_KEYS = ("usagefile.id", "usage_file")
CREATION_ORDER = "created_time"  # the records' ordering filter that is creation order
WINDOW_OPS = ("eq", "ge", "gt", "le", "lt")

View = tuple[RecordSource, Sequence[int]]


@dataclass(frozen=True)
class Plan:
    """A records filter taken apart: the files, the creation-time bounds, and the rest."""

    file_ids: list[str] | None
    bounds: tuple[rql.Comparison, ...]
    residual: rql.Node | None

    @classmethod
    def of(cls, node: rql.Node | None) -> Plan:
        conjuncts = [] if node is None else list(_conjuncts(node))
        files: list[str] | None = None
        bounds: list[rql.Comparison] = []
        rest: list[rql.Node] = []
        for c in conjuncts:
            if files is None and (picked := _file_ids(c)) is not None:
                files = picked
            elif _is_bound(c):
                bounds.append(c)  # type: ignore[arg-type]
            else:
                rest.append(c)
        if not rql.paths_of(_and(rest), F_USAGE_RECORDS):
            rest = []  # django-rql ignores filters on undeclared properties
        return cls(files, tuple(bounds), _and(rest))


def records_page(store: Store, q: rql.Query, max_limit: int) -> Response:
    """A page of usage records, in creation order unless ``ordering()`` says otherwise."""
    allowed(q, F_USAGE_RECORDS)
    plan = Plan.of(q.filter)
    with store.lock:
        store.auto_decide()
        wanted = None if plan.file_ids is None else set(plan.file_ids)
        sources = [store.record_sources[f] for f in store.usage_files if wanted is None or f in wanted]
    limit, offset = rql.parse_page(q, DEFAULT_LIMIT, max_limit)
    views = [(s, _matches(s, plan)) for s in sources]
    if q.ordering in ([], [CREATION_ORDER]):
        total, rendered = sum(len(v) for _, v in views), _creation_order_page(views, offset, limit)
    else:
        total, rendered = _sorted_page(views, q.ordering, offset, limit)
    if limit == 0:
        offset = 0
    exclusions = [s for s in q.select if s.startswith("-")]
    if exclusions:
        rendered = [dumps(rql.apply_select(json.loads(r), exclusions)).decode() for r in rendered]
    return Response(
        content=join_page(rendered),
        media_type="application/json",
        headers={"Content-Range": rql.content_range(offset, len(rendered), total)},
    )


def _matches(source: RecordSource, plan: Plan) -> Sequence[int]:
    """The rows of ``source`` the plan selects, as a sequence that is cheap to index."""
    start, stop = 0, source.count
    for bound in plan.bounds:
        start, stop = _narrow(source, bound, start, stop)
    if plan.residual is None:
        return range(start, stop)
    pred = rql.compile_filter(plan.residual, F_USAGE_RECORDS)
    paths = rql.paths_of(plan.residual, F_USAGE_RECORDS)
    view = class_view(source, pred, paths, start, stop)
    if view is not None:
        return view
    record = _record_reader(source, CREATION_ORDER in paths)
    return [i for i in range(start, stop) if pred(record(i))]


def _record_reader(source: RecordSource, with_created_time: bool) -> Callable[[int], dict]:
    """``source.record``, plus the record's creation time when the filter reads it."""
    if not with_created_time:
        return source.record

    def record(i: int) -> dict:
        rec = source.record(i)
        rec[CREATION_ORDER] = source.created_time(i)
        return rec

    return record


def _narrow(source: RecordSource, bound: rql.Comparison, start: int, stop: int) -> tuple[int, int]:
    """The rows of ``[start, stop)`` whose creation time meets ``bound``: still one window."""
    for op in ("ge", "le") if bound.op == "eq" else (bound.op,):
        rising = op in ("ge", "gt")  # false then true; le/lt are true then false
        lo, hi = start, stop
        while lo < hi:
            mid = (lo + hi) // 2
            if rql.compare(op, source.created_time(mid), bound.value) == rising:
                hi = mid
            else:
                lo = mid + 1
        start, stop = (lo, stop) if rising else (start, lo)
    return start, stop


def _creation_order_page(views: list[View], offset: int, limit: int) -> list[str]:
    """Rows ``offset .. offset + limit`` of the views laid end to end, rendered."""
    rendered: list[str] = []
    base, stop = 0, offset + limit
    for s, v in views:
        if limit == 0 or base >= stop:
            break
        lo, hi = max(offset - base, 0), min(stop - base, len(v))
        if lo < hi:
            if isinstance(v, range):
                rendered.extend(s.render_range(v[lo], v[lo] + (hi - lo)))
            else:
                rendered.extend(s.render(v[k]) for k in range(lo, hi))
        base += len(v)
    return rendered


def _sorted_page(views: list[View], ordering: list[str], offset: int, limit: int) -> tuple[int, list[str]]:
    """The matches sorted by ``ordering`` (ties keep creation order): their count and one page."""
    matches = [(n, i, s.record(i)) for n, (s, v) in enumerate(views) for i in v]
    for item in reversed(ordering):
        descending = item.startswith("-")
        name = item.lstrip("-")
        if name == CREATION_ORDER:
            matches.sort(key=lambda m: (m[0], m[1]), reverse=descending)
        else:
            key = rql.sort_key_for(F_USAGE_RECORDS.path_of(name) or name)
            matches.sort(key=lambda m, key=key: key(m[2]), reverse=descending)
    chunk = [] if limit == 0 else matches[offset : offset + limit]
    return len(matches), [views[n][0].render(i) for n, i, _ in chunk]


def _conjuncts(node: rql.Node) -> tuple[rql.Node, ...]:
    return node.children if isinstance(node, rql.Logical) and node.op == "and" else (node,)


def _and(nodes: list[rql.Node]) -> rql.Node | None:
    return None if not nodes else nodes[0] if len(nodes) == 1 else rql.Logical("and", tuple(nodes))


def _file_ids(node: rql.Node) -> list[str] | None:
    """The files ``usagefile.id = X`` (or ``in``) names, or None for any other comparison."""
    if not (isinstance(node, rql.Comparison) and node.prop in USAGE_FILE_KEYS and node.op in ("eq", "in")):
        return None
    values = node.value if node.op == "in" else (node.value,)
    return list(dict.fromkeys(values)) if all(isinstance(v, str) for v in values) else None


def _is_bound(node: rql.Node) -> bool:
    """A top-level ``created_time`` comparison that keeps a file's matches one window of rows."""
    return (
        isinstance(node, rql.Comparison)
        and node.prop == CREATION_ORDER
        and node.op in WINDOW_OPS
        and isinstance(node.value, str)
        and not rql.is_null_value(node.value, F_USAGE_RECORDS.spec_of(CREATION_ORDER))
    )
