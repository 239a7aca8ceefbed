"""Layout, staged writes and the bounded-memory unique-id check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from connect_provider.exceptions import ConnectValidationError
from connect_provider.usage import writer
from connect_provider.usage.writer import DatasetLayout, UniqueIdCheck, hash_strings


def test_the_layout_puts_data_in_hive_partitions_and_the_rest_under_underscore_folders(
    tmp_path: Path,
) -> None:
    layout = DatasetLayout(tmp_path)
    assert str(layout.data_path("PRD-1", "2026-10", "UF-1")) == (
        f"{tmp_path}/product_id=PRD-1/period=2026-10/usage_file_id=UF-1.parquet"
    )
    assert str(layout.quarantine_path("PRD-1", "2026-10", "UF-1")).startswith(f"{tmp_path}/_quarantine/")
    assert str(layout.manifest_path("UF-1")) == f"{tmp_path}/_manifest/UF-1.json"
    assert str(layout.staging_path("UF-1", "data")).startswith(f"{tmp_path}/_staging/UF-1.data.")


def test_a_uri_destination_is_kept_as_object_storage() -> None:
    layout = DatasetLayout("s3://bucket/usage")
    assert layout.root.protocol == "s3"
    assert str(layout.data_path("PRD-1", "2026-10", "UF-1")).startswith("s3://bucket/usage/product_id=PRD-1/")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "UF 1", "=x"])
def test_an_id_that_would_escape_its_path_segment_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConnectValidationError, match="usage_file_id"):
        DatasetLayout(tmp_path).data_path("PRD-1", "2026-10", bad)


def test_ids_hash_the_same_when_equal_and_differently_when_not() -> None:
    ids = pa.array(["UR-1-0000001", "UR-1-0000002", "UR-1-0000001", "", "UR-1-00000010", "ü"])
    h = hash_strings(ids)
    assert h[0] == h[2] and len({int(x) for x in h}) == 5
    assert np.array_equal(hash_strings(ids.slice(1, 3)), h[1:4])
    assert np.array_equal(hash_strings(pa.chunked_array([ids.slice(0, 2), ids.slice(2)])), h)


def test_ids_in_increasing_order_are_unique_without_keeping_them() -> None:
    check = UniqueIdCheck()
    check.add(pa.array(["UR-1-0000001", "UR-1-0000002"]))
    check.add(pa.array(["UR-1-0000003"]))

    def never():
        raise AssertionError("ordered ids need no second look")

    assert check.ordered and check.duplicates(never) == []


def test_the_unique_check_finds_duplicates_across_chunks() -> None:
    check = UniqueIdCheck()
    chunks = [pa.array([f"UR-{i}" for i in range(0, 3000)]), pa.array(["UR-5", "UR-4000", "UR-2999"])]
    for chunk in chunks:
        check.add(chunk)
    assert not check.ordered
    assert sorted(check.duplicates(lambda: iter(chunks))) == ["UR-2999", "UR-5"]


def test_unordered_unique_ids_pass_the_check() -> None:
    check = UniqueIdCheck()
    chunks = [pa.array(["b", "a"]), pa.array(["d", "c"])]
    for chunk in chunks:
        check.add(chunk)
    assert not check.ordered and check.duplicates(lambda: iter(chunks)) == []


def test_equal_hashes_of_different_ids_are_not_taken_for_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "hash_strings", lambda array: np.zeros(len(array), dtype=np.uint64))
    check = UniqueIdCheck()
    ids = pa.array(["c", "a", "b"])
    check.add(ids)
    assert check.duplicates(lambda: iter([ids])) == []
