"""The error family: what survives pickling, what ``retryable`` says, what ``scrub`` removes."""

from __future__ import annotations

import pickle

import pytest
from connect_provider.exceptions import (
    ConnectAmbiguousWriteError,
    ConnectAPIError,
    ConnectAuthError,
    ConnectConflictError,
    ConnectError,
    ConnectNotFoundError,
    ConnectRateLimitError,
    ConnectTransportError,
    ConnectValidationError,
)

ERRORS = {
    "validation": ConnectValidationError("items[0].quantity", "must be a whole number"),
    "api-400": ConnectAPIError("400 on POST /requests", status=400, error_code="VAL_001", errors=["e"]),
    "api-503": ConnectAPIError("503 on GET /requests", status=503, method="GET", path="/requests"),
    "auth": ConnectAuthError("401 on GET /x", status=401),
    "not-found": ConnectNotFoundError("404 on GET /x", status=404),
    "conflict": ConnectConflictError("409 on POST /requests", status=409, params={"request_id": "PR-1"}),
    "rate-limit": ConnectRateLimitError("429 on GET /x", status=429),
    "ambiguous": ConnectAmbiguousWriteError("POST /requests: dropped", method="POST", path="/requests"),
    "transport": ConnectTransportError("GET /x: unreachable", method="GET", path="/x"),
    "tls": ConnectTransportError("GET /x: TLS", method="GET", path="/x", retryable=False),
    "lookup": ConnectError("marketplace name 'EU' matches several marketplaces"),
}
RETRYABLE = {
    "validation": False,
    "api-400": False,
    "api-503": True,
    "auth": False,
    "not-found": False,
    "conflict": False,
    "rate-limit": True,
    "ambiguous": False,
    "transport": True,
    "tls": False,
    "lookup": False,
}


class TestPickling:
    """Airflow ships exceptions between processes: class, message and every attribute survive."""

    @pytest.mark.parametrize("name", list(ERRORS), ids=list(ERRORS))
    def test_an_error_comes_back_whole(self, name: str) -> None:
        error = ERRORS[name]
        clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
        assert type(clone) is type(error)
        assert (str(clone), vars(clone)) == (str(error), vars(error))


class TestRetryable:
    """``retryable``: may the same call succeed later as it is."""

    @pytest.mark.parametrize("name", list(ERRORS), ids=list(ERRORS))
    def test_each_kind_of_error_says_whether_to_try_again(self, name: str) -> None:
        assert ERRORS[name].retryable is RETRYABLE[name]


class TestScrub:
    """``scrub`` passes every text of an error through a redaction and drops chained causes."""

    SECRET = "s3cret-value"

    def redact(self, text: str) -> str:
        return text.replace(self.SECRET, "***")

    def test_message_errors_code_and_nested_params_are_redacted(self) -> None:
        error = ConnectConflictError(
            f"409 on POST /requests ({self.SECRET})",
            status=409,
            error_code=f"E {self.SECRET}",
            errors=[f"a {self.SECRET}"],
            params={"echo": self.SECRET, "nested": {"list": [self.SECRET, 1]}, self.SECRET: True},
        )
        assert error.scrub(self.redact) is error
        text = repr((str(error), error.args, vars(error)))
        assert self.SECRET not in text
        assert error.params == {"echo": "***", "nested": {"list": ["***", 1]}, "***": True}
        assert (error.status, error.retryable) == (409, False)

    def test_chained_causes_are_dropped(self) -> None:
        try:
            try:
                raise ValueError(f"below the hook: {self.SECRET}")
            except ValueError as cause:
                raise ConnectTransportError("GET /x: unreachable") from cause
        except ConnectTransportError as error:
            caught = error
        caught.scrub(self.redact)
        assert caught.__cause__ is None and caught.__context__ is None and caught.__suppress_context__


class TestWhatATaskRetryCanChange:
    """Above the hook, retries are decided by class and ``retryable``: bad input fails a task at
    once (an ``AirflowFailException``, whatever the DAG's ``retries``); a 408 may succeed later."""

    def test_bad_input_fails_the_task_without_retries(self) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        error = ConnectValidationError("quantity", "must be a whole number")
        assert isinstance(error, AirflowFailException) and isinstance(error, ValueError)
        assert isinstance(pickle.loads(pickle.dumps(error)), AirflowFailException)  # noqa: S301

    @pytest.mark.parametrize(
        ("status", "retryable"), [(400, False), (404, False), (408, True), (429, True), (502, True)],
        ids=["400", "404", "408", "429", "502"],
    )  # fmt: skip
    def test_an_answer_is_retryable_when_the_same_call_may_succeed_later(
        self, status: int, retryable: bool
    ) -> None:
        assert ConnectAPIError(f"{status} on GET /x", status=status).retryable is retryable
