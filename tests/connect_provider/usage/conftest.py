"""Fixtures of the usage exporter tests.

The record and page builders live in ``usage_factory.py`` beside this file; ``tests/conftest.py``
registers it as the module ``usage_factory`` for every test folder that builds usage records.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A fresh dataset destination."""
    return tmp_path / "usage_records"
