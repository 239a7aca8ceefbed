"""The RQL builder: what it renders, and that no value can change a query's structure.

The structural checks read the rendered query the way Connect's server does: percent-decode the
whole query string once, then lex quoted values as ``"[^"]*"`` or ``'[^']*'`` (lib-rql's
QUOTED_VAL terminal). Replacing every quoted value with ``Q`` must leave exactly the skeleton the
builder was asked for, whatever the values held.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from enum import Enum
from urllib.parse import unquote

import pytest
from connect_provider.enums import RequestStatus
from connect_provider.exceptions import ConnectValidationError
from connect_provider.rql import R, as_rql, like_literal, ordering, render_value, select, to_query_string
from hypothesis import given
from hypothesis import strategies as st

QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
URL_SAFE = re.compile(r"(?:[A-Za-z0-9\-._~(),=&*:@!$/]|%[0-9A-F]{2})*")

# Any text a value may hold, except one holding both quote characters (not expressible in RQL).
texts = st.text(st.characters(codec="utf-8"), max_size=40).filter(lambda s: not ('"' in s and "'" in s))


def skeleton(query_string: str) -> str:
    """What the server's parser sees once quoted values are set aside."""
    return QUOTED.sub("Q", unquote(query_string))


def test_a_comparison_renders_with_the_value_quoted() -> None:
    assert str(R().status.eq("pending")) == 'eq(status,"pending")'


def test_nested_fields_are_joined_with_dots() -> None:
    assert str(R().asset.product.id.eq("PRD-1")) == 'eq(asset.product.id,"PRD-1")'
    assert str(R().n("asset.connection.hub.id").ne("HB-1")) == 'ne(asset.connection.hub.id,"HB-1")'


def test_a_field_called_name_or_type_is_still_a_field() -> None:
    assert str(R().hub.name.eq("EU Hub")) == 'eq(hub.name,"EU Hub")'
    assert str(R().type.in_(["purchase", "change"])) == 'in(type,("purchase","change"))'


def test_every_operator_of_the_issue_renders() -> None:
    field = R().f
    assert str(field.gt(1)) == "gt(f,1)"
    assert str(field.ge(1.5)) == "ge(f,1.5)"
    assert str(field.lt(Decimal("0.000001"))) == "lt(f,0.000001)"
    assert str(field.le(-3)) == "le(f,-3)"
    assert str(field.like("sub-*")) == 'like(f,"sub-*")'
    assert str(field.ilike("*Seat*")) == 'ilike(f,"*Seat*")'
    assert str(field.out(["a", 2])) == 'out(f,("a",2))'
    assert str(field.null()) == "eq(f,null())"
    assert str(field.null(False)) == "ne(f,null())"
    assert str(field.empty()) == "eq(f,empty())"
    assert str(field.empty(False)) == "ne(f,empty())"
    assert str(field.eq(None)) == "eq(f,null())"


def test_and_or_not_compose_and_flatten() -> None:
    a, b, c = R().a.eq(1), R().b.eq(2), R().c.eq(3)
    assert str(a & b & c) == "and(eq(a,1),eq(b,2),eq(c,3))"
    assert str(a | b | c) == "or(eq(a,1),eq(b,2),eq(c,3))"
    assert str((a | b) & c) == "and(or(eq(a,1),eq(b,2)),eq(c,3))"
    assert str(~a) == "not(eq(a,1))"
    assert str(~~a) == "eq(a,1)"


def test_the_empty_expression_vanishes_when_combined() -> None:
    a = R().a.eq(1)
    assert str(R()) == ""
    assert not R()
    assert str(R() & a) == str(a & R()) == "eq(a,1)"
    assert str(R() | a) == "eq(a,1)"
    with pytest.raises(ConnectValidationError):
        ~R()


def test_keyword_lookups_follow_the_django_style() -> None:
    assert str(R(asset__id="AS-1")) == 'eq(asset.id,"AS-1")'
    assert str(R(status__in=["pending", "inquiring"], note__null=True, created__ge=dt.date(2026, 1, 2))) == (
        'and(in(status,("pending","inquiring")),eq(note,null()),ge(created,2026-01-02))'
    )
    assert str(R(external_id__ne="x", name__empty=False)) == 'and(ne(external_id,"x"),ne(name,empty()))'


def test_values_of_other_types_render_as_the_server_reads_them() -> None:
    assert render_value(True) == "true"
    assert render_value(False) == "false"
    assert render_value(10) == "10"
    assert render_value(Decimal("123456789012.123456")) == "123456789012.123456"
    assert render_value(dt.date(2026, 10, 1)) == "2026-10-01"
    aware = dt.datetime(2026, 10, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert render_value(aware) == "2026-10-01T12:30:00+03:00"
    assert render_value(RequestStatus.PENDING) == '"pending"'

    class Level(Enum):
        HIGH = 3

    assert render_value(Level.HIGH) == "3"


def test_a_value_with_double_quotes_is_wrapped_in_single_quotes() -> None:
    assert render_value('say "hi"') == "'say \"hi\"'"
    assert render_value("it's") == '"it\'s"'


def test_a_value_with_both_quote_kinds_is_refused_naming_the_field() -> None:
    with pytest.raises(ConnectValidationError) as caught:
        R().asset.external_id.eq('it\'s "x"')
    assert caught.value.field == "asset.external_id"
    assert "both a double and a single quote" in str(caught.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), Decimal("NaN"), object(), b"bytes"])
def test_values_that_cannot_be_sent_are_refused(bad: object) -> None:
    with pytest.raises(ConnectValidationError):
        R().f.eq(bad)


@pytest.mark.parametrize("name", ["1abc", "a b", "a,b", "a)", "", "é"])
def test_field_names_that_are_not_rql_properties_are_refused(name: str) -> None:
    with pytest.raises(ConnectValidationError):
        R().n(name).eq(1)


def test_in_needs_a_non_empty_list_not_a_string() -> None:
    with pytest.raises(ConnectValidationError):
        R().f.in_("abc")
    with pytest.raises(ConnectValidationError):
        R().f.in_([])


def test_select_and_ordering_render_signed_fields() -> None:
    assert select("-asset.items", "activation_key") == "select(-asset.items,activation_key)"
    assert ordering("-created", "+id") == "ordering(-created,+id)"
    with pytest.raises(ConnectValidationError):
        ordering("created desc")
    with pytest.raises(ConnectValidationError):
        select()


def test_like_literal_escapes_the_wildcard_and_backslash() -> None:
    assert like_literal(r"50*\off") == r"50\*\\off"
    assert str(R().name.like(like_literal("a*b") + "*")) == r'like(name,"a\*b*")'


def test_as_rql_accepts_strings_expressions_and_none() -> None:
    assert as_rql(None) == ""
    assert as_rql(" eq(a,b) ") == "eq(a,b)"
    assert as_rql(R().a.eq("b")) == 'eq(a,"b")'
    with pytest.raises(ConnectValidationError):
        as_rql(42)  # type: ignore[arg-type]


def test_the_query_string_keeps_the_structure_readable() -> None:
    query = R().status.eq("pending") & R().created.ge(dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))
    assert (
        to_query_string(str(query)) == "and(eq(status,%22pending%22),ge(created,2026-01-02T00:00:00%2B00:00))"
    )


@given(value=texts)
def test_any_text_value_renders_as_exactly_one_quoted_token(value: str) -> None:
    token = render_value(value)
    encoded = to_query_string(token)
    assert URL_SAFE.fullmatch(encoded), encoded
    decoded = unquote(encoded)
    assert decoded == token
    assert QUOTED.fullmatch(decoded)
    assert decoded[1:-1] == value


@given(a=texts, b=texts, c=texts)
def test_no_value_changes_the_structure_of_a_query(a: str, b: str, c: str) -> None:
    query = (R().asset.external_id.eq(a) | ~R().name.like(b)) & R().type.in_([c, a]) & R().note.null()
    encoded = to_query_string(str(query))
    assert URL_SAFE.fullmatch(encoded), encoded
    assert (
        skeleton(encoded)
        == "and(or(eq(asset.external_id,Q),not(like(name,Q))),in(type,(Q,Q)),eq(note,null()))"
    )
    assert QUOTED.findall(unquote(encoded)) == [render_value(v) for v in (a, b, c, a)]


@given(value=texts)
def test_keyword_lookups_are_as_safe_as_the_builder(value: str) -> None:
    encoded = to_query_string(str(R(asset__external_id=value, product__id__in=[value, "PRD-1"])))
    assert skeleton(encoded) == "and(eq(asset.external_id,Q),in(product.id,(Q,Q)))"
