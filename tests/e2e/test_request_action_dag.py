"""connect_request_action run end to end with ``dag.test()``: the trigger form -> one request."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

DAG_ID = "connect_request_action"


def _xcom(dag_run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key="return_value")
            .one()
        )
        return XComModel.deserialize_value(row)


# dag.test() runs tasks in this process and keeps a run's conf in the DAG's params afterwards, so
# every run passes the fields the tests change.
BASE = {"action": "purchase", "asset_id": None, "tier1_email": "rita@example.com"}


def _run(dags, **conf):
    return dags[DAG_ID].test(logical_date=conf.pop("logical_date", None), run_conf={**BASE, **conf})


def test_the_default_form_buys_the_demo_subscription_in_a_run_without_logical_date(sandbox, dags) -> None:
    dag_run = _run(dags, asset_external_id="ui-e2e-1")
    assert dag_run.logical_date is None

    assert dag_run.state == "success"
    result = _xcom(dag_run, "create_request")
    assert result["type"] == "purchase" and result["status"] == "pending" and result["reused"] is False
    assert result["asset_external_id"] == "ui-e2e-1" and result["request_id"].startswith("PR-")
    assert sandbox.admin("GET", "stats")["requests_created"] == 1


def test_a_suspend_from_the_form_names_only_the_asset(sandbox, dags) -> None:
    dag_run = _run(dags, action="suspend", asset_external_id="sub-1001")

    assert dag_run.state == "success"
    result = _xcom(dag_run, "create_request")
    assert (result["type"], result["asset_id"]) == ("suspend", "AS-0000-0000-0001")


def test_bad_form_input_fails_the_run_naming_the_field_and_creates_nothing(sandbox, dags, capfd) -> None:
    dag_run = _run(dags, asset_external_id="ui-e2e-2", tier1_email="not-an-email")

    assert dag_run.state == "failed"
    out, err = capfd.readouterr()
    assert "tier1_email: 'not-an-email' is not a valid e-mail address" in out + err
    assert sandbox.admin("GET", "stats")["calls"] == 0
