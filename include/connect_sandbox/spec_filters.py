"""What each list endpoint lets a query filter, look up and order by, as Connect's spec states it.

Connect's list endpoints run django-rql, and its OpenAPI spec is generated from the same filter
classes: django-rql's ``RQLFilterClassSpecification`` renders every filter as a query parameter
whose description is ``Filter for: <name>`` + ``**lookups:** eq, ne, ...`` and, when they apply,
``**search:** true``, ``**ordering:** true`` and ``**null:** <values that mean null>``
(cloudblue/django-rql @ 5e6ade3d287e75d2b1fe3a568f2f1ed275957d15 : dj_rql/openapi.py,
``RQLFilterDescriptionTemplate``). The description text is therefore an exact rendering of what
the server accepts, and this module reads it back:

* ``lookups`` -- the operators a filter takes (``eq ne ge gt le lt like ilike null in out``); any
  other raises ``RQLFilterLookupError`` (dj_rql/filter_cls.py, ``_get_filter_lookup``);
* ``ordering`` -- whether ``ordering(<name>)`` is allowed; any other name is "Bad ordering
  filter" (dj_rql/filter_cls.py, ``_apply_ordering``);
* ``null`` -- the values read as null (``null()`` unless the spec lists others, e.g.
  ``HB-0000-0000`` for ``hub.id``).

Parameters whose description does not start with ``Filter for:`` are ``select()`` switches
(``select(-asset.items)``, ``select(pending_request)``), not filters, and are left out.

The sandbox does not read the 2.3 MB spec at run time: :mod:`connect_sandbox.filter_table` holds
the table derived here, and ``tests/connect_sandbox/test_sandbox_rql.py`` checks that it still
equals what the vendored spec says. To regenerate it after a spec refresh::

    python -m connect_sandbox.spec_filters tests/connect_sandbox/data/specs.yml \\
        > include/connect_sandbox/filter_table.py
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The list endpoints the sandbox serves, spelt as the spec's paths.
ENDPOINTS = (
    "/requests",
    "/assets",
    "/tier/accounts",
    "/marketplaces",
    "/hubs",
    "/products/{product_product_id}/connections",
    "/products/{product_product_id}/templates",
    "/usage/files",
    "/usage/records",
)
# django-rql's lookups, in the order its description template lists them.
LOOKUPS = ("eq", "ne", "ge", "gt", "le", "lt", "like", "ilike", "null", "in", "out")
NULL = "null()"

_FILTER_FOR = "Filter for:"
_KEY_RE = re.compile(r"\*\*(\w+):\*\*[ \t]*([^\n]*)")


@dataclass(frozen=True)
class FilterSpec:
    """One declared filter: its lookups, whether it orders, whether ``search=`` reads it, its nulls."""

    lookups: frozenset[str]
    ordering: bool = False
    search: bool = False
    null_values: frozenset[str] = frozenset({NULL})

    def source(self) -> str:
        """This spec as a call of :func:`F` (how :mod:`connect_sandbox.filter_table` spells it)."""
        args = [_quoted(" ".join(lk for lk in LOOKUPS if lk in self.lookups))]
        if self.ordering:
            args.append("ordering=True")
        if self.search:
            args.append("search=True")
        if self.null_values != {NULL}:
            args.append(f"null={_quoted(' '.join(sorted(self.null_values - {NULL})))}")
        return f"F({', '.join(args)})"


def _quoted(text: str) -> str:
    if '"' in text or "\\" in text:
        raise ValueError(f"unexpected character in a filter table entry: {text!r}")
    return f'"{text}"'


def F(lookups: str, *, ordering: bool = False, search: bool = False, null: str = "") -> FilterSpec:
    """A :class:`FilterSpec` from space-separated lookups (the table's compact spelling).

    ``null`` lists the values read as null besides ``null()`` (which always is one).
    """
    unknown = set(lookups.split()) - set(LOOKUPS)
    if unknown:
        raise ValueError(f"unknown lookups {sorted(unknown)}; django-rql has {LOOKUPS}")
    return FilterSpec(frozenset(lookups.split()), ordering, search, frozenset({NULL, *null.split()}))


# Every lookup and every ordering: for filters declared by name only (tests, ad hoc tables).
ANY = FilterSpec(frozenset(LOOKUPS), ordering=True)


def describe(description: str) -> FilterSpec | None:
    """The filter a parameter description declares, or None for a ``select()`` switch."""
    if not description.lstrip().startswith(_FILTER_FOR):
        return None
    keys = {k: v.strip() for k, v in _KEY_RE.findall(description)}
    lookups = [lk.strip() for lk in keys.get("lookups", "").split(",") if lk.strip()]
    nulls = [v.strip() for v in keys.get("null", "").split(",") if v.strip()]
    return FilterSpec(
        lookups=frozenset(lookups),
        ordering=keys.get("ordering") == "true",
        search=keys.get("search") == "true",
        null_values=frozenset(nulls) if nulls else frozenset({NULL}),
    )


def derive(spec: Mapping[str, Any], endpoints: Iterable[str] = ENDPOINTS) -> dict[str, dict[str, FilterSpec]]:
    """``{endpoint: {filter name: FilterSpec}}`` from the GET operations of a parsed spec."""
    table: dict[str, dict[str, FilterSpec]] = {}
    for path in endpoints:
        operation = spec["paths"][path]["get"]
        filters: dict[str, FilterSpec] = {}
        for parameter in operation.get("parameters", []):
            if "$ref" in parameter or parameter.get("in") != "query":
                continue  # limit/offset come by reference; path and header parameters are no filters
            found = describe(parameter.get("description") or "")
            if found is not None:
                filters[parameter["name"]] = found
        table[path] = dict(sorted(filters.items()))
    return table


def render(table: Mapping[str, Mapping[str, FilterSpec]], source: str) -> str:
    """The text of :mod:`connect_sandbox.filter_table` for ``table`` (derived from ``source``)."""
    lines = [
        '"""Filters, lookups and orderings of the sandbox\'s list endpoints, as Connect\'s spec states them.',
        "",
        f"Generated from {source} by ``python -m connect_sandbox.spec_filters``; do not",
        "edit by hand. :mod:`connect_sandbox.spec_filters` says how the spec's text is read, why it is",
        "exact, and how to regenerate this file.",
        '"""',
        "",
        "from .spec_filters import F, FilterSpec",
        "",
        "FILTERS: dict[str, dict[str, FilterSpec]] = {",
    ]
    for path, filters in table.items():
        lines.append(f"    {_quoted(path)}: {{")
        lines.extend(f"        {_quoted(name)}: {spec.source()}," for name, spec in filters.items())
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m connect_sandbox.spec_filters SPEC``: print the filter table module for SPEC."""
    import yaml  # only here: the sandbox itself never parses the spec

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m connect_sandbox.spec_filters path/to/specs.yml", file=sys.stderr)
        return 2
    with open(args[0], "rb") as f:
        spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
    sys.stdout.write(render(derive(spec), args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
