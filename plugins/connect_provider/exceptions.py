"""The one exception family of the provider.

Every exception of the provider is here, in one family under :class:`ConnectError` (the usage
exporter's internal :class:`PageFormatError` aside): the hook's (validation, API answers,
transport, ambiguous writes), the look-ups' (:class:`ConnectLookupError`: none or several found),
the actions' (a request in the wrong status, a request that ended without success) and the
outbox's (its database or table).

Every message says what failed and what to do about it. None ever contains the API key: messages
are built from the method, the path relative to the API base, the status and Connect's own
``error_code``/``errors``, never from headers or the connection's password, and the hook scrubs
every error it raises once more against the connection's key (:meth:`ConnectError.scrub`), because
Connect's answers are text the server chose (a gateway may echo the request's ``Authorization``).

``retryable`` says whether the same call may succeed later without any change on the caller's
side, so that code above the hook decides by attribute, not by class: True for transport errors
(Connect unreachable), 5xx and 429 after the hook's own retries; False for bad input, refused
keys, missing objects, other 4xx, conflicts, and writes whose outcome is unknown (those must be
looked up before anything is tried again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from airflow.exceptions import AirflowException
from airflow.sdk.exceptions import AirflowFailException

_E = TypeVar("_E", bound="ConnectError")


def _scrub_value(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_scrub_value(k, redact): _scrub_value(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(v, redact) for v in value)
    return value


def _restore(cls: type[ConnectError], args: tuple[Any, ...], state: dict[str, Any]) -> ConnectError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class ConnectError(AirflowException):
    """Base class of every error this provider raises about CloudBlue Connect."""

    #: Whether the same call may succeed later as it is (see the module docstring).
    retryable: bool = False

    def scrub(self: _E, redact: Callable[[str], str]) -> _E:
        """Pass the message and every text attribute through ``redact``, and drop chained causes.

        In place, and returns the error, so ``raise error.scrub(redact)`` works. Chained exceptions
        go because they are still reachable from the error (``__context__`` even after ``from
        None``) and a transport library's exception holds the request that was sent, headers
        included.
        """
        self.args = tuple(_scrub_value(a, redact) for a in self.args)
        for name, value in list(vars(self).items()):
            setattr(self, name, _scrub_value(value, redact))
        self.__cause__ = None
        self.__context__ = None
        self.__suppress_context__ = True
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep keyword-only attributes across pickling (Airflow ships exceptions between processes).
        return (_restore, (type(self), self.args, dict(vars(self))))


class ConnectValidationError(ConnectError, ValueError, AirflowFailException):
    """Input that can be checked locally is wrong; raised before any API call.

    ``field`` names the offending argument (e.g. ``items[0].quantity``) so the caller can fix it.
    It is an ``AirflowFailException``: no task retry can change the input, so the task fails at
    once, whatever the DAG's ``retries`` (decided by this class, not by each DAG).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ConnectAPIError(ConnectError):
    """Connect answered with an error status.

    ``error_code`` and ``errors`` are Connect's own (``{"error_code": ..., "errors": [...]}``);
    ``params`` is the ``params`` object some answers add (a 409 names the request and asset that
    already exist: ``request_id``, ``asset_id``, ``request_status``, ``asset_status``), ``{}`` when
    there is none. ``retryable`` is True for 5xx and 429 (the hook retried them already) and 408.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        errors: list[str] | None = None,
        method: str | None = None,
        path: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.errors = list(errors or [])
        self.params = dict(params or {})
        self.method = method
        self.path = path
        # 408 (request timeout) too: the server gave up waiting, the same call may well succeed.
        self.retryable = status is not None and (status in (408, 429) or status >= 500)
        super().__init__(message)


class ConnectAuthError(ConnectAPIError):
    """401/403: the API key was refused or lacks permission."""


class ConnectNotFoundError(ConnectAPIError):
    """404, or a lookup (asset, marketplace, connection...) that found nothing."""


class ConnectConflictError(ConnectAPIError):
    """409: Connect refuses a create because what it would make exists already.

    Connect answers a duplicate create, and a request for a state the asset is already in (resume
    of an active asset, suspend of a suspended one, cancel of a terminating one), with 409 and a
    ``params`` object naming the existing request and asset (``request_id``, ``asset_id``,
    ``request_status``, ``asset_status``): see CloudBlue's connect-extension-for-cb-commerce,
    ``cbcext/services/fulfillment/base.py`` and ``purchase.py``. The actions treat a 409 that names
    a request as that request (``reused``).
    """

    def reworded(self, message: str) -> ConnectConflictError:
        """The same refusal (status, Connect's errors and ``params``) told the caller's way."""
        return ConnectConflictError(
            message,
            status=self.status,
            error_code=self.error_code,
            errors=self.errors,
            method=self.method,
            path=self.path,
            params=self.params,
        )


class ConnectRateLimitError(ConnectAPIError):
    """429 answers went on past the configured attempts or maximum wait."""


class ConnectAmbiguousWriteError(ConnectError):
    """A POST was sent but its outcome is unknown (timeout or connection dropped after sending).

    It is never resent blindly, and is not ``retryable``: the caller must look for what the write
    may have created before trying again (the operators look for an open request of the same type
    for the same asset).
    """

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None) -> None:
        self.method = method
        self.path = path
        super().__init__(message)


class ConnectTransportError(ConnectError):
    """Connect could not be reached (connection refused, DNS, TLS, timeouts) after every attempt.

    Nothing was answered, so there is no status; ``method`` and ``path`` say which call failed.
    Raised for reads, and for writes only when nothing was sent (otherwise the outcome is unknown
    and :class:`ConnectAmbiguousWriteError` is raised instead). ``retryable`` is True, except when
    waiting cannot help (a TLS certificate that is not trusted, a server that does not speak TLS).
    """

    def __init__(
        self, message: str, *, method: str | None = None, path: str | None = None, retryable: bool = True
    ) -> None:
        self.method = method
        self.path = path
        self.retryable = retryable
        super().__init__(message)


class ConnectLookupError(ConnectError):
    """A look-up (asset, marketplace, connection, purchase...) found none, or several, of ``what``.

    ``what`` names the kind of object, ``looked_for`` the criteria (``{"external_id": "sub-1"}``),
    ``candidates`` the ids found when there were several (empty when none), and ``kind`` says
    which: :data:`NOT_FOUND` (:class:`ConnectLookupNotFoundError`, also a
    :class:`ConnectNotFoundError`) or :data:`AMBIGUOUS` (:class:`ConnectAmbiguousLookupError`).
    Not ``retryable``: the same look-up finds the same until the data changes, so an outbox row is
    rejected with the message, which says how to choose.
    """

    NOT_FOUND: ClassVar[str] = "not_found"
    AMBIGUOUS: ClassVar[str] = "ambiguous"
    kind: ClassVar[str]

    def __init__(
        self,
        message: str,
        *,
        what: str,
        looked_for: Mapping[str, Any],
        candidates: Sequence[str] = (),
        **api: Any,
    ) -> None:
        self.what = what
        self.looked_for = dict(looked_for)
        self.candidates = list(candidates)
        super().__init__(message, **api)


class ConnectLookupNotFoundError(ConnectLookupError, ConnectNotFoundError):
    """A look-up found nothing (also a :class:`ConnectNotFoundError`, as a 404 is)."""

    kind: ClassVar[str] = ConnectLookupError.NOT_FOUND


class ConnectAmbiguousLookupError(ConnectLookupError):
    """A look-up found several where one was needed; ``candidates`` are their ids."""

    kind: ClassVar[str] = ConnectLookupError.AMBIGUOUS

    def with_hint(self, hint: str) -> ConnectAmbiguousLookupError:
        """The same error, its message ending with how the caller chooses (``pass connection_id``)."""
        return type(self)(
            f"{self} ({hint})", what=self.what, looked_for=self.looked_for, candidates=self.candidates
        )


class ConnectRequestStateError(ConnectError):
    """The request is not in a status that allows the asked vendor decision."""


class ConnectRequestFailedError(ConnectError, AirflowFailException):
    """The request ended without success (failed, revoked, or inquiring where that counts as failure).

    It is the vendor's answer, not a glitch: retrying the task would only read the same answer, so
    it fails the task without retries (``AirflowFailException``).
    """

    def __init__(self, message: str, *, request_id: str, status: str, reason: str | None = None) -> None:
        self.request_id = request_id
        self.status = status
        self.reason = reason
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_failed, (str(self), self.request_id, self.status, self.reason))


def _rebuild_failed(
    message: str, request_id: str, status: str, reason: str | None
) -> ConnectRequestFailedError:
    return ConnectRequestFailedError(message, request_id=request_id, status=status, reason=reason)


class OutboxError(ConnectError):
    """The outbox database is missing, misconfigured or lacks the table."""


class PageFormatError(ValueError):
    """A usage page is not a JSON array of objects at all: a protocol error, not a bad record.

    Internal to the usage exporter, which turns it into a :class:`ConnectError` naming the page.
    """
