"""The one exception family of the provider.

Every message says what failed and what to do about it. None ever contains the API key: messages
are built from the method, the path relative to the API base, the status and Connect's own
``error_code``/``errors``, never from headers or the connection's password.
"""

from __future__ import annotations

from typing import Any

from airflow.exceptions import AirflowException


class ConnectError(AirflowException):
    """Base class of every error this provider raises about CloudBlue Connect."""


class ConnectValidationError(ConnectError, ValueError):
    """Input that can be checked locally is wrong; raised before any API call.

    ``field`` names the offending argument (e.g. ``items[0].quantity``) so the caller can fix it.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ConnectAPIError(ConnectError):
    """Connect answered with an error status.

    ``error_code`` and ``errors`` are Connect's own (``{"error_code": ..., "errors": [...]}``);
    ``params`` is the ``params`` object some answers add (a 409 names the request and asset that
    already exist: ``request_id``, ``asset_id``, ``request_status``, ``asset_status``), ``{}`` when
    there is none.
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
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep keyword-only attributes across pickling (Airflow ships exceptions between processes).
        return (
            _rebuild,
            (
                type(self),
                str(self),
                {
                    "status": self.status,
                    "error_code": self.error_code,
                    "errors": self.errors,
                    "method": self.method,
                    "path": self.path,
                    "params": self.params,
                },
            ),
        )


def _rebuild(cls: type[ConnectAPIError], message: str, kwargs: dict[str, Any]) -> ConnectAPIError:
    return cls(message, **kwargs)


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


class ConnectRateLimitError(ConnectAPIError):
    """429 answers went on past the configured attempts or maximum wait."""


class ConnectAmbiguousWriteError(ConnectError):
    """A POST was sent but its outcome is unknown (timeout or connection dropped after sending).

    It is never resent blindly: the caller must look for what the write may have created before
    trying again (the operators look for an open request of the same type for the same asset).
    """

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None) -> None:
        self.method = method
        self.path = path
        super().__init__(message)


class ConnectTransportError(ConnectError):
    """Connect could not be reached (connection refused, DNS, TLS, timeouts) after every attempt.

    Nothing was answered, so there is no status; ``method`` and ``path`` say which call failed.
    Raised for reads, and for writes only when nothing was sent (otherwise the outcome is unknown
    and :class:`ConnectAmbiguousWriteError` is raised instead).
    """

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None) -> None:
        self.method = method
        self.path = path
        super().__init__(message)
