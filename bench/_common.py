"""Helpers shared by the benchmark scripts: the sandbox, a measured child process, the machine.

Why these exist: every benchmark compares contenders side by side in one run, each in its own fresh
process, against one sandbox server on this (noisy, 2-core) machine. Measuring a contender in its
own process is the only way to get its peak RSS alone (``os.wait4`` returns the child's
``ru_maxrss``) and to keep one contender's imports, caches and garbage from flattering or
penalising the next one.

The sandbox comes from the project's one launcher, :mod:`connect_sandbox.testing` (re-exported
here: ``start_sandbox``, ``running_sandbox``, ``Sandbox``, ``DEMO_API_KEY``), which starts it
through its CLI, as a user would; it is reached over HTTP only. Nothing here imports the provider.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from connect_sandbox.testing import (  # re-exported: the benchmarks' one way to a sandbox
    DEMO_API_KEY,
    Sandbox,
    admin_call,
    running_sandbox,
    start_sandbox,
)

__all__ = [
    "DEMO_API_KEY",
    "REPO",
    "ChildResult",
    "Sandbox",
    "admin_call",
    "cpu_seconds",
    "machine_info",
    "median",
    "ratio",
    "run_child",
    "running_sandbox",
    "start_sandbox",
    "venv_python",
]

REPO = Path(__file__).resolve().parent.parent


def venv_python() -> str:
    """The project's interpreter (``.venv/bin/python``) when present, else the running one."""
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


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


@dataclass(frozen=True)
class ChildResult:
    """A finished child process: exit code, output, peak RSS (its own ``ru_maxrss``), wall time and
    the CPU seconds it used (user + system, all its threads)."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    wall_s: float
    timed_out: bool = False
    cpu_s: float = 0.0


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
            cpu_s=usage.ru_utime + usage.ru_stime,
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
