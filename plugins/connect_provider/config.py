"""Project-wide defaults that are not connection settings."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONN_ID = "cloudblue_connect_default"
CHANGES_DB_CONN_ID = "connect_changes_db"
API_POOL = "cloudblue_connect_api"


def data_dir() -> Path:
    """The local data folder: ``$CONNECT_DATA_DIR``, else ``$AIRFLOW_HOME/connect_data``.

    It holds the default SQLite outbox, the usage Parquet dataset and its manifest, so a project
    run on the embedded defaults keeps everything it writes in one place.
    """
    explicit = os.environ.get("CONNECT_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "connect_data"
