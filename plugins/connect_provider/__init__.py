"""Apache Airflow provider for CloudBlue Connect.

Airflow discovers this package through the ``apache_airflow_provider`` entry point, which returns
:func:`get_provider_info`. That dictionary is the provider's one declaration: the connection type,
its form (declarative ``ui-field-behaviour`` and ``conn-fields``, Airflow 3.2+), and the modules
that hold hooks, operators, sensors and triggers, and the ``[connect]`` options it reads.

The version is the installed distribution's (package metadata), written once, in ``pyproject.toml``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

DISTRIBUTION = "airflow-provider-cloudblue-connect"
try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # pragma: no cover - imported from a source tree that is not installed
    __version__ = "0+unknown"

CONNECT_API_BASE_URL = "https://api.connect.cloudblue.com/public/v1"
#: Portal of the production Connect: the default of ``[connect] portal_url``. Requests open at
#: ``<portal>/subscriptions/fulfillment/<id>`` (the path CloudBlue's own extensions link to).
CONNECT_PORTAL_URL = "https://portal.connect.cloudblue.com"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (read once per process)."""
    return {
        "package-name": DISTRIBUTION,
        "name": "CloudBlue Connect",
        "description": "Create and follow CloudBlue Connect subscription requests; export usage records.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "CloudBlue Connect",
                "external-doc-url": "https://connect.cloudblue.com/community/api/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": "CloudBlue Connect", "python-modules": ["connect_provider.hooks.connect"]}
        ],
        "operators": [
            {
                "integration-name": "CloudBlue Connect",
                "python-modules": [
                    "connect_provider.operators.requests",
                    "connect_provider.operators.usage",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "CloudBlue Connect",
                "python-modules": ["connect_provider.sensors.requests"],
            }
        ],
        "triggers": [
            {
                "integration-name": "CloudBlue Connect",
                "python-modules": ["connect_provider.triggers.requests"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "connect_provider.hooks.connect.ConnectHook",
                "hook-name": "CloudBlue Connect",
                "connection-type": "cloudblue_connect",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"host": "API base URL", "password": "API key"},
                    "placeholders": {
                        "host": CONNECT_API_BASE_URL,
                        "password": "ApiKey SU-000-000-000:0123456789abcdef",
                    },
                },
                "conn-fields": {
                    "page_size": {
                        "label": "Page size",
                        "description": "Records per page when listing collections (1-1000).",
                        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Read timeout of one HTTP call to Connect.",
                        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
                    },
                    "max_retries": {
                        "label": "Retry attempts",
                        "description": "Attempts after a transport error, a 5xx or a 429.",
                        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
                    },
                    "max_wait": {
                        "label": "Maximum wait (seconds)",
                        "description": "Cap on one back-off sleep, including a server's Retry-After.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "max_concurrency": {
                        "label": "Pages side by side",
                        "description": "Page calls one listing makes at once after the first page (1-32).",
                        "schema": {"type": ["integer", "null"], "minimum": 1, "maximum": 32},
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificates",
                        "description": "Leave on for the real Connect; turn off only for a local sandbox.",
                        "schema": {"type": ["boolean", "null"]},
                    },
                },
            }
        ],
        "extra-links": ["connect_provider.operators.requests.ConnectRequestLink"],
        "config": {
            "connect": {
                "description": "Options of the CloudBlue Connect provider.",
                "options": {
                    "portal_url": {
                        "description": "Base URL of the Connect portal the operators' *Connect request* "
                        "links open (``<portal_url>/subscriptions/fulfillment/<request id>``); set it for a "
                        "portal other than the production one.\n",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "https://portal.connect.example.com",
                        "default": CONNECT_PORTAL_URL,
                    }
                },
            }
        },
    }
