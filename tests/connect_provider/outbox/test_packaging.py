"""The outbox's DDL is package data: a wheel installed with no checkout around it creates its table.

The wheel is built from this checkout (through an sdist, as a release is) and installed into a
fresh virtualenv with uv, offline (the uv cache holds every locked package), pinned by the lock
file. A script then runs in that
virtualenv in isolated mode, from an empty folder, so nothing of the checkout is on ``sys.path``:
it proves where ``connect_provider`` was imported from, and creates the outbox table on SQLite and
on a fresh PostgreSQL database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[3]
DDL_FILES = {
    "connect_provider/outbox/sql/sqlite/connect_subscription_changes.sql",
    "connect_provider/outbox/sql/postgres/connect_subscription_changes.sql",
}
# Run in the fresh virtualenv: the outbox table on SQLite, then (when given) on PostgreSQL.
PROBE = r"""
import json, sys
import connect_provider
from connect_provider.outbox import Outbox

found = {"module": connect_provider.__file__, "path": sys.path}
with Outbox.sqlite(sys.argv[1]) as box:
    box.create_schema()
    box.create_schema()  # idempotent
    found["sqlite"] = box.table_exists()
if len(sys.argv) > 2:
    with Outbox.postgres(**json.loads(sys.argv[2])) as box:
        box.create_schema()
        found["postgres"] = box.table_exists()
print(json.dumps(found))
"""


def _uv() -> str | None:
    local = Path(sys.executable).with_name("uv")
    return str(local) if local.exists() else shutil.which("uv")


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory, unavailable: Callable[[str, object], NoReturn]
) -> tuple[Path, Path]:
    """(the built wheel, the python of a fresh virtualenv it is installed in, with its postgres extra)."""
    uv = _uv()
    if uv is None:
        unavailable("uv (make install puts it in .venv)", "not found")
    work = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str) -> None:
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            unavailable(f"an offline `{' '.join(args[:3])}`", done.stderr[-2000:])

    # An sdist, then the wheel from it: built in a clean tree, never from a stale build/ folder.
    run(uv, "build", "--offline", "-q", "-o", str(work / "dist"), str(ROOT))
    (wheel,) = (work / "dist").glob("*.whl")
    run(uv, "venv", "-q", "--offline", str(work / "venv"))
    python = work / "venv" / "bin" / "python"
    lock = str(ROOT / "requirements" / "lock.txt")
    run(uv, "pip", "install", "-q", "--offline", "--python", str(python), f"{wheel}[postgres]", "-c", lock)
    return wheel, python


def _probe(python: Path, tmp_path: Path, *args: str) -> dict:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow_home")
    done = subprocess.run(
        [str(python), "-I", "-c", PROBE, str(folder / "outbox.sqlite"), *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
class TestTheInstalledWheel:
    """An installed wheel carries the outbox DDL and creates its own table, with no checkout."""

    def test_the_wheel_ships_the_ddl_of_both_databases(self, installed: tuple[Path, Path]) -> None:
        wheel, _ = installed
        names = set(zipfile.ZipFile(wheel).namelist())
        assert names >= DDL_FILES
        assert not any(name.startswith(("include/", "tests/", "dags/")) for name in names)

    def test_it_creates_the_table_on_sqlite_from_outside_the_checkout(
        self, installed: tuple[Path, Path], tmp_path: Path
    ) -> None:
        _, python = installed
        found = _probe(python, tmp_path)
        assert found["sqlite"] is True
        assert not Path(found["module"]).resolve().is_relative_to(ROOT)
        assert not any(entry and Path(entry).resolve().is_relative_to(ROOT) for entry in found["path"])

    @pytest.mark.postgres
    def test_it_creates_the_table_on_postgresql_from_outside_the_checkout(
        self, installed: tuple[Path, Path], tmp_path: Path, fresh_postgres_database
    ) -> None:
        _, python = installed
        database = fresh_postgres_database("wheel")
        found = _probe(python, tmp_path, json.dumps(dict(database)))
        assert (found["sqlite"], found["postgres"]) == (True, True)
        assert not Path(found["module"]).resolve().is_relative_to(ROOT)
