"""The sandbox reads RQL as Connect's django-rql does: parse, filter, order, select, page."""

from __future__ import annotations

from decimal import Decimal

import pytest
from connect_sandbox import rql
from hypothesis import given
from hypothesis import strategies as st

ASSETS = [
    {
        "id": "AS-1",
        "status": "active",
        "external_id": "sub-1",
        "product": {"id": "PRD-1"},
        "created": "2026-09-01T10:00:00+00:00",
        "params": [{"id": "color", "value": "red"}],
        "seats": 10,
        "trial": False,
        "note": None,
    },
    {
        "id": "AS-2",
        "status": "suspended",
        "external_id": "sub-2",
        "product": {"id": "PRD-1"},
        "created": "2026-09-02T10:00:00+00:00",
        "params": [{"id": "color", "value": "blue"}],
        "seats": 5,
        "trial": True,
        "note": "",
    },
    {
        "id": "AS-3",
        "status": "terminated",
        "external_id": "Sub, with comma",
        "product": {"id": "PRD-2"},
        "created": "2026-09-03T10:00:00+02:00",
        "params": [],
        "seats": 7,
        "trial": False,
        "note": "x",
    },
]
ANY_PROP = None  # evaluate every property (no endpoint whitelist)


def ids(query: str, objs: list[dict] = ASSETS, filterable: rql.Filterable | None = ANY_PROP) -> list[str]:
    q = rql.parse(query)
    pred = rql.compile_filter(q.filter, filterable)
    found = [o for o in objs if pred(o)]
    if q.ordering:
        found = rql.apply_ordering(found, q.ordering, filterable)
    return [o["id"] for o in found]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=active", ["AS-1"]),
        ("eq(status,active)", ["AS-1"]),
        ("status=eq=active", ["AS-1"]),
        ("status=ne=active", ["AS-2", "AS-3"]),
        ("ne(status,active)", ["AS-2", "AS-3"]),
        ("in(status,(active,suspended))", ["AS-1", "AS-2"]),
        ("out(status,(active,suspended))", ["AS-3"]),
        ("status=in=(active,terminated)", ["AS-1", "AS-3"]),
        ("eq(product.id,PRD-1)", ["AS-1", "AS-2"]),
        ("product.id=PRD-2", ["AS-3"]),
        ("product__id=PRD-2", ["AS-3"]),
        ("eq(params.value,blue)", ["AS-2"]),
    ],
)
def test_comparison_forms_select_the_same_objects_as_connect(query: str, expected: list[str]) -> None:
    assert ids(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=active&product.id=PRD-1", ["AS-1"]),
        ("eq(status,active),eq(product.id,PRD-2)", []),
        ("and(eq(product.id,PRD-1),ne(status,active))", ["AS-2"]),
        ("or(eq(status,active),eq(status,terminated))", ["AS-1", "AS-3"]),
        ("(status=active|status=terminated)", ["AS-1", "AS-3"]),
        ("(status=active;status=terminated)", ["AS-1", "AS-3"]),
        ("not(eq(status,active))", ["AS-2", "AS-3"]),
        ("(status=active|status=suspended)&product.id=PRD-1", ["AS-1", "AS-2"]),
        ("and(or(eq(status,active),eq(status,terminated)),eq(product.id,PRD-2))", ["AS-3"]),
    ],
)
def test_logical_operators_combine_as_in_django_rql(query: str, expected: list[str]) -> None:
    assert ids(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("like(external_id,sub-*)", ["AS-1", "AS-2"]),
        ("like(external_id,SUB-*)", []),
        ("ilike(external_id,SUB-*)", ["AS-1", "AS-2"]),
        ("ilike(external_id,SUB*)", ["AS-1", "AS-2", "AS-3"]),
        ("ilike(external_id,*comma)", ["AS-3"]),
        ("like(external_id,sub-1)", ["AS-1"]),
        ("like(external_id,*ub*)", ["AS-1", "AS-2", "AS-3"]),
    ],
)
def test_like_is_a_case_sensitive_wildcard_match_and_ilike_is_not(query: str, expected: list[str]) -> None:
    assert ids(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("gt(seats,5)", ["AS-1", "AS-3"]),
        ("ge(seats,7)", ["AS-1", "AS-3"]),
        ("lt(seats,7)", ["AS-2"]),
        ("le(seats,7.0)", ["AS-2", "AS-3"]),
        ("eq(seats,10)", ["AS-1"]),
        ("eq(trial,true)", ["AS-2"]),
        ("eq(trial,false)", ["AS-1", "AS-3"]),
        ("ge(created,2026-09-02)", ["AS-2", "AS-3"]),
        ("lt(created,2026-09-02T10:00:00Z)", ["AS-1"]),
        # 10:00+02:00 is 08:00 UTC: offsets are compared as instants, not as text
        ("lt(created,2026-09-03T09:00:00+00:00)", ["AS-1", "AS-2", "AS-3"]),
        ("gt(created,2026-09-03T09:00:00%2B00:00)", []),
    ],
)
def test_numbers_booleans_and_dates_compare_by_value(query: str, expected: list[str]) -> None:
    assert ids(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("eq(note,null())", ["AS-1"]),
        ("ne(note,null())", ["AS-2", "AS-3"]),
        ("note=null()", ["AS-1"]),
        ("eq(note,empty())", ["AS-1", "AS-2"]),
        ("ne(note,empty())", ["AS-3"]),
    ],
)
def test_null_and_empty_match_missing_and_blank_values(query: str, expected: list[str]) -> None:
    assert ids(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        'eq(external_id,"Sub, with comma")',
        "eq(external_id,'Sub, with comma')",
        "eq(external_id,%22Sub%2C%20with%20comma%22)",
        "external_id=%27Sub,%20with%20comma%27",
    ],
)
def test_quoted_values_may_hold_commas_and_be_url_encoded(query: str) -> None:
    assert ids(query) == ["AS-3"]


def test_ordering_sorts_by_several_keys_in_either_direction() -> None:
    assert ids("ordering(-seats)") == ["AS-1", "AS-3", "AS-2"]
    assert ids("ordering(product.id,-created)") == ["AS-2", "AS-1", "AS-3"]
    assert ids("ordering(+product.id,+seats)") == ["AS-2", "AS-1", "AS-3"]


def test_ordering_puts_missing_values_last() -> None:
    objs = [{"id": "a", "n": None}, {"id": "b", "n": 2}, {"id": "c", "n": 1}]
    assert ids("ordering(n)", objs) == ["c", "b", "a"]


def test_controls_are_read_next_to_the_filter() -> None:
    q = rql.parse(
        "select(-params,-asset.items)&eq(status,active)&ordering(-created)&limit=5&offset=10&search=x"
    )
    assert q.select == ["-params", "-asset.items"]
    assert q.ordering == ["-created"]
    assert (q.limit, q.offset, q.search) == ("5", "10", "x")
    assert q.filter == rql.Comparison("eq", "status", "active")


def test_limit_may_also_be_written_as_an_rql_call() -> None:
    q = rql.parse("limit(20,40)")
    assert (q.limit, q.offset) == ("20", "40")


def test_an_empty_query_filters_nothing() -> None:
    assert rql.parse("").filter is None
    assert ids("") == ["AS-1", "AS-2", "AS-3"]


@pytest.mark.parametrize(
    "query",
    [
        "eq(status,active",
        "eq(status)",
        "foo(status,active)",
        "eq(status,active))",
        "in(status,(active,suspended)",
        "status",
        "eq(,active)",
        "and()",
        "not(eq(a,1),eq(b,2))",
        "eq(status,'unterminated)",
        "(status=active|status=suspended",
        "or(eq(a,1),eq(b,2)",
        "eq(1abc,x)",
        "ordering(",
        "and(select(a),eq(b,1))",
    ],
)
def test_malformed_queries_are_refused(query: str) -> None:
    with pytest.raises(rql.RQLError):
        rql.parse(query)


def test_filters_on_properties_an_endpoint_does_not_declare_are_ignored() -> None:
    declared = rql.Filterable(["status"], {"usage_file": "product.id"})
    assert ids("eq(no_such_field,x)", filterable=declared) == ["AS-1", "AS-2", "AS-3"]
    assert ids("and(eq(status,active),eq(no_such_field,x))", filterable=declared) == ["AS-1"]
    assert ids("usage_file=PRD-2", filterable=declared) == ["AS-3"]


def test_select_removes_the_excluded_paths_only() -> None:
    obj = {"id": "PR-1", "asset": {"id": "AS-1", "items": [1], "params": [2]}, "template": {"id": "TL-1"}}
    out = rql.apply_select(obj, ["-asset.items", "-template", "pending_request"])
    assert out == {"id": "PR-1", "asset": {"id": "AS-1", "params": [2]}}
    assert obj["asset"]["items"] == [1]  # the original is untouched


@pytest.mark.parametrize(
    ("limit", "offset", "expected"),
    [
        (None, None, (100, 0)),
        ("10", "20", (10, 20)),
        ("5000", "0", (1000, 0)),  # cut to the maximum page size
        ("0", "7", (0, 7)),
        ("-1", "-5", (100, 0)),  # invalid values fall back to the defaults, as in django-rql
        ("abc", "x", (100, 0)),
    ],
)
def test_limit_and_offset_fall_back_and_cut_off_like_django_rql(limit, offset, expected) -> None:
    q = rql.Query(limit=limit, offset=offset)
    assert rql.parse_page(q, 100, 1000) == expected


def test_content_range_matches_django_rql_including_empty_pages() -> None:
    assert rql.content_range(0, 100, 250) == "items 0-99/250"
    assert rql.content_range(200, 50, 250) == "items 200-249/250"
    assert rql.content_range(300, 0, 250) == "items 300-300/250"
    assert rql.content_range(0, 0, 0) == "items 0-0/0"


# ---------------------------------------------------------------------------------- properties
_safe_text = st.text(
    alphabet=st.characters(blacklist_characters="\"'()&|,;=%", blacklist_categories=("Cs", "Cc")),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() == s and s not in ("null", "empty"))
# (a double underscore is Django's spelling of a dot, so "a__b" reads as "a.b": kept out here)
_prop = st.from_regex(r"[a-z]{1,6}(_[a-z]{1,4})?(\.[a-z]{1,6}(_[a-z]{1,4})?){0,2}", fullmatch=True)


@given(prop=_prop, value=_safe_text)
def test_eq_written_any_way_parses_to_the_same_comparison(prop: str, value: str) -> None:
    expected = rql.Comparison("eq", prop, value)
    for text in (f"eq({prop},{value})", f"{prop}={value}", f"{prop}=eq={value}", f'eq({prop},"{value}")'):
        assert rql.parse(text, decoded=True).filter == expected


@given(
    value=st.text(alphabet=st.characters(blacklist_characters='"', blacklist_categories=("Cs",)), max_size=30)
)
def test_any_double_quoted_value_round_trips(value: str) -> None:
    q = rql.parse(f'eq(name,"{value}")', decoded=True)
    assert q.filter == rql.Comparison("eq", "name", value)


@given(
    seats=st.lists(st.integers(min_value=-1000, max_value=1000), min_size=1, max_size=20),
    bound=st.integers(min_value=-1000, max_value=1000),
)
def test_numeric_comparisons_agree_with_python(seats: list[int], bound: int) -> None:
    objs = [{"id": str(i), "n": n} for i, n in enumerate(seats)]
    for op, fn in {
        "gt": int.__gt__,
        "ge": int.__ge__,
        "lt": int.__lt__,
        "le": int.__le__,
        "eq": int.__eq__,
        "ne": int.__ne__,
    }.items():
        assert ids(f"{op}(n,{bound})", objs) == [o["id"] for o in objs if fn(o["n"], bound)]


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6))
def test_in_is_an_or_of_eq_and_out_its_negation(values: list[str]) -> None:
    objs = [{"id": x, "k": x} for x in ("a", "b", "c", "d")]
    joined = ",".join(values)
    ors = "or(" + ",".join(f"eq(k,{v})" for v in values) + ")" if len(values) > 1 else f"eq(k,{values[0]})"
    assert ids(f"in(k,({joined}))", objs) == ids(ors, objs)
    assert ids(f"out(k,({joined}))", objs) == ids(f"not({ors})", objs)


@given(st.text(max_size=40))
def test_the_parser_either_parses_or_raises_rql_error(text: str) -> None:
    try:
        rql.parse(text)
    except rql.RQLError:
        pass


def test_decimal_fields_compare_exactly() -> None:
    objs = [
        {"id": "big", "usage": Decimal("123456789012.123456")},
        {"id": "tiny", "usage": Decimal("0.000001")},
    ]
    assert ids("eq(usage,123456789012.123456)", objs) == ["big"]
    assert ids("gt(usage,0.0000005)", objs) == ["big", "tiny"]
