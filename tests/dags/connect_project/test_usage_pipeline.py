"""The glue of the usage DAGs (connect_project.usage_pipeline), without a DAG run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from connect_project import usage_pipeline as pipeline
from connect_provider.exceptions import ConnectNotFoundError, ConnectValidationError
from connect_provider.hooks.connect import ConnectHook
from connect_provider.usage.exporter import export_usage_file, list_usage_files


def test_statuses_come_from_the_param_then_the_variable_then_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "variable", lambda key: None)
    assert pipeline.resolve_statuses() == ["ready", "pending", "accepted", "closed"]
    assert pipeline.resolve_statuses(["Closed", "accepted"]) == ["closed", "accepted"]
    monkeypatch.setattr(
        pipeline, "variable", lambda key: '["pending"]' if key == pipeline.STATUSES_VARIABLE else None
    )
    assert pipeline.resolve_statuses() == ["pending"]
    monkeypatch.setattr(pipeline, "variable", lambda key: "ready, closed")
    assert pipeline.resolve_statuses() == ["ready", "closed"]
    with pytest.raises(ConnectValidationError, match="statuses"):
        pipeline.resolve_statuses(["shipped"])


def test_the_dataset_event_sums_the_exports_and_is_none_without_any() -> None:
    results = [
        {"usage_file_id": "UF-2", "rows": 5, "quarantined": 1, "bytes": 10, "path": "p2"},
        None,
        {"usage_file_id": "UF-1", "rows": 7, "quarantined": 0, "bytes": 20, "path": "p1"},
    ]
    assert pipeline.dataset_event(results, "/d") == {
        "destination": "/d",
        "files": ["UF-1", "UF-2"],
        "rows": 12,
        "quarantined": 1,
        "bytes": 30,
    }
    assert pipeline.dataset_event([], "/d") is None


def test_the_load_reads_the_destinations_named_by_the_events(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events = [
        SimpleNamespace(extra={"destination": "/a"}),
        {"extra": {"destination": "/b"}},
        SimpleNamespace(extra={"destination": "/a"}),
    ]
    assert pipeline.destinations_from_events(events) == ["/a", "/b"]
    monkeypatch.setattr(pipeline, "variable", lambda key: None)
    monkeypatch.setenv("CONNECT_DATA_DIR", str(tmp_path))
    assert pipeline.destinations_from_events([]) == [str(tmp_path / "usage_records")]


def test_a_manual_run_exports_the_named_file_even_when_it_is_exported(sandbox, tmp_path: Path) -> None:
    hook = ConnectHook()
    export_usage_file(hook, "UF-2026-10-0000000002", tmp_path)
    assert pipeline.plan_exports(
        hook, usage_file_id=" UF-2026-10-0000000002 ", destination=str(tmp_path)
    ) == [{"usage_file_id": "UF-2026-10-0000000002", "destination": str(tmp_path)}]
    planned = pipeline.plan_exports(hook, statuses=["accepted", "ready"], destination=str(tmp_path))
    assert [p["usage_file_id"] for p in planned] == ["UF-2026-10-0000000001"]
    with pytest.raises(ConnectNotFoundError):
        pipeline.plan_exports(hook, usage_file_id="UF-2026-10-0000009999", destination=str(tmp_path))


def test_usage_files_are_listed_by_status(sandbox) -> None:
    assert [f["id"] for f in list_usage_files(ConnectHook(), ["draft"])] == ["UF-2026-11-0000000003"]
