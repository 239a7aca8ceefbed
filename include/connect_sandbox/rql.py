"""RQL as Connect's server reads it (django-rql / lib-rql semantics), for the sandbox.

Connect URL-decodes the whole query string and parses it as one RQL expression: top-level
``&``- or ``,``-joined terms are and-ed, ``or`` needs ``or(a,b)`` or a parenthesised ``(a|b)``,
values with special characters are quoted with ``"..."`` or ``'...'``. ``limit=``/``offset=``,
``select()`` and ``ordering()`` live in the same expression. Filter names are read as written:
django-rql looks ``asset__id`` up as its own filter, not as ``asset.id`` (its ``FilterArgs`` joins
names with dots and never rewrites them; the spec declares both, with different lookups).

What an endpoint accepts is its :class:`Filterable` (from :mod:`connect_sandbox.filter_table`),
and it refuses what django-rql refuses (cloudblue/django-rql @
5e6ade3d287e75d2b1fe3a568f2f1ed275957d15 : dj_rql/filter_cls.py):

* a filter the endpoint does not declare is ignored (``build_q_for_filter`` returns an empty
  ``Q()``): it matches everything instead of nothing. Tests rely on this to expose clients that
  filter on a misspelt key;
* a declared filter used with a lookup it does not declare raises ``RQLFilterLookupError``
  (``_get_filter_lookup``): ``in``/``out`` need that list lookup and ``eq``/``ne`` for each value,
  a null value (``null()`` or one of the filter's null values, unquoted) needs ``null`` and
  ``eq``/``ne``, and ``empty()`` always takes ``eq``/``ne`` only;
* ``ordering()`` refuses a second ``ordering()``, more than five fields, and any field whose filter
  is not declared with ordering (``_apply_ordering``: "Bad ordering filter: ...").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

from .spec_filters import LOOKUPS, FilterSpec

COMPARISON_OPS = frozenset({"eq", "ne", "gt", "ge", "lt", "le", "like", "ilike"})
LIST_OPS = frozenset({"in", "out"})
LOGICAL_OPS = frozenset({"and", "or", "not"})
# Keys that are paging or full-text controls, not filters.
CONTROL_KEYS = frozenset({"limit", "offset", "search"})

_DELIMS = set("(),&|;=")
_PROP_RE = re.compile(r"[A-Za-z][\w.\-]*\Z")


class RQLError(ValueError):
    """A query Connect would refuse with 400 (``INVALID_RQL``)."""


class RQLLookupError(RQLError):
    """A declared filter used with a lookup it does not declare (django-rql's RQLFilterLookupError)."""


class RQLOrderingError(RQLError):
    """An ``ordering()`` the endpoint does not allow (django-rql's "Bad ordering filter")."""


# django-rql's RQLFilterClass.MAX_ORDERING_LENGTH_IN_QUERY (dj_rql/filter_cls.py).
MAX_ORDERING_FIELDS = 5


class _Null:
    def __repr__(self) -> str:
        return "null()"


class _Empty:
    def __repr__(self) -> str:
        return "empty()"


NULL = _Null()
EMPTY = _Empty()


class Quoted(str):
    """A value that was written in quotes: text, never a filter's null sentinel (``HB-0000-0000``)."""

    __slots__ = ()


@dataclass(frozen=True)
class Comparison:
    op: str  # eq ne gt ge lt le like ilike in out
    prop: str
    value: Any  # str | NULL | EMPTY, or a tuple of those for in/out


@dataclass(frozen=True)
class Logical:
    op: str  # and | or | not
    children: tuple[Node, ...]


Node = Comparison | Logical


@dataclass
class Query:
    """A parsed query string: the filter plus the controls Connect reads alongside it."""

    filter: Node | None = None
    limit: str | None = None
    offset: str | None = None
    search: str | None = None
    select: list[str] = field(default_factory=list)
    ordering: list[str] = field(default_factory=list)
    ordering_calls: int = 0  # django-rql allows one ordering() per query


# --------------------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.query = Query()

    # low level
    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def error(self, message: str) -> RQLError:
        return RQLError(f"{message} at position {self.i} of {self.s!r}")

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            found = self.peek() or "end of query"
            raise self.error(f"expected {ch!r}, found {found!r}")
        self.i += 1

    def word(self) -> str:
        """An unquoted token: everything up to the next delimiter."""
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in _DELIMS:
            self.i += 1
        return self.s[start : self.i]

    def value(self) -> Any:
        ch = self.peek()
        if ch in ("'", '"'):
            end = self.s.find(ch, self.i + 1)
            if end < 0:
                raise self.error("unterminated quoted value")
            text = Quoted(self.s[self.i + 1 : end])
            self.i = end + 1
            if self.peek() and self.peek() not in _DELIMS:
                raise self.error("unexpected text after a quoted value")
            return text
        if ch == "(":
            raise self.error("unexpected '('")
        text = self.word()
        if text in ("null", "empty") and self.peek() == "(":
            self.i += 1
            self.expect(")")
            return NULL if text == "null" else EMPTY
        if text == "":
            raise self.error("missing value")
        return text

    def prop(self) -> str:
        text = self.word().strip()
        if not _PROP_RE.match(text):
            raise self.error(f"invalid property {text!r}")
        return text

    # grammar
    def parse(self) -> Query:
        if self.s.strip() == "":
            return self.query
        terms = self.and_list(top=True)
        if self.i != len(self.s):
            raise self.error(f"unexpected {self.peek()!r}")
        filters = [t for t in terms if t is not None]
        if len(filters) == 1:
            self.query.filter = filters[0]
        elif filters:
            self.query.filter = Logical("and", tuple(filters))
        return self.query

    def and_list(self, top: bool = False) -> list[Node | None]:
        terms = [self.term(top)]
        while self.peek() in ("&", ","):
            self.i += 1
            if top and self.peek() in ("&", ""):
                continue  # tolerate "a=1&&b=2" and a trailing "&" as browsers produce them
            terms.append(self.term(top))
        return terms

    def term(self, top: bool = False) -> Node | None:
        if self.peek() == "(":
            return self.group()
        start = self.i
        name = self.word()
        if self.peek() == "(":
            self.i += 1
            return self.call(name.strip(), top)
        if self.peek() == "=":
            self.i = start
            return self.equality(top)
        if name == "":
            raise self.error("empty expression")
        raise self.error(f"expected an operator call or 'property=value' near {name!r}")

    def group(self) -> Node | None:
        self.expect("(")
        first = self.and_list()
        if self.peek() in ("|", ";"):
            sep = self.peek()
            alternatives = [_and_of(first)]
            while self.peek() == sep:
                self.i += 1
                alternatives.append(_and_of(self.and_list()))
            self.expect(")")
            return Logical("or", tuple(alternatives))
        self.expect(")")
        return _and_of(first)

    def equality(self, top: bool) -> Node | None:
        prop = self.prop()
        self.expect("=")
        save = self.i
        maybe_op = self.word()
        if self.peek() == "=" and maybe_op in COMPARISON_OPS | LIST_OPS:
            self.i += 1
            op = maybe_op
        else:
            self.i = save
            op = "eq"
        value = self.value_list() if op in LIST_OPS else self.value()
        if top and op == "eq" and prop in CONTROL_KEYS:
            if not isinstance(value, str):
                raise self.error(f"{prop} needs a value")
            setattr(self.query, prop, value)
            return None
        return Comparison(op, prop, value)

    def value_list(self) -> tuple[Any, ...]:
        if self.peek() != "(":
            return (self.value(),)
        self.i += 1
        values = [self.value()]
        while self.peek() == ",":
            self.i += 1
            values.append(self.value())
        self.expect(")")
        return tuple(values)

    def call(self, name: str, top: bool) -> Node | None:
        if name in LOGICAL_OPS:
            children = [c for c in self.and_list() if c is not None]
            self.expect(")")
            if not children:
                raise self.error(f"{name}() needs an expression")
            if name == "not":
                if len(children) != 1:
                    raise self.error("not() takes exactly one expression")
                return Logical("not", (children[0],))
            if len(children) == 1:
                return children[0]
            return Logical(name, tuple(children))
        if name in COMPARISON_OPS or name in LIST_OPS:
            prop = self.prop()
            self.expect(",")
            value = self.value_list() if name in LIST_OPS else self.value()
            self.expect(")")
            return Comparison(name, prop, value)
        if name in ("select", "ordering"):
            props = self.signed_props()
            if not top:
                raise self.error(f"{name}() is only allowed at the top level")
            getattr(self.query, name).extend(props)
            if name == "ordering":
                self.query.ordering_calls += 1
            return None
        if name == "limit":
            # limit(count[,offset]) as some RQL dialects write it
            args = self.signed_props(allow_numbers=True)
            if not top or not 1 <= len(args) <= 2:
                raise self.error("limit() takes a count and an optional offset")
            self.query.limit = args[0]
            if len(args) == 2:
                self.query.offset = args[1]
            return None
        if name in ("search",):
            raise self.error("search is a query parameter: search=term")
        raise self.error(f"unknown operator {name!r}")

    def signed_props(self, allow_numbers: bool = False) -> list[str]:
        out: list[str] = []
        if self.peek() == ")":
            self.i += 1
            return out
        while True:
            text = self.word().strip()
            body = text[1:] if text[:1] in "+-" else text
            ok = bool(_PROP_RE.match(body)) or (allow_numbers and text.isdigit())
            if not ok:
                raise self.error(f"invalid property {text!r}")
            out.append(body if text[:1] == "+" else text)  # lib-rql drops the "+" of "+field"
            if self.peek() == ",":
                self.i += 1
                continue
            self.expect(")")
            return out


def _and_of(terms: list[Node | None]) -> Node | None:
    kept = [t for t in terms if t is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else Logical("and", tuple(kept))


def parse(query_string: str, *, decoded: bool = False) -> Query:
    """Parse a raw query string (``request.url.query``) the way Connect does: unquote, then RQL."""
    text = query_string if decoded else unquote(query_string)
    return _Parser(text).parse()


# ------------------------------------------------------------------------------------ evaluator
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _parse_temporal(text: str) -> datetime | date | None:
    if not _ISO_DATE_RE.match(text):
        return None
    t = text.strip().replace(" ", "T", 1) if "T" not in text and len(text) > 10 else text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    try:
        if len(t) == 10:
            return date.fromisoformat(t)
        dt = datetime.fromisoformat(t)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _as_comparable(field_value: Any, raw: str) -> tuple[Any, Any] | None:
    """Coerce the query's text to the field's type; None when they cannot be compared."""
    if isinstance(field_value, bool):
        low = raw.lower()
        if low not in ("true", "false"):
            return None
        return field_value, low == "true"
    if isinstance(field_value, int | float | Decimal):
        try:
            return Decimal(str(field_value)), Decimal(raw)
        except InvalidOperation:
            return None
    if isinstance(field_value, str):
        left = _parse_temporal(field_value) if _ISO_DATE_RE.match(field_value) else None
        right = _parse_temporal(raw) if left is not None else None
        if left is not None and right is not None:
            if isinstance(left, datetime) and not isinstance(right, datetime):
                return left.date(), right
            if isinstance(right, datetime) and not isinstance(left, datetime):
                left = datetime(left.year, left.month, left.day, tzinfo=timezone.utc)
            return left, right
        return field_value, raw
    return str(field_value), raw


def _like(value: Any, pattern: str, insensitive: bool) -> bool:
    if value is None:
        return False
    text = str(value)
    if insensitive:
        text, pattern = text.lower(), pattern.lower()
    if "*" not in pattern:
        return text == pattern
    regex = ".*".join(re.escape(p) for p in pattern.split("*"))
    return re.fullmatch(regex, text, flags=re.DOTALL) is not None


def compare(op: str, field_value: Any, raw: Any) -> bool:
    """Whether ``op(field, raw)`` holds for one value of the field, as django-rql's SQL would say."""
    if raw is NULL or raw is EMPTY:
        absent = field_value is None or (raw is EMPTY and field_value == "")
        return {"eq": absent, "ne": not absent}.get(op, False)
    if op in ("like", "ilike"):
        return _like(field_value, raw, op == "ilike")
    if field_value is None:
        return op == "ne"
    pair = _as_comparable(field_value, raw)
    if pair is None:
        return op == "ne"
    left, right = pair
    try:
        if op == "eq":
            return left == right
        if op == "ne":
            return left != right
        if op == "gt":
            return left > right
        if op == "ge":
            return left >= right
        if op == "lt":
            return left < right
        if op == "le":
            return left <= right
    except TypeError:
        return False
    raise RQLError(f"unknown operator {op!r}")


def resolve(obj: Any, path: str) -> list[Any]:
    """All values at a dotted path; lists along the way fan out (a join, as in Django)."""
    current = [obj]
    for part in path.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, Mapping):
                if part in item:
                    v = item[part]
                    if isinstance(v, list):
                        nxt.extend(v)
                    else:
                        nxt.append(v)
            elif isinstance(item, list):
                for el in item:
                    if isinstance(el, Mapping) and part in el:
                        nxt.append(el[part])
        current = nxt
    return current


def _default_path(name: str) -> str:
    return name.replace("__", ".")  # a Django-style name (asset__id) lives where its dotted twin does


class Filterable:
    """The filters an endpoint declares (lookups, ordering, nulls), and where each lives in its objects.

    ``filters`` is the endpoint's entry of :data:`connect_sandbox.filter_table.FILTERS`, or, for
    ad hoc tables, plain names (each then takes every lookup and orders). ``paths`` says where a
    filter's value sits in the served objects when that is not the filter's own name (e.g.
    ``hubs.id`` -> ``hubs.hub.id``); every name in it must be declared.
    """

    def __init__(
        self, filters: Mapping[str, FilterSpec] | Iterable[str], paths: Mapping[str, str] | None = None
    ) -> None:
        paths = dict(paths or {})
        if isinstance(filters, Mapping):
            self.filters: dict[str, FilterSpec] = dict(filters)
            undeclared = sorted(set(paths) - set(self.filters))
            if undeclared:
                raise ValueError(f"paths given for filters the endpoint does not declare: {undeclared}")
        else:
            self.filters = {name: ANY_LOOKUP for name in (*filters, *paths)}
        self.paths = paths

    def spec_of(self, prop: str) -> FilterSpec | None:
        return self.filters.get(prop)

    def path_of(self, prop: str) -> str | None:
        """Where a declared filter reads its value; None for a filter the endpoint does not declare."""
        if prop not in self.filters:
            return None
        return self.paths.get(prop) or _default_path(prop)

    def ordering_names(self) -> list[str]:
        return sorted(name for name, spec in self.filters.items() if spec.ordering)

    def check(self, query: Query) -> None:
        """Raise what django-rql raises for this query: a lookup error first, then a bad ordering."""
        self._check_lookups(query.filter)
        self._check_ordering(query)

    def _check_lookups(self, node: Node | None) -> None:
        if node is None:
            return
        if isinstance(node, Logical):
            for child in node.children:
                self._check_lookups(child)
            return
        spec = self.spec_of(node.prop)
        if spec is None:
            return  # not declared: ignored, never refused
        if node.op in LIST_OPS:
            if node.op not in spec.lookups:
                first = node.value[0] if node.value else ""
                raise _lookup_error(node.prop, node.op, first, spec)
            for v in node.value:
                self._check_one(node.prop, "eq" if node.op == "in" else "ne", v, spec)
            return
        self._check_one(node.prop, node.op, node.value, spec)

    @staticmethod
    def _check_one(name: str, op: str, value: Any, spec: FilterSpec) -> None:
        available = spec.lookups
        if is_null_value(value, spec) and ("null" not in available or op not in ("eq", "ne")):
            raise _lookup_error(name, op, value, spec)
        if value is EMPTY:
            available = frozenset({"eq", "ne"})
        if op not in available:
            raise _lookup_error(name, op, value, spec)

    def _check_ordering(self, query: Query) -> None:
        if query.ordering_calls > 1:
            raise RQLOrderingError("Bad ordering filter: query can contain only one ordering operation.")
        if len(query.ordering) > MAX_ORDERING_FIELDS:
            raise RQLOrderingError(f"Bad ordering filter: max allowed number is {MAX_ORDERING_FIELDS}.")
        for item in query.ordering:
            name = item[1:] if item.startswith("-") else item
            spec = self.spec_of(name)
            if spec is None or not spec.ordering:
                raise RQLOrderingError(f"Bad ordering filter: {name}.")


ANY_LOOKUP = FilterSpec(frozenset(LOOKUPS), ordering=True)
ANY = Filterable(())  # a filter set that knows nothing: every comparison is ignored


def is_null_value(value: Any, spec: FilterSpec | None) -> bool:
    """``null()``, or an unquoted value the filter reads as null (``HB-0000-0000`` for ``hub.id``)."""
    if value is NULL:
        return True
    return (
        spec is not None
        and isinstance(value, str)
        and not isinstance(value, Quoted)
        and value in spec.null_values
    )


def _lookup_error(name: str, lookup: str, value: Any, spec: FilterSpec) -> RQLLookupError:
    allowed = ", ".join(lk for lk in LOOKUPS if lk in spec.lookups) or "none"
    return RQLLookupError(
        f"RQL Lookup error: filter {name!r} does not support lookup {lookup!r} "
        f"(value {str(value)!r}); its lookups are: {allowed}."
    )


def _positive(op: str) -> str:
    return {"ne": "eq", "out": "in"}.get(op, op)


def compile_filter(node: Node | None, filterable: Filterable | None) -> Callable[[Any], bool]:
    """A predicate for objects; properties the endpoint does not declare are ignored."""
    fn = _compile(node, filterable)
    if fn is None:
        return lambda _obj: True
    return fn


def _compile(node: Node | None, filterable: Filterable | None) -> Callable[[Any], bool] | None:
    if node is None:
        return None
    if isinstance(node, Logical):
        parts = [p for p in (_compile(c, filterable) for c in node.children) if p is not None]
        if not parts:
            return None
        if node.op == "and":
            return lambda obj: all(p(obj) for p in parts)
        if node.op == "or":
            return lambda obj: any(p(obj) for p in parts)
        only = parts[0]
        return lambda obj: not only(obj)
    path = _path(filterable, node.prop)
    if path is None:
        return None
    spec = None if filterable is None else filterable.spec_of(node.prop)
    op = _positive(node.op)  # ne and out are the negations of eq and in
    raw = node.value if op == "in" else (node.value,)
    values = tuple(NULL if is_null_value(v, spec) else v for v in raw)
    test = "eq" if op == "in" else op

    def holds(obj: Any) -> bool:
        found = resolve(obj, path) or [None]
        return any(compare(test, fv, v) for fv in found for v in values)

    return holds if op == node.op else (lambda obj: not holds(obj))


def _path(filterable: Filterable | None, prop: str) -> str | None:
    """Where ``prop`` lives in the objects; None when the endpoint does not declare it."""
    return _default_path(prop) if filterable is None else filterable.path_of(prop)


def paths_of(node: Node | None, filterable: Filterable | None) -> set[str]:
    """The object paths a filter reads (undeclared properties are ignored, so not read)."""
    if node is None:
        return set()
    if isinstance(node, Logical):
        out: set[str] = set()
        for c in node.children:
            out |= paths_of(c, filterable)
        return out
    path = _path(filterable, node.prop)
    return set() if path is None else {path}


def sort_key_for(path: str) -> Callable[[Any], tuple]:
    def key(obj: Any) -> tuple:
        found = resolve(obj, path)
        v = found[0] if found else None
        if v is None:
            return (1, "")
        if isinstance(v, bool):
            return (0, int(v))
        if isinstance(v, int | float | Decimal):
            return (0, Decimal(str(v)))
        return (0, str(v))

    return key


def apply_ordering(items: list[Any], ordering: list[str], filterable: Filterable | None) -> list[Any]:
    """Stable multi-key sort; NULLs last on ascending order as PostgreSQL does."""
    result = list(items)
    for spec in reversed(ordering):
        desc = spec.startswith("-")
        prop = spec.lstrip("+-")
        path = _path(filterable, prop) or prop
        result.sort(key=sort_key_for(path), reverse=desc)
    return result


def apply_select(obj: dict, select: list[str]) -> dict:
    """Honour ``select(-a.b)`` exclusions; inclusions are returned as they are (always present)."""
    exclusions = [s[1:] for s in select if s.startswith("-")]
    if not exclusions:
        return obj
    out = _deep_copy(obj)
    for path in exclusions:
        parts = path.split(".")
        target: Any = out
        for part in parts[:-1]:
            target = target.get(part) if isinstance(target, dict) else None
            if target is None:
                break
        if isinstance(target, dict):
            target.pop(parts[-1], None)
    return out


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def parse_page(query: Query, default_limit: int, max_limit: int) -> tuple[int, int]:
    """limit/offset as django-rql reads them: bad values fall back to the defaults."""
    limit = _count(query.limit, -1)
    return (min(limit, max_limit) if limit >= 0 else default_limit), _count(query.offset, 0)


def _count(text: str | None, default: int) -> int:
    """``text`` as a whole number >= 0; ``default`` when it is missing or is not one."""
    try:
        n = int(text) if text is not None else default
    except ValueError:
        return default
    return n if n >= 0 else default


def content_range(offset: int, count: int, total: int) -> str:
    """``items first-last/total`` exactly as django-rql's RQLContentRangeLimitOffsetPagination."""
    last = offset + (count - 1 if count else 0)
    return f"items {offset}-{last}/{total}"
