"""The changes DAG's parse-time settings (connect_project.settings), from the environment."""

from __future__ import annotations

import pytest
from connect_project import settings
from connect_provider.exceptions import (
    ConnectValidationError,
)
from connect_provider.outbox import processing


def test_dag_settings_come_from_the_environment_with_safe_defaults() -> None:
    defaults = settings.DagSettings.from_env({})
    assert defaults.schedule == "*/5 * * * *" and defaults.chunk_size == processing.DEFAULT_CHUNK_SIZE
    custom = settings.DagSettings.from_env(
        {"CONNECT_CHANGES_SCHEDULE": "none", "CONNECT_CHANGES_CHUNK_SIZE": "25"}
    )
    assert (custom.schedule, custom.chunk_size) == (None, 25)
    with pytest.raises(ConnectValidationError, match="CONNECT_CHANGES_BATCH_SIZE"):
        settings.DagSettings.from_env({"CONNECT_CHANGES_BATCH_SIZE": "lots"})


class TestTheMissingChecksBound:
    """``max_missing_checks`` of the changes DAG comes from the environment, checked by name."""

    @pytest.mark.parametrize(
        ("environ", "expected"),
        [({}, 5), ({"CONNECT_CHANGES_MAX_MISSING_CHECKS": "12"}, 12)],
        ids=["default", "from the environment"],
    )
    def test_the_bound_is_a_dag_setting(self, environ: dict, expected: int) -> None:
        assert settings.DagSettings.from_env(environ).max_missing_checks == expected

    def test_a_bound_that_is_not_a_positive_whole_number_is_refused_by_name(self) -> None:
        with pytest.raises(ConnectValidationError, match="CONNECT_CHANGES_MAX_MISSING_CHECKS"):
            settings.DagSettings.from_env({"CONNECT_CHANGES_MAX_MISSING_CHECKS": "0"})


class TestTheChunksConcurrency:
    """The rows a ``submit_chunk`` task works on side by side: a parse-time setting, since the task
    takes as many slots of its pool (``pool_slots`` is fixed when the DAG is parsed)."""

    def test_the_default_is_the_connections_max_concurrency_default(self) -> None:
        from connect_provider.hooks.paging import DEFAULT_MAX_CONCURRENCY

        assert settings.DagSettings.from_env({}).concurrency == processing.DEFAULT_CONCURRENCY
        assert processing.DEFAULT_CONCURRENCY == DEFAULT_MAX_CONCURRENCY

    def test_it_comes_from_the_environment_checked_by_name(self) -> None:
        assert settings.DagSettings.from_env({"CONNECT_CHANGES_CONCURRENCY": "2"}).concurrency == 2
        with pytest.raises(ConnectValidationError, match="CONNECT_CHANGES_CONCURRENCY"):
            settings.DagSettings.from_env({"CONNECT_CHANGES_CONCURRENCY": "0"})
