"""Error classes and messages, test_connection, and the API key never showing anywhere."""

from __future__ import annotations

import pickle

import pytest
from connect_provider.exceptions import (
    ConnectAmbiguousWriteError,
    ConnectAPIError,
    ConnectAuthError,
    ConnectError,
    ConnectNotFoundError,
    ConnectRateLimitError,
    ConnectValidationError,
)
from connect_provider.hooks.connect import ConnectHook
from local_http import LocalServer, QuietHandler

DEMO_SECRET = "sandbox-demo-key"
WRONG_KEY = "ApiKey SU-000-000-000:wrong-secret-4f9a2c"
WRONG_SECRET = "wrong-secret-4f9a2c"


@pytest.fixture
def wrong_key(sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", sandbox.conn_uri_json(api_key=WRONG_KEY))


def test_a_refused_key_is_an_auth_error_naming_the_connection(wrong_key) -> None:
    with pytest.raises(ConnectAuthError) as caught:
        ConnectHook().list_requests()
    assert str(caught.value) == (
        "401 on GET /requests: the API key of connection 'cloudblue_connect_default' was refused; "
        "check the password of that connection"
    )
    assert (caught.value.status, caught.value.method, caught.value.path) == (401, "GET", "/requests")
    assert caught.value.error_code == "AUTH_001"


def test_a_missing_object_is_not_found(sandbox) -> None:
    hook = ConnectHook()
    with pytest.raises(ConnectNotFoundError) as caught:
        hook.get_request("PR-9999-9999-9999-999")
    assert str(caught.value).startswith("404 on GET /requests/PR-9999-9999-9999-999: not found")
    assert caught.value.status == 404
    with pytest.raises(ConnectNotFoundError):
        hook.get_asset("AS-9999-9999-9999")
    with pytest.raises(ConnectNotFoundError):
        hook.get_usage_file("UF-2026-01-9999999999")


def test_a_refused_payload_carries_connects_error_code_and_errors(sandbox) -> None:
    with pytest.raises(ConnectAPIError) as caught:
        ConnectHook().create_request({"type": "purchase", "asset": {"external_id": "no-connection"}})
    error = caught.value
    assert type(error) is ConnectAPIError
    assert (error.status, error.method, error.path, error.error_code) == (400, "POST", "/requests", "VAL_001")
    assert error.errors and error.errors[0].startswith("asset.")
    assert str(error).startswith(
        f"400 on POST /requests: Connect refused the call: VAL_001 - {error.errors[0]}"
    )
    assert str(error).endswith("fix the request and run it again")


def test_an_invalid_rql_string_is_refused_by_the_server_as_a_400(sandbox) -> None:
    with pytest.raises(ConnectAPIError) as caught:
        ConnectHook().list_requests("eq(status,pending")
    assert caught.value.status == 400
    assert caught.value.error_code == "INVALID_RQL"


def test_every_error_is_a_connect_error_and_survives_pickling(sandbox) -> None:
    with pytest.raises(ConnectError) as caught:
        ConnectHook().get_request("PR-9999-9999-9999-999")
    clone = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own bytes
    assert type(clone) is ConnectNotFoundError
    assert (str(clone), clone.status, clone.path) == (str(caught.value), 404, caught.value.path)


def test_test_connection_succeeds_with_the_demo_key(sandbox) -> None:
    ok, message = ConnectHook().test_connection()
    assert ok is True
    assert message == f"Connected to {sandbox.api_url}: the API key was accepted (2 marketplaces visible)"


def test_test_connection_says_the_key_was_refused(wrong_key, stats) -> None:
    ok, message = ConnectHook().test_connection()
    assert ok is False
    assert message.startswith(
        "401 on GET /marketplaces: the API key of connection 'cloudblue_connect_default'"
    )
    assert stats()["calls_by_route"] == {"GET /marketplaces": 1}


def test_the_api_key_never_appears_in_logs_errors_or_reprs(
    sandbox, wrong_key, monkeypatch, hook_logs, purchase
):
    seen: list[str] = []

    def record(error: BaseException) -> None:
        seen.extend([str(error), repr(error), repr(error.args), repr(vars(error))])

    # Failing calls with a wrong key, whose secret must not show either.
    bad = ConnectHook(max_retries=0)
    for call in (bad.list_requests, bad.test_connection, lambda: bad.get_request("PR-0000-0000-0004-001")):
        try:
            seen.append(repr(call()))
        except ConnectError as error:
            record(error)
    seen.extend([repr(bad), repr(bad.settings)])

    # Successful calls, retries, a refused payload, an ambiguous write, with the demo key.
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", sandbox.conn_uri_json())
    good = ConnectHook(max_wait=0.01, page_size=10)
    list(good.iter_usage_record_pages("UF-2026-10-0000000001"))
    sandbox.set_faults("429=0.3,500=0.2,seed=9")  # 500, 500, 429, then an answer
    good.find_assets(external_id="sub-dup")
    sandbox.set_faults("")
    for call in (
        lambda: good.create_request({"type": "purchase", "asset": {"external_id": "x"}}),
        lambda: (sandbox.set_faults("drop=1"), good.create_request(purchase("leak-check"))),
        lambda: (sandbox.set_faults("429=1"), ConnectHook(max_retries=1, max_wait=0).get_request("PR-1")),
    ):
        with pytest.raises((ConnectAPIError, ConnectAmbiguousWriteError, ConnectRateLimitError)) as caught:
            call()
        record(caught.value)
    sandbox.set_faults("")
    seen.extend([repr(good), repr(good.settings), good.test_connection()[1]])

    lines = hook_logs()
    assert any(line.startswith("debug: GET /usage/records?") for line in lines), "no DEBUG line was captured"
    assert any(line.startswith("warning: ") for line in lines), "no retry warning was captured"
    everything = "\n".join([*lines, *seen])
    assert DEMO_SECRET not in everything
    assert WRONG_SECRET not in everything


def test_validation_errors_name_the_field(sandbox) -> None:
    with pytest.raises(ConnectValidationError) as caught:
        ConnectHook().approve_request("PR-0000-0000-0004-001", "")
    assert caught.value.field == "template_id"


class TestConflict:
    """A 409 is its own class and keeps the ``params`` naming what exists (Connect's duplicate answer)."""

    BODY = {
        "error_code": "REQ_005",
        "errors": ["Request for this asset already exists."],
        "params": {
            "request_id": "PR-1234-5678-9012-001",
            "asset_id": "AS-1234-5678-9012",
            "request_status": "pending",
            "asset_status": "processing",
        },
    }

    @pytest.fixture
    def conflict_server(self, monkeypatch: pytest.MonkeyPatch):
        import json

        body = json.dumps(self.BODY).encode()

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.read_body()
                self.reply(409, body)

        with LocalServer(Handler) as server:
            conn = server.connection_json("ApiKey SU-000-000-000:sandbox-demo-key", max_wait=0, max_retries=0)
            monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", conn)
            yield

    def test_a_409_is_a_conflict_error_with_the_params_of_the_existing_request(self, conflict_server) -> None:
        from connect_provider.exceptions import ConnectConflictError

        with pytest.raises(ConnectConflictError) as caught:
            ConnectHook().create_request({"type": "resume", "asset": {"id": "AS-1234-5678-9012"}})
        error = caught.value
        assert (error.status, error.error_code) == (409, "REQ_005")
        assert (error.method, error.path) == ("POST", "/requests")
        assert error.params == self.BODY["params"]
        assert "exists already" in str(error)

    def test_the_params_survive_pickling(self, conflict_server) -> None:
        from connect_provider.exceptions import ConnectConflictError

        with pytest.raises(ConnectConflictError) as caught:
            ConnectHook().create_request({"type": "resume", "asset": {"id": "AS-1234-5678-9012"}})
        clone = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own bytes
        assert type(clone) is ConnectConflictError
        assert clone.params == self.BODY["params"]
