"""Run the Connect sandbox and Airflow on this machine, to use the project in the Airflow UI.

``make airflow`` runs this script. It starts, as child processes of its own:

1. the Connect sandbox (demo seed) on 127.0.0.1:8765, or a free port when that one is taken;
2. Airflow on SQLite, with ``AIRFLOW_HOME=<checkout>/airflow_home`` and the local data folder
   ``CONNECT_DATA_DIR=<checkout>/data``: the metadata DB is migrated, then the scheduler, the
   DAG processor, the triggerer and the API server (the UI, on port 8080 or a free one) start;
3. through the REST API, the ``cloudblue_connect_default`` connection (pointing at the sandbox)
   and the ``cloudblue_connect_api`` pool, so both show in the UI and can be edited there.

It prints the URL and the login, then waits; Ctrl-C (or SIGTERM) stops everything it started.

Why not ``airflow standalone``: SIGTERM to it leaves its components running (the scheduler's idle
workers ignore SIGTERM for over a minute), so this script starts each component itself, each in
its own process group, and stops each group by id.

The browser test (tests/browser) starts the same stack through :class:`LocalAirflow`, on free
ports and a temporary AIRFLOW_HOME, so it exercises exactly what users run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil  # an Airflow dependency
from connect_sandbox.testing import DEMO_API_KEY, Sandbox, SandboxStartError, free_port, start_sandbox

ROOT = Path(__file__).resolve().parent.parent

CONN_ID = "cloudblue_connect_default"
CONN_TYPE = "cloudblue_connect"
POOL_NAME = "cloudblue_connect_api"
POOL_SLOTS = 4
SANDBOX_API_KEY = DEMO_API_KEY
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"

# Order matters for start-up (the API server last, so the UI never shows a missing scheduler for
# long) and is reversed for shut-down.
COMPONENTS: tuple[str, ...] = ("scheduler", "dag-processor", "triggerer", "api-server")


class StartupError(RuntimeError):
    """A component did not come up; the message names it and its log file."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (so we can bind it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None) -> int:
    """``preferred`` when it is free, else any free port (``None`` or 0: any free port)."""
    if preferred and port_is_free(preferred):
        return preferred
    return free_port()


@dataclass
class Settings:
    """Where the stack keeps its state and which ports it uses."""

    airflow_home: Path = ROOT / "airflow_home"
    data_dir: Path = ROOT / "data"
    dags_folder: Path = ROOT / "dags"
    api_port: int | None = 8080
    sandbox_port: int | None = 8765
    parallelism: int = 4
    sandbox_args: tuple[str, ...] = ("--seed", "demo")
    host: str = "127.0.0.1"
    #: More environment for every Airflow process (e.g. ``CONNECT_EVENTS_POLL_SECONDS`` for a test).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        """Component stdout/stderr (task logs stay in Airflow's own ``logs/``)."""
        return self.airflow_home / "logs" / "local"

    @property
    def plugins_folder(self) -> Path:
        """An Airflow plugins folder of the stack's own.

        Not the project's ``plugins/``: the plugins manager imports every ``.py`` under that folder
        as a top-level module, so ``plugins/connect_provider/operators/requests.py`` would shadow the
        ``requests`` library. The provider reaches Airflow through its entry point instead.
        """
        return self.airflow_home / "plugins"


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: Any = field(repr=False)


class LocalAirflow:
    """The sandbox plus Airflow's components, started and stopped as one unit.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Ports are chosen at
    :meth:`start` (the preferred ones when free) and exposed as :attr:`api_url` and
    :attr:`sandbox_url`.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.api_port = 0
        self.sandbox_port = 0
        self.worker_log_port = 0
        self.trigger_log_port = 0
        self._procs: list[_Proc] = []
        self._sandbox: Sandbox | None = None
        self._token: str | None = None

    # -- addresses -------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.settings.host}:{self.sandbox_port}"

    @property
    def sandbox_api_url(self) -> str:
        return f"{self.sandbox_url}/public/v1"

    def connection_fields(self) -> dict[str, Any]:
        """The default Connect connection, as the REST API takes it (points at the sandbox)."""
        return {
            "connection_id": CONN_ID,
            "conn_type": CONN_TYPE,
            "description": "Local Connect sandbox started by scripts/airflow_local.py",
            "host": self.sandbox_api_url,
            "password": SANDBOX_API_KEY,
            "extra": json.dumps({"timeout": 10, "max_wait": 2}),
        }

    # -- environment -----------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment of every Airflow process of the stack.

        Inherited ``AIRFLOW__*`` and ``AIRFLOW_CONN_*`` variables are dropped: the stack is defined
        here (and by ``$AIRFLOW_HOME/airflow.cfg`` for anything not set here), so a test session's or
        a shell's settings cannot leak into it. In particular the connection lives in the metadata
        DB only, where the UI shows it and an edit there takes effect.
        """
        s = self.settings
        env = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")))
        }
        env.update(
            {
                "AIRFLOW_HOME": str(s.airflow_home),
                "CONNECT_DATA_DIR": str(s.data_dir),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(s.dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(s.plugins_folder),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(s.parallelism),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__API__HOST": s.host,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
                # New DAG files are picked up within seconds rather than minutes.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(s.extra_env)
        return env

    # -- start -----------------------------------------------------------------------------------
    def start(self, *, announce: bool = False) -> None:
        """Bring the whole stack up; on any failure stop what was started and raise."""
        s = self.settings
        self.sandbox_port = pick_port(s.sandbox_port)
        self.api_port = pick_port(s.api_port)
        # The scheduler and the triggerer serve their logs on fixed ports by default (8793, 8794):
        # free ones let this stack run beside another Airflow on the same machine.
        self.worker_log_port = pick_port(8793)
        self.trigger_log_port = pick_port(8794)
        for d in (s.airflow_home, s.data_dir, s.log_dir, s.plugins_folder):
            d.mkdir(parents=True, exist_ok=True)
        try:
            self._say(announce, f"Connect sandbox on {self.sandbox_url} ...")
            self._start_sandbox()
            self._say(announce, "Airflow metadata DB (SQLite): airflow db migrate ...")
            self._write_password_file()
            self._migrate()
            for name in COMPONENTS:
                self._say(announce, f"airflow {name} ...")
                self._spawn(name, self._airflow_cmd(name), env=self.env())
            self._say(announce, f"waiting for Airflow to answer on {self.api_url} ...")
            self._wait_healthy()
            self.upsert_connection(self.connection_fields())
            self.upsert_pool(POOL_NAME, POOL_SLOTS, "Calls to the CloudBlue Connect API")
        except BaseException:
            self.stop()
            raise

    def _say(self, announce: bool, message: str) -> None:
        if announce:
            print(f"[airflow_local] {message}", flush=True)

    def _airflow_cmd(self, component: str) -> list[str]:
        airflow = [sys.executable, "-m", "airflow"]
        if component == "api-server":
            return [*airflow, "api-server", "--host", self.settings.host, "--port", str(self.api_port)]
        return [*airflow, component]

    def _write_password_file(self) -> None:
        """Fix the simple auth manager's admin password (it generates a random one otherwise)."""
        path = self.settings.airflow_home / "simple_auth_manager_passwords.json.generated"
        path.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}))

    def _migrate(self) -> None:
        log = self.settings.log_dir / "db-migrate.log"
        with open(log, "wb") as out:
            rc = subprocess.call(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
            )
        if rc != 0:
            raise StartupError(f"`airflow db migrate` failed with exit code {rc}; see {log}")

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> _Proc:
        log_path = self.settings.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")  # closed in stop()
        popen = subprocess.Popen(
            cmd,
            env=env,
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C in the terminal reaches this script only, which then stops
            # each component and its workers in order.
            start_new_session=True,
        )
        proc = _Proc(name, popen, log_path, log_file)
        self._procs.append(proc)
        return proc

    def _start_sandbox(self) -> None:
        """The sandbox, through the project's one launcher, in a process group of its own."""
        try:
            self._sandbox = start_sandbox(
                *self.settings.sandbox_args,
                host=self.settings.host,
                port=self.sandbox_port,
                log_path=self.settings.log_dir / "sandbox.log",
                new_session=True,
            )
        except SandboxStartError as exc:
            raise StartupError(f"the Connect sandbox did not start: {exc}") from None

    def _check_alive(self) -> None:
        dead = self.dead_components()
        if dead:
            raise StartupError(
                f"{', '.join(dead)} exited during start-up; see the logs in {self.settings.log_dir}"
            )

    def _wait_healthy(self, timeout: float = 180) -> None:
        """Wait until the API server answers and reports every component healthy."""
        url = f"{self.api_url}/api/v2/monitor/health"
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    last = json.loads(r.read())
                if all(
                    (last.get(part) or {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "dag_processor", "triggerer")
                ):
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.5)
        raise StartupError(
            f"Airflow was not healthy within {timeout:.0f}s (last health: {last}); "
            f"logs in {self.settings.log_dir}"
        )

    # -- REST API --------------------------------------------------------------------------------
    def token(self) -> str:
        """A bearer token for the admin user (cached; the default lifetime covers a session)."""
        if self._token is None:
            body = self._http(
                "POST",
                "/auth/token",
                {"username": ADMIN_USER, "password": ADMIN_PASSWORD},
                auth=False,
            )
            self._token = str(body["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the Airflow REST API as the admin user; returns the decoded JSON body."""
        return self._http(method, path, body, auth=True)

    def _http(self, method: str, path: str, body: Any, *, auth: bool) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        url = f"{self.api_url}{path}"  # always http://<host>:<port> of the API server we started
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def exists(self, path: str) -> bool:
        """True when ``GET path`` answers 200, False on 404."""
        try:
            self.api("GET", path)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise
        return True

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the DAG processor has parsed ``dag_id``; name the import errors if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self.exists(f"/api/v2/dags/{dag_id}"):
                return
            time.sleep(1)
        errors = self.api("GET", "/api/v2/importErrors").get("import_errors", [])
        detail = "; ".join(f"{e.get('filename')}: {e.get('stack_trace', '')[-300:]}" for e in errors)
        raise StartupError(
            f"DAG {dag_id} was not parsed within {timeout:.0f}s; import errors: {detail or 'none'}"
        )

    def upsert_connection(self, fields: dict[str, Any]) -> None:
        """Create the connection, or replace its fields when it exists (ports change between runs)."""
        path = f"/api/v2/connections/{fields['connection_id']}"
        if self.exists(path):
            self.api("PATCH", path, fields)
        else:
            self.api("POST", "/api/v2/connections", fields)

    def upsert_pool(self, name: str, slots: int, description: str) -> None:
        """Create the pool the provider's operators use, or reset its slots and description."""
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        if self.exists(f"/api/v2/pools/{name}"):
            self.api("PATCH", f"/api/v2/pools/{name}", body)
        else:
            self.api("POST", "/api/v2/pools", body)

    # -- stop ------------------------------------------------------------------------------------
    def stop(self, grace: float = 15.0) -> None:
        """Stop every process this object started, each by its process group id, and their children.

        SIGTERM first; whatever is left after ``grace`` seconds gets SIGKILL (the scheduler's idle
        executor workers can sit on SIGTERM for a minute). Task processes put themselves in process
        groups of their own, so the descendants found before stopping are signalled one by one too.
        """
        procs = list(reversed(self._procs))
        self._procs = []
        family = [d for p in procs for d in _descendants(p.popen.pid)]
        for p in procs:
            if p.popen.poll() is None:
                _signal_group(p.popen.pid, signal.SIGTERM)
        for d in family:
            with contextlib.suppress(psutil.Error):
                d.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(max(0.1, deadline - time.monotonic()))
        _, still_alive = psutil.wait_procs(family, timeout=max(0.1, deadline - time.monotonic()))
        for p in procs:
            # The leader may be gone while its workers are not: the group is killed either way.
            _signal_group(p.popen.pid, signal.SIGKILL)
            if p.popen.poll() is None:
                p.popen.wait(10)
            p.log_file.close()
        for d in still_alive:
            with contextlib.suppress(psutil.Error):
                d.kill()  # psutil checks the process is still the one found (no pid reuse)
        if self._sandbox is not None:  # started first, stopped last
            self._sandbox.stop()
            self._sandbox = None

    @property
    def sandbox(self) -> Sandbox:
        """The stack's Connect sandbox (its admin API adds and moves usage files while it runs)."""
        if self._sandbox is None:
            raise StartupError("the stack is not started")
        return self._sandbox

    def restart(self, name: str, grace: float = 15.0) -> None:
        """Stop one component (by its process group) and start it again with the same command.

        ``restart("triggerer")``: the event triggers' watermarks live in the metadata DB (the
        watched assets' state store), so nothing that happened while it was down is lost.
        """
        found = [p for p in self._procs if p.name == name]
        if not found:
            raise StartupError(f"no component named {name}")
        proc = found[-1]
        _signal_group(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(10)
        proc.log_file.close()
        self._procs.remove(proc)
        self._spawn(name, self._airflow_cmd(name), env=self.env())

    def __enter__(self) -> LocalAirflow:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def dead_components(self) -> list[str]:
        """Names of started processes that have exited (with their exit codes)."""
        procs = [(p.name, p.popen) for p in self._procs]
        if self._sandbox is not None:
            procs.insert(0, ("sandbox", self._sandbox.process))
        return [f"{name} (exit {popen.returncode})" for name, popen in procs if popen.poll() is not None]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # The Makefile exports both (defaulting to the checkout's folders); a shell's own values win.
    p.add_argument(
        "--airflow-home", type=Path, default=Path(os.environ.get("AIRFLOW_HOME") or ROOT / "airflow_home")
    )
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CONNECT_DATA_DIR") or ROOT / "data"))
    p.add_argument("--port", type=int, default=8080, help="UI/API port (a free one when taken)")
    p.add_argument("--sandbox-port", type=int, default=8765, help="sandbox port (a free one when taken)")
    p.add_argument("--parallelism", type=int, default=4)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stack = LocalAirflow(
        Settings(
            airflow_home=args.airflow_home.resolve(),
            data_dir=args.data_dir.resolve(),
            api_port=args.port,
            sandbox_port=args.sandbox_port,
            parallelism=args.parallelism,
        )
    )
    stopping = False

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        stack.start(announce=True)
        print(
            "\n"
            f"  Airflow UI:      {stack.api_url}\n"
            f"  Log in as:       {ADMIN_USER} / {ADMIN_PASSWORD}\n"
            f"  Connect sandbox: {stack.sandbox_api_url} (demo seed; key {SANDBOX_API_KEY!r})\n"
            f"  Connection:      {CONN_ID} -> the sandbox; pool {POOL_NAME} ({POOL_SLOTS} slots)\n"
            f"  AIRFLOW_HOME:    {stack.settings.airflow_home}\n"
            f"  Data folder:     {stack.settings.data_dir}\n"
            f"  Component logs:  {stack.settings.log_dir}\n"
            "\n  Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        while True:
            dead = stack.dead_components()
            if dead:
                print(f"[airflow_local] stopped unexpectedly: {', '.join(dead)}; shutting down", flush=True)
                return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\n[airflow_local] stopping ...", flush=True)
        return 0
    except StartupError as e:
        print(f"[airflow_local] {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        # Ignore a second Ctrl-C while stopping, so no component is left behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("[airflow_local] stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
