"""Every relative link and image of README.md and docs/*.md points at something that exists.

A page moved or a heading renamed would otherwise leave the README's documentation list, or a
cross-reference between pages, pointing nowhere. Anchors into markdown files are checked against
the target's headings with GitHub's slug rules (lowercase; punctuation other than ``-`` and ``_``
dropped; spaces to ``-``; a repeated heading gets ``-1``, ``-2``...).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^\s*```")
INLINE_CODE = re.compile(r"`[^`]*`")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML_TARGET = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks, numbered from 1."""
    lines, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            lines.append((number, line))
    return lines


def targets_of(text: str) -> list[tuple[int, str]]:
    """Every link or image target on the page's prose lines (not in code)."""
    found = []
    for number, line in prose_lines(text):
        bare = INLINE_CODE.sub("", line)
        for pattern in (INLINE_LINK, REFERENCE_DEF, HTML_TARGET):
            found.extend((number, m.group(1)) for m in pattern.finditer(bare))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown page."""
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


def broken_links(page: Path) -> list[str]:
    """What on ``page`` points at a missing file or heading, as ``page:line: target (why)``."""
    problems = []
    for number, target in targets_of(page.read_text(encoding="utf-8")):
        if ABSOLUTE.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        where = f"{page.relative_to(ROOT) if ROOT in page.parents else page.name}:{number}: {target}"
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors_of(dest):
            problems.append(f"{where} (no heading with that anchor in {dest.name})")
    return problems


# --------------------------------------------------------------------------- the checker itself


def test_slugs_follow_githubs_rules() -> None:
    assert slug("Pointing the project at the real Connect") == "pointing-the-project-at-the-real-connect"
    assert slug("Deployment: Airflow's distributed engine") == "deployment-airflows-distributed-engine"
    assert slug("The same topology, tested for real: `make distributed-test`") == (
        "the-same-topology-tested-for-real-make-distributed-test"
    )
    assert slug("usage_records & the [load](x.md)") == "usage_records--the-load"


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Setup\n\n## Setup\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#setup-1) [self](#title) ![img](missing.png) [gone](other.md#nowhere)\n"
        "# Title\n\n```\n[in code](nope.md)\n```\n`[inline](nope.md)` <https://example.com>\n"
        "[web](https://example.com/x.md)\n"
    )
    problems = broken_links(page)
    assert len(problems) == 2, problems
    assert "missing.png (no such file)" in problems[0]
    assert "other.md#nowhere (no heading" in problems[1]


# --------------------------------------------------------------------------- the docs


def test_every_relative_link_and_image_exists(doc_files: list[Path]) -> None:
    problems = [p for page in doc_files for p in broken_links(page)]
    assert not problems, "\n".join(problems)


def test_the_readme_links_every_docs_page_and_the_benchmarks(doc_files: list[Path]) -> None:
    readme = ROOT / "README.md"
    linked = {
        (readme.parent / t.partition("#")[0]).resolve()
        for _, t in targets_of(readme.read_text(encoding="utf-8"))
        if not ABSOLUTE.match(t) and t.partition("#")[0]
    }
    pages = {p.resolve() for p in doc_files if p != readme} | {(ROOT / "BENCHMARKS.md").resolve()}
    assert not pages - linked, f"pages the README does not link: {sorted(map(str, pages - linked))}"
    for image in (ROOT / "docs" / "images").iterdir():
        shown = any(image.name in p.read_text(encoding="utf-8") for p in doc_files)
        assert shown, f"{image} is shown on no page"
