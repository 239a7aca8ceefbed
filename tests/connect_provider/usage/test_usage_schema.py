"""Page bytes -> Arrow batch: the explicit schema, exact numbers, UTC timestamps, bad records set aside."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
from connect_provider.usage.schema import (
    DECIMAL_TYPE,
    FILE_SCHEMA,
    PARAMS_TYPE,
    QUARANTINE_SCHEMA,
    TIMESTAMP_TYPE,
    USAGE_RECORD_SCHEMA,
    ExportContext,
    PageConverter,
    PageFormatError,
    quarantine_batch,
    split_records,
)
from usage_factory import FILE_ID, PRODUCT_ID, dumps_exact, record, usage_file

EXPORTED_AT = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def converter() -> PageConverter:
    return PageConverter(ExportContext.from_usage_file(usage_file(), EXPORTED_AT))


def convert(converter: PageConverter, records: list, offset: int = 0):
    return converter.convert(dumps_exact(records).encode(), offset)


def test_the_schema_types_ids_as_strings_numbers_as_exact_decimals_and_times_as_utc() -> None:
    types = {f.name: f.type for f in USAGE_RECORD_SCHEMA}
    assert types["id"] == pa.string() and types["usage_file_id"] == pa.string()
    assert types["usage"] == types["amount"] == DECIMAL_TYPE == pa.decimal128(38, 12)
    assert types["start_date"] == types["end_date"] == types["exported_at"] == pa.timestamp("us", tz="UTC")
    assert types["multiplier"] == types["tier"] == pa.int64()
    assert types["params"] == PARAMS_TYPE
    for column in (
        "item_id",
        "item_local_id",
        "item_name",
        "item_mpn",
        "item_unit",
        "item_precision",
        "item_type",
        "asset_id",
        "asset_external_id",
        "asset_external_uid",
        "usagefile_name",
        "usagefile_schema",
        "currency",
        "product_id",
        "period",
        "status",
    ):
        assert types[column] == pa.string(), column
    assert not USAGE_RECORD_SCHEMA.field("id").nullable
    assert USAGE_RECORD_SCHEMA.field("amount").nullable
    # The files hold everything but the partition keys, which live in the path.
    assert FILE_SCHEMA.names == [n for n in USAGE_RECORD_SCHEMA.names if n not in ("product_id", "period")]


def test_a_record_becomes_one_flat_typed_row(converter: PageConverter) -> None:
    page = convert(converter, [record(1)])
    assert page.batch.schema == FILE_SCHEMA
    row = page.batch.to_pylist()[0]
    assert row["id"] == f"UR-{FILE_ID[3:]}-0000001"
    assert row["usage_file_id"] == FILE_ID
    assert converter.context.product_id == PRODUCT_ID and converter.context.period == "2026-10"
    assert row["usage"] == Decimal("1") and row["amount"] == Decimal("2.5")
    assert (
        row["item_local_id"] == "SEATS" and row["item_mpn"] == "SEATS" and row["item_precision"] == "integer"
    )
    assert row["asset_external_id"] == "sub-1001" and row["asset_external_uid"] == "uid-1"
    assert row["usagefile_name"] == "Cloud Seats usage 2026-10" and row["currency"] == "EUR"
    assert row["params"] == [{"name": "region", "value": "eu-west-1"}]
    assert row["exported_at"] == EXPORTED_AT
    assert page.bad == [] and page.received == 1


@pytest.mark.parametrize(
    "text",
    ["123456789012.123456", "0.000001", "99999999999999999999999999.999999999999", "-0.000000000001", "0"],
)
def test_large_and_precise_numbers_round_trip_exactly(converter: PageConverter, text: str) -> None:
    page = convert(converter, [record(1, usage=Decimal(text), amount=Decimal(text))])
    row = page.batch.to_pylist()[0]
    assert row["usage"] == Decimal(text) and row["amount"] == Decimal(text)


def test_a_null_amount_stays_null(converter: PageConverter) -> None:
    row = convert(converter, [record(1, amount=None)]).batch.to_pylist()[0]
    assert row["amount"] is None


@pytest.mark.parametrize(
    ("sent", "utc"),
    [
        ("2026-10-01T00:00:00+02:00", datetime(2026, 9, 30, 22, 0, tzinfo=timezone.utc)),
        ("2026-10-01T00:00:00-05:30", datetime(2026, 10, 1, 5, 30, tzinfo=timezone.utc)),
        ("2026-10-01T10:00:00Z", datetime(2026, 10, 1, 10, 0, tzinfo=timezone.utc)),
        ("2026-10-01T10:00:00", datetime(2026, 10, 1, 10, 0, tzinfo=timezone.utc)),
        ("2026-10-01T10:00:00.123456+00:00", datetime(2026, 10, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)),
    ],
)
def test_timestamps_are_converted_to_utc_and_naive_ones_are_taken_as_utc(
    converter: PageConverter, sent: str, utc: datetime
) -> None:
    row = convert(converter, [record(1, start_date=sent)]).batch.to_pylist()[0]
    assert row["start_date"] == utc


def test_unicode_in_names_and_params_is_kept(converter: PageConverter) -> None:
    item = dict(record(1)["item"], name="Stockage 云存储 ü 🚀")
    params = [{"parameter_name": "région", "parameter_value": "Zürich — 東京"}]
    row = convert(converter, [record(1, item=item, params=params)]).batch.to_pylist()[0]
    assert row["item_name"] == "Stockage 云存储 ü 🚀"
    assert row["params"] == [{"name": "région", "value": "Zürich — 東京"}]


def test_empty_params_null_params_and_null_parameter_values_are_kept_as_sent(
    converter: PageConverter,
) -> None:
    rows = convert(
        converter,
        [
            record(1, params=[]),
            record(2, params=None),
            record(
                3,
                params=[
                    {"parameter_name": "a", "parameter_value": None},
                    {"parameter_name": "a", "parameter_value": "2"},
                ],
            ),
        ],
    ).batch.to_pylist()
    assert rows[0]["params"] == []
    assert rows[1]["params"] is None
    assert rows[2]["params"] == [{"name": "a", "value": None}, {"name": "a", "value": "2"}]


def test_flattened_fields_fall_back_to_the_top_level_copies(converter: PageConverter) -> None:
    rec = record(1, item={"name": "Seats"}, asset=None)
    row = convert(converter, [rec]).batch.to_pylist()[0]
    assert row["item_id"] == rec["item_id"] and row["asset_id"] == rec["asset_id"]
    assert row["asset_external_uid"] == rec["asset_external_uid"]


def test_an_empty_page_gives_an_empty_batch_with_the_schema(converter: PageConverter) -> None:
    page = converter.convert(b"[]")
    assert page.batch.num_rows == 0 and page.batch.schema == FILE_SCHEMA and page.received == 0


def test_a_pretty_printed_page_with_newlines_is_read(converter: PageConverter) -> None:
    import json

    body = json.dumps([record(1, usage=5, amount=1.25)], indent=2).encode()
    assert convert(converter, []).received == 0
    assert converter.convert(body).batch.to_pylist()[0]["amount"] == Decimal("1.25")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"usage": "lots"}, "field usage"),
        ({"usage": None}, "usage is missing"),
        ({"id": None}, "id is missing"),
        ({"usage": Decimal("0.0000000000001")}, "requires scale 13"),
        ({"amount": Decimal("123456789012345678901234567")}, "amount has more than 26 integer digits"),
        ({"tier": 1.5}, "field tier"),
        ({"start_date": "2026-13-45T00:00:00"}, "field start_date"),
        ({"product_id": "PRD-000-000-000"}, "product_id differs"),
        ({"usagefile": {"id": "UF-2026-10-0000000001"}}, "usagefile.id differs"),
    ],
)
def test_a_bad_record_is_set_aside_with_its_reason_and_the_others_are_kept(
    converter: PageConverter, overrides: dict, reason: str
) -> None:
    records = [record(1), record(2, **overrides), record(3)]
    page = convert(converter, records, offset=1000)
    assert page.received == 3
    assert page.batch.column("id").to_pylist() == [records[0]["id"], records[2]["id"]]
    [bad] = page.bad
    assert bad.record_index == 1001
    assert reason in bad.reason
    assert bad.raw_json == dumps_exact(records[1])
    assert bad.record_id == records[1]["id"]


def test_a_null_element_of_the_page_is_a_bad_record(converter: PageConverter) -> None:
    page = converter.convert(("[" + dumps_exact(record(1)) + ",null]").encode())
    assert page.batch.num_rows == 1
    assert [(b.record_index, b.raw_json, b.record_id) for b in page.bad] == [(1, "null", None)]


def test_a_body_that_is_not_a_json_array_is_a_page_error(converter: PageConverter) -> None:
    with pytest.raises(PageFormatError, match="not a JSON array"):
        converter.convert(b'{"error_code": "X"}')
    with pytest.raises(PageFormatError, match="not valid JSON"):
        converter.convert(b'[{"id": "UR-1", "usage": 1},{"id": ')


def test_split_records_keeps_each_record_text_as_sent() -> None:
    body = b' [ {"id":"a","usage":1.000000000000000000001} ,\n{"id":"b,]","p":[{"x":1},{"y":"}"}]} ] '
    assert split_records(body) == [
        '{"id":"a","usage":1.000000000000000000001}',
        '{"id":"b,]","p":[{"x":1},{"y":"}"}]}',
    ]
    assert split_records(b"[]") == []


def test_a_usage_file_without_a_period_cannot_be_placed() -> None:
    with pytest.raises(PageFormatError, match=r"period\.from"):
        ExportContext.from_usage_file({"id": FILE_ID, "product": {"id": PRODUCT_ID}})


def test_quarantine_rows_carry_the_raw_json_and_the_reason(converter: PageConverter) -> None:
    page = convert(converter, [record(1, usage="x")], offset=7)
    batch = quarantine_batch(converter.context, page.bad, EXPORTED_AT)
    assert batch.schema == QUARANTINE_SCHEMA
    [row] = batch.to_pylist()
    assert row["record_index"] == 7 and row["usage_file_id"] == FILE_ID and "usage" in row["reason"]
    assert row["raw_json"] == dumps_exact(record(1, usage="x"))
    assert row["quarantined_at"] == EXPORTED_AT
    assert TIMESTAMP_TYPE == QUARANTINE_SCHEMA.field("quarantined_at").type


# ---------------------------------------------------------------------------------------------
# One declarative table: the raw schema Arrow parses with and the batch both come from it.
# Every string field of this record has its own value, so a column that reads another path (two
# paths swapped in the table, or a batch assembled by position) shows up as a wrong value.
DISTINCT = {
    "id": "UR-2026-10-0000000042-0000001",
    "start_date": "2026-10-01T00:00:00+00:00",
    "end_date": "2026-10-02T00:00:00+00:00",
    "product_id": PRODUCT_ID,
    "external_billing_id": "billing-id",
    "external_billing_note": "billing-note",
    "item": {
        "id": "item-id",
        "local_id": "item-local-id",
        "name": "item-name",
        "unit": "item-unit",
        "mpn": "item-mpn",
        "precision": "item-precision",
        "type": "item-type",
    },
    "asset": {
        "id": "asset-id",
        "external_id": "asset-ext-id",
        "external_uid": "asset-ext-uid",
        "recon_id": "recon",
    },
    "category": {"id": "cat-id", "name": "cat-name", "description": "cat-description"},
    "tier": 2,
    "amount": Decimal("3.5"),
    "multiplier": 7,
    "usage": Decimal("11"),
    "status": "closed",
    "closed_at": "2026-11-05T09:00:00+00:00",
    "closed_by": "closed-by",
    "params": [{"parameter_name": "p-name", "parameter_value": "p-value"}],
    "item_id": "top-item-id",
    "asset_id": "top-asset-id",
    "usagefile": {"id": FILE_ID, "name": "uf-name", "schema": "tr", "currency": "USD"},
    "resource_local_id": "resource",
    "asset_external_id": "top-asset-ext-id",
    "asset_external_uid": "top-asset-ext-uid",
}
# What each column must hold, written out by hand from docs/usage-export.md's table (not from the code).
EXPECTED_ROW = {
    "id": "UR-2026-10-0000000042-0000001",
    "usage_file_id": FILE_ID,
    "start_date": datetime(2026, 10, 1, tzinfo=timezone.utc),
    "end_date": datetime(2026, 10, 2, tzinfo=timezone.utc),
    "usage": Decimal("11"),
    "amount": Decimal("3.5"),
    "multiplier": 7,
    "tier": 2,
    "status": "closed",
    "item_id": "item-id",
    "item_local_id": "item-local-id",
    "item_name": "item-name",
    "item_mpn": "item-mpn",
    "item_unit": "item-unit",
    "item_precision": "item-precision",
    "item_type": "item-type",
    "asset_id": "asset-id",
    "asset_external_id": "asset-ext-id",
    "asset_external_uid": "asset-ext-uid",
    "asset_recon_id": "recon",
    "usagefile_name": "uf-name",
    "usagefile_schema": "tr",
    "currency": "USD",
    "category": {"id": "cat-id", "name": "cat-name", "description": "cat-description"},
    "resource_local_id": "resource",
    "external_billing_id": "billing-id",
    "external_billing_note": "billing-note",
    "closed_at": datetime(2026, 11, 5, 9, tzinfo=timezone.utc),
    "closed_by": "closed-by",
    "params": [{"name": "p-name", "value": "p-value"}],
    "extra": None,
    "exported_at": EXPORTED_AT,
}


class TestTheColumnTable:
    def test_every_column_holds_the_value_at_its_own_json_path(self, converter: PageConverter) -> None:
        [row] = convert(converter, [DISTINCT]).batch.to_pylist()
        assert row == EXPECTED_ROW

    def test_the_files_columns_are_the_tables_columns_in_order(self) -> None:
        from connect_provider.usage.schema import COLUMNS

        assert USAGE_RECORD_SCHEMA.names == [c.name for c in COLUMNS]
        assert [USAGE_RECORD_SCHEMA.field(c.name).type for c in COLUMNS] == [c.type for c in COLUMNS]
        assert list(EXPECTED_ROW) == FILE_SCHEMA.names

    def test_the_raw_schema_arrow_parses_with_is_the_tables_paths(self) -> None:
        from connect_provider.usage.schema import _RAW_RECORD, COLUMNS

        def paths(struct: pa.StructType, prefix: str = "") -> set[str]:
            out = set()
            for f in struct:
                if pa.types.is_struct(f.type) and f.name != "category":
                    out |= paths(f.type, f"{prefix}{f.name}.")
                else:
                    out.add(prefix + f.name)
            return out

        assert paths(_RAW_RECORD) == {p for c in COLUMNS for p in c.paths}

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            ("item_name", "item_mpn"),
            ("asset_external_id", "asset_external_uid"),
            ("external_billing_id", "closed_by"),
        ],
        ids=["item_name<->item_mpn", "asset_external_id<->uid", "billing_id<->closed_by"],
    )
    def test_swapping_two_same_typed_paths_in_the_table_is_seen(
        self, monkeypatch: pytest.MonkeyPatch, first: str, second: str
    ) -> None:
        # The mutation the test above must catch: it does, because the batch follows the table.
        import dataclasses

        from connect_provider.usage import schema

        by_name = {c.name: c for c in schema.COLUMNS}
        a, b = by_name[first], by_name[second]
        swapped = tuple(
            dataclasses.replace(c, paths=b.paths)
            if c is a
            else dataclasses.replace(c, paths=a.paths)
            if c is b
            else c
            for c in schema.COLUMNS
        )
        monkeypatch.setattr(schema, "COLUMNS", swapped)
        monkeypatch.setattr(
            schema, "FILE_COLUMNS", tuple(c for c in swapped if c.name not in schema.PARTITION_COLUMNS)
        )
        [row] = convert(
            PageConverter(ExportContext.from_usage_file(usage_file(), EXPORTED_AT)), [DISTINCT]
        ).batch.to_pylist()
        assert (row[first], row[second]) == (EXPECTED_ROW[second], EXPECTED_ROW[first])
        assert row != EXPECTED_ROW


class TestCategory:
    @pytest.mark.parametrize(
        ("sent", "kept"),
        [
            ({"id": "compute", "name": "compute"}, {"id": "compute", "name": "compute", "description": None}),
            (
                {"id": "c", "name": "C", "description": "CPU hours"},
                {"id": "c", "name": "C", "description": "CPU hours"},
            ),
            ("storage", {"id": "storage", "name": None, "description": None}),
            (None, None),
        ],
        ids=["object-as-connect-sends-it", "object-with-description", "old-string-form-is-the-id", "null"],
    )
    def test_a_category_is_kept_as_a_struct_of_id_name_description(
        self, converter: PageConverter, sent: object, kept: object
    ) -> None:
        page = convert(converter, [record(1, category=sent)])
        assert page.bad == []
        assert page.batch.to_pylist()[0]["category"] == kept

    def test_a_page_mixing_both_forms_keeps_every_record_in_order(self, converter: PageConverter) -> None:
        records = [record(1), record(2, category="legacy"), record(3, usage="lots"), record(4)]
        page = convert(converter, records)
        assert page.batch.column("id").to_pylist() == [records[i]["id"] for i in (0, 1, 3)]
        assert [c["id"] for c in page.batch.column("category").to_pylist()] == [
            "compute",
            "legacy",
            "compute",
        ]
        assert [(b.record_index, b.record_id) for b in page.bad] == [(2, records[2]["id"])]
        assert "field usage" in page.bad[0].reason


class TestSchemaDrift:
    @pytest.mark.parametrize(
        ("overrides", "extra"),
        [
            ({"billing_cycle": "monthly"}, {"billing_cycle": "monthly"}),
            ({"item": {**record(1)["item"], "sku_group": "G1"}}, {"item.sku_group": "G1"}),
            ({"asset": {**record(1)["asset"], "tier_id": "T-1"}}, {"asset.tier_id": "T-1"}),
            (
                {"usagefile": {**record(1)["usagefile"], "period": {"from": "2026-10-01"}}},
                {"usagefile.period": {"from": "2026-10-01"}},
            ),
            ({"category": {"id": "c", "name": "C", "family": "cloud"}}, {"category.family": "cloud"}),
            (
                {"params": [{"parameter_name": "a", "parameter_value": "1", "parameter_type": "int"}]},
                {"params[0].parameter_type": "int"},
            ),
            ({"weight": Decimal("1.10000000000000000001")}, {"weight": Decimal("1.10000000000000000001")}),
        ],
        ids=[
            "top-level",
            "in-item",
            "in-asset",
            "in-usagefile",
            "in-category",
            "in-a-param",
            "an-exact-number",
        ],
    )
    def test_a_field_the_schema_does_not_know_is_kept_in_extra_by_path(
        self, converter: PageConverter, overrides: dict, extra: dict
    ) -> None:
        import json

        records = [record(1), record(2, **overrides)]
        page = convert(converter, records)
        assert page.bad == [] and page.batch.num_rows == 2
        first, second = page.batch.to_pylist()
        assert first["extra"] is None
        assert json.loads(second["extra"], parse_float=Decimal) == extra
        assert page.unknown_fields == frozenset(p.replace("[0]", "[]") for p in extra)

    def test_known_columns_of_a_drifted_record_are_still_typed(self, converter: PageConverter) -> None:
        row = convert(converter, [record(1, brand_new={"x": [1, 2]})]).batch.to_pylist()[0]
        assert row["usage"] == Decimal("1") and row["category"]["id"] == "compute"
        assert row["asset_recon_id"] == "98547985"

    @pytest.mark.parametrize(
        ("overrides", "reason"),
        [
            ({"item": "PRD-276-377-545-0001"}, "field item"),
            ({"multiplier": "one"}, "field multiplier"),
            ({"category": 7}, "field category"),
        ],
        ids=["item-becomes-a-string", "multiplier-becomes-a-string", "category-becomes-a-number"],
    )
    def test_a_known_field_whose_json_type_changed_sets_the_record_aside_with_the_reason(
        self, converter: PageConverter, overrides: dict, reason: str
    ) -> None:
        page = convert(converter, [record(1), record(2, **overrides)])
        assert page.batch.column("id").to_pylist() == [record(1)["id"]]
        [bad] = page.bad
        assert reason in bad.reason

    def test_a_page_in_the_known_shape_is_parsed_once(
        self, converter: PageConverter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from connect_provider.usage import schema

        calls = []
        original = schema._parse
        monkeypatch.setattr(schema, "_parse", lambda *a, **k: calls.append(1) or original(*a, **k))
        page = convert(converter, [record(i) for i in range(50)])
        assert page.batch.num_rows == 50 and page.batch.column("extra").null_count == 50
        assert len(calls) == 1
