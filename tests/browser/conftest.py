"""Fixtures of the browser test: Debian's Chromium, and the stack ``make airflow`` runs.

The stack is started through ``scripts/airflow_local.py`` (the same :class:`LocalAirflow` users get
from ``make airflow``), on free ports, in a temporary AIRFLOW_HOME, with a sandbox of its own.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright for Python; Playwright's own
browser download is never used. When the binary is missing the fixture installs it with apt; if
that is impossible the tests are skipped with the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium on a closed network: without the background-networking flags it keeps trying
# Google's hosts; --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_configure(config: pytest.Config) -> None:
    # Registered here as well as in pyproject.toml, so `--strict-markers` accepts the marker even
    # when this directory is collected on its own.
    config.addinivalue_line("markers", "browser: drives the Airflow UI in Debian's Chromium (slow)")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    """Skip locally; under CI=true the browser test must run, so fail instead."""
    if _in_ci():
        pytest.fail(f"browser test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _install_chromium() -> str | None:
    """``apt-get install -y chromium``; returns None on success, else why it failed."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            return "not root and no sudo to run apt-get"
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(
                [*prefix, *cmd], env=env, capture_output=True, text=True, timeout=900, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(cmd)}` did not complete: {exc}"
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` exited {done.returncode}: {done.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, installed with apt when missing."""
    if not CHROMIUM.exists():
        why = _install_chromium()
        if why is not None or not CHROMIUM.exists():
            _unavailable(f"Debian's chromium is not installed and could not be installed: {why}")
    return str(CHROMIUM)


def load_launcher() -> ModuleType:
    """``scripts/airflow_local.py`` as a module (scripts/ is not a package)."""
    name = "airflow_local"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "airflow_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def launcher() -> ModuleType:
    """The launcher module, for its constants (login, sandbox key, connection id)."""
    return load_launcher()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/browser, emptied of the previous run's screenshots and logs."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in [*ARTIFACTS.glob("*.png"), *ARTIFACTS.glob("*.html")]:
        old.unlink()
    shutil.rmtree(ARTIFACTS / "logs", ignore_errors=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def stack(chromium_path: str, artifacts: Path, launcher: ModuleType) -> Iterator[Any]:
    """The sandbox and Airflow, as ``make airflow`` starts them, on free ports and a temp home.

    Depends on ``chromium_path`` so nothing is started when the browser is unavailable. The
    component logs and task logs are copied to the artifacts folder at the end, also when the
    stack fails to start.
    """
    home = Path(tempfile.mkdtemp(prefix="connect-browser-"))
    settings = launcher.Settings(
        airflow_home=home / "airflow_home",
        data_dir=home / "data",
        api_port=None,
        sandbox_port=None,
        parallelism=2,
        # A short vendor decision delay, like the rest of the suite's sandbox.
        sandbox_args=("--seed", "demo", "--auto-approve-delay", "0.5"),
        # The event watchers poll every 2 s, so the event-driven test waits seconds, not minutes.
        extra_env={"CONNECT_EVENTS_POLL_SECONDS": "2"},
    )
    airflow = launcher.LocalAirflow(settings)
    try:
        airflow.start()
        airflow.wait_for_dag("connect_request_action")
        yield airflow
    finally:
        airflow.stop()
        logs = settings.airflow_home / "logs"
        if logs.exists():
            shutil.copytree(logs, artifacts / "logs", dirs_exist_ok=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"the playwright package is not installed: {exc}")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the item, so the page fixture knows whether the test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Any, stack: Any, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies: every test logs in) on a desktop-sized viewport.

    When the test fails, the page as it was is saved as ``FAILED-<test>.png`` (and its HTML).
    """
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=stack.api_url)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    try:
        yield pg
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            name = f"FAILED-{request.node.name}"
            try:
                pg.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
                (artifacts / f"{name}.html").write_text(pg.content())
            except Exception as exc:  # a dead page must not hide the test's own failure
                print(f"could not save the failure screenshot: {exc}")
        context.close()
