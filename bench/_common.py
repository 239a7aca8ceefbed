"""Helpers shared by the benchmark scripts: a free port, a sandbox process, a measured child process.

Why these exist: every benchmark compares contenders side by side in one run, each in its own fresh
process, against one sandbox server on this (noisy, 2-core) machine. Measuring a contender in its
own process is the only way to get its peak RSS alone (``os.wait4`` returns the child's
``ru_maxrss``) and to keep one contender's imports, caches and garbage from flattering or
penalising the next one.

Nothing here imports the provider or the sandbox: the sandbox is started through its CLI, as a user
would, and reached over HTTP.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_API_KEY = "ApiKey SU-000-000-000:sandbox-demo-key"
API_PREFIX = "/public/v1"


def venv_python() -> str:
    """The project's interpreter (``.venv/bin/python``) when present, else the running one."""
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux ``/proc``); 0.0 if unknown.

    Read before and after a contender to see how much server CPU each one costs: on two cores the
    sandbox competes with the client, so a contender that makes the server work harder pays twice.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Sandbox:
    """A running ``connect-sandbox`` process started by :func:`start_sandbox`."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    @property
    def pid(self) -> int:
        return self.process.pid

    def conn_json(self, api_key: str = DEMO_API_KEY) -> str:
        """The JSON form of an Airflow connection to this sandbox (for ``AIRFLOW_CONN_<ID>``)."""
        import json

        return json.dumps({"conn_type": "cloudblue_connect", "host": self.api_url, "password": api_key})

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sandbox(
    *cli_args: str,
    port: int | None = None,
    timeout: float = 60.0,
    log_dir: str | os.PathLike[str] | None = None,
    wrapper: Sequence[str] = (),
) -> Sandbox:
    """Start ``python -m connect_sandbox.cli --port <free> *cli_args`` and wait for its health route.

    ``wrapper`` prefixes the command (e.g. ``["py-spy", "record", ..., "--"]`` to profile the server).
    Raises RuntimeError with the server's log when it exits or does not answer within ``timeout``.
    """
    port = port or free_port()
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    log_path = log_dir / f"sandbox-{port}.log"
    args = [*wrapper, venv_python(), "-m", "connect_sandbox.cli", "--port", str(port), *cli_args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    sandbox = Sandbox(process, port, log_path, args)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log_tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the sandbox exited with code {process.returncode}: {log_tail}")
        try:
            with urllib.request.urlopen(f"{sandbox.url}/_sandbox/health", timeout=1) as response:
                if response.status == 200:
                    return sandbox
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            sandbox.stop()
            raise RuntimeError(
                f"the sandbox did not answer within {timeout:.0f} s: {log_path.read_text()[-2000:]}"
            )
        time.sleep(0.1)


@contextlib.contextmanager
def running_sandbox(*cli_args: str, **kwargs: object) -> Iterator[Sandbox]:
    """:func:`start_sandbox` as a context manager that always stops the server."""
    sandbox = start_sandbox(*cli_args, **kwargs)  # type: ignore[arg-type]
    try:
        yield sandbox
    finally:
        sandbox.stop()


@dataclass(frozen=True)
class ChildResult:
    """A finished child process: exit code, output, peak RSS (its own ``ru_maxrss``) and wall time."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    wall_s: float
    timed_out: bool = False


def run_child(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> ChildResult:
    """Run ``argv`` to its end and return its output with the peak RSS of that process.

    The process is reaped with ``os.wait4``, whose rusage belongs to that child alone (plus any
    children it reaped itself), so the figure does not mix with other contenders or with the
    parent. On ``timeout`` the child is killed and ``timed_out`` is set.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd or REPO)
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            with contextlib.suppress(ProcessLookupError):
                process.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
        out.seek(0)
        err.seek(0)
        return ChildResult(
            returncode=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            peak_rss_mb=usage.ru_maxrss / 1024.0,  # kilobytes on Linux
            wall_s=wall,
            timed_out=killed.is_set(),
        )


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """``a / b`` rounded, or None when either side is missing (a contender failed)."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def machine_info() -> dict[str, object]:
    """What the figures were measured on: cores, CPU model, memory, load, Python and pyarrow versions."""
    info: dict[str, object] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError):
        info["loadavg_1m"] = os.getloadavg()[0]
    with contextlib.suppress(ImportError):
        import pyarrow

        info["pyarrow"] = pyarrow.__version__
    return info
