"""The provider declares itself to Airflow: entry point, connection type and its form."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

import connect_provider
import pytest
from connect_provider import CONNECT_API_BASE_URL, get_provider_info


def _our_entry_point():
    group = entry_points(group="apache_airflow_provider")
    ours = [ep for ep in group if ep.value.startswith("connect_provider")]
    assert len(ours) == 1, ours
    return ours[0]


def _connection_type() -> dict:
    (conn_type,) = get_provider_info()["connection-types"]
    return conn_type


def test_the_entry_point_returns_the_provider_info() -> None:
    assert _our_entry_point().load()() == get_provider_info()


def test_package_name_equals_the_distribution_name() -> None:
    # ProvidersManager refuses a provider whose package-name differs from its distribution.
    ep = _our_entry_point()
    assert ep.dist is not None
    assert get_provider_info()["package-name"] == ep.dist.name == "airflow-provider-cloudblue-connect"
    assert connect_provider.__version__ in get_provider_info()["versions"]


def test_connection_type_is_cloudblue_connect_with_the_hook_class() -> None:
    conn_type = _connection_type()
    assert conn_type["connection-type"] == "cloudblue_connect"
    assert conn_type["hook-class-name"] == "connect_provider.hooks.connect.ConnectHook"


def test_form_relabels_the_password_as_api_key_and_hides_unused_fields() -> None:
    behaviour = _connection_type()["ui-field-behaviour"]
    assert behaviour["relabeling"]["password"] == "API key"
    assert behaviour["placeholders"]["host"] == CONNECT_API_BASE_URL
    assert {"login", "schema", "port"} <= set(behaviour["hidden-fields"])


def test_conn_fields_declare_page_size_and_timeout_as_json_schema() -> None:
    fields = _connection_type()["conn-fields"]
    assert fields["page_size"]["schema"]["type"] == ["integer", "null"]
    assert fields["timeout"]["schema"]["type"] == ["number", "null"]
    assert fields["max_concurrency"]["schema"] == {"type": ["integer", "null"], "minimum": 1, "maximum": 32}
    for name, spec in fields.items():
        assert spec["label"], name
        assert "schema" in spec, name


def test_providers_manager_lists_the_connection_type_and_its_form() -> None:
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert "airflow-provider-cloudblue-connect" in pm.providers
    hook_info = pm.hooks.get("cloudblue_connect")
    assert hook_info is not None, "cloudblue_connect missing from ProvidersManager().hooks"
    assert hook_info.hook_class_name == "connect_provider.hooks.connect.ConnectHook"
    assert hook_info.connection_id_attribute_name == "connect_conn_id"
    widgets = pm.connection_form_widgets
    assert any(key.endswith("page_size") for key in widgets), sorted(widgets)[:20]
    assert pm.field_behaviours["cloudblue_connect"]["relabeling"]["password"] == "API key"


class TestSingleSources:
    """Each fact is written once: the version, the portal option, the id pattern, the templated conn id."""

    def test_the_version_is_the_installed_distributions(self) -> None:
        from importlib.metadata import version

        installed = version("airflow-provider-cloudblue-connect")
        assert connect_provider.__version__ == installed
        source = Path(connect_provider.__file__).read_text()
        assert f'__version__ = "{installed}"' not in source, "read from package metadata, not written"

    def test_portal_url_is_declared_in_the_config_section(self) -> None:
        from connect_provider import CONNECT_PORTAL_URL

        option = get_provider_info()["config"]["connect"]["options"]["portal_url"]
        assert (option["type"], option["default"]) == ("string", CONNECT_PORTAL_URL)
        assert option["description"] and option["example"] and option["version_added"]

    def test_airflow_knows_the_portal_url_option_from_the_provider(self) -> None:
        from airflow.providers_manager import ProvidersManager

        sections = ProvidersManager().provider_configs
        options = dict(sections)["airflow-provider-cloudblue-connect"]["connect"]["options"]
        assert "portal_url" in options

    @pytest.mark.parametrize(
        "operator",
        [
            "operators.requests.ConnectPurchaseRequestOperator",
            "operators.requests.ConnectChangeRequestOperator",
            "operators.requests.ConnectSuspendResumeRequestOperator",
            "operators.requests.ConnectCancelRequestOperator",
            "operators.requests.ConnectApproveRequestOperator",
            "operators.requests.ConnectFailRequestOperator",
            "operators.requests.ConnectInquireRequestOperator",
            "operators.usage.ConnectGetUsageRecordsOperator",
            "operators.usage.ConnectUsageRecordsToParquetOperator",
            "sensors.requests.ConnectRequestSensor",
        ],
        ids=lambda name: name.rsplit(".", 1)[1],
    )
    def test_every_operator_and_sensor_renders_its_connection_id(self, operator: str) -> None:
        module, name = f"connect_provider.{operator}".rsplit(".", 1)
        assert "connect_conn_id" in getattr(importlib.import_module(module), name).template_fields

    @pytest.mark.parametrize(
        "text",
        ["MP-00001", "MP-1-2", "MP-12a", "EU Marketplace"],
        ids=["an id", "dashed", "letters", "a name"],
    )
    def test_the_hook_looks_up_by_id_exactly_what_the_checks_call_an_id(self, text: str) -> None:
        from connect_provider import validation
        from connect_provider.hooks import connect

        assert connect.MARKETPLACE_ID_RE is validation.MARKETPLACE_ID_RE
        assert bool(validation.MARKETPLACE_ID_RE.fullmatch(text)) is (text == "MP-00001")
