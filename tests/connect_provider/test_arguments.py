"""One declaration per action's arguments, read by the operators, the actions, the outbox and the form."""

from __future__ import annotations

import inspect
from datetime import datetime

import pytest
from airflow.sdk import DAG
from connect_provider import actions, arguments, forms
from connect_provider.arguments import (
    ApproveArgs,
    CancelArgs,
    ChangeArgs,
    FailArgs,
    InquireArgs,
    PurchaseArgs,
    SuspendResumeArgs,
    request_arguments,
)
from connect_provider.exceptions import ConnectValidationError
from connect_provider.operators.requests import (
    ConnectApproveRequestOperator,
    ConnectCancelRequestOperator,
    ConnectChangeRequestOperator,
    ConnectFailRequestOperator,
    ConnectInquireRequestOperator,
    ConnectPurchaseRequestOperator,
    ConnectSuspendResumeRequestOperator,
)

OPERATORS = [
    (ConnectPurchaseRequestOperator, PurchaseArgs),
    (ConnectChangeRequestOperator, ChangeArgs),
    (ConnectSuspendResumeRequestOperator, SuspendResumeArgs),
    (ConnectCancelRequestOperator, CancelArgs),
    (ConnectApproveRequestOperator, ApproveArgs),
    (ConnectFailRequestOperator, FailArgs),
    (ConnectInquireRequestOperator, InquireArgs),
]
OPERATOR_IDS = [op.__name__ for op, _ in OPERATORS]


class TestAnOperatorIsMadeFromItsDeclaration:
    """Keywords, required keywords, ``template_fields`` and ``:param:`` docs all come from the declaration."""

    @pytest.mark.parametrize(("operator", "declaration"), OPERATORS, ids=OPERATOR_IDS)
    def test_its_keywords_are_the_declared_arguments_keyword_only(self, operator, declaration) -> None:
        params = inspect.signature(operator.__init__).parameters
        declared = {declaration.keyword(f) for f in declaration.declared()}
        own = {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert own == declared
        required = {name for name in own if params[name].default is inspect.Parameter.empty}
        assert required == {declaration.keyword(f) for f in declaration.declared() if f.metadata["required"]}

    @pytest.mark.parametrize(("operator", "declaration"), OPERATORS, ids=OPERATOR_IDS)
    def test_its_template_fields_are_the_arguments_declared_templated(self, operator, declaration) -> None:
        templated = {declaration.keyword(f) for f in declaration.declared() if f.metadata["templated"]}
        assert set(operator.template_fields) >= templated
        assert "reuse_existing_request" not in operator.template_fields

    @pytest.mark.parametrize(("operator", "declaration"), OPERATORS, ids=OPERATOR_IDS)
    def test_its_docstring_documents_every_argument(self, operator, declaration) -> None:
        for f in declaration.declared():
            assert f":param {declaration.keyword(f)}: " in operator.__doc__

    def test_a_missing_required_argument_is_a_type_error_at_dag_parse_time(self) -> None:
        with pytest.raises(TypeError, match="missing keyword argument 'reason'"):
            ConnectFailRequestOperator(task_id="fail", request_id="PR-1")

    def test_default_args_fill_declared_arguments_as_for_any_operator(self) -> None:
        with DAG("defaults", schedule=None, start_date=datetime(2026, 1, 1), default_args={"reason": "Out"}):
            op = ConnectFailRequestOperator(task_id="fail", request_id="PR-1")
        assert op.reason == "Out"

    def test_the_airflow_params_clash_is_renamed_by_the_declaration(self) -> None:
        op = ConnectPurchaseRequestOperator(
            task_id="p", asset_external_id="x", hub_id="HB-0000-0001", marketplace="MP-00001", tier1={},
            asset_params={"seats_note": "n"},
        )  # fmt: skip
        assert op.action_arguments().params == {"seats_note": "n"}
        assert "asset_params" in op.template_fields and "params" not in op.template_fields


class TestAPayloadIsReadByTheDeclaration:
    """An outbox payload (or any mapping of arguments) is checked against the action's declaration."""

    @pytest.mark.parametrize(
        ("change_type", "payload", "field", "message"),
        [
            ("resume", {"asset_id": "AS-1", "colour": "blue"}, "colour", "is not an argument of a resume"),
            ("cancel", {"asset_id": "AS-1", "request_type": "cancel"}, "request_type", "is not an argument"),
            ("suspend", {"asset_id": "AS-1", "request_type": "resume"}, "request_type", "is 'resume' but"),
            ("purchase", {"asset_external_id": "x"}, "hub_id", "is required for a purchase: the hub"),
            ("refund", {}, "change_type", "must be one of purchase, change, suspend, resume, cancel"),
        ],
        ids=["an unknown key", "a key of another action", "a contradicting request type", "a missing hub",
             "an unknown change type"],
    )  # fmt: skip
    def test_what_the_declaration_does_not_take_is_refused_by_name(
        self, change_type: str, payload: dict, field: str, message: str
    ) -> None:
        with pytest.raises(ConnectValidationError) as raised:
            request_arguments(change_type, payload)
        assert raised.value.field == field and message in str(raised.value)

    @pytest.mark.parametrize(
        ("change_type", "declaration"),
        [("suspend", SuspendResumeArgs), ("resume", SuspendResumeArgs), ("change", ChangeArgs)],
        ids=["suspend", "resume", "change"],
    )
    def test_a_suspend_or_resume_takes_its_request_type_from_the_change_type(
        self, change_type: str, declaration
    ) -> None:
        filled = request_arguments(change_type, {"asset_id": "AS-0000-0000-0001"})
        assert type(filled) is declaration and filled.request_type == change_type

    def test_the_known_arguments_named_in_the_refusal_are_the_declared_ones(self) -> None:
        with pytest.raises(ConnectValidationError) as raised:
            request_arguments("cancel", {"colour": "blue"})
        assert str(sorted(CancelArgs.names())) in str(raised.value)


class TestTheFormComesFromTheDeclarations:
    """Every box of the trigger form is an argument's declared form field, and errors name the box."""

    def test_every_declared_form_field_is_a_param_of_the_form(self) -> None:
        params = forms.form_params()
        for declaration in arguments.REQUEST_ARGUMENTS.values():
            for f in declaration.declared():
                box = f.metadata["form"]
                if isinstance(box, arguments.TierForm):
                    assert {b.name for b in box.fields()} <= set(params), f.name
                elif box is not None:
                    assert box.name in params, f.name
        names = list(params)
        assert (names[0], names[-1]) == ("action", "connect_conn_id")

    @pytest.mark.parametrize(
        ("path", "box"),
        [
            ("tier1.contact_info.contact.email", "tier1_email"),
            ("customer.contact_info.contact.phone_number.country_code", "customer_phone"),
            ("tier2", "tier2_name"),
            ("tier1.contact_info.state", "tier1"),
            ("items[0].quantity", "quantity"),
            ("hub_id", "hub_id"),
        ],
        ids=["a contact field", "inside the phone object", "the tier itself", "a field with no box",
             "an item's quantity", "a top-level argument"],
    )  # fmt: skip
    def test_an_argument_path_maps_to_the_box_it_came_from(self, path: str, box: str) -> None:
        assert forms.form_field(path) == box

    def test_an_asset_id_names_the_asset_alone(self) -> None:
        action, args = forms.form_arguments(
            {"action": "cancel", "asset_id": "AS-1", "asset_external_id": "demo-ui-0001", "hub_id": "HB-1"}
        )
        assert (action, args) == ("cancel", {"asset_id": "AS-1"})


class TestTheActionsTakeTheirDeclaration:
    """An action is called with its declaration, or with keyword arguments checked against it."""

    def test_keyword_arguments_the_declaration_does_not_take_are_refused_by_name(self) -> None:
        with pytest.raises(ConnectValidationError, match="colour: is not an argument of a cancel request"):
            actions.cancel(None, asset_id="AS-0000-0000-0001", colour="blue")  # type: ignore[arg-type]

    def test_a_declaration_and_keyword_arguments_together_are_refused(self) -> None:
        with pytest.raises(TypeError, match="not both"):
            actions.cancel(None, CancelArgs(asset_id="AS-1"), asset_id="AS-2")  # type: ignore[arg-type]

    def test_the_payload_builder_makes_the_body_connect_takes(self) -> None:
        spec = PurchaseArgs(
            asset_external_id="sub-1", hub_id="HB-0000-0001", marketplace="MP-00001",
            tier1={"name": "R", "external_id": "r-1", "contact_info": {
                "address_line1": "1 St", "city": "C", "postal_code": "1", "country": "us",
                "contact": {"first_name": "A", "last_name": "B", "email": "a@b.example",
                            "phone_number": "1"}}},
            item_id="PRD-276-377-545-0001", quantity="5",
        )  # fmt: skip
        with pytest.raises(ConnectValidationError, match="customer"):
            spec.checked()
        checked = type(spec)(**{**spec.given(), "customer": spec.tier1}).checked()
        body = checked.connect_payload(marketplace_id="MP-00001", connection_id="CT-1", tiers={})
        assert body["type"] == "purchase" and body["marketplace"] == {"id": "MP-00001"}
        assert body["asset"]["items"] == [{"id": "PRD-276-377-545-0001", "quantity": 5}]
        assert body["asset"]["product"] == {"id": "PRD-276-377-545"}
        uid = arguments.default_asset_external_uid("sub-1", "PRD-276-377-545")
        assert body["asset"]["external_uid"] == uid


class TestAPurchaseNote:
    """``note`` (Connect's purchase body field): declared once, taken by the operator (templated), the
    action and an outbox payload, and kept on the request Connect creates."""

    CONTACT = {"first_name": "Rita", "last_name": "Reseller", "email": "rita@example.com",
               "phone_number": "+1 2015550123"}  # fmt: skip
    TIER = {
        "name": "Demo Reseller", "external_id": "reseller-1",
        "contact_info": {"address_line1": "1 Demo Street", "city": "Springfield", "postal_code": "10001",
                         "country": "US", "contact": CONTACT},
    }  # fmt: skip

    def _purchase(self, external_id: str, **more: object) -> dict:
        return {
            "asset_external_id": external_id, "hub_id": "HB-0000-0001", "marketplace": "MP-00001",
            "item_id": "PRD-276-377-545-0001", "quantity": 1, "tier1": self.TIER, "customer": self.TIER,
            **more,
        }  # fmt: skip

    def test_the_operator_renders_it_and_connect_keeps_it(self, sandbox) -> None:
        from connect_provider.hooks.connect import ConnectHook

        op = ConnectPurchaseRequestOperator(task_id="buy", **self._purchase("note-1"), note="for {{ who }}")
        assert "note" in op.template_fields
        op.render_template_fields({"who": "Ada"})
        result = op.execute({})
        assert ConnectHook().get_request(result["request_id"])["note"] == "for Ada"

    def test_an_outbox_payload_carries_it_to_connect(self, sandbox) -> None:
        from connect_provider.hooks.connect import ConnectHook

        payload = self._purchase("note-2", note="from the outbox")
        result = actions.run_action(ConnectHook(), "purchase", payload)
        assert ConnectHook().get_request(result.request_id)["note"] == "from the outbox"

    def test_a_note_that_is_not_text_is_refused_before_any_call(self, sandbox) -> None:
        calls = sandbox.admin("GET", "stats")["calls"]
        with pytest.raises(ConnectValidationError, match=r"^note: "):
            request_arguments("purchase", self._purchase("note-3", note=42)).checked()
        assert sandbox.admin("GET", "stats")["calls"] == calls
