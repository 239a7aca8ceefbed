"""The provider declares itself to Airflow: entry point, connection type and its form."""

from __future__ import annotations

from importlib.metadata import entry_points

import connect_provider
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
