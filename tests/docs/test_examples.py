"""Every DAG example in the docs is a region of a DAG file that the test suite loads and runs.

In the markdown an example is a ```python block preceded by ``<!-- example: dags/<file>.py
docs_<name> -->``; in the file the region sits between ``# [START docs_<name>]`` and
``# [END docs_<name>]`` comment lines (regions may nest; the inner marker lines are not part of
the outer example). So an example cannot drift from the code: change the DAG and the docs test
fails until the page is updated, and a DAG snippet written by hand (not from a region) fails too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

EXAMPLE = re.compile(r"^<!--\s*example:\s*(?P<file>\S+)\s+(?P<region>docs_\w+)\s*-->\s*$")
MARKER = re.compile(r"^\s*#\s*\[(?P<kind>START|END)\s+(?P<region>docs_\w+)\]\s*$")
FENCE = re.compile(r"^\s*```")
# What makes a python block DAG code: building a DAG, a task, an operator, a sensor or a watcher.
DAG_CODE = re.compile(
    r"\bDAG\(|@dag\b|@task\b|\bOperator\b|Operator(\.partial)?\(|Sensor\(|AssetWatcher\(|Trigger\("
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, and the example marker just above it (if any)."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    example: tuple[str, str] | None  # (file, region)


def normalise(lines: list[str]) -> str:
    """Dedented, trailing whitespace stripped, without leading or trailing blank lines."""
    text = textwrap.dedent("\n".join(line.rstrip() for line in lines))
    return text.strip("\n")


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of a markdown page, with the example marker preceding each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    pending: tuple[str, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = EXAMPLE.match(line.strip())
        if marker:
            assert pending is None, f"{page.name}:{i + 1}: two example markers without a block between"
            pending = (marker["file"], marker["region"])
        elif FENCE.match(line):
            fence = line.strip()
            lang = fence.strip("`").strip()
            start = i
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                i += 1
            assert i < len(lines), f"{page.name}:{start + 1}: unclosed code block"
            found.append(Block(page, start + 1, lang, normalise(lines[start + 1 : i]), pending))
            pending = None
        elif line.strip() and pending is not None:
            raise AssertionError(f"{page.name}:{i + 1}: an example marker must be followed by its block")
        i += 1
    assert pending is None, f"{page.name}: an example marker at the end of the page has no block"
    return found


def regions_of(path: Path) -> dict[str, str]:
    """Every ``docs_`` region of a source file, each without the marker lines nested in it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts: dict[str, int] = {}
    regions: dict[str, str] = {}
    for number, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        name = marker["region"]
        if marker["kind"] == "START":
            assert name not in starts and name not in regions, f"{path}: {name} starts twice"
            starts[name] = number
        else:
            assert name in starts, f"{path}:{number + 1}: {name} ends before it starts"
            body = [x for x in lines[starts.pop(name) + 1 : number] if not MARKER.match(x)]
            regions[name] = normalise(body)
            assert regions[name], f"{path}: region {name} is empty"
    assert not starts, f"{path}: regions never ended: {sorted(starts)}"
    return regions


def all_blocks(doc_files: list[Path]) -> list[Block]:
    return [block for page in doc_files for block in blocks_of(page)]


# --------------------------------------------------------------------------- the helpers themselves


def test_the_region_reader_strips_nested_markers_and_dedents(tmp_path: Path) -> None:
    source = tmp_path / "dag.py"
    source.write_text(
        "with DAG('x'):\n"
        "    # [START docs_outer]\n"
        "    a = 1   \n"
        "    # [START docs_inner]\n"
        "    b = 2\n"
        "    # [END docs_inner]\n"
        "    # [END docs_outer]\n"
    )
    assert regions_of(source) == {"docs_outer": "a = 1\nb = 2", "docs_inner": "b = 2"}
    source.write_text("# [START docs_open]\nx = 1\n")
    with pytest.raises(AssertionError, match="never ended"):
        regions_of(source)


def test_the_page_reader_ties_each_marker_to_the_block_below_it(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n<!-- example: dags/a.py docs_one -->\n```python\n  x = 1\n```\n\n```bash\nls\n```\n"
    )
    one, two = blocks_of(page)
    assert (one.lang, one.text, one.example) == ("python", "x = 1", ("dags/a.py", "docs_one"))
    assert (two.lang, two.example) == ("bash", None)
    page.write_text("<!-- example: dags/a.py docs_one -->\nSome prose.\n```python\nx = 1\n```\n")
    with pytest.raises(AssertionError, match="followed by its block"):
        blocks_of(page)


# --------------------------------------------------------------------------- the docs


def test_the_docs_have_dag_examples(doc_files: list[Path]) -> None:
    examples = [b for b in all_blocks(doc_files) if b.example]
    assert len(examples) >= 5
    assert any(b.page.name == "README.md" for b in examples), "the README's first DAG is not an example"


def test_every_example_is_a_python_block_equal_to_its_region(doc_files: list[Path]) -> None:
    problems = []
    for block in all_blocks(doc_files):
        if block.example is None:
            continue
        file, region = block.example
        where = f"{block.page.relative_to(ROOT)}:{block.line}"
        path = (ROOT / file).resolve()
        if block.lang != "python":
            problems.append(f"{where}: the example of {file} {region} is a {block.lang!r} block, not python")
        elif not path.is_file() or DAGS not in path.parents:
            problems.append(f"{where}: {file} is not a file under dags/")
        elif region not in (regions := regions_of(path)):
            problems.append(f"{where}: {file} has no region {region} (it has {sorted(regions)})")
        elif block.text != regions[region]:
            problems.append(
                f"{where}: differs from {file} {region}:\n{block.text}\n--- the region ---\n{regions[region]}"
            )
    assert not problems, "\n\n".join(problems)


def test_no_dag_code_in_the_docs_is_written_by_hand(doc_files: list[Path]) -> None:
    by_hand = [
        f"{b.page.relative_to(ROOT)}:{b.line}"
        for b in all_blocks(doc_files)
        if b.lang in ("python", "py") and b.example is None and DAG_CODE.search(b.text)
    ]
    assert not by_hand, f"DAG code not taken from a DAG file's region: {by_hand}"


def test_every_region_in_the_dag_files_is_shown_somewhere(doc_files: list[Path]) -> None:
    used = {(str((ROOT / b.example[0]).resolve()), b.example[1]) for b in all_blocks(doc_files) if b.example}
    defined = {(str(p), r) for p in DAGS.rglob("*.py") for r in regions_of(p)}
    assert defined, "no docs_ region in dags/"
    assert not defined - used, f"regions no page shows (stale markers): {sorted(defined - used)}"


# Parses dags/ the way the tests' DagBag does (tests/e2e/conftest.py, tests/dags), in a fresh
# interpreter, and says which file each DAG comes from and which project modules it imported.
PROBE = r"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag

dags = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(dags))  # as Airflow puts its DAGs folder on sys.path (and pytest's pythonpath)
bag = DagBag(dag_folder=str(dags))
modules = sorted({str(Path(m.__file__).resolve()) for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) and dags in Path(m.__file__).resolve().parents})
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dag_files": {d: str(Path(dag.fileloc).resolve()) for d, dag in bag.dags.items()},
                  "modules": modules}))
"""


def test_every_file_an_example_names_is_loaded_by_the_dagbag_and_run_by_a_test(doc_files: list[Path]) -> None:
    named = {str((ROOT / b.example[0]).resolve()) for b in all_blocks(doc_files) if b.example}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS)],
        capture_output=True,
        text=True,
        env={**os.environ, "CONNECT_CHANGES_SCHEDULE": "*/5 * * * *"},
        timeout=300,
        check=True,
    )
    bag = json.loads(out.stdout.strip().splitlines()[-1])
    assert bag["errors"] == {}
    dag_files = set(bag["dag_files"].values())
    for path in sorted(named):
        # A DAG file, or the project's glue (dags/connect_project) that the DAG files import.
        assert path in dag_files or path in bag["modules"], f"{path} is not loaded by the DagBag of dags/"

    # Each DAG file named is run by a test: some test module outside tests/docs names its DAG and
    # runs DAGs (dag.test() or a REST trigger).
    tests = [
        p.read_text(encoding="utf-8")
        for p in (ROOT / "tests").rglob("test_*.py")
        if (ROOT / "tests" / "docs") not in p.parents
    ]
    for dag_id, path in sorted(bag["dag_files"].items()):
        if path in named:
            runners = [t for t in tests if dag_id in t and (".test(" in t or "dagRuns" in t)]
            assert runners, f"no test runs {dag_id} ({path}), whose code the docs show"
