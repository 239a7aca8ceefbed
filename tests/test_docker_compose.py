"""The team deployment: docker-compose.yaml, its image (Dockerfile) and its settings (.env.example).

No Docker engine is needed: the compose file is parsed as YAML (merge keys resolved) and checked
for the topology of the distributed deployment (CeleryExecutor on Redis, PostgreSQL metadata DB,
scalable workers, the Connect sandbox), the shared secrets taken from ``.env``, the mounts, the
health checks and the start order. Where ``docker compose`` is installed, Compose itself must
accept the file too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
LONG_RUNNING = ("postgres", "redis", "connect-sandbox", *AIRFLOW_SERVICES)
SECRETS = {
    "AIRFLOW__CORE__FERNET_KEY": "AIRFLOW_FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` (``$$`` is a literal ``$``)."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return ""

    parts = value.split("$$")
    return "$".join(_VARIABLE.sub(replace, part) for part in parts)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environment is written as a mapping"
    return {k: str(v) for k, v in environment.items()}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (host path or named volume), defaults interpolated."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = interpolate(volume, {}).split(":")[:2]
        found[target] = source
    return found


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value.strip('"')
    return values


def test_the_compose_file_has_every_service_of_the_distributed_topology(services: dict) -> None:
    assert set(LONG_RUNNING) | {"airflow-init"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")


def test_airflow_and_the_sandbox_run_the_image_built_from_the_dockerfile(services: dict) -> None:
    built = [*AIRFLOW_SERVICES, "airflow-init", "connect-sandbox"]
    images = {services[name]["image"] for name in built}
    assert len(images) == 1, f"one image for all of {built}, got {images}"
    for name in built:
        build = services[name]["build"]
        assert build["context"] == "."
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_no_package_is_installed_when_a_container_starts(compose: dict, services: dict) -> None:
    # The provider is in the image; _PIP_ADDITIONAL_REQUIREMENTS would reinstall at every start.
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in yaml.safe_dump(compose)
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env_of(services[name])


@pytest.mark.parametrize("name", [*AIRFLOW_SERVICES, "airflow-init"])
def test_airflow_runs_celery_on_redis_with_a_postgres_metadata_database(services: dict, name: str) -> None:
    env = env_of(services[name])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert re.fullmatch(
        r"postgresql\+psycopg2://airflow:.+@postgres/airflow", env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    )
    assert re.fullmatch(r"redis://.*@?redis:6379/\d+", env["AIRFLOW__CELERY__BROKER_URL"])
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which the image does not ship.
    assert re.fullmatch(
        r"db\+postgresql\+psycopg2://airflow:.+@postgres/airflow", env["AIRFLOW__CELERY__RESULT_BACKEND"]
    )
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"


@pytest.mark.parametrize("name", [*AIRFLOW_SERVICES, "airflow-init"])
def test_the_fernet_key_and_jwt_secret_come_from_the_env_file(services: dict, name: str) -> None:
    env = env_of(services[name])
    for setting, variable in SECRETS.items():
        value = env[setting]
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", value), (
            f"{name}: {setting} must be required from .env as ${{{variable}:?...}}, not {value!r}"
        )
        with pytest.raises(KeyError, match=variable):
            interpolate(value, {})
        assert interpolate(value, {variable: "s3cret"}) == "s3cret"


def test_the_env_example_names_every_secret_and_holds_none() -> None:
    example = env_example()
    for variable in [*SECRETS.values(), "AIRFLOW_ADMIN_PASSWORD"]:
        assert variable in example, f".env.example lacks {variable}"
        assert example[variable] == "", f".env.example must not carry a value for {variable}"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False).returncode
    assert ignored == 0, ".env must be git-ignored"


def test_every_variable_the_compose_file_reads_is_documented_in_the_env_example() -> None:
    used = {m["name"] for m in _VARIABLE.finditer(COMPOSE_FILE.read_text().replace("$$", ""))}
    missing = used - set(env_example()) - {"AIRFLOW_PROJ_DIR"}
    assert not missing, f"not in .env.example: {sorted(missing)}"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_dags_include_and_a_data_volume_are_mounted(compose: dict, services: dict, name: str) -> None:
    service = services[name]
    volumes = mounts(service)
    assert volumes["/opt/airflow/dags"] == "./dags"
    assert volumes["/opt/airflow/include"] == "./include"
    data_dir = env_of(service)["CONNECT_DATA_DIR"]
    assert volumes[data_dir] in compose["volumes"], "the data folder is a named volume all workers share"
    assert env_of(service)["CONNECT_SQL_DIR"].startswith("/opt/airflow/include/")


@pytest.mark.parametrize("name", [*AIRFLOW_SERVICES, "airflow-init"])
def test_the_project_plugins_folder_is_not_airflows_plugins_folder(services: dict, name: str) -> None:
    # Loaded as plugins, plugins/connect_provider/operators/requests.py would shadow `requests`.
    service = services[name]
    plugins_folder = env_of(service)["AIRFLOW__CORE__PLUGINS_FOLDER"]
    mounted_from = mounts(service)
    assert plugins_folder not in mounted_from
    assert not any(src.rstrip("/").endswith("plugins") for src in mounted_from.values())


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck(services: dict, name: str) -> None:
    check = services[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert check.get("interval") and check.get("retries")


def test_the_healthchecks_probe_what_each_component_serves(services: dict) -> None:
    def probe(name: str) -> str:
        return " ".join(services[name]["healthcheck"]["test"])

    assert "/api/v2/monitor/health" in probe("airflow-apiserver")
    assert ":8974/health" in probe("airflow-scheduler")
    assert "DagProcessorJob" in probe("airflow-dag-processor")
    assert "TriggererJob" in probe("airflow-triggerer")
    assert "inspect ping" in probe("airflow-worker")
    assert "/_sandbox/health" in probe("connect-sandbox")


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_services_start_after_the_database_the_broker_and_init(services: dict, name: str) -> None:
    depends = services[name]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["airflow-init"]["condition"] == "service_completed_successfully"


def test_workers_wait_for_the_api_server_they_run_tasks_through(services: dict) -> None:
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_the_worker_service_scales(services: dict) -> None:
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker, "replicas cannot share a name or a port"
    assert int(interpolate(str(worker["deploy"]["replicas"]), {})) >= 2
    assert worker["command"] == "celery worker"
    assert env_of(worker)["DUMB_INIT_SETSID"] == "0", "a stopping worker finishes its tasks first"


def test_init_migrates_and_creates_the_connect_connection_the_outbox_and_the_pool(services: dict) -> None:
    init = services["airflow-init"]
    script = "\n".join(init["command"])
    assert "airflow db migrate" in script
    assert re.search(
        r"connections add cloudblue_connect_default\s*\\\s*--conn-type cloudblue_connect", script
    )
    assert '--conn-host "$${CONNECT_API_URL}"' in script
    assert '--conn-password "$${CONNECT_API_KEY}"' in script
    assert "connections add connect_changes_db" in script
    assert "create_schema()" in script
    assert re.search(r'pools set cloudblue_connect_api "\$\$\{CONNECT_API_POOL_SLOTS\}"', script)
    env = env_of(init)
    # By default the connection points at the sandbox service, on the port it listens on.
    api_url = interpolate(env["CONNECT_API_URL"], {})
    assert api_url == "http://connect-sandbox:8765/public/v1"
    assert "--port=8765" in services["connect-sandbox"]["command"]
    assert int(interpolate(env["CONNECT_API_POOL_SLOTS"], {})) >= 1


def test_the_dockerfile_installs_the_provider_package_from_the_build_context() -> None:
    text = DOCKERFILE.read_text()
    instructions = re.sub(r"\\\n\s*", " ", text)
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}", instructions, re.M)
    (install,) = [line for line in instructions.splitlines() if line.startswith("RUN pip install")]
    assert re.search(r'"\.(\[[a-z,]+\])?"', install), "installs the project from the build context"
    assert "-e " not in install and "--editable" not in install
    assert "--constraint requirements/lock.txt" in install
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install
    for source in ("pyproject.toml", "README.md", "requirements/lock.txt", "plugins/connect_provider",
                   "include/connect_sandbox", "dags", "include/sql"):  # fmt: skip
        assert re.search(rf"^COPY .*\s{re.escape(source)}\s", instructions, re.M), f"{source} is not copied"


def test_the_image_pins_the_airflow_version_of_the_lock_file() -> None:
    (default,) = re.findall(r"^ARG AIRFLOW_VERSION=(\S+)$", DOCKERFILE.read_text(), re.M)
    locked = re.search(r"^apache-airflow==(\S+)$", (ROOT / "requirements" / "lock.txt").read_text(), re.M)
    assert locked and default == locked[1]
    assert env_example()["AIRFLOW_VERSION"] == default


def test_the_build_context_keeps_what_the_image_copies_and_drops_secrets() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    ignored.discard("")
    for needed in ("pyproject.toml", "README.md", "requirements", "plugins", "include", "dags"):
        assert needed not in ignored
    assert {".env", ".venv", ".git"} <= ignored


def _compose_available() -> str | None:
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    if version.returncode != 0:
        return f"`docker compose version` failed (no compose plugin): {version.stderr.strip()[:200]}"
    return None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    reason = _compose_available()
    if reason:
        pytest.skip(f"docker compose config not run: {reason}")
    env_file = tmp_path / "test.env"
    values = {**env_example(), **{v: "x" * 44 for v in SECRETS.values()}, "AIRFLOW_ADMIN_PASSWORD": "pw"}
    env_file.write_text("".join(f'{k}="{v}"\n' for k, v in values.items()))
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
