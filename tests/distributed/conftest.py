"""The distributed deployment as fixtures: every Airflow component a process on this machine.

The same topology as ``docker-compose.yaml``, with no Docker: fresh PostgreSQL databases on the
local server (the metadata DB and the subscription-changes outbox), the CeleryExecutor's broker on
the local Redis (a database number of its own), ``airflow scheduler``, ``dag-processor``,
``triggerer``, ``api-server`` and two ``celery worker``s, and the Connect sandbox with faults on,
so retries, 429s and dropped connections happen while two workers share the work.

Why processes and not ``airflow standalone``: standalone cannot be stopped reliably (its components
outlive a SIGTERM), it forces LocalExecutor, and it would not exercise Celery at all.

Every process is started in a process group of its own and stopped by its pid (group first, then
any remembered descendant), whatever happens: at the end of the module, on Ctrl-C or SIGTERM, and
at exit. The memory of every process tree is sampled while they run (PSS, so pages a Celery worker
shares with its pool count once); the peak is reported at the end of the run, with the runtime and,
when something failed, the work folder that keeps every component's log.

Without PostgreSQL or Redis the tests are skipped with the reason, except under ``CI=true``,
where that is a failure. Settings, from the environment: ``DISTRIBUTED_CHANGES`` (pending changes
to seed, 500), ``DISTRIBUTED_TIMEOUT`` (seconds for the DAG runs, 360), ``DISTRIBUTED_FAULT_SEED``
(the sandbox's fault RNG, 8), ``DISTRIBUTED_KEEP=1`` (keep the work folder even on success).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any, NoReturn

import psutil
import pytest
import requests
from connect_sandbox.testing import Sandbox, free_port, running_sandbox

log = logging.getLogger("connect.distributed")

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")

API_POOL = "cloudblue_connect_api"
POOL_SLOTS = 4
SANDBOX_FAULTS = "429=0.05,500=0.05,drop=0.05"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"
COMPONENTS_HEALTH = ("metadatabase", "scheduler", "triggerer", "dag_processor")
WORKERS = ("worker1", "worker2")

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The Redis database is chosen per run among these, skipping any that hold keys (another run, or
# something else on the machine); a lock key marks it as taken while the run lasts.
REDIS_DB_CANDIDATES = range(11, 16)
REDIS_LOCK_KEY = "connect-distributed-test:lock"

_SUMMARY = pytest.StashKey[dict]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The run's peak memory (PSS) per component, its runtime, and the work folder if kept."""
    summary = config.stash.get(_SUMMARY, None)
    if not summary:
        return
    terminalreporter.section("distributed topology")
    for line in summary.get("lines", []):
        terminalreporter.write_line(line)


def _summary(config: pytest.Config) -> dict:
    if _SUMMARY not in config.stash:
        config.stash[_SUMMARY] = {"lines": [], "keep": False}
    return config.stash[_SUMMARY]


# --------------------------------------------------------------------------------------------------
# Settings and waiting


@dataclass(frozen=True)
class Settings:
    changes: int = 500
    usage_records: tuple[int, ...] = (1500, 700)
    timeout: float = 360.0
    fault_seed: int = 8
    keep: bool = False

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ
        return cls(
            changes=int(env.get("DISTRIBUTED_CHANGES", cls.changes)),
            timeout=float(env.get("DISTRIBUTED_TIMEOUT", cls.timeout)),
            fault_seed=int(env.get("DISTRIBUTED_FAULT_SEED", cls.fault_seed)),
            keep=env.get("DISTRIBUTED_KEEP") == "1",
        )


def wait_until(what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Call ``probe`` until it returns something truthy; raise naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except ComponentDied:
            raise
        except Exception as exc:  # a probe failing is the same as "not yet"
            last_error = exc
        time.sleep(interval)
    suffix = f" (last error: {last_error!r})" if last_error else ""
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s{suffix}")


class ComponentDied(RuntimeError):
    """A long-running component exited; the message names it and its log."""


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Component:
    name: str
    proc: subprocess.Popen
    log_path: Path
    log_file: IO[bytes] | None = None
    argv: list[str] | None = None
    extra_env: dict[str, str] | None = None


class Processes:
    """Every process of the run, each in its own process group, stopped by pid.

    A component's children (Celery's prefork pool, the task supervisors, uvicorn workers) share its
    process group, so signalling the group stops the whole component; what is still alive after
    the grace period is killed, group first, then any remembered descendant by its own pid.
    """

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = env or {}
        self.components: list[Component] = []
        self.lock = threading.Lock()

    def start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Component:
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")  # closed in stop_all()
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**self.env, **(extra_env or {})},
            cwd=str(self.log_dir),
            start_new_session=True,
        )
        component = self.adopt(name, proc, log_path, log_file)
        component.argv, component.extra_env = list(argv), extra_env
        return component

    def stop(self, name: str, grace: float = 25.0) -> Component:
        """Stop one long-running component (SIGTERM to its group, SIGKILL after ``grace``); return it."""
        with self.lock:
            found = [c for c in self.components if c.name == name and c.proc.poll() is None]
        if not found:
            raise RuntimeError(f"no running component named {name}")
        component = found[-1]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.proc.pid, signal.SIGTERM)
        try:
            component.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(component.proc.pid, signal.SIGKILL)
            component.proc.wait(10)
        with self.lock:
            self.components.remove(component)
        if component.log_file is not None:
            component.log_file.close()
        log.info("stopped %s (pid %s, exit %s)", name, component.proc.pid, component.proc.returncode)
        return component

    def restart(self, component: Component) -> Component:
        """Start a stopped component again, with the same command line and environment."""
        assert component.argv is not None, f"{component.name} was not started by this object"
        return self.start(component.name, component.argv, component.extra_env)

    def adopt(
        self, name: str, proc: subprocess.Popen, log_path: Path, log_file: IO[bytes] | None = None
    ) -> Component:
        """Count a process started elsewhere (in a session of its own) as a component of the run."""
        component = Component(name, proc, log_path, log_file)
        with self.lock:
            self.components.append(component)
        log.info("started %s (pid %s), log %s", name, proc.pid, log_path)
        return component

    def run(self, name: str, argv: list[str], timeout: float) -> None:
        """Run a one-shot command (``cli-`` names) to completion; raise with its log if it fails."""
        self.wait(self.start(name, argv), timeout)

    def wait(self, component: Component, timeout: float) -> None:
        """Wait for a one-shot command started with :meth:`start`; raise with its log if it failed."""
        try:
            code = component.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{component.name} did not finish within {timeout:.0f}s; log: {component.log_path}"
            ) from None
        if code != 0:
            text = component.log_path.read_text(errors="replace")
            lines = [line for line in text.splitlines() if line.strip()]
            last = f" ({lines[-1].strip()[:300]})" if lines else ""
            raise RuntimeError(f"{component.name} exited with {code}{last}; log: {component.log_path}")

    def check_alive(self) -> None:
        """Raise :class:`ComponentDied` if a long-running component has exited."""
        with self.lock:
            dead = [c for c in self.components if not c.name.startswith("cli-") and c.proc.poll() is not None]
        if dead:
            raise ComponentDied(
                "component(s) exited: "
                + ", ".join(f"{c.name} (exit {c.proc.returncode}, log {c.log_path})" for c in dead)
            )

    def tree(self) -> list[psutil.Process]:
        """Every live process of the run: the components and their descendants."""
        with self.lock:
            components = list(self.components)
        found: list[psutil.Process] = []
        for c in components:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(c.proc.pid)
                found.append(parent)
                found.extend(parent.children(recursive=True))
        return found

    def stop_all(self, grace: float = 25.0) -> list[str]:
        """Stop every process: SIGTERM the groups, wait, SIGKILL what remains. Idempotent.

        Returns the names of components that had to be killed.
        """
        with self.lock:
            components = list(self.components)
        remembered = {p.pid: p for p in self.tree()}
        for c in reversed(components):
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in components:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(max(0.1, deadline - time.monotonic()))
        killed = []
        for c in components:
            if c.proc.poll() is None:
                killed.append(c.name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(10)
        for pid, p in remembered.items():
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    log.info("killing leftover process %s (%s)", pid, " ".join(p.cmdline()[:3]))
                    p.kill()
        for c in components:
            if c.log_file is not None:
                with contextlib.suppress(OSError):
                    c.log_file.close()
        return killed


class MemorySampler(threading.Thread):
    """Samples the memory of every process tree of the run; keeps the peak total and per component.

    PSS (proportional set size) is used where the kernel offers it, so pages shared between a
    Celery worker and its forked pool are counted once, not once per process.
    """

    def __init__(self, processes: Processes, interval: float = 2.0) -> None:
        super().__init__(daemon=True, name="memory-sampler")
        self.processes = processes
        self.interval = interval
        self.peak_total = 0
        self.peak_by_component: dict[str, int] = {}
        self._stop_event = threading.Event()

    @staticmethod
    def _size(p: psutil.Process) -> int:
        try:
            info = p.memory_full_info()
            return getattr(info, "pss", 0) or info.rss
        except psutil.AccessDenied:
            return p.memory_info().rss

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            total = 0
            with self.processes.lock:
                components = list(self.processes.components)
            for c in components:
                size = 0
                with contextlib.suppress(psutil.Error):
                    parent = psutil.Process(c.proc.pid)
                    for p in [parent, *parent.children(recursive=True)]:
                        with contextlib.suppress(psutil.Error):
                            size += self._size(p)
                total += size
                self.peak_by_component[c.name] = max(self.peak_by_component.get(c.name, 0), size)
            self.peak_total = max(self.peak_total, total)

    def stop(self) -> None:
        self._stop_event.set()

    def report(self) -> str:
        parts = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(self.peak_by_component.items()) if v)
        return f"peak memory (PSS) {self.peak_total / 2**20:.0f} MiB in all; per component MiB: {parts}"


# --------------------------------------------------------------------------------------------------
# Airflow REST API


class AirflowApi:
    """The API server's REST API (``/api/v2``) with a bearer token from ``POST /auth/token``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()

    def health(self) -> dict:
        r = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        r.raise_for_status()
        return r.json()

    def token(self, username: str, password: str) -> str:
        r = requests.post(
            f"{self.base_url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        if r.status_code not in (200, 201):
            raise RuntimeError(f"POST /auth/token answered {r.status_code}: {r.text[:300]}")
        return str(r.json()["access_token"])

    def login(self, username: str, password: str) -> None:
        self.session.headers["Authorization"] = f"Bearer {self.token(username, password)}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.session.request(method, f"{self.base_url}/api/v2/{path.lstrip('/')}", timeout=30, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} /api/v2/{path} answered {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    def get_dag(self, dag_id: str) -> dict | None:
        r = self.session.get(f"{self.base_url}/api/v2/dags/{dag_id}", timeout=30)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def import_errors(self) -> list[dict]:
        return self.call("GET", "importErrors").get("import_errors", [])

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        return self.call("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.call("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.call("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"]

    def pool(self, name: str) -> dict:
        return self.call("GET", f"pools/{name}")


# --------------------------------------------------------------------------------------------------
# The topology


@dataclass
class Topology:
    """The running deployment, and what the tests need to drive it and to look inside it."""

    settings: Settings
    api: AirflowApi
    sandbox: Sandbox
    processes: Processes
    outbox_db: dict
    data_dir: Path
    log_dir: Path
    workers: tuple[str, ...] = WORKERS
    credentials: tuple[str, str] = (ADMIN_USER, ADMIN_PASSWORD)
    pool_name: str = API_POOL
    pool_slots: int = POOL_SLOTS

    def unhealthy(self) -> dict[str, Any]:
        """The components the API server's health report does not call healthy, with their status."""
        health = self.api.health()
        status = {k: (health.get(k) or {}).get("status") for k in COMPONENTS_HEALTH}
        return {k: v for k, v in status.items() if v != "healthy"}

    def worker_log(self, worker: str) -> str:
        return (self.log_dir / f"{worker}.log").read_text(errors="replace")

    def tasks_received(self) -> dict[str, int]:
        """How many Celery tasks each worker received (its log's ``] received`` lines)."""
        return {w: self.worker_log(w).count("] received") for w in self.workers}

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 120) -> None:
        """Wait until the dag-processor has parsed ``dag_ids``; fail at once on an import error."""
        api = self.api

        def parsed() -> bool:
            self.processes.check_alive()
            errors = api.import_errors()
            if errors:
                raise ComponentDied(
                    "import errors: "
                    + "; ".join(f"{e.get('filename')}: {e.get('stack_trace', '')[-300:]}" for e in errors)
                )
            return all(api.get_dag(d) is not None for d in dag_ids)

        wait_until(f"DAGs {dag_ids} parsed", parsed, timeout=timeout, interval=2)

    def wait_runs(self, dag_id: str, run_ids: list[str], deadline: float) -> dict[str, str]:
        """Wait until the runs reach a final state (or the deadline); return run id -> state."""
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {r: self.api.run_state(dag_id, r) for r in run_ids}
            if all(s in ("success", "failed") for s in states.values()):
                return states
            self.processes.check_alive()
            time.sleep(3)
        return states

    def active_runs(self, dag_id: str) -> list[dict]:
        return [r for r in self.api.runs(dag_id) if r["state"] in ("queued", "running")]

    def connect_get_all(self, path: str, params: dict[str, str] | None = None) -> list[dict]:
        """Every item of a Connect collection through the sandbox's public API (call with faults off)."""
        items: list[dict] = []
        offset = 0
        while True:
            query = {**(params or {}), "limit": "1000", "offset": str(offset)}
            r = requests.get(
                f"{self.sandbox.api_url}/{path}",
                params=query,
                headers={"Authorization": self.sandbox.api_key},
                timeout=60,
            )
            r.raise_for_status()
            page = r.json()
            items.extend(page)
            if len(page) < 1000:
                return items
            offset += len(page)


def _airflow_env(
    home: Path,
    data_dir: Path,
    metadata_url: str,
    broker_url: str,
    sandbox: Sandbox,
    outbox_conn: str,
    ports: dict[str, int],
) -> dict[str, str]:
    """The environment of every Airflow component: the deployment's settings, nothing inherited.

    The test session's own Airflow settings (``AIRFLOW__*``, connections, variables) and pytest's
    markers (``PYTEST_*``, which make Airflow's logging set-up raise where production logs) are
    dropped, so the components run as a deployment does.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "PYTEST_"))
        and k != "AIRFLOW_CONFIG"
    }
    api_url = f"http://127.0.0.1:{ports['api']}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
            "CONNECT_DATA_DIR": str(data_dir),
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__CORE__FERNET_KEY": urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            # Not the project's plugins/: the plugins manager would import
            # plugins/connect_provider/operators/requests.py as a top-level `requests`.
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "no_plugins"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "8",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(ports["scheduler_health"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_logs"]),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # The changes DAG runs only when triggered here, and follows requests briskly.
            "CONNECT_CHANGES_SCHEDULE": "none",
            "CONNECT_CHANGES_FOLLOW_POKE_SECONDS": "5",
            # The usage-file watcher polls briskly, so an event-driven run starts within seconds.
            "CONNECT_EVENTS_POLL_SECONDS": "2",
            "AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT": sandbox.conn_json(),
            "AIRFLOW_CONN_CONNECT_CHANGES_DB": outbox_conn,
        }
    )
    return env


# --------------------------------------------------------------------------------------------------
# Fixtures, in the order the topology comes up


@pytest.fixture(scope="module")
def distributed_settings() -> Settings:
    return Settings.from_environment()


@pytest.fixture(scope="module")
def distributed_prerequisites(unavailable: Callable[[str, object], NoReturn]) -> None:
    """The packages the components import, checked up front (a worker without them dies obscurely)."""
    # Airflow 3.3 opens an async engine on the metadata DB too: postgresql+asyncpg.
    for package in ("apache-airflow-providers-celery", "asyncpg", "psycopg2-binary", "redis"):
        try:
            metadata.version(package)
        except metadata.PackageNotFoundError as exc:
            unavailable(f"the package {package} (`make install`)", exc)


@pytest.fixture(scope="module")
def distributed_workdir(request: pytest.FixtureRequest, distributed_settings: Settings) -> Iterator[Path]:
    """The run's work folder (AIRFLOW_HOME, data, component logs): removed on success only."""
    workdir = Path(tempfile.mkdtemp(prefix="connect-distributed-"))
    for sub in ("airflow_home/no_plugins", "data", "logs"):
        (workdir / sub).mkdir(parents=True)
    summary = _summary(request.config)
    failed_before = request.session.testsfailed
    started = time.monotonic()
    log.info("work folder %s", workdir)
    yield workdir
    summary["lines"].append(f"runtime {time.monotonic() - started:.0f}s")
    failed = request.session.testsfailed > failed_before or summary["keep"]
    if failed or distributed_settings.keep:
        summary["lines"].append(f"work folder kept: {workdir} (component logs in {workdir / 'logs'})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def celery_broker(
    distributed_prerequisites: None, unavailable: Callable[[str, object], NoReturn]
) -> Iterator[str]:
    """A Redis database number of the run's own, as the Celery broker URL; flushed at the end."""
    import redis

    token = secrets.token_hex(6)
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis on {REDIS_HOST}:{REDIS_PORT}", exc)
    number = broker = None
    for n in REDIS_DB_CANDIDATES:
        candidate = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n, socket_timeout=5)
        if candidate.dbsize() == 0 and candidate.set(REDIS_LOCK_KEY, token, nx=True, ex=3600):
            number, broker = n, candidate
            break
    if broker is None:
        pytest.fail(
            f"no free Redis database among {list(REDIS_DB_CANDIDATES)} on {REDIS_HOST}:{REDIS_PORT}: "
            "each holds keys (another run, or leftovers: `redis-cli -n N flushdb` if they are stale)"
        )
    log.info("celery broker: redis db %s", number)
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{number}"
    with contextlib.suppress(redis.RedisError):
        if broker.get(REDIS_LOCK_KEY) == token.encode():
            broker.flushdb()


@pytest.fixture(scope="module")
def metadata_db(fresh_postgres_database: Callable[[str], Any]) -> Any:
    """A fresh PostgreSQL metadata database (Airflow's, and Celery's result backend)."""
    return fresh_postgres_database("dist_airflow")


@pytest.fixture(scope="module")
def outbox_db(fresh_postgres_database: Callable[[str], Any]) -> Any:
    """A fresh PostgreSQL database for the subscription-changes outbox."""
    return fresh_postgres_database("dist_outbox")


@pytest.fixture(scope="module")
def processes(request: pytest.FixtureRequest, distributed_workdir: Path) -> Iterator[Processes]:
    """The run's processes, their memory sampled; all stopped at the end, on a signal, or at exit.

    The teardown fails if any process of the run is still alive after the stop.
    """
    procs = Processes(distributed_workdir / "logs")
    sampler = MemorySampler(procs)
    sampler.start()
    atexit.register(procs.stop_all)  # a last resort if the session dies without its teardown

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")  # pytest then tears down

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    summary = _summary(request.config)
    try:
        yield procs
    finally:
        killed = procs.stop_all()
        sampler.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        atexit.unregister(procs.stop_all)
        if sampler.peak_total:
            summary["lines"].append(sampler.report())
        still = [f"{p.pid} ({' '.join(p.cmdline()[:3])})" for p in procs.tree()]
        if killed:
            log.info("had to SIGKILL: %s", ", ".join(killed))
        if still:
            summary["keep"] = True
            pytest.fail(f"processes of the run still alive after the stop: {still}")


@pytest.fixture(scope="module")
def faulty_sandbox(
    processes: Processes, distributed_workdir: Path, distributed_settings: Settings
) -> Iterator[Sandbox]:
    """The Connect sandbox (demo seed) with 5 % each of 429s, 500s and dropped connections."""
    with running_sandbox(
        "--seed",
        "demo",
        "--faults",
        f"{SANDBOX_FAULTS},seed={distributed_settings.fault_seed}",
        log_path=distributed_workdir / "logs" / "sandbox.log",
        new_session=True,
        conn_extra={"max_wait": 2, "timeout": 10, "max_retries": 8},
    ) as sandbox:
        processes.adopt("sandbox", sandbox.process, sandbox.log_path)
        yield sandbox


@pytest.fixture(scope="module")
def topology(
    distributed_settings: Settings,
    distributed_workdir: Path,
    celery_broker: str,
    metadata_db: Any,
    outbox_db: Any,
    processes: Processes,
    faulty_sandbox: Sandbox,
) -> Topology:
    """The whole deployment, up and healthy: migrated metadata DB, the pool, every component."""
    started = time.monotonic()
    home = distributed_workdir / "airflow_home"
    names = ("api", "scheduler_health", "trigger_logs", *(f"{w}_logs" for w in WORKERS))
    ports = {name: free_port() for name in names}
    processes.env = _airflow_env(
        home,
        distributed_workdir / "data",
        metadata_db.sqlalchemy_url(),
        celery_broker,
        faulty_sandbox,
        outbox_db.airflow_conn_json(),
        ports,
    )
    (home / "simple_auth_manager_passwords.json.generated").write_text(
        json.dumps({ADMIN_USER: ADMIN_PASSWORD})
    )
    log.info("metadata db %s, outbox db %s", metadata_db["dbname"], outbox_db["dbname"])
    # A worker that cannot import its executor module dies with a misleading message; check it
    # up front (e.g. a celery release newer than apache-airflow-providers-celery supports).
    celery_check = processes.start(
        "cli-celery-import",
        [sys.executable, "-c", "import airflow.providers.celery.executors.celery_executor_utils"],
    )
    t0 = time.monotonic()
    processes.run("cli-db-migrate", [AIRFLOW, "db", "migrate"], timeout=180)
    log.info("metadata database migrated in %.1fs", time.monotonic() - t0)
    processes.wait(celery_check, timeout=120)

    processes.start("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(ports["api"])])
    processes.start("scheduler", [AIRFLOW, "scheduler"])
    processes.start("dag-processor", [AIRFLOW, "dag-processor"])
    processes.start("triggerer", [AIRFLOW, "triggerer"])
    for worker in WORKERS:
        processes.start(
            worker,
            [AIRFLOW, "celery", "worker", "--celery-hostname", f"{worker}@%h", "--concurrency", "2"],
            {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports[f"{worker}_logs"])},
        )
    processes.run(
        "cli-pools-set",
        [AIRFLOW, "pools", "set", API_POOL, str(POOL_SLOTS), "Bounds concurrent calls to the Connect API"],
        timeout=120,
    )
    topology = Topology(
        settings=distributed_settings,
        api=AirflowApi(f"http://127.0.0.1:{ports['api']}"),
        sandbox=faulty_sandbox,
        processes=processes,
        outbox_db=outbox_db,
        data_dir=distributed_workdir / "data",
        log_dir=distributed_workdir / "logs",
    )

    def all_up() -> bool:
        processes.check_alive()
        return not topology.unhealthy() and all(" ready." in topology.worker_log(w) for w in WORKERS)

    try:
        wait_until("every component healthy", all_up, timeout=240, interval=2)
    except TimeoutError as exc:
        with contextlib.suppress(Exception):
            log.info("last health answer: %s", topology.api.health())
        raise RuntimeError(f"{exc}; component logs in {topology.log_dir}") from None
    topology.api.login(*topology.credentials)
    log.info("all components up %.0fs after the start", time.monotonic() - started)
    return topology
