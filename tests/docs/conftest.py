"""The documentation under test: README.md (the front door) and every page under docs/."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def doc_files() -> list[Path]:
    """README.md and docs/*.md: the pages whose links and examples must stay true."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1, "docs/ has no pages"
    return pages
