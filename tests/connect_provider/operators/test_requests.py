"""The request operators against the sandbox: called directly (``op.execute({})``), as a task retry
would call them again, and through a real DAG run (``dag.test()``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from connect_provider.actions import ConnectRequestFailedError, ConnectRequestStateError
from connect_provider.exceptions import (
    ConnectAPIError,
    ConnectError,
    ConnectNotFoundError,
    ConnectValidationError,
)
from connect_provider.hooks.connect import ConnectHook
from connect_provider.operators.requests import (
    ConnectApproveRequestOperator,
    ConnectCancelRequestOperator,
    ConnectChangeRequestOperator,
    ConnectFailRequestOperator,
    ConnectInquireRequestOperator,
    ConnectPurchaseRequestOperator,
    ConnectRequestLink,
    ConnectSuspendResumeRequestOperator,
    portal_request_url,
)
from connect_provider.triggers.requests import ConnectRequestTrigger

ROOT = Path(__file__).resolve().parents[3]
SEATS = "PRD-276-377-545-0001"
SEEDED_PENDING = "PR-0000-0000-0004-001"
ACTIVATION = "TL-276-377-545-0001"
INQUIRE_TEMPLATE = "TL-276-377-545-0002"
XCOM_KEYS = {"request_id", "type", "status", "asset_id", "asset_external_id", "reused"}


def tier(external_id: str, **contact) -> dict:
    return {
        "name": f"Tier {external_id}",
        "external_id": external_id,
        "contact_info": {
            "address_line1": "1 Rue de la Paix",
            "city": "Paris",
            "postal_code": "75002",
            "country": "FR",
            "contact": {
                "first_name": "Jean",
                "last_name": "Dupont",
                "email": "jean@example.fr",
                "phone_number": "+33 140000000",
                **contact,
            },
        },
    }


def purchase_op(external_id: str, **overrides) -> ConnectPurchaseRequestOperator:
    kwargs = {
        "task_id": "purchase",
        "asset_external_id": external_id,
        "hub_id": "HB-0000-0001",
        "marketplace": "MP-00001",
        "tier1": tier("reseller-1"),
        "customer": tier("customer-1"),
        "items": [{"item_id": SEATS, "quantity": 4}],
        "poll_interval": 0.1,
        "timeout": 15,
    }
    kwargs.update(overrides)
    return ConnectPurchaseRequestOperator(**kwargs)


def stats(sandbox) -> dict:
    return sandbox.admin("GET", "stats")


def approved_asset(external_id: str) -> dict:
    """Buy an asset and wait until the sandbox's vendor approves it."""
    xcom = purchase_op(external_id, wait_for_completion=True).execute({})
    assert xcom["status"] == "approved"
    return xcom


# --------------------------------------------------------------------------- happy paths


def test_purchase_returns_the_xcom_of_the_new_request(sandbox):
    xcom = purchase_op("op-buy").execute({})
    assert set(xcom) == XCOM_KEYS
    assert xcom["type"] == "purchase" and xcom["status"] == "pending"
    assert xcom["request_id"].startswith("PR-") and xcom["asset_id"].startswith("AS-")
    assert xcom["asset_external_id"] == "op-buy" and xcom["reused"] is False
    json.dumps(xcom)  # XCom-serialisable as it is
    assert stats(sandbox)["requests_created"] == 1


def test_purchase_accepts_a_single_item_and_a_marketplace_name(sandbox):
    op = purchase_op("op-single", items=None, item_id=SEATS, quantity="2", marketplace="EU Marketplace")
    xcom = op.execute({})
    request = ConnectHook().get_request(xcom["request_id"])
    assert [float(i["quantity"]) for i in request["asset"]["items"]] == [2]


def test_waiting_on_the_worker_returns_the_approved_status(sandbox):
    xcom = purchase_op("op-wait", wait_for_completion=True, deferrable=False).execute({})
    assert xcom["status"] == "approved"


def test_a_retry_of_the_task_reuses_the_request_it_created(sandbox):
    first = purchase_op("op-retry").execute({})
    second = purchase_op("op-retry").execute({})
    assert second["request_id"] == first["request_id"] and second["reused"] is True
    assert stats(sandbox)["requests_created"] == 1


def test_change_suspend_resume_and_cancel_each_create_their_request(sandbox):
    asset = approved_asset("op-chain")
    common = {"poll_interval": 0.1, "timeout": 15, "wait_for_completion": True}
    change = ConnectChangeRequestOperator(
        task_id="change", asset_external_id="op-chain", items=[{"item_id": "SEATS", "quantity": 9}], **common
    ).execute({})
    assert (change["type"], change["status"], change["asset_id"]) == ("change", "approved", asset["asset_id"])
    suspend = ConnectSuspendResumeRequestOperator(
        task_id="suspend", request_type="suspend", asset_id=asset["asset_id"], **common
    ).execute({})
    assert (suspend["type"], suspend["status"]) == ("suspend", "approved")
    resume = ConnectSuspendResumeRequestOperator(
        task_id="resume", request_type="resume", asset_external_id="op-chain", **common
    ).execute({})
    assert (resume["type"], resume["status"]) == ("resume", "approved")
    cancel = ConnectCancelRequestOperator(task_id="cancel", asset_id=asset["asset_id"], **common).execute({})
    assert (cancel["type"], cancel["status"]) == ("cancel", "approved")
    assert ConnectHook().get_asset(asset["asset_id"])["status"] == "terminated"
    assert stats(sandbox)["requests_by_type"] == {
        "purchase": 1,
        "change": 1,
        "suspend": 1,
        "resume": 1,
        "cancel": 1,
    }


def test_an_open_request_is_reused_not_duplicated(sandbox):
    asset = approved_asset("op-reuse")
    op = ConnectSuspendResumeRequestOperator(
        task_id="suspend", request_type="suspend", asset_id=asset["asset_id"]
    )
    first, second = op.execute({}), op.execute({})
    assert second["request_id"] == first["request_id"]
    assert (first["reused"], second["reused"]) == (False, True)
    assert stats(sandbox)["requests_by_type"].get("suspend") == 1


# --------------------------------------------------------------------------- local validation


def _calls(sandbox) -> int:
    return stats(sandbox)["calls"]


BAD_INPUT = [
    (ConnectPurchaseRequestOperator, {"items": [{"item_id": SEATS, "quantity": "5.5"}]}, "items[0].quantity"),
    (ConnectPurchaseRequestOperator, {"items": [{"item_id": SEATS, "quantity": 0}]}, "items[0].quantity"),
    (ConnectPurchaseRequestOperator, {"items": [{"item_id": SEATS, "quantity": -4}]}, "items[0].quantity"),
    (ConnectPurchaseRequestOperator, {"items": [{"item_id": SEATS, "quantity": True}]}, "items[0].quantity"),
    (
        ConnectPurchaseRequestOperator,
        {"items": [{"item_id": "PRD-276-0001", "quantity": 1}]},
        "items[0].item_id",
    ),
    (ConnectPurchaseRequestOperator, {"hub_id": "HUB-1"}, "hub_id"),
    (ConnectPurchaseRequestOperator, {"marketplace": " "}, "marketplace"),
    (
        ConnectPurchaseRequestOperator,
        {"tier1": tier("r-1", email="jean@")},
        "tier1.contact_info.contact.email",
    ),
    (
        ConnectPurchaseRequestOperator,
        {"customer": {"name": "No contact", "external_id": "c"}},
        "customer.contact_info",
    ),
    (ConnectPurchaseRequestOperator, {"product_id": "PRD-1"}, "product_id"),
    (
        ConnectChangeRequestOperator,
        {"asset_external_id": "sub-1001", "item_id": "SEATS", "quantity": -2},
        "quantity",
    ),
    (
        ConnectChangeRequestOperator,
        {"asset_external_id": "sub-1001", "item_id": "SE ATS", "quantity": 2},
        "item_id",
    ),
    (
        ConnectChangeRequestOperator,
        {"asset_id": "AS-0000-0000-0001", "asset_external_id": "sub-1001"},
        "asset_id",
    ),
    (ConnectChangeRequestOperator, {"item_id": "SEATS", "quantity": 1}, "asset_external_id"),
    (
        ConnectSuspendResumeRequestOperator,
        {"request_type": "pause", "asset_id": "AS-0000-0000-0001"},
        "request_type",
    ),
    (ConnectCancelRequestOperator, {"asset_id": "0001"}, "asset_id"),
    (
        ConnectApproveRequestOperator,
        {"request_id": SEEDED_PENDING, "template_id": "activation"},
        "template_id",
    ),
    (ConnectFailRequestOperator, {"request_id": SEEDED_PENDING, "reason": ""}, "reason"),
    (ConnectInquireRequestOperator, {"request_id": "4-001"}, "request_id"),
]


@pytest.mark.parametrize(("operator", "kwargs", "field"), BAD_INPUT, ids=[f for _, _, f in BAD_INPUT])
def test_bad_input_is_refused_naming_the_field_before_any_call(sandbox, operator, kwargs, field):
    if operator is ConnectPurchaseRequestOperator:
        op = purchase_op("op-bad", **kwargs)
    else:
        op = operator(task_id="bad", **kwargs)
    before = _calls(sandbox)
    with pytest.raises(ConnectValidationError) as err:
        op.execute({})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert _calls(sandbox) == before


# --------------------------------------------------------------------------- lookups that fail


ASSET_OPERATORS = {
    "change": lambda **k: ConnectChangeRequestOperator(task_id="change", item_id="SEATS", quantity=3, **k),
    "suspend": lambda **k: ConnectSuspendResumeRequestOperator(
        task_id="suspend", request_type="suspend", **k
    ),
    "resume": lambda **k: ConnectSuspendResumeRequestOperator(task_id="resume", request_type="resume", **k),
    "cancel": lambda **k: ConnectCancelRequestOperator(task_id="cancel", **k),
}


@pytest.mark.parametrize("kind", ASSET_OPERATORS)
@pytest.mark.parametrize(
    "identity", [{"asset_external_id": "sub-none"}, {"asset_id": "AS-0000-0000-9999"}], ids=["external", "id"]
)
def test_an_unknown_asset_is_not_found(sandbox, kind, identity):
    with pytest.raises(ConnectNotFoundError, match=next(iter(identity.values()))):
        ASSET_OPERATORS[kind](**identity).execute({})
    assert stats(sandbox)["requests_created"] == 0


@pytest.mark.parametrize("kind", ASSET_OPERATORS)
def test_an_ambiguous_asset_is_refused_listing_what_was_found(sandbox, kind):
    with pytest.raises(ConnectError, match=r"AS-0000-0000-0005.*AS-0000-0000-0006.*asset_id"):
        ASSET_OPERATORS[kind](asset_external_id="sub-dup").execute({})
    assert stats(sandbox)["requests_created"] == 0


def test_an_ambiguous_connection_is_refused_listing_both(sandbox):
    op = purchase_op("op-vault", items=[{"item_id": "PRD-684-920-001-0001", "quantity": 1}])
    with pytest.raises(ConnectError, match=r"CT-0000-0000-0004.*CT-0000-0000-0005"):
        op.execute({})
    assert stats(sandbox)["requests_created"] == 0


# --------------------------------------------------------------------------- outcomes of waiting


def test_a_failed_request_fails_the_task_without_retries_and_with_the_vendor_reason(sandbox):
    with pytest.raises(ConnectRequestFailedError, match="Vendor refused") as err:
        purchase_op("fail-op", wait_for_completion=True).execute({})
    assert isinstance(err.value, AirflowFailException)
    assert err.value.status == "failed"


def test_inquiring_fails_the_task_unless_told_to_wait(sandbox):
    with pytest.raises(ConnectRequestFailedError, match="inquiring"):
        purchase_op("inquire-op", wait_for_completion=True).execute({})
    patient = purchase_op("inquire-op", wait_for_completion=True, fail_on_inquiring=False, timeout=0.5)
    with pytest.raises(ConnectError, match="still inquiring") as err:
        patient.execute({})
    assert not isinstance(err.value, AirflowFailException)  # a timeout may be retried


def test_a_deferrable_operator_hands_the_wait_to_the_trigger(sandbox):
    op = purchase_op("op-defer", wait_for_completion=True, deferrable=True, poll_interval=0.2, timeout=30)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    after = time.time()
    trigger = deferred.value.trigger
    assert isinstance(trigger, ConnectRequestTrigger)
    assert deferred.value.method_name == "execute_complete"
    result = deferred.value.kwargs["result"]
    assert trigger.request_id == result["request_id"] and result["status"] == "pending"
    assert trigger.failure_statuses == ("failed", "revoked", "inquiring")
    assert before + 30 <= trigger.end_time <= after + 30  # the timeout counts from the deferral

    async def first_event():
        async for event in trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), 20))
    xcom = op.execute_complete({}, event=event.payload, **deferred.value.kwargs)
    assert xcom == {**result, "status": "approved"}


def test_a_resumed_operator_turns_trigger_events_into_outcomes(sandbox):
    op = purchase_op("op-events", fail_on_inquiring=False)
    result = {
        "request_id": SEEDED_PENDING,
        "type": "purchase",
        "status": "pending",
        "asset_id": "AS-0000-0000-0004",
        "asset_external_id": "sub-1004",
        "reused": True,
    }
    base = {"request_id": SEEDED_PENDING, "reason": None, "message": "m"}
    ok = op.execute_complete({}, {**base, "status": "success", "request_status": "approved"}, result)
    assert ok == {**result, "status": "approved"}
    with pytest.raises(ConnectRequestFailedError, match="no stock"):
        op.execute_complete(
            {}, {**base, "status": "failed", "request_status": "failed", "reason": "no stock"}, result
        )
    with pytest.raises(ConnectError, match="still pending"):
        op.execute_complete({}, {**base, "status": "timeout", "request_status": "pending"}, result)
    with pytest.raises(ConnectError, match="connection refused"):
        op.execute_complete({}, {**base, "status": "error", "message": "connection refused"}, result)
    # Without the original result (a resume that lost its kwargs) the request itself is read.
    rebuilt = op.execute_complete({}, {**base, "status": "success", "request_status": "approved"})
    assert rebuilt["request_id"] == SEEDED_PENDING and rebuilt["asset_external_id"] == "sub-1004"


def test_not_waiting_returns_at_once(sandbox):
    xcom = purchase_op("op-nowait", wait_for_completion=False, deferrable=True).execute({})
    assert xcom["status"] == "pending"


# --------------------------------------------------------------------------- vendor decisions


def test_approve_a_pending_request(sandbox):
    xcom = ConnectApproveRequestOperator(
        task_id="approve", request_id=SEEDED_PENDING, template_id=ACTIVATION
    ).execute({})
    assert set(xcom) == XCOM_KEYS
    assert (xcom["status"], xcom["asset_id"], xcom["reused"]) == ("approved", "AS-0000-0000-0004", False)


def test_inquire_then_fail_a_request(sandbox):
    inquired = ConnectInquireRequestOperator(
        task_id="inquire", request_id=SEEDED_PENDING, template_id=INQUIRE_TEMPLATE
    ).execute({})
    assert inquired["status"] == "inquiring"
    failed = ConnectFailRequestOperator(
        task_id="fail", request_id=SEEDED_PENDING, reason="Need a VAT id"
    ).execute({})
    assert failed["status"] == "failed"
    assert ConnectHook().get_request(SEEDED_PENDING)["reason"] == "Need a VAT id"


@pytest.mark.parametrize(
    "operator",
    [
        lambda: ConnectApproveRequestOperator(
            task_id="a", request_id="PR-0000-0000-0001-001", template_id=ACTIVATION
        ),
        lambda: ConnectInquireRequestOperator(task_id="i", request_id="PR-0000-0000-0001-001"),
    ],
    ids=["approve-needs-pending", "inquire-needs-pending"],
)
def test_a_decision_on_a_request_in_the_wrong_status_is_refused(sandbox, operator):
    op = operator()
    if isinstance(op, ConnectApproveRequestOperator):
        # Approving an approved request is a retry's no-op, so use a failed one.
        ConnectFailRequestOperator(task_id="f", request_id=SEEDED_PENDING, reason="x").execute({})
        op.request_id = SEEDED_PENDING
    with pytest.raises(ConnectRequestStateError, match="needs a request that is pending"):
        op.execute({})


def test_fail_refuses_an_approved_request(sandbox):
    with pytest.raises(ConnectRequestStateError, match="pending or inquiring"):
        ConnectFailRequestOperator(task_id="f", request_id="PR-0000-0000-0001-001", reason="late").execute({})


def test_connects_own_refusal_reaches_the_task_log(sandbox):
    op = ConnectApproveRequestOperator(
        task_id="a", request_id=SEEDED_PENDING, template_id="TL-684-920-001-0001"
    )
    with pytest.raises(ConnectAPIError, match="TL-684-920-001-0001 is not a template of product") as err:
        op.execute({})
    assert err.value.status == 400 and err.value.error_code


# --------------------------------------------------------------------------- link, templates


def test_the_portal_link_points_at_the_request():
    assert (
        portal_request_url("PR-1-2-3")
        == "https://portal.connect.cloudblue.com/subscriptions/fulfillment/PR-1-2-3"
    )
    assert ConnectRequestLink().name == "Connect request"
    op = purchase_op("x")
    assert any(isinstance(link, ConnectRequestLink) for link in op.operator_extra_links)


def test_identity_and_quantity_arguments_are_templated():
    assert {
        "asset_external_id",
        "asset_external_uid",
        "items",
        "item_id",
        "quantity",
        "tier1",
        "customer",
    } <= set(ConnectPurchaseRequestOperator.template_fields)
    assert {"asset_id", "asset_external_id", "items", "quantity"} <= set(
        ConnectChangeRequestOperator.template_fields
    )
    assert {"request_type", "asset_id"} <= set(ConnectSuspendResumeRequestOperator.template_fields)
    assert {"request_id", "template_id"} <= set(ConnectApproveRequestOperator.template_fields)


def test_operators_take_keyword_arguments_only():
    with pytest.raises(TypeError):
        ConnectCancelRequestOperator("cancel", "AS-0000-0000-0001")  # type: ignore[misc]


# --------------------------------------------------------------------------- faults and retries


def _run_with_task_retries(make_operator, attempts: int = 10) -> tuple[dict, int]:
    """Call ``execute`` on a fresh operator until it succeeds, as Airflow's task retries would."""
    errors = []
    for _ in range(attempts):
        try:
            return make_operator().execute({}), len(errors)
        except ConnectValidationError:
            raise
        except Exception as exc:  # what a task retry absorbs: transport, 429s past the budget, ambiguity
            errors.append(repr(exc))
    raise AssertionError(f"still failing after {attempts} tries: {errors[-3:]}")


def test_200_requests_of_mixed_types_under_faults_end_as_exactly_200(sandbox, monkeypatch):
    # Short back-off caps keep the run quick; a small retry budget in the hook lets some failures
    # reach the task, which is then retried as Airflow would (a new operator, execute again).
    conn = json.loads(sandbox.conn_uri_json())
    conn["extra"] = {"max_wait": 0.05, "timeout": 5, "max_retries": 2}
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT", json.dumps(conn))
    sandbox.set_faults("drop=0.2,429=0.1,seed=7")
    ids: list[str] = []
    retries = 0

    def run(make_operator) -> dict:
        nonlocal retries
        xcom, failed_tries = _run_with_task_retries(make_operator)
        retries += failed_tries
        ids.append(xcom["request_id"])
        return xcom

    assets = [
        run(lambda i=i: purchase_op(f"fi-{i:03d}", items=[{"item_id": SEATS, "quantity": 1}]))
        for i in range(100)
    ]
    time.sleep(0.6)  # the sandbox's vendor approves each purchase 0.5 s after it was made
    for i, bought in enumerate(assets[:90]):
        aid = bought["asset_id"]
        if i < 35:
            run(
                lambda aid=aid: ConnectChangeRequestOperator(
                    task_id="c", asset_id=aid, item_id="SEATS", quantity=2
                )
            )
        elif i < 70:
            run(
                lambda aid=aid: ConnectSuspendResumeRequestOperator(
                    task_id="s", request_type="suspend", asset_id=aid
                )
            )
        else:
            run(lambda aid=aid: ConnectCancelRequestOperator(task_id="x", asset_id=aid))
    time.sleep(0.6)
    for bought in assets[35:45]:
        aid = bought["asset_id"]
        run(
            lambda aid=aid: ConnectSuspendResumeRequestOperator(
                task_id="r", request_type="resume", asset_id=aid
            )
        )

    numbers = stats(sandbox)
    assert numbers["faults_injected"]["drop"] > 0 and numbers["faults_injected"]["429"] > 0
    assert retries > 0  # the task-retry path was exercised, not only the hook's own retries
    assert len(ids) == len(set(ids)) == 200
    assert numbers["requests_created"] == 200
    assert numbers["requests_by_type"] == {
        "purchase": 100,
        "change": 35,
        "suspend": 35,
        "cancel": 20,
        "resume": 10,
    }
    print(f"faults: {numbers['faults_injected']}, task retries: {retries}, calls: {numbers['calls']}")


# --------------------------------------------------------------------------- a real DAG run


@pytest.mark.e2e
def test_the_example_dag_runs_every_request_operator_end_to_end(sandbox, airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    bag = DagBag(dag_folder=str(ROOT / "dags" / "connect_request_examples.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("connect_request_examples")
    operators = {type(t).__name__ for t in dag.tasks}
    assert {
        "ConnectPurchaseRequestOperator",
        "ConnectChangeRequestOperator",
        "ConnectSuspendResumeRequestOperator",
        "ConnectCancelRequestOperator",
        "ConnectApproveRequestOperator",
        "ConnectFailRequestOperator",
        "ConnectInquireRequestOperator",
        "ConnectRequestSensor",
    } <= operators

    run = dag.test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {TaskInstanceState.SUCCESS}, states
    numbers = stats(sandbox)
    assert numbers["requests_by_type"] == {"purchase": 3, "change": 1, "suspend": 1, "resume": 1, "cancel": 1}

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(XComModel.run_id == run.run_id, XComModel.dag_id == dag.dag_id)
        ).all()
    values = {(r.task_id, r.key): r.value for r in rows}

    def value(task_id: str, key: str):
        raw = values[(task_id, key)]
        if not isinstance(raw, str):
            return raw
        try:
            return json.loads(raw)
        except ValueError:  # the extra link is stored as plain text
            return raw

    purchase = value("purchase", "return_value")
    assert purchase["status"] == "approved"
    assert purchase["asset_external_id"] == f"demo-{run.run_id}"
    # The extra link was resolved at the end of the task and points at the purchase request.
    assert value("purchase", "_link_ConnectRequestLink") == portal_request_url(purchase["request_id"])
    assert value("cancel_approved", "return_value")["status"] == "approved"
    assert value("fail", "return_value")["status"] == "failed"
