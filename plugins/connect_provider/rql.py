"""A small builder for Connect's RQL (Resource Query Language) filters.

Why a builder: Connect filters collections with RQL in the query string (``eq(status,pending)``,
``in(type,(purchase,change))``, ``and(...)``). Built by string formatting, a value holding a comma,
a parenthesis, a quote or an ``&`` silently changes the query's meaning (an external id
``"a,b)"`` closes the expression early). Here every value is rendered as one RQL token:

* strings are always quoted (``"..."``, or ``'...'`` when the text holds a double quote). Connect's
  RQL grammar has no escape inside quotes, so a string holding both quote characters cannot be
  expressed and is refused with :class:`~connect_provider.exceptions.ConnectValidationError`;
* booleans render as ``true``/``false``, numbers as plain decimals, dates and datetimes in
  ISO 8601, enums by their value, ``None`` as ``null()``;
* field names must look like RQL properties (``asset.product.id``).

``str(expr)`` gives the readable RQL text (what the server parses). :func:`to_query_string` turns
RQL text into the percent-encoded form sent on the URL: Connect's server decodes the whole query
string once and then parses it, so everything inside quotes is percent-encoded and nothing a value
holds can be read as structure, on Connect or on any parser that splits on ``&`` first.

Examples::

    R().status.eq("pending") & R().type.in_(["purchase", "change"])
    # and(eq(status,"pending"),in(type,("purchase","change")))
    R(asset__id="AS-1", status__in=["pending", "inquiring"])
    ~R().asset.external_id.like("sub-*")
    select("-asset.items"), ordering("-created")
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from connect_provider.exceptions import ConnectValidationError

__all__ = ["Field", "R", "like_literal", "ordering", "render_value", "select", "to_query_string"]

# The property shape of Connect's RQL grammar: a letter, then letters, digits, '_', '-' or '.'.
_PROP_RE = re.compile(r"[A-Za-z][\w\-.]*", re.ASCII)

# Characters kept as they are outside quoted values when RQL text goes on the URL: RQL's
# structure (parentheses, commas, '=', '&', '*', '-') and the unreserved set. Anything else,
# including '+', ';', '|', spaces and non-ASCII, is percent-encoded; the server decodes it back.
_STRUCTURE_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~(),=&*:@!$/")

_COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le", "like", "ilike")
_KWARG_LOOKUPS = frozenset((*_COMPARISONS, "in", "out", "null", "empty"))


def _check_prop(name: str, *, what: str = "field") -> str:
    if not isinstance(name, str) or not _PROP_RE.fullmatch(name):
        raise ConnectValidationError(
            what,
            f"{name!r} is not an RQL field name: use letters, digits, '_', '-' and '.' "
            "starting with a letter (e.g. 'asset.product.id')",
        )
    return name


def render_value(value: Any, *, field: str = "value") -> str:
    """Render one Python value as one RQL value token (readable, not yet URL-encoded).

    Strings are quoted so that no character they hold can act as RQL syntax.
    """
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return "null()"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConnectValidationError(
                field, f"{value!r} cannot be sent in an RQL filter; use a finite number"
            )
        return repr(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ConnectValidationError(
                field, f"{value!r} cannot be sent in an RQL filter; use a finite number"
            )
        return format(value, "f")
    if isinstance(value, (dt.datetime, dt.date)):
        # datetime before date (a datetime is a date); isoformat keeps the UTC offset if any.
        return value.isoformat()
    if isinstance(value, str):
        if '"' not in value:
            return f'"{value}"'
        if "'" not in value:
            return f"'{value}'"
        raise ConnectValidationError(
            field,
            "a value holding both a double and a single quote cannot be written in Connect's RQL "
            "(its quoted values have no escape); filter on another field or a like() pattern",
        )
    raise ConnectValidationError(
        field,
        f"values of type {type(value).__name__} cannot be used in an RQL filter; "
        "pass a str, int, float, Decimal, bool, date, datetime, enum or None",
    )


def like_literal(text: str) -> str:
    """Escape ``text`` for use inside a ``like``/``ilike`` pattern, where ``*`` is the wildcard.

    ``R().name.like(like_literal("50% *off*") + "*")`` finds names starting with that literal text.
    Connect reads ``\\*`` as a literal star and ``\\\\`` as a literal backslash.
    """
    return text.replace("\\", "\\\\").replace("*", "\\*")


def to_query_string(rql: str) -> str:
    """Percent-encode RQL text for the URL, keeping its structure and hiding what values hold.

    Inside a quoted value every character but the unreserved ones is encoded (so ``&``, ``,`` or
    ``)`` in a value stay data for any parser); outside quotes the RQL structure is kept readable.
    The quote characters themselves are sent as ``%22``/``%27``; the server decodes them back.
    """
    out: list[str] = []
    quote_char: str | None = None
    for ch in rql:
        if quote_char is not None:
            out.append(quote(ch, safe=""))
            if ch == quote_char:
                quote_char = None
        elif ch in ('"', "'"):
            quote_char = ch
            out.append(quote(ch, safe=""))
        elif ch in _STRUCTURE_SAFE:
            out.append(ch)
        else:
            out.append(quote(ch, safe=""))
    return "".join(out)


def _signed_props(kind: str, fields: Iterable[str]) -> str:
    names: list[str] = []
    for raw in fields:
        if not isinstance(raw, str):
            raise ConnectValidationError(kind, f"{raw!r} is not a field name")
        sign = raw[0] if raw[:1] in ("+", "-") else ""
        names.append(sign + _check_prop(raw[len(sign) :], what=kind))
    if not names:
        raise ConnectValidationError(kind, "name at least one field")
    return f"{kind}({','.join(names)})"


def select(*fields: str) -> str:
    """``select(a,-b)``: add (``a``) or drop (``-b``) fields of the returned objects."""
    return _signed_props("select", fields)


def ordering(*fields: str) -> str:
    """``ordering(-created,id)``: sort by these fields, ``-`` for descending."""
    return _signed_props("ordering", fields)


class R:
    """An RQL expression: build with attribute access, combine with ``&``, ``|`` and ``~``.

    ``R()`` is the empty expression (renders as ``""`` and vanishes when combined), ``R(**lookups)``
    and-s Django-style lookups (``R(asset__id="AS-1", status__in=[...], note__null=True)``), and
    ``R().a.b.eq(v)`` / ``R().n("a.b").eq(v)`` build one comparison.
    """

    __slots__ = ("_children", "_op", "_text")

    def __init__(self, **lookups: Any) -> None:
        self._op = "and"
        self._children: tuple[R, ...] = ()
        self._text: str | None = None
        parts = [_from_lookup(key, value) for key, value in lookups.items()]
        if len(parts) == 1:
            self._op, self._children, self._text = parts[0]._op, parts[0]._children, parts[0]._text
        elif parts:
            self._children = tuple(parts)

    @classmethod
    def _leaf(cls, text: str) -> R:
        node = cls()
        node._op = "leaf"
        node._text = text
        return node

    @classmethod
    def _node(cls, op: str, children: Iterable[R]) -> R:
        node = cls()
        node._op = op
        node._children = tuple(children)
        return node

    @property
    def is_empty(self) -> bool:
        """True for ``R()``: it adds no condition."""
        return self._op == "and" and not self._children

    def n(self, name: str) -> Field:
        """A field by its dotted name, for names that clash with Python or this API (``n("type")``)."""
        return Field(tuple(name.split(".")))

    def __getattr__(self, name: str) -> Field:
        if name.startswith("_"):
            raise AttributeError(name)
        return Field((name,))

    def _combine(self, op: str, other: R) -> R:
        if not isinstance(other, R):
            return NotImplemented
        if self.is_empty:
            return other
        if other.is_empty:
            return self
        children: list[R] = []
        for part in (self, other):
            children.extend(part._children if part._op == op else (part,))
        return R._node(op, children)

    def __and__(self, other: R) -> R:
        return self._combine("and", other)

    def __or__(self, other: R) -> R:
        return self._combine("or", other)

    def __invert__(self) -> R:
        if self.is_empty:
            raise ConnectValidationError("query", "~R() negates nothing; build a condition first")
        if self._op == "not":
            return self._children[0]
        return R._node("not", (self,))

    def __str__(self) -> str:
        if self._op == "leaf":
            return self._text or ""
        if self.is_empty:
            return ""
        if self._op in ("and", "or") and len(self._children) == 1:
            return str(self._children[0])
        return f"{self._op}({','.join(str(c) for c in self._children)})"

    def __repr__(self) -> str:
        return f"R({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, R) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __bool__(self) -> bool:
        return not self.is_empty


class Field:
    """A (possibly nested) field of an RQL expression; its methods return :class:`R`."""

    __slots__ = ("_path",)

    def __init__(self, path: tuple[str, ...]) -> None:
        self._path = path
        _check_prop(".".join(path))

    def __getattr__(self, name: str) -> Field:
        if name.startswith("_"):
            raise AttributeError(name)
        return Field((*self._path, name))

    @property
    def _dotted(self) -> str:
        # A private name on purpose: ``R().hub.name`` must stay a field, not an attribute.
        return ".".join(self._path)

    def _cmp(self, op: str, value: Any) -> R:
        return R._leaf(f"{op}({self._dotted},{render_value(value, field=self._dotted)})")

    def eq(self, value: Any) -> R:
        """``eq(field,value)``; ``None`` means ``null()``."""
        return self._cmp("eq", value)

    def ne(self, value: Any) -> R:
        return self._cmp("ne", value)

    def gt(self, value: Any) -> R:
        return self._cmp("gt", value)

    def ge(self, value: Any) -> R:
        return self._cmp("ge", value)

    def lt(self, value: Any) -> R:
        return self._cmp("lt", value)

    def le(self, value: Any) -> R:
        return self._cmp("le", value)

    def like(self, pattern: str) -> R:
        """``like(field,pattern)``: ``*`` in ``pattern`` is the wildcard (see :func:`like_literal`)."""
        return self._cmp("like", pattern)

    def ilike(self, pattern: str) -> R:
        """Case-insensitive :meth:`like`."""
        return self._cmp("ilike", pattern)

    def _list(self, op: str, values: Iterable[Any]) -> R:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ConnectValidationError(self._dotted, f"{op}() takes a list of values, not {values!r}")
        rendered = [render_value(v, field=self._dotted) for v in values]
        if not rendered:
            raise ConnectValidationError(self._dotted, f"{op}() needs at least one value")
        return R._leaf(f"{op}({self._dotted},({','.join(rendered)}))")

    def in_(self, values: Iterable[Any]) -> R:
        """``in(field,(a,b))``: the field is one of ``values``."""
        return self._list("in", values)

    oneof = in_

    def out(self, values: Iterable[Any]) -> R:
        """``out(field,(a,b))``: the field is none of ``values``."""
        return self._list("out", values)

    def null(self, is_null: bool = True) -> R:
        """``eq(field,null())`` (or ``ne`` when ``is_null`` is false)."""
        return R._leaf(f"{'eq' if is_null else 'ne'}({self._dotted},null())")

    def empty(self, is_empty: bool = True) -> R:
        """``eq(field,empty())`` (or ``ne`` when ``is_empty`` is false)."""
        return R._leaf(f"{'eq' if is_empty else 'ne'}({self._dotted},empty())")

    def __repr__(self) -> str:
        return f"Field({self._dotted!r})"


def _from_lookup(key: str, value: Any) -> R:
    parts = key.split("__")
    lookup = "eq"
    if len(parts) > 1 and parts[-1] in _KWARG_LOOKUPS:
        lookup = parts.pop()
    field = Field(tuple(parts))
    if lookup == "in":
        return field.in_(value)
    if lookup == "out":
        return field.out(value)
    if lookup == "null":
        return field.null(bool(value))
    if lookup == "empty":
        return field.empty(bool(value))
    return field._cmp(lookup, value)


def as_rql(query: R | str | None) -> str:
    """RQL text of a query given as an :class:`R`, a string or ``None`` (empty)."""
    if query is None:
        return ""
    if isinstance(query, R):
        return str(query)
    if isinstance(query, str):
        return query.strip()
    raise ConnectValidationError(
        "query", f"expected an RQL string or an R expression, got {type(query).__name__}"
    )
