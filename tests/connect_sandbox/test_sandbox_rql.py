"""The sandbox reads RQL as Connect's django-rql does: parse, filter, order, select, page."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from connect_sandbox import filter_table, rql
from connect_sandbox.filter_table import FILTERS
from connect_sandbox.spec_filters import ENDPOINTS, F, derive, describe, render
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


# ------------------------------------------------------------------ what each endpoint declares
SPEC_FILE = Path(__file__).resolve().parent / "data" / "specs.yml"


@pytest.fixture(scope="module")
def vendored_spec() -> dict:
    with SPEC_FILE.open("rb") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


def _route_shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


class TestTheFilterTableIsTheSpecs:
    """filter_table.FILTERS is what the vendored spec's filter descriptions declare, no more, no less."""

    def test_the_checked_in_table_equals_the_vendored_specs_declarations(self, vendored_spec: dict) -> None:
        assert derive(vendored_spec) == FILTERS

    def test_the_table_renders_back_to_the_checked_in_module(self, vendored_spec: dict) -> None:
        module = Path(filter_table.__file__).read_text(encoding="utf-8")
        assert render(derive(vendored_spec), "tests/connect_sandbox/data/specs.yml") == module

    def test_every_list_route_the_sandbox_serves_has_a_table(self) -> None:
        from connect_sandbox.app import API_PREFIX, create_app
        from connect_sandbox.store import Store

        api = create_app(Store(seed_name="empty")).app
        served = {
            _route_shape(route.path.removeprefix(API_PREFIX))
            for route in api.router.routes
            if route.path.startswith(API_PREFIX)
            and "GET" in getattr(route, "methods", ())
            and not route.path.endswith("}")
        }
        assert served == {_route_shape(p) for p in ENDPOINTS}

    @pytest.mark.parametrize(
        ("description", "expected"),
        [
            (
                "Filter for: id\n\n**lookups:** eq, ne, like, ilike, null, in, out",
                F("eq ne like ilike null in out"),
            ),
            ("Filter for: created\n\n**lookups:** gt, lt\n\n**ordering:** true", F("gt lt", ordering=True)),
            (
                "Filter for: hub.id\n\n**lookups:** eq, ne, null, in\n\n**search:** true\n\n"
                "**ordering:** true\n\n**null:** HB-0000-0000, null()",
                F("eq ne null in", ordering=True, search=True, null="HB-0000-0000"),
            ),
            ("Filter for: tax_id\n\n**lookups:** ", F("")),
            ("This filter is used for explicit negative select.\n\n**lookups:** ", None),
        ],
        ids=["lookups only", "ordering", "search, ordering and null values", "no lookups", "a select switch"],
    )
    def test_a_description_reads_as_django_rql_rendered_it(self, description: str, expected) -> None:
        assert describe(description) == expected


# ------------------------------------------------------------------ refusals, unit level
TABLE = {
    "status": F("eq ne like ilike in out", ordering=True),
    "asset_id": F("eq in"),
    "assignee": F("eq null in"),
    "created": F("gt lt", ordering=True),
    "tax_id": F(""),
    "hub.id": F("eq ne null in out", null="HB-0000-0000"),
    "asset__tiers__customer__id": F("eq", ordering=True),
    "asset.tiers.customer.id": F("eq ne in out"),
}
ENDPOINT = rql.Filterable(TABLE)
ONE_ORDERING = "Bad ordering filter: query can contain only one ordering operation."
FIVE_FIELDS = "Bad ordering filter: max allowed number is 5."


def refusal(query: str) -> str | None:
    try:
        ENDPOINT.check(rql.parse(query))
    except rql.RQLError as exc:
        return str(exc)
    return None


class TestLookupsAreTheDeclaredOnes:
    @pytest.mark.parametrize(
        ("query", "lookup"),
        [
            ("ge(status,a)", "ge"),
            ("like(asset_id,AS-*)", "like"),
            ("out(asset_id,(AS-1,AS-2))", "out"),  # out needs the list lookup
            ("eq(created,2026-01-01)", "eq"),
            ("ne(assignee,null())", "ne"),  # null() needs null and eq/ne both
            ("eq(status,null())", "eq"),  # no null lookup
            ("eq(tax_id,X)", "eq"),  # declared with no lookups at all
            ("in(asset.tiers.customer.id,(null()))", "eq"),  # a null inside in() needs null
            ("ne(asset__tiers__customer__id,CU-1)", "ne"),  # read as its own name, not asset.tiers...
            ("or(eq(status,a),not(gt(status,b)))", "gt"),  # anywhere in the tree
        ],
        ids=[
            "ge on a string",
            "like not declared",
            "out without out",
            "eq on gt/lt only",
            "ne null without ne",
            "null without null",
            "no lookups",
            "null in a list",
            "double-underscore name",
            "nested",
        ],
    )
    def test_an_undeclared_lookup_is_refused_naming_filter_and_lookup(self, query: str, lookup: str) -> None:
        message = refusal(query)
        assert message is not None and message.startswith("RQL Lookup error: filter ")
        assert f"does not support lookup {lookup!r}" in message

    @pytest.mark.parametrize(
        "query",
        [
            "eq(status,a)",
            "in(asset_id,(AS-1,AS-2))",
            "eq(assignee,null())",
            "gt(created,2026-01-01)",
            "eq(tax_id,empty())",  # empty() always takes eq and ne
            "ne(asset.tiers.customer.id,CU-1)",
            "eq(hub.id,HB-0000-0000)",
            "ge(not_declared,1)",  # ignored, never refused
            "",
        ],
        ids=[
            "eq",
            "in with in and eq",
            "eq null with null",
            "gt",
            "empty",
            "dotted name",
            "null value of the filter",
            "undeclared filter",
            "no filter",
        ],
    )
    def test_a_declared_lookup_is_accepted(self, query: str) -> None:
        assert refusal(query) is None


class TestOrderingIsTheDeclaredOne:
    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("ordering(asset_id)", "Bad ordering filter: asset_id."),
            ("ordering(-asset_id)", "Bad ordering filter: asset_id."),
            ("ordering(not_declared)", "Bad ordering filter: not_declared."),
            ("ordering(status)&ordering(created)", ONE_ORDERING),
            ("ordering(status,created,-status,-created,status,created)", FIVE_FIELDS),
            ("ordering(asset.tiers.customer.id)", "Bad ordering filter: asset.tiers.customer.id."),
        ],
        ids=[
            "not an ordering filter",
            "descending",
            "undeclared",
            "two orderings",
            "six fields",
            "dotted twin",
        ],
    )
    def test_an_undeclared_ordering_is_refused(self, query: str, message: str) -> None:
        assert refusal(query) == message

    @pytest.mark.parametrize(
        "query",
        [
            "ordering(status)",
            "ordering(-created,+status)",
            "ordering()",
            "ordering(asset__tiers__customer__id)",
        ],
        ids=["one field", "signed fields", "empty", "double-underscore name"],
    )
    def test_a_declared_ordering_is_accepted(self, query: str) -> None:
        assert refusal(query) is None

    def test_a_lookup_error_is_reported_before_a_bad_ordering(self) -> None:
        assert refusal("ordering(asset_id)&ge(status,a)").startswith("RQL Lookup error")


class TestNullValuesOfAFilter:
    OBJS: ClassVar[list[dict]] = [{"id": "c1", "hub": None}, {"id": "c2", "hub": {"id": "HB-0000-0000"}}]

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("eq(hub.id,HB-0000-0000)", ["c1"]),
            ('eq(hub.id,"HB-0000-0000")', ["c2"]),
            ("ne(hub.id,HB-0000-0000)", ["c2"]),
            ("in(hub.id,(HB-0000-0000))", ["c1"]),
        ],
        ids=["unquoted means null", "quoted is text", "ne", "in a list"],
    )
    def test_an_unquoted_null_value_matches_what_is_null(self, query: str, expected: list[str]) -> None:
        assert ids(query, self.OBJS, ENDPOINT) == expected


# ------------------------------------------------------------------ refusals over HTTP
class TestTheSandboxRefusesWhatConnectRefuses:
    """A refused lookup or ordering is a 400 in Connect's error shape, with django-rql's text."""

    @pytest.mark.parametrize(
        ("path", "query", "error"),
        [
            ("/requests", "ordering(asset.id)", "Bad ordering filter: asset.id."),
            ("/requests", "ordering(created)&ordering(status)", ONE_ORDERING),
            ("/assets", "ordering(-id)", "Bad ordering filter: id."),
            (
                "/hubs",
                "ordering(id,name,instance.type,stats.connections,stats.marketplaces,-events.updated.at)",
                FIVE_FIELDS,
            ),
            ("/usage/records", "usagefile.id=UF-2026-10-0000000001&ordering(id)", "Bad ordering filter: id."),
            ("/usage/records", "ordering(start_date)", "Bad ordering filter: start_date."),
            ("/usage/files", "ordering(created)", "Bad ordering filter: created."),
            ("/tier/accounts", "ordering(id)", "Bad ordering filter: id."),
            ("/marketplaces", "ordering(hubs.id)", "Bad ordering filter: hubs.id."),
            ("/products/PRD-276-377-545/connections", "ordering(hub.id)", "Bad ordering filter: hub.id."),
            ("/products/PRD-276-377-545/templates", "ordering(type)", "Bad ordering filter: type."),
        ],
        ids=[
            "requests by asset.id",
            "requests, two orderings",
            "assets by id",
            "hubs, six fields",
            "records by id",
            "records by start_date",
            "usage files by created",
            "tier accounts by id",
            "marketplaces by hubs.id",
            "connections by hub.id",
            "templates by type",
        ],
    )
    def test_an_ordering_the_endpoint_does_not_allow_is_a_400(self, api, path, query, error) -> None:
        self._assert_refused(api.get(path, query), error)

    @pytest.mark.parametrize(
        ("path", "query", "filter_", "lookup"),
        [
            ("/requests", "ge(id,PR-0000-0000-0001-001)", "id", "ge"),
            ("/requests", "out(asset_id,(AS-0000-0000-0001))", "asset_id", "out"),
            ("/requests", "ne(asset.status,active)", "asset.status", "ne"),
            ("/requests", "eq(type,null())", "type", "eq"),
            ("/assets", "eq(created,2026-09-01)", "created", "eq"),
            ("/tier/accounts", "eq(tax_id,VAT-1)", "tax_id", "eq"),
            ("/marketplaces", "ge(name,EU)", "name", "ge"),
            ("/hubs", "like(stats.connections,1*)", "stats.connections", "like"),
            ("/products/PRD-276-377-545/connections", "gt(hub.id,HB-0000-0001)", "hub.id", "gt"),
            ("/products/PRD-276-377-545/templates", "le(type,fulfillment)", "type", "le"),
            ("/usage/files", "eq(created.at,2026-10-01)", "created.at", "eq"),
            ("/usage/records", "like(start_date,2026*)", "start_date", "like"),
            ("/usage/records", "and(eq(usagefile.id,UF-2026-10-0000000001),gt(status,a))", "status", "gt"),
        ],
        ids=[
            "ge on a request id",
            "out where only in is declared",
            "ne on asset.status",
            "null on type",
            "eq on created of assets",
            "tax_id takes no lookup",
            "ge on a marketplace name",
            "like on a number",
            "gt on a hub id",
            "le on a template type",
            "eq on created.at of usage files",
            "like on a record date",
            "gt on a record status",
        ],
    )
    def test_a_lookup_the_filter_does_not_declare_is_a_400(self, api, path, query, filter_, lookup) -> None:
        r = api.get(path, query)
        self._assert_refused(r, None)
        assert r.json()["errors"][0].startswith(
            f"RQL Lookup error: filter {filter_!r} does not support lookup {lookup!r}"
        )

    @pytest.mark.parametrize(
        ("path", "query", "count"),
        [
            ("/requests", "ordering(-created)", 6),
            (
                "/requests",
                "ordering(asset__tiers__customer__id)&eq(asset__tiers__customer__id,TA-0000-0000-0002)",
                6,
            ),
            ("/requests", "eq(asset__status,no-such-status)", 6),  # undeclared: ignored
            ("/requests", "eq(asset.status,no-such-status)", 0),
            ("/assets", "gt(created,2026-01-01)&ordering(-created)", 6),
            ("/tier/accounts", "eq(tax_id,empty())", 0),
            ("/usage/files", "ge(created.at,2026-10-11T10:01:00)&ordering(created.at,id)", 3),
            ("/usage/records", "usagefile.id=UF-2026-10-0000000001&ordering(-created_time)", 50),
        ],
        ids=[
            "requests by created",
            "double-underscore filter and ordering",
            "undeclared double-underscore twin",
            "declared dotted filter",
            "assets by created",
            "empty() on a filter without lookups",
            "usage files by creation and id",
            "records by creation, newest first",
        ],
    )
    def test_what_the_endpoint_declares_is_served(self, api, path, query, count) -> None:
        r = api.get(path, query)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Range"].endswith(f"/{count}")

    @staticmethod
    def _assert_refused(r, error: str | None) -> None:
        assert r.status_code == 400, r.text
        body = r.json()
        assert set(body) == {"error_code", "errors"} and body["error_code"] == "INVALID_RQL"
        assert len(body["errors"]) == 1
        if error is not None:
            assert body["errors"] == [error]


class TestRecordsComeInCreationOrder:
    """Usage records are served in creation order: files as created, then rows; created_time sorts so."""

    def test_created_time_is_the_order_records_come_in_without_an_ordering(self, api) -> None:
        plain = [r["id"] for r in api.get("/usage/records", "limit=1000").json()]
        by_creation = [r["id"] for r in api.get("/usage/records", "ordering(created_time)&limit=1000").json()]
        newest = [r["id"] for r in api.get("/usage/records", "ordering(-created_time)&limit=1000").json()]
        assert plain == by_creation == newest[::-1] and len(set(plain)) == len(plain) > 50

    def test_offset_pages_in_creation_order_add_up_to_the_whole_list(self, api) -> None:
        whole = [r["id"] for r in api.get("/usage/records", "ordering(created_time)&limit=1000").json()]
        paged: list[str] = []
        for offset in range(0, len(whole), 7):
            page = api.get("/usage/records", f"ordering(created_time)&limit=7&offset={offset}").json()
            paged.extend(r["id"] for r in page)
        assert paged == whole

    def test_files_are_served_in_creation_order_whatever_order_the_query_names_them(self, api) -> None:
        files = [f["id"] for f in api.get("/usage/files", "ordering(created.at,id)").json()]
        first, second = files[0], files[1]
        r = api.get("/usage/records", f"in(usagefile.id,({second},{first}))&limit=1000")
        seen = list(dict.fromkeys(rec["usagefile"]["id"] for rec in r.json()))
        assert seen == [first, second]
