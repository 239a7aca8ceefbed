"""The launcher behind ``make airflow`` (scripts/airflow_local.py), without starting anything.

The browser test runs the whole stack; these pin the choices it depends on and that a person would
only notice as a confusing failure: the project's plugins/ is never Airflow's plugins folder, a
shell's Airflow settings do not leak in, and a taken port is replaced by a free one.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _stack(launcher: ModuleType, tmp_path: Path) -> Any:
    stack = launcher.LocalAirflow(
        launcher.Settings(airflow_home=tmp_path / "home", data_dir=tmp_path / "data")
    )
    stack.api_port, stack.sandbox_port = 18080, 18765
    return stack


def test_airflow_never_loads_the_projects_plugins_folder_as_plugins(
    launcher: ModuleType, tmp_path: Path
) -> None:
    # Airflow's plugins manager would import plugins/connect_provider/operators/requests.py as a
    # top-level module named `requests`, shadowing the HTTP library in every component.
    env = _stack(launcher, tmp_path).env()
    plugins = Path(env["AIRFLOW__CORE__PLUGINS_FOLDER"]).resolve()
    assert plugins != (ROOT / "plugins").resolve()
    assert (ROOT / "plugins").resolve() not in plugins.parents
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["CONNECT_DATA_DIR"] == str(tmp_path / "data")


def test_a_shells_airflow_settings_and_connections_do_not_leak_into_the_stack(
    launcher: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", '{"conn_type": "cloudblue_connect"}')
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    env = _stack(launcher, tmp_path).env()
    assert "AIRFLOW__CORE__UNIT_TEST_MODE" not in env
    # The connection lives in the metadata DB only, where the UI lists it and an edit takes effect.
    assert not [k for k in env if k.startswith("AIRFLOW_CONN_")]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # Task processes reach the API server this stack started, on its port.
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"


def test_the_default_connection_points_at_the_sandbox_with_the_demo_key(
    launcher: ModuleType, tmp_path: Path
) -> None:
    fields = _stack(launcher, tmp_path).connection_fields()
    assert fields["connection_id"] == "cloudblue_connect_default"
    assert fields["conn_type"] == "cloudblue_connect"
    assert fields["host"] == "http://127.0.0.1:18765/public/v1"
    assert fields["password"] == "ApiKey SU-000-000-000:sandbox-demo-key"
    assert isinstance(json.loads(fields["extra"]), dict)


def test_a_taken_port_is_replaced_by_a_free_one(launcher: ModuleType) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        chosen = launcher.pick_port(taken)
        assert chosen != taken
        assert launcher.port_is_free(chosen)
    assert launcher.pick_port(None) > 0
