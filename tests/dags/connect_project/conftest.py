"""Fixtures of the tests of the project's glue beside the DAGs (``dags/connect_project``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A fresh dataset destination."""
    return tmp_path / "usage_records"
