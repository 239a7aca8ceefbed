"""Fixtures of the usage exporter tests.

The record and page builders live in ``usage_factory.py`` beside this file. The suite runs with
``--import-mode=importlib``, where test modules cannot import their neighbours, so it is loaded
here once and registered as the module ``usage_factory`` for the tests of this folder (and of
``tests/connect_provider/operators`` and ``tests/dags``, which load it the same way).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_factory() -> None:
    if "usage_factory" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "usage_factory", Path(__file__).with_name("usage_factory.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["usage_factory"] = module
    spec.loader.exec_module(module)


_load_factory()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A fresh dataset destination."""
    return tmp_path / "usage_records"
