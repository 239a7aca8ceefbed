"""Injected faults: what a client observes, and what the sandbox did behind them."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests
from connect_sandbox.faults import Faults, FaultSpec, parse_spec


def statuses(api, n: int, path: str = "/hubs") -> list[int]:
    return [api.get(path).status_code for _ in range(n)]


def test_a_rate_limit_answers_429_with_retry_after_in_connects_error_shape(api, sandbox) -> None:
    sandbox.set_faults("429=1")
    r = api.get("/requests")
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"
    assert set(r.json()) == {"error_code", "errors"}


def test_a_server_error_answers_500_in_connects_error_shape(api, sandbox) -> None:
    sandbox.set_faults("500=1")
    r = api.get("/assets")
    assert r.status_code == 500
    assert set(r.json()) == {"error_code", "errors"}


def test_the_same_seed_gives_the_same_sequence_of_faults(api, sandbox) -> None:
    sandbox.set_faults("429=0.3,500=0.3,seed=11")
    first = statuses(api, 30)
    sandbox.set_faults("429=0.3,500=0.3,seed=11")
    assert statuses(api, 30) == first
    assert {429, 500, 200} <= set(first)


def test_injected_faults_are_counted_in_stats(api, sandbox) -> None:
    sandbox.set_faults("429=0.5,500=0.5,seed=3")
    seen = statuses(api, 20)
    stats = sandbox.admin("GET", "stats")
    assert stats["faults_injected"]["429"] == seen.count(429)
    assert stats["faults_injected"]["500"] == seen.count(500)
    assert stats["faults_injected"]["drop"] == 0
    assert stats["calls_by_route"]["GET /hubs"] == 20


def test_the_most_calls_served_at_once_are_counted_in_stats(api, sandbox) -> None:
    # Why in the stats: a client that says it makes N calls side by side is checked by counting.
    statuses(api, 3)
    assert sandbox.admin("GET", "stats")["max_in_flight"] == 1
    sandbox.set_faults("latency_ms=300")
    barrier = threading.Barrier(3)

    def call(_: int) -> int:
        barrier.wait()
        return api.get("/hubs").status_code

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(call, range(3))) == [200] * 3
    assert sandbox.admin("GET", "stats")["max_in_flight"] == 3
    sandbox.reset()
    assert sandbox.admin("GET", "stats")["max_in_flight"] == 0


def _post_raw(api_url: str, path: str, body: dict) -> BaseException | int:
    """POST with http.client so the exact transport failure is visible."""
    parts = urlsplit(api_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(
            "POST",
            parts.path + path,
            body=json.dumps(body),
            headers={
                "Authorization": "ApiKey SU-000-000-000:sandbox-demo-key",
                "Content-Type": "application/json",
            },
        )
        return conn.getresponse().status
    except (ConnectionError, http.client.HTTPException) as exc:
        return exc
    finally:
        conn.close()


def test_a_dropped_create_is_committed_but_never_answered(api, sandbox) -> None:
    sandbox.admin("POST", "reset", {"auto_approve_delay": -1})
    sandbox.set_faults("drop=1")
    outcome = _post_raw(
        sandbox.api_url, "/requests", {"type": "suspend", "asset": {"id": "AS-0000-0000-0001"}}
    )
    assert isinstance(outcome, http.client.RemoteDisconnected | ConnectionResetError), outcome
    sandbox.set_faults("")
    created = api.get("/requests", "type=suspend&asset.id=AS-0000-0000-0001").json()
    assert [r["id"] for r in created] == ["PR-0000-0000-0001-002"]
    stats = sandbox.admin("GET", "stats")
    assert stats["requests_created"] == 1
    assert stats["faults_injected"]["drop"] == 1


def test_requests_sees_a_dropped_connection_as_a_connection_error(api, sandbox) -> None:
    sandbox.set_faults("drop=1")
    with pytest.raises(requests.ConnectionError):
        api.get("/hubs")


def test_latency_is_added_to_every_public_call(api, sandbox) -> None:
    sandbox.set_faults("latency_ms=300")
    started = time.monotonic()
    assert api.get("/hubs").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_faults_never_touch_the_admin_api_and_reset_turns_them_off(api, sandbox) -> None:
    sandbox.set_faults("500=1")
    assert sandbox.admin("GET", "health") == {"status": "ok"}
    sandbox.reset()
    assert api.get("/hubs").status_code == 200


def test_faults_apply_only_to_authenticated_calls(sandbox) -> None:
    sandbox.set_faults("500=1")
    r = requests.get(f"{sandbox.api_url}/hubs", timeout=30)
    assert r.status_code == 401


def test_a_bad_fault_spec_is_refused_by_the_admin_api(sandbox) -> None:
    with pytest.raises(Exception, match="400"):
        sandbox.set_faults("429=2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", FaultSpec()),
        ("429=0.1,500=0.05,drop=0.02,latency_ms=20", FaultSpec(0.1, 0.05, 0.02, 20.0)),
        (" seed=7 , 429=1 ", FaultSpec(p429=1.0, seed=7)),
    ],
)
def test_fault_specs_parse(text: str, expected: FaultSpec) -> None:
    assert parse_spec(text) == expected


@pytest.mark.parametrize(
    "text", ["429", "429=x", "429=1.5", "drop=-0.1", "latency_ms=-1", "seed=abc", "boom=1", "429=0.6,500=0.6"]
)
def test_bad_fault_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_spec(text)


def test_decisions_follow_the_probabilities() -> None:
    faults = Faults(parse_spec("429=0.2,500=0.1,drop=0.1,seed=1"))
    draws = [faults.decide() for _ in range(5000)]
    assert 0.17 < draws.count("429") / 5000 < 0.23
    assert 0.08 < draws.count("500") / 5000 < 0.12
    assert 0.08 < draws.count("drop") / 5000 < 0.12


def test_the_cli_refuses_a_bad_fault_spec() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connect_sandbox.cli", "--faults", "429=oops"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "429" in done.stderr
