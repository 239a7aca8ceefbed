"""The distributed deployment, run for real on one machine: ``make distributed-test``.

The same topology as ``docker-compose.yaml``, with no Docker: every Airflow component is a process
started here, on the local PostgreSQL (a fresh metadata database per run, and a second fresh one
for the subscription-changes outbox) and the local Redis (CeleryExecutor broker, a database number
of its own). The Connect sandbox runs with faults on, so retries, 429s and dropped connections
happen while two Celery workers share the work.

It seeds pending changes and usage files, triggers ``connect_subscription_changes`` and
``connect_usage_to_parquet`` through Airflow's REST API (bearer token from ``/auth/token``), waits
for the runs, then checks what matters across workers: every change ended once with the status its
payload implies, no Connect request was created twice, and both Parquet files hold every record
exactly once. Whatever happens, every process it started is stopped by its pid (process group),
and the databases are dropped. On failure the work folder with every component's log is kept and
its path printed.

Why processes and not ``airflow standalone``: standalone cannot be stopped reliably (its components
outlive a SIGTERM), it forces LocalExecutor, and it would not exercise Celery at all.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from base64 import urlsafe_b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg2
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")

CHANGES_DAG = "connect_subscription_changes"
USAGE_DAG = "connect_usage_to_parquet"
API_POOL = "cloudblue_connect_api"
POOL_SLOTS = 4
SANDBOX_API_KEY = "ApiKey SU-000-000-000:sandbox-demo-key"
SANDBOX_FAULTS = "429=0.05,500=0.05,drop=0.05"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The Redis database is chosen per run among these, skipping any that hold keys (another run, or
# something else on the machine); a lock key marks it as taken while the run lasts.
REDIS_DB_CANDIDATES = range(11, 16)
REDIS_LOCK_KEY = "connect-distributed-test:lock"

# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(passed), detail))
        mark = "PASS" if passed else "FAIL"
        print(f"[{mark}] {name}" + (f": {detail}" if detail else ""), flush=True)
        return bool(passed)

    @property
    def failed(self) -> int:
        return sum(not c.passed for c in self.checks)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.checks)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Call ``probe`` until it returns something truthy; raise naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # a probe failing is the same as "not yet"
            last_error = exc
        time.sleep(interval)
    suffix = f" (last error: {last_error!r})" if last_error else ""
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s{suffix}")


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Component:
    name: str
    proc: subprocess.Popen
    log_path: Path
    log_file: IO[bytes]


class Processes:
    """Every process this run starts, each in its own process group, stopped by pid.

    A component's children (Celery's prefork pool, the task supervisors, uvicorn workers) share its
    process group, so signalling the group stops the whole component; what is still alive after
    the grace period is killed, group first, then any remembered descendant by its own pid.
    """

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.components: list[Component] = []
        self._lock = threading.Lock()

    def start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Component:
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")  # closed in stop_all()
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(self.log_dir),
            start_new_session=True,
        )
        component = Component(name, proc, log_path, log_file)
        with self._lock:
            self.components.append(component)
        log(f"started {name} (pid {proc.pid}), log {log_path}")
        return component

    def run(self, name: str, argv: list[str], timeout: float) -> None:
        """Run a one-shot command to completion; raise with its log path if it fails."""
        self.wait(self.start(name, argv), timeout)

    def wait(self, component: Component, timeout: float) -> None:
        """Wait for a one-shot command started with :meth:`start`; raise with its log if it failed."""
        name = component.name
        try:
            code = component.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{name} did not finish within {timeout:.0f}s; log: {component.log_path}"
            ) from None
        if code != 0:
            lines = [
                line for line in component.log_path.read_text(errors="replace").splitlines() if line.strip()
            ]
            last = f" ({lines[-1].strip()[:300]})" if lines else ""
            raise RuntimeError(f"{name} exited with {code}{last}; log: {component.log_path}")

    def dead(self) -> list[Component]:
        """Long-running components that exited (one-shot commands are expected to exit)."""
        return [c for c in self.components if not c.name.startswith("cli-") and c.proc.poll() is not None]

    def tree(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for c in self.components:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(c.proc.pid)
                found.append(parent)
                found.extend(parent.children(recursive=True))
        return found

    def stop_all(self, grace: float = 25.0) -> list[str]:
        """Stop every started process: SIGTERM the groups, wait, SIGKILL what remains.

        Returns the names of components that had to be killed.
        """
        with self._lock:
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
                    log(f"killing leftover process {pid} ({' '.join(p.cmdline()[:3])})")
                    p.kill()
        for c in components:
            with contextlib.suppress(OSError):
                c.log_file.close()
        return killed


class MemorySampler(threading.Thread):
    """Samples the memory of every started process tree; keeps the peak total and per component.

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
            with self.processes._lock:
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


# --------------------------------------------------------------------------------------------------
# PostgreSQL and Redis


def pg_connect(dbname: str = "postgres") -> Any:
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, connect_timeout=5)
    conn.autocommit = True
    return conn


class Databases:
    """Fresh PostgreSQL databases for one run, dropped at the end (``WITH (FORCE)``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created: list[str] = []

    def create(self, suffix: str) -> str:
        name = f"{self.prefix}_{suffix}"
        with contextlib.closing(pg_connect()) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        while self.created:
            name = self.created.pop()
            try:
                with contextlib.closing(pg_connect()) as conn, conn.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg2.Error as exc:
                log(f"could not drop database {name}: {exc}")


class RedisDb:
    """A Redis database number of this run's own: empty when taken, flushed when released."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.number: int | None = None

    def acquire(self) -> int:
        for n in REDIS_DB_CANDIDATES:
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n, socket_timeout=5)
            if client.dbsize() == 0 and client.set(REDIS_LOCK_KEY, self.token, nx=True, ex=3600):
                self.number = n
                return n
        raise RuntimeError(
            f"no free Redis database among {list(REDIS_DB_CANDIDATES)} on {REDIS_HOST}:{REDIS_PORT}: "
            "each holds keys (another run, or leftovers: `redis-cli -n N flushdb` if they are stale)"
        )

    def release(self) -> None:
        if self.number is None:
            return
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=self.number, socket_timeout=5)
        with contextlib.suppress(redis.RedisError):
            if client.get(REDIS_LOCK_KEY) == self.token.encode():
                client.flushdb()
        self.number = None


# --------------------------------------------------------------------------------------------------
# Airflow REST API


class AirflowApi:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()

    def health(self) -> dict:
        r = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        r.raise_for_status()
        return r.json()

    def login(self, username: str, password: str) -> None:
        r = self.session.post(
            f"{self.base_url}/auth/token", json={"username": username, "password": password}, timeout=30
        )
        if r.status_code not in (200, 201):
            raise RuntimeError(f"POST /auth/token answered {r.status_code}: {r.text[:300]}")
        self.session.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
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
        return self._call("GET", "importErrors").get("import_errors", [])

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        return self._call("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self._call("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self._call("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self._call("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})[
            "task_instances"
        ]

    def pool(self, name: str) -> dict:
        return self._call("GET", f"pools/{name}")


# --------------------------------------------------------------------------------------------------
# The changes to seed, and what each must end as


@dataclass(frozen=True)
class Expected:
    label: str
    status: str
    creates: bool
    asset_external_id: str | None


def _account(name: str, external_id: str, first: str, email: str) -> dict:
    return {
        "name": name,
        "external_id": external_id,
        "contact_info": {
            "address_line1": "1 Demo Street",
            "city": "Springfield",
            "postal_code": "10001",
            "country": "US",
            "contact": {
                "first_name": first,
                "last_name": "Demo",
                "email": email,
                "phone_number": "+1 2015550123",
            },
        },
    }


def planned_changes(n: int) -> list[tuple[dict, Expected]]:
    """``n`` pending changes against the sandbox's demo seed, each with the outcome it must reach.

    The sandbox's vendor approves new purchases, fails assets whose external id starts with
    ``fail-`` and inquires on ``inquire-``; a quantity of 0 and an unknown asset are refused before
    any request exists. Two actions on seeded assets (a change and a resume) are included too.
    """
    tier1 = _account("Demo Reseller", "reseller-1", "Rita", "rita@example.com")
    customer = _account("Demo Customer", "customer-1", "Carl", "carl@example.com")

    def purchase(external_id: str, quantity: int) -> dict:
        return {
            "change_type": "purchase",
            "asset_external_id": external_id,
            "payload": {
                "hub_id": "HB-0000-0001",
                "marketplace": "MP-00001",
                "item_id": "PRD-276-377-545-0001",
                "quantity": quantity,
                "tier1": tier1,
                "customer": customer,
            },
        }

    plan: list[tuple[dict, Expected]] = [
        (
            {
                "change_type": "change",
                "asset_external_id": "sub-1001",
                "payload": {"items": [{"item_id": "SEATS", "quantity": 15}]},
            },
            Expected("change sub-1001", "approved", True, "sub-1001"),
        ),
        (
            {"change_type": "resume", "asset_external_id": "sub-1002", "payload": {}},
            Expected("resume sub-1002", "approved", True, "sub-1002"),
        ),
    ]
    for i in range(max(0, n - len(plan))):
        kind = i % 20
        if kind == 0 and i % 40 == 0:
            ext = f"dist-zero-{i:05d}"
            plan.append((purchase(ext, 0), Expected(f"purchase {ext} quantity 0", "rejected", False, ext)))
        elif kind == 0:
            ext = f"missing-{i:05d}"
            change = {
                "change_type": "change",
                "asset_external_id": ext,
                "payload": {"item_id": "SEATS", "quantity": 2},
            }
            plan.append((change, Expected(f"change of unknown {ext}", "rejected", False, ext)))
        elif kind in (1, 2):
            ext = f"fail-{i:05d}"
            plan.append((purchase(ext, 1), Expected(f"purchase {ext}", "failed", True, ext)))
        elif kind == 3:
            ext = f"inquire-{i:05d}"
            plan.append((purchase(ext, 1), Expected(f"purchase {ext}", "inquiring", True, ext)))
        else:
            ext = f"dist-{i:05d}"
            plan.append((purchase(ext, 1 + i % 7), Expected(f"purchase {ext}", "approved", True, ext)))
    return plan[:n]


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class Settings:
    dags_folder: Path
    workdir: Path
    changes: int
    usage_records: tuple[int, int]
    timeout: float
    fault_seed: int
    keep: bool
    trigger_only: str | None


class DistributedRun:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.report = Report()
        self.token = secrets.token_hex(6)
        self.home = settings.workdir / "airflow_home"
        self.data_dir = settings.workdir / "data"
        self.log_dir = settings.workdir / "logs"
        for d in (self.home, self.data_dir, self.log_dir, settings.workdir / "no_plugins"):
            d.mkdir(parents=True, exist_ok=True)
        self.databases = Databases(f"connect_dist_{int(time.time())}_{self.token}")
        self.redis_db = RedisDb(self.token)
        self.processes: Processes | None = None
        self.sampler: MemorySampler | None = None
        self.api: AirflowApi | None = None
        self.sandbox_url = ""
        self.outbox_db = ""
        self._cleaned = False
        self._cleanup_lock = threading.Lock()
        self.started_at = time.monotonic()

    # ---- environment ---------------------------------------------------------------------------

    def airflow_env(self, metadata_db: str, outbox_db: str, redis_db: int, ports: dict[str, int]) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k != "AIRFLOW_CONFIG"
        }
        pg = f"{PG_USER}@{PG_HOST}:{PG_PORT}"
        fernet_key = urlsafe_b64encode(secrets.token_bytes(32)).decode()
        api_url = f"http://127.0.0.1:{ports['api']}"
        self.outbox_db = outbox_db
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW_CONFIG": str(self.home / "airflow.cfg"),
                "CONNECT_DATA_DIR": str(self.data_dir),
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}/{metadata_db}",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}/{metadata_db}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                "AIRFLOW__CORE__FERNET_KEY": fernet_key,
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
                "AIRFLOW__API__BASE_URL": api_url,
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.s.dags_folder),
                # Not the project's plugins/: the plugins manager would import
                # plugins/connect_provider/operators/requests.py as a top-level `requests`.
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.s.workdir / "no_plugins"),
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
                "AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT": json.dumps(
                    {
                        "conn_type": "cloudblue_connect",
                        "host": f"{self.sandbox_url}/public/v1",
                        "password": SANDBOX_API_KEY,
                        "extra": {"max_wait": 2, "timeout": 10, "max_retries": 8},
                    }
                ),
                "AIRFLOW_CONN_CONNECT_CHANGES_DB": json.dumps(
                    {
                        "conn_type": "postgres",
                        "host": PG_HOST,
                        "port": PG_PORT,
                        "login": PG_USER,
                        "schema": outbox_db,
                    }
                ),
            }
        )
        return env

    # ---- set-up --------------------------------------------------------------------------------

    def preflight(self) -> None:
        problems = []
        try:
            with contextlib.closing(pg_connect()):
                pass
        except psycopg2.Error as exc:
            problems.append(f"PostgreSQL on {PG_HOST}:{PG_PORT} (user {PG_USER}, trust): {exc}".strip())
        try:
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5).ping()
        except redis.RedisError as exc:
            problems.append(f"Redis on {REDIS_HOST}:{REDIS_PORT}: {exc}")
        # Airflow 3.3 opens an async engine on the metadata DB too: postgresql+asyncpg.
        for package in ("apache-airflow-providers-celery", "asyncpg", "psycopg2-binary"):
            try:
                metadata.version(package)
            except metadata.PackageNotFoundError:
                problems.append(f"{package} is not installed (`make install`)")
        if problems:
            raise RuntimeError("the machine lacks what this test needs: " + "; ".join(problems))

    def start(self) -> None:
        self.preflight()
        metadata_db = self.databases.create("airflow")
        outbox_db = self.databases.create("outbox")
        redis_db = self.redis_db.acquire()
        ports = {
            name: free_port()
            for name in ("api", "sandbox", "scheduler_health", "trigger_logs", "worker1_logs", "worker2_logs")
        }
        self.sandbox_url = f"http://127.0.0.1:{ports['sandbox']}"
        env = self.airflow_env(metadata_db, outbox_db, redis_db, ports)
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(
            json.dumps({ADMIN_USER: ADMIN_PASSWORD})
        )
        log(
            f"work folder {self.s.workdir}; metadata db {metadata_db}, outbox db {outbox_db}, "
            f"redis db {redis_db}"
        )
        self.processes = Processes(self.log_dir, env)
        self.sampler = MemorySampler(self.processes)
        self.sampler.start()

        if not self.s.trigger_only:
            self.start_sandbox(ports["sandbox"])
        # A worker that cannot import its executor module dies with a misleading message; check
        # it up front (e.g. a celery release newer than apache-airflow-providers-celery supports).
        celery_check = self.processes.start(
            "cli-celery-import",
            [sys.executable, "-c", "import airflow.providers.celery.executors.celery_executor_utils"],
        )
        t0 = time.monotonic()
        self.processes.run("cli-db-migrate", [AIRFLOW, "db", "migrate"], timeout=180)
        log(f"metadata database migrated in {time.monotonic() - t0:.1f}s")
        self.processes.wait(celery_check, timeout=120)
        self.start_airflow(ports)

    def start_sandbox(self, port: int) -> None:
        assert self.processes is not None
        self.processes.start(
            "sandbox",
            [
                sys.executable,
                "-m",
                "connect_sandbox.cli",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--seed",
                "demo",
                "--faults",
                f"{SANDBOX_FAULTS},seed={self.s.fault_seed}",
            ],
        )

    def start_airflow(self, ports: dict[str, int]) -> None:
        assert self.processes is not None
        p = self.processes
        p.start("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(ports["api"])])
        p.start("scheduler", [AIRFLOW, "scheduler"])
        p.start("dag-processor", [AIRFLOW, "dag-processor"])
        p.start("triggerer", [AIRFLOW, "triggerer"])
        for n in (1, 2):
            p.start(
                f"worker{n}",
                [AIRFLOW, "celery", "worker", "--celery-hostname", f"worker{n}@%h", "--concurrency", "2"],
                {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports[f"worker{n}_logs"])},
            )
        p.run(
            "cli-pools-set",
            [
                AIRFLOW,
                "pools",
                "set",
                API_POOL,
                str(POOL_SLOTS),
                "Bounds concurrent calls to the Connect API",
            ],
            timeout=120,
        )
        self.api = AirflowApi(f"http://127.0.0.1:{ports['api']}")
        self.wait_healthy()
        log(f"all components up {time.monotonic() - self.started_at:.0f}s after start")

    def wait_healthy(self) -> None:
        assert self.processes is not None and self.api is not None

        def all_up() -> bool:
            dead = self.processes.dead()
            if dead:
                names = ", ".join(f"{c.name} (exit {c.proc.returncode}, log {c.log_path})" for c in dead)
                raise SystemExit(f"component(s) exited during start-up: {names}")
            health = self.api.health()
            wanted = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if not all((health.get(k) or {}).get("status") == "healthy" for k in wanted):
                return False
            for n in (1, 2):
                text = (self.log_dir / f"worker{n}.log").read_text(errors="replace")
                if " ready." not in text:
                    return False
            if self.s.trigger_only:
                return True
            return requests.get(f"{self.sandbox_url}/_sandbox/health", timeout=5).status_code == 200

        try:
            wait_until("every component healthy", all_up, timeout=240, interval=2)
        except TimeoutError as exc:
            with contextlib.suppress(Exception):
                log(f"last health answer: {self.api.health()}")
            raise RuntimeError(str(exc)) from None
        self.report.check(
            "topology up",
            True,
            "api-server, scheduler, dag-processor, triggerer healthy; worker1 and worker2 ready; sandbox up",
        )
        self.api.login(ADMIN_USER, ADMIN_PASSWORD)
        self.report.check("REST API token", True, "bearer token from POST /auth/token")
        pool = self.api.pool(API_POOL)
        self.report.check(
            f"pool {API_POOL}",
            pool.get("slots") == POOL_SLOTS,
            f"slots={pool.get('slots')} (want {POOL_SLOTS})",
        )

    # ---- DAGs ----------------------------------------------------------------------------------

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 120) -> None:
        assert self.api is not None
        api = self.api

        def parsed() -> bool:
            errors = api.import_errors()
            if errors:
                raise SystemExit(
                    "import errors: "
                    + "; ".join(f"{e.get('filename')}: {e.get('stack_trace', '')[-300:]}" for e in errors)
                )
            return all(api.get_dag(d) is not None for d in dag_ids)

        wait_until(f"DAGs {dag_ids} parsed", parsed, timeout=timeout, interval=2)

    def wait_runs(self, dag_id: str, run_ids: list[str], deadline: float) -> dict[str, str]:
        """Wait until the given runs reach a final state; return run id -> state."""
        assert self.api is not None
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {r: self.api.run_state(dag_id, r) for r in run_ids}
            if all(s in ("success", "failed") for s in states.values()):
                return states
            dead = self.processes.dead() if self.processes else []
            if dead:
                raise RuntimeError(
                    "component(s) died: " + ", ".join(f"{c.name} ({c.log_path})" for c in dead)
                )
            time.sleep(3)
        return states

    def active_runs(self, dag_id: str) -> list[dict]:
        assert self.api is not None
        return [r for r in self.api.runs(dag_id) if r["state"] in ("queued", "running")]

    def trigger_only(self, dag_id: str) -> None:
        """Infrastructure smoke mode: trigger one DAG, expect success (for harness debugging)."""
        assert self.api is not None
        self.wait_for_dags([dag_id])
        self.api.unpause(dag_id)
        run_id = self.api.trigger(dag_id)
        log(f"triggered {dag_id} run {run_id}")
        states = self.wait_runs(dag_id, [run_id], time.monotonic() + self.s.timeout)
        self.report.check(f"{dag_id} run succeeded", states.get(run_id) == "success", str(states))
        self.check_both_workers_used()

    def check_both_workers_used(self) -> None:
        counts = {}
        for n in (1, 2):
            text = (self.log_dir / f"worker{n}.log").read_text(errors="replace")
            counts[f"worker{n}"] = text.count("] received")
        self.report.check(
            "both Celery workers ran tasks",
            all(v > 0 for v in counts.values()),
            ", ".join(f"{k}: {v} tasks" for k, v in counts.items()),
        )

    # ---- the scenario --------------------------------------------------------------------------

    def sandbox_admin(self, method: str, path: str, body: dict | None = None) -> Any:
        """The sandbox's own admin API (never fault-injected; not part of Connect)."""
        r = requests.request(method, f"{self.sandbox_url}/_sandbox/{path}", json=body, timeout=60)
        r.raise_for_status()
        return r.json() if r.content else None

    def connect_get_all(self, path: str, params: dict[str, str] | None = None) -> list[dict]:
        """Every item of a Connect collection through the public API (call with faults off)."""
        items: list[dict] = []
        offset = 0
        while True:
            query = {**(params or {}), "limit": "1000", "offset": str(offset)}
            r = requests.get(
                f"{self.sandbox_url}/public/v1/{path}",
                params=query,
                headers={"Authorization": SANDBOX_API_KEY},
                timeout=60,
            )
            r.raise_for_status()
            page = r.json()
            items.extend(page)
            if len(page) < 1000:
                return items
            offset += len(page)

    def outbox(self) -> Any:
        from connect_provider.outbox import Outbox

        return Outbox.postgres(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=self.outbox_db)

    def seed(self) -> tuple[dict[int, Expected], list[dict]]:
        with self.outbox() as outbox:
            outbox.create_schema()
            plan = planned_changes(self.s.changes)
            ids = outbox.add_many(change for change, _ in plan)
        expected = {row_id: exp for row_id, (_, exp) in zip(ids, plan, strict=True)}
        by_status: dict[str, int] = {}
        for exp in expected.values():
            by_status[exp.status] = by_status.get(exp.status, 0) + 1
        log(f"seeded {len(ids)} pending changes; expected outcomes {by_status}")
        files = []
        for n in self.s.usage_records:
            files.append(
                self.sandbox_admin(
                    "POST",
                    "usage-files",
                    {
                        "records": n,
                        "product_id": "PRD-276-377-545",
                        "status": "ready",
                        "period_from": "2026-10-01",
                        "period_to": "2026-10-31",
                    },
                )
            )
        log(
            "seeded usage files "
            + ", ".join(f"{f['id']} ({n} records)" for f, n in zip(files, self.s.usage_records, strict=True))
        )
        return expected, files

    def scenario(self) -> None:
        assert self.api is not None
        expected, files = self.seed()
        self.wait_for_dags([CHANGES_DAG, USAGE_DAG])
        self.report.check(
            "DAGs parsed by the dag-processor", True, f"{CHANGES_DAG}, {USAGE_DAG}; no import errors"
        )
        for dag_id in (CHANGES_DAG, USAGE_DAG):
            self.api.unpause(dag_id)
        deadline = time.monotonic() + self.s.timeout
        changes_conf = {"chunk_size": max(1, self.s.changes // 10), "follow_timeout_seconds": 180}
        changes_runs = [self.api.trigger(CHANGES_DAG, changes_conf)]
        # No usage_file_id: the run plans every new usage file (both seeded ones among them) and
        # exports them in mapped tasks that the two workers share. Unpausing the daily DAG also
        # makes the scheduler start its latest scheduled run; whichever comes second finds the
        # manifest up to date and exports nothing again.
        usage_runs = [self.api.trigger(USAGE_DAG)]
        log(f"triggered {CHANGES_DAG} {changes_runs[0]} and {USAGE_DAG} {usage_runs[0]}")

        changes_states = self.wait_runs(CHANGES_DAG, changes_runs, deadline)
        while time.monotonic() < deadline and all(
            s in ("success", "failed") for s in changes_states.values()
        ):
            with self.outbox() as outbox:
                counts = outbox.counts()
            open_rows = counts["pending"] + counts["submitted"]
            log(f"outbox after {len(changes_runs)} run(s): {counts}")
            if not open_rows:
                break
            changes_runs.append(self.api.trigger(CHANGES_DAG, changes_conf))
            log(f"{open_rows} change(s) still open: triggered {changes_runs[-1]}")
            changes_states = self.wait_runs(CHANGES_DAG, changes_runs, deadline)
        usage_states = self.wait_runs(USAGE_DAG, usage_runs, deadline)
        while time.monotonic() < deadline and self.active_runs(USAGE_DAG):
            time.sleep(3)
        usage_states = {r["dag_run_id"]: r["state"] for r in self.api.runs(USAGE_DAG)}

        self.report.check(
            f"{CHANGES_DAG} runs succeeded",
            all(s == "success" for s in changes_states.values()),
            f"{len(changes_runs)} run(s): {sorted(changes_states.values())}",
        )
        self.report.check(
            f"{USAGE_DAG} runs succeeded",
            all(s == "success" for s in usage_states.values()),
            f"{len(usage_states)} run(s) (triggered and scheduled): {sorted(usage_states.values())}",
        )
        # The runs are over: verify with faults off, so the checker's own reads are exact.
        self.sandbox_admin("POST", "faults", {"spec": ""})
        self.check_changes(expected)
        self.check_usage(files)
        self.check_both_workers_used()

    def check_changes(self, expected: dict[int, Expected]) -> None:
        with self.outbox() as outbox:
            rows = {row.id: row for row in outbox.all()}
        wrong = [
            f"#{i} {exp.label}: {rows[i].status if i in rows else 'missing'} (want {exp.status}"
            f"{'; error ' + str(rows[i].error)[:120] if i in rows and rows[i].error else ''})"
            for i, exp in expected.items()
            if i not in rows or rows[i].status != exp.status
        ]
        claimed = [i for i, row in rows.items() if row.claim_token]
        self.report.check(
            "every change ended with the status its payload implies",
            not wrong and not claimed and len(rows) == len(expected),
            f"{len(rows)} rows; {len(wrong)} wrong: {wrong[:5]}; still claimed: {claimed[:5]}"
            if wrong or claimed
            else f"{len(rows)} rows",
        )
        request_ids = [row.connect_request_id for row in rows.values() if row.connect_request_id]
        needs_create = [i for i, exp in expected.items() if exp.creates]
        missing = [i for i in needs_create if not rows.get(i) or not rows[i].connect_request_id]
        shared = len(request_ids) - len(set(request_ids))
        self.report.check(
            "each change has its own Connect request",
            not missing and shared == 0 and len(request_ids) == len(needs_create),
            f"{len(request_ids)} request ids for {len(needs_create)} changes that create one; "
            f"missing {missing[:5]}, shared by two rows: {shared}",
        )

        stats = self.sandbox_admin("GET", "stats")
        self.report.check(
            "no Connect request created twice (sandbox count)",
            stats["requests_created"] == len(needs_create),
            f"requests_created={stats['requests_created']}, changes needing a create={len(needs_create)}; "
            f"faults injected {stats.get('faults_injected')}",
        )
        ours = {exp.asset_external_id for exp in expected.values() if exp.creates}
        groups: dict[tuple[str, str], list[str]] = {}
        connect_status: dict[str, str] = {}
        for request in self.connect_get_all("requests"):
            connect_status[request["id"]] = request["status"]
            external_id = (request.get("asset") or {}).get("external_id") or ""
            if external_id in ours:
                groups.setdefault((request["type"], external_id), []).append(request["id"])
        doubles = {k: v for k, v in groups.items() if len(v) > 1}
        self.report.check(
            "no two requests of one type for one asset (public API)",
            not doubles,
            f"{len(groups)} (type, asset) pairs"
            + (f"; doubles: {list(doubles.items())[:5]}" if doubles else ""),
        )
        mismatched = [
            f"#{i} {row.connect_request_id}: {row.status} != {connect_status.get(row.connect_request_id)}"
            for i, row in rows.items()
            if row.connect_request_id and connect_status.get(row.connect_request_id) != row.status
        ]
        self.report.check(
            "each row's status is its Connect request's status",
            not mismatched,
            f"mismatched: {mismatched[:5]}" if mismatched else f"{len(request_ids)} requests compared",
        )

    def check_usage(self, files: list[dict]) -> None:
        import pyarrow.parquet as pq

        root = self.data_dir / "usage_records"
        for usage_file, records in zip(files, self.s.usage_records, strict=True):
            file_id = usage_file["id"]
            found = [
                p
                for p in root.rglob(f"usage_file_id={file_id}.parquet")
                if not any(part.startswith("_") for part in p.relative_to(root).parts)
            ]
            if len(found) != 1:
                self.report.check(
                    f"Parquet of {file_id}", False, f"want one data file under {root}, found {found}"
                )
                continue
            table = pq.read_table(found[0])
            ids = table.column("id").to_pylist()
            connect_ids = {r["id"] for r in self.connect_get_all("usage/records", {"usagefile.id": file_id})}
            self.report.check(
                f"Parquet of {file_id} complete and correct",
                table.num_rows == records == len(connect_ids)
                and len(set(ids)) == len(ids)
                and set(ids) == connect_ids,
                f"{found[0].relative_to(root)}: {table.num_rows} rows, {len(set(ids))} unique ids; "
                f"the file has {records} records ({len(connect_ids)} listed by Connect)",
            )

    # ---- tear-down -----------------------------------------------------------------------------

    def cleanup(self) -> None:
        with self._cleanup_lock:
            if self._cleaned:
                return
            self._cleaned = True
        if self.sampler is not None:
            self.sampler.stop()
        if self.processes is not None:
            t0 = time.monotonic()
            killed = self.processes.stop_all()
            still = [p.pid for p in self.processes.tree()]
            extra = f"; had to SIGKILL: {', '.join(killed)}" if killed else ""
            log(f"stopped {len(self.processes.components)} processes in {time.monotonic() - t0:.1f}s{extra}")
            self.report.check("every started process stopped", not still, f"alive: {still}" if still else "")
        self.databases.drop_all()
        self.redis_db.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dags-folder", type=Path, default=ROOT / "dags")
    parser.add_argument("--changes", type=int, default=500, help="pending changes to seed (default 500)")
    parser.add_argument("--usage-records", type=int, nargs=2, default=(1500, 700), metavar=("N1", "N2"))
    parser.add_argument("--timeout", type=float, default=360, help="seconds to wait for the DAG runs")
    parser.add_argument("--fault-seed", type=int, default=8, help="seed of the sandbox's fault RNG")
    parser.add_argument("--keep", action="store_true", help="keep the work folder even on success")
    parser.add_argument(
        "--trigger-only",
        metavar="DAG_ID",
        help="debug the harness: start the topology, trigger this DAG, expect success, no Connect checks",
    )
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="connect-distributed-"))
    settings = Settings(
        dags_folder=args.dags_folder.resolve(),
        workdir=workdir,
        changes=args.changes,
        usage_records=tuple(args.usage_records),
        timeout=args.timeout,
        fault_seed=args.fault_seed,
        keep=args.keep,
        trigger_only=args.trigger_only,
    )
    run = DistributedRun(settings)
    atexit.register(run.cleanup)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    try:
        run.start()
        if settings.trigger_only:
            run.trigger_only(settings.trigger_only)
        else:
            run.scenario()
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        traceback.print_exc()
        run.report.check("run completed", False, f"{type(exc).__name__}: {exc}")
    finally:
        run.cleanup()
        elapsed = time.monotonic() - run.started_at
        if run.sampler is not None and run.sampler.peak_total:
            parts = ", ".join(
                f"{k} {v / 2**20:.0f}" for k, v in sorted(run.sampler.peak_by_component.items()) if v
            )
            log(
                f"peak memory (PSS) {run.sampler.peak_total / 2**20:.0f} MiB in all; "
                f"per component MiB: {parts}"
            )
        log(f"runtime {elapsed:.0f}s")
        if run.report.failed:
            print(f"distributed-test: logs and data kept in {workdir} (component logs in {run.log_dir})")
        elif not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"distributed-test: work folder kept in {workdir}")
        print(f"distributed-test: {run.report.passed} passed, {run.report.failed} failed", flush=True)
    return 1 if run.report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
