"""The sandbox launcher (``connect_sandbox.testing``) that the tests, benchmarks and scripts share.

Every other test starts its server through it, so these pin what a caller relies on when something
goes wrong: a server that cannot start says why, in its own words; one that never answers is not
left running; a server is stopped however the caller's block ends.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from connect_sandbox.testing import (
    DEMO_API_KEY,
    Sandbox,
    SandboxStartError,
    admin_call,
    free_port,
    running_sandbox,
    start_sandbox,
)


def _my_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


class TestStart:
    def test_a_server_that_cannot_start_raises_with_its_own_error_message(self, tmp_path: Path) -> None:
        before = _my_children()
        with pytest.raises(SandboxStartError, match=r"(?s)exited with code 2.*invalid choice: 'nonsense'"):
            start_sandbox("--seed", "nonsense", log_dir=tmp_path)
        assert _my_children() <= before

    def test_a_server_that_never_answers_is_stopped_and_the_error_says_so(self, tmp_path: Path) -> None:
        # The wrapper runs a process that ignores the server's arguments and never listens.
        silent = [sys.executable, "-c", "import time; time.sleep(120)"]
        before = _my_children()
        with pytest.raises(SandboxStartError, match=r"did not answer within 1 s"):
            start_sandbox(wrapper=silent, timeout=1, log_dir=tmp_path)
        assert _my_children() <= before

    def test_the_named_port_and_log_file_are_used(self, tmp_path: Path) -> None:
        port, log = free_port(), tmp_path / "server.log"
        with running_sandbox("--seed", "empty", port=port, log_path=log) as sandbox:
            assert sandbox.url == f"http://127.0.0.1:{port}"
            assert sandbox.healthy()
        assert "connect-sandbox: seed=empty" in log.read_text()


class TestStop:
    def test_the_server_is_stopped_when_the_block_raises_and_stopping_again_is_harmless(
        self, tmp_path: Path
    ) -> None:
        with pytest.raises(KeyError), running_sandbox("--seed", "empty", log_dir=tmp_path) as sandbox:
            raise KeyError("the caller's own failure")
        assert sandbox.process.poll() is not None
        assert not sandbox.healthy()
        sandbox.stop()


@pytest.fixture(scope="module")
def quick_retries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox whose connections carry one extra of the launcher's: ``max_wait`` 2."""
    log_dir = tmp_path_factory.mktemp("launcher")
    with running_sandbox("--seed", "empty", log_dir=log_dir, conn_extra={"max_wait": 2}) as sandbox:
        yield sandbox


class TestHandles:
    @pytest.mark.parametrize(
        ("kwargs", "expected_extra"),
        [
            ({}, {"max_wait": 2}),
            ({"timeout": 120}, {"max_wait": 2, "timeout": 120}),
            ({"max_wait": 9}, {"max_wait": 9}),
        ],
        ids=["the-launchers-extras", "an-extra-added", "an-extra-overridden"],
    )
    def test_the_connection_points_at_the_server_with_the_demo_key(
        self, quick_retries: Sandbox, kwargs: dict, expected_extra: dict
    ) -> None:
        conn = json.loads(quick_retries.conn_json(**kwargs))
        assert conn == {
            "conn_type": "cloudblue_connect",
            "host": f"{quick_retries.url}/public/v1",
            "password": DEMO_API_KEY,
            "extra": expected_extra,
        }

    def test_another_key_replaces_the_demo_key(self, quick_retries: Sandbox) -> None:
        assert json.loads(quick_retries.conn_json("ApiKey SU-1:wrong"))["password"] == "ApiKey SU-1:wrong"

    def test_a_connection_without_extras_has_no_extra_field(self, tmp_path: Path) -> None:
        with running_sandbox("--seed", "empty", log_dir=tmp_path) as sandbox:
            assert "extra" not in json.loads(sandbox.conn_json())

    def test_admin_calls_reach_the_server_that_was_started(self, sandbox) -> None:
        sandbox.set_faults("429=1,seed=3")
        assert admin_call(sandbox.url, "GET", "faults")["429"] == 1
        sandbox.reset()
        assert sandbox.admin("GET", "faults")["429"] == 0
        usage_file = sandbox.add_usage_file(5, status="ready")
        assert usage_file["records"]["valid"] == 5
        assert sandbox.stats()["requests_created"] == 0

    @pytest.mark.parametrize(
        "url", ["file:///etc/passwd", "127.0.0.1:8765"], ids=["file-scheme", "no-scheme"]
    )
    def test_an_admin_call_refuses_anything_but_an_http_address(self, url: str) -> None:
        with pytest.raises(ValueError, match="url: the sandbox's http:// address"):
            admin_call(url, "GET", "health")
