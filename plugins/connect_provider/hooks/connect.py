"""ConnectHook: the one place of the provider that speaks HTTP to CloudBlue Connect.

Why it exists rather than the official client: the official client retries only 5xx with a fixed
1 s sleep and never 429, keeps every page in memory by default, and does not tell a write whose
outcome is unknown from one that failed. Every operator, sensor, trigger and DAG goes through this
hook, so its behaviour under load, faults and bad input is the project's:

* pages are read lazily by ``limit``/``offset`` with the total from ``Content-Range``, one page in
  memory at a time, whatever the size of the collection;
* transport errors, timeouts and 5xx are retried with exponential back-off and full jitter, 429 waits
  for ``Retry-After`` (capped by ``max_wait``);
* a POST/PUT whose outcome is unknown (read timeout, connection dropped after sending, a gateway
  502/504) is never resent: :class:`ConnectAmbiguousWriteError` tells the caller to look before
  trying again (Connect has no idempotency key);
* every error says which call failed and what to do; the API key is registered with Airflow's
  secret masker and never formatted into a message, a log line or a repr.

Connection (type ``cloudblue_connect``): ``host`` = API base URL (default
:data:`connect_provider.CONNECT_API_BASE_URL`; a host without a path gets ``/public/v1``),
``password`` = API key with or without the ``ApiKey `` prefix, extras ``page_size`` (1-1000),
``timeout`` (read timeout, seconds), ``max_retries`` (0-20), ``max_wait`` (seconds, cap of one
back-off sleep including ``Retry-After``), ``verify_ssl`` (default true). Other extras keep the
HTTP provider's meaning (proxies, cert, extra headers).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import math
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from airflow.providers.http.hooks.http import HttpHook
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from connect_provider import CONNECT_API_BASE_URL, __version__
from connect_provider.config import DEFAULT_CONN_ID
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
from connect_provider.rql import R, as_rql, render_value, to_query_string
from connect_provider.rql import ordering as rql_ordering
from connect_provider.rql import select as rql_select

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_TIMEOUT",
    "USAGE_RECORDS_PAGE_SIZE",
    "ConnectHook",
    "RawPage",
    "parse_content_range",
    "parse_retry_after",
]

#: Page size of list calls when neither the call, the hook nor the connection sets one
#: (the official client's default).
DEFAULT_PAGE_SIZE = 100
#: Page size of usage-record reads when nothing else sets one: records are small and many.
USAGE_RECORDS_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000
#: Read timeout of one call, seconds.
DEFAULT_TIMEOUT = 60.0
#: Connecting never waits longer than this (or ``timeout`` if smaller).
CONNECT_TIMEOUT = 10.0
#: Retries after the first attempt, for transport errors, timeouts, 5xx and 429.
DEFAULT_MAX_RETRIES = 5
#: Cap of one back-off sleep, including a server's ``Retry-After``, seconds.
DEFAULT_MAX_WAIT = 60.0
#: First back-off ceiling; it doubles on every retry (full jitter: sleep uniform in [0, ceiling]).
BACKOFF_BASE = 0.5

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Gateway errors: the gateway lost or timed out on the backend, which may have applied the write.
_AMBIGUOUS_WRITE_STATUSES = frozenset({502, 504})
# The hook's own extras: read here, never sent as HTTP headers by HttpHook.
_OWN_EXTRAS = frozenset({"page_size", "timeout", "max_retries", "max_wait", "verify_ssl", "verify"})
_CONTENT_RANGE_RE = re.compile(r"^\s*items\s+(\d+)-(\d+)/(\d+)\s*$")
_ERRNO_RE = re.compile(r"\[Errno -?\d+\] [^'\")]+")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_MARKETPLACE_ID_RE = re.compile(r"MP-\d+(-\d+)*")
_USER_AGENT = f"airflow-provider-cloudblue-connect/{__version__}"


class RawPage(NamedTuple):
    """One page of a collection as Connect sent it, for consumers that parse bytes themselves.

    ``body`` is the JSON array as received, ``offset`` the index of its first item, ``count`` the
    number of items (from ``Content-Range``), ``total`` the size of the collection (``-1`` only if
    the server sent no ``Content-Range``).
    """

    body: bytes
    offset: int
    count: int
    total: int


@dataclass(frozen=True)
class _Settings:
    """Connection settings, read and validated once per hook. Holds no secret (it is logged)."""

    base_url: str
    page_size: int | None
    timeout: float
    max_retries: int
    max_wait: float
    verify_ssl: bool

    @property
    def connect_timeout(self) -> float:
        return min(CONNECT_TIMEOUT, self.timeout)


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``"items 0-99/1234"`` -> ``(0, 99, 1234)``; ``None`` if absent or not in that form."""
    if not value:
        return None
    match = _CONTENT_RANGE_RE.match(value)
    if not match:
        return None
    first, last, total = (int(g) for g in match.groups())
    return first, last, total


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; ``None`` if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        seconds = (when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _backoff_delay(retry_number: int, max_wait: float) -> float:
    """Full jitter: uniform in [0, min(max_wait, BACKOFF_BASE * 2**(retry_number-1))]."""
    ceiling = min(max_wait, BACKOFF_BASE * (2 ** (retry_number - 1)))
    return random.uniform(0.0, ceiling)


def _setting_source(name: str, conn_id: str | None) -> str:
    if conn_id is None:
        return f"ConnectHook argument {name}"
    return f"the extra {name!r} of connection {conn_id!r}"


def _int_setting(name: str, value: Any, low: int, high: int, conn_id: str | None) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    if number is None or not low <= number <= high:
        raise ConnectValidationError(
            name,
            f"{_setting_source(name, conn_id)} must be a whole number from {low} to {high}, got {value!r}",
        )
    return number


def _float_setting(name: str, value: Any, *, positive: bool, conn_id: str | None) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    ok = number is not None and math.isfinite(number) and (number > 0 if positive else number >= 0)
    if not ok:
        bound = "greater than 0" if positive else "0 or more"
        raise ConnectValidationError(
            name, f"{_setting_source(name, conn_id)} must be a number of seconds {bound}, got {value!r}"
        )
    return float(number)  # type: ignore[arg-type]


def _bool_setting(name: str, value: Any, conn_id: str | None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ConnectValidationError(
        name, f"{_setting_source(name, conn_id)} must be true or false, got {value!r}"
    )


def _resolve_base_url(conn: Any) -> str:
    host = (conn.host or "").strip()
    if not host:
        return CONNECT_API_BASE_URL
    if "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectValidationError(
            "host",
            f"the host of connection {conn.conn_id!r} must be the API base URL, e.g. {CONNECT_API_BASE_URL}",
        )
    netloc = parts.netloc
    if conn.port and parts.port is None:
        netloc = f"{netloc}:{conn.port}"
    path = parts.path.rstrip("/") or "/public/v1"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def _normalize_path(path: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise ConnectValidationError("path", "give a path relative to the API base, e.g. '/requests'")
    path = path.strip()
    if "://" in path or "?" in path or "#" in path:
        raise ConnectValidationError(
            "path",
            f"{path!r} must be a path relative to the API base (e.g. '/requests'); "
            "pass filters as query=... and parameters as params=...",
        )
    return path if path.startswith("/") else f"/{path}"


def _id_segment(value: Any, field: str) -> str:
    """An object id as one URL path segment; refuses ids that could step elsewhere (``..``, ``/``)."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value.strip()):
        raise ConnectValidationError(field, f"{value!r} is not a Connect id (e.g. PR-1234-5678-9012-001)")
    return quote(value.strip(), safe="")


def _nothing_sent(exc: BaseException) -> bool:
    """True when the request certainly never left: connecting failed (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (NewConnectionError, ConnectTimeoutError)):
            return True
        stack.append(getattr(current, "reason", None))
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        stack.append(current.__cause__)
        stack.append(current.__context__)
    return False


def _describe_transport_error(exc: BaseException, timeout: float) -> str:
    """A short cause without URLs or headers (the exception's own text repeats the URL)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connecting timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer within {timeout:g} s (read timeout)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the answer was cut off"
    if _nothing_sent(exc):
        errno = _ERRNO_RE.search(str(exc))
        return f"could not connect ({errno.group(0).strip() if errno else 'connection failed'})"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "the connection was dropped before an answer came"
    return type(exc).__name__


def _error_details(body: bytes) -> tuple[str | None, list[str], dict[str, Any]]:
    """Connect's ``error_code``, ``errors`` and (409) ``params`` of an error body, where present."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, [], {}
    if not isinstance(payload, dict):
        return None, [], {}
    code = payload.get("error_code")
    errors = payload.get("errors")
    if isinstance(errors, str):
        errors = [errors]
    elif not isinstance(errors, list):
        errors = []
    params = payload.get("params")
    return (
        (str(code) if code is not None else None),
        [str(e) for e in errors],
        dict(params) if isinstance(params, dict) else {},
    )


def _json_or_none(body: bytes, method: str, path: str) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ConnectAPIError(
            f"{method} {path}: Connect answered with something that is not JSON; "
            "check that the host of the connection is the API base URL",
            method=method,
            path=path,
        ) from exc


def _is_empty_array(body: bytes) -> bool:
    stripped = body.strip()
    return stripped == b"[]" or not stripped


def _signed_fields(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [f.strip() for f in value.split(",") if f.strip()]
    return list(value)


class ConnectHook(HttpHook):
    """Talk to the CloudBlue Connect public API (see the module docstring for the connection).

    :param connect_conn_id: the Airflow connection of type ``cloudblue_connect``.
    :param page_size: items per page of list calls; overrides the connection's ``page_size``.
    :param timeout: read timeout of one call in seconds; overrides the connection's ``timeout``.
    :param max_retries: retries after a transport error, timeout, 5xx or 429; overrides the connection.
    :param max_wait: cap of one back-off sleep in seconds (also caps ``Retry-After``).
    """

    conn_name_attr = "connect_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "cloudblue_connect"
    hook_name = "CloudBlue Connect"

    def __init__(
        self,
        connect_conn_id: str = default_conn_name,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_wait: float | None = None,
    ) -> None:
        super().__init__(method="GET", http_conn_id=connect_conn_id)
        self.connect_conn_id = connect_conn_id
        # Constructor arguments are checked now (no I/O); the connection is read on first use.
        self._page_size_arg = (
            None if page_size is None else _int_setting("page_size", page_size, 1, MAX_PAGE_SIZE, None)
        )
        self._timeout_arg = (
            None if timeout is None else _float_setting("timeout", timeout, positive=True, conn_id=None)
        )
        self._max_retries_arg = (
            None if max_retries is None else _int_setting("max_retries", max_retries, 0, 20, None)
        )
        self._max_wait_arg = (
            None if max_wait is None else _float_setting("max_wait", max_wait, positive=False, conn_id=None)
        )
        self._settings: _Settings | None = None
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(connect_conn_id={self.connect_conn_id!r})"

    # ------------------------------------------------------------------ settings and session

    def _settings_from(self, conn: Any) -> _Settings:
        extra = conn.extra_dejson or {}
        cid = self.connect_conn_id

        def pick(name: str, arg: Any, parse: Any, default: Any) -> Any:
            if arg is not None:
                return arg
            raw = extra.get(name)
            return default if raw is None or raw == "" else parse(raw)

        verify_raw = extra.get("verify_ssl", extra.get("verify"))
        return _Settings(
            base_url=_resolve_base_url(conn),
            page_size=pick(
                "page_size",
                self._page_size_arg,
                lambda v: _int_setting("page_size", v, 1, MAX_PAGE_SIZE, cid),
                None,
            ),
            timeout=pick(
                "timeout",
                self._timeout_arg,
                lambda v: _float_setting("timeout", v, positive=True, conn_id=cid),
                DEFAULT_TIMEOUT,
            ),
            max_retries=pick(
                "max_retries",
                self._max_retries_arg,
                lambda v: _int_setting("max_retries", v, 0, 20, cid),
                DEFAULT_MAX_RETRIES,
            ),
            max_wait=pick(
                "max_wait",
                self._max_wait_arg,
                lambda v: _float_setting("max_wait", v, positive=False, conn_id=cid),
                DEFAULT_MAX_WAIT,
            ),
            verify_ssl=True
            if verify_raw is None or verify_raw == ""
            else _bool_setting("verify_ssl", verify_raw, cid),
        )

    def _authorization(self, conn: Any) -> tuple[str, list[str]]:
        """The ``Authorization`` value and the strings to register with the secret masker."""
        raw = (conn.password or "").strip()
        key = raw[len("ApiKey ") :].strip() if raw[:7].lower() == "apikey " else raw
        if not key:
            raise ConnectValidationError(
                "password",
                f"connection {self.connect_conn_id!r} has no API key: put the key "
                "(ApiKey SU-...:...) in its password",
            )
        header = f"ApiKey {key}"
        secrets = {raw, key, header}
        if ":" in key:
            secrets.add(key.split(":", 1)[1])
        return header, [s for s in secrets if s]

    @property
    def settings(self) -> _Settings:
        """The validated settings (base URL, page size, timeout, retries, max wait, TLS): no secret."""
        if self._settings is None:
            self.get_conn()
        assert self._settings is not None
        return self._settings

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """The hook's one ``requests.Session`` (keep-alive), built on first use.

        Reads the connection once: validates the extras, sets ``Authorization: ApiKey ...`` and
        registers the key with Airflow's secret masker. Extras that are not the hook's own keep the
        HTTP provider's meaning (proxies, cert, extra headers).
        """
        if self._session is None:
            from airflow.sdk.log import mask_secret

            conn = self.get_connection(self.connect_conn_id)
            authorization, secrets = self._authorization(conn)
            for secret in secrets:
                mask_secret(secret)
            settings = self._settings_from(conn)
            self.base_url = settings.base_url
            self._base_url_initialized = True
            session = requests.Session()
            passthrough = {k: v for k, v in (conn.extra_dejson or {}).items() if k not in _OWN_EXTRAS}
            if passthrough:
                view = SimpleNamespace(
                    extra_dejson=passthrough, host=conn.host, extra=json.dumps(passthrough)
                )
                session = self._configure_session_from_extra(session, view, {})
            session.verify = settings.verify_ssl
            session = self._configure_session_from_mount_adapters(session)
            session.headers.update(
                {"Authorization": authorization, "Accept": "application/json", "User-Agent": _USER_AGENT}
            )
            self._settings = settings
            self._session = session
        if headers:
            self._session.headers.update(headers)
        return self._session

    def close(self) -> None:
        """Close the pooled connections (the hook opens a new session if used again)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def _redact(self, text: str) -> str:
        """Belt and braces: remove the key from text that came from the server before it is raised."""
        session = self._session
        authorization = session.headers.get("Authorization") if session is not None else None
        if isinstance(authorization, str):
            key = authorization[len("ApiKey ") :]
            for secret in (authorization, key, key.split(":", 1)[-1]):
                if len(secret) >= 4:
                    text = text.replace(secret, "***")
        return text

    # ------------------------------------------------------------------ the one request loop

    def _query_string(
        self,
        query: R | str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        select: str | Sequence[str] | None = None,
        ordering: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> str:
        terms: list[str] = []
        rql = as_rql(query)
        if rql:
            terms.append(to_query_string(rql))
        for key, value in (params or {}).items():
            R().n(key)  # validates the name as an RQL property
            terms.append(to_query_string(f"{key}={render_value(value, field=key)}"))
        if select_fields := _signed_fields(select):
            terms.append(to_query_string(rql_select(*select_fields)))
        if ordering_fields := _signed_fields(ordering):
            terms.append(to_query_string(rql_ordering(*ordering_fields)))
        if limit is not None:
            terms.append(f"limit={int(limit)}")
        if offset is not None:
            terms.append(f"offset={int(offset)}")
        return "&".join(terms)

    def _status_error(self, status: int, body: bytes, method: str, path: str, attempts: int) -> ConnectError:
        error_code, errors, params = _error_details(body)
        detail = f"{error_code} - {'; '.join(errors)}" if error_code or errors else ""
        detail = self._redact(detail)[:1000]
        where = f"{status} on {method} {path}"
        cid = self.connect_conn_id
        kwargs: dict[str, Any] = {
            "status": status,
            "error_code": error_code,
            "errors": [self._redact(e) for e in errors],
            "method": method,
            "path": path,
            "params": {str(k): self._redact(v) if isinstance(v, str) else v for k, v in params.items()},
        }
        if status == 401:
            return ConnectAuthError(
                f"{where}: the API key of connection {cid!r} was refused; "
                "check the password of that connection",
                **kwargs,
            )
        if status == 403:
            return ConnectAuthError(
                f"{where}: the API key of connection {cid!r} may not do this"
                f"{f' ({detail})' if detail else ''}; give its account the permission or use another key",
                **kwargs,
            )
        if status == 404:
            return ConnectNotFoundError(
                f"{where}: not found{f' ({detail})' if detail else ''}; check the id or path", **kwargs
            )
        if status == 409:
            return ConnectConflictError(
                f"{where}: Connect refused the call because it exists already"
                f"{f' ({detail})' if detail else ''}; the existing request is in the error's params",
                **kwargs,
            )
        if status == 429:
            return ConnectRateLimitError(
                f"{where}: Connect still rate-limited the call after {attempts} attempts; lower the load "
                f"(fewer parallel tasks in the API pool) or raise max_retries/max_wait of connection {cid!r}",
                **kwargs,
            )
        if status >= 500:
            return ConnectAPIError(
                f"{where}: Connect failed {attempts} time(s){f' ({detail})' if detail else ''}; "
                f"try again later or raise max_retries of connection {cid!r}",
                **kwargs,
            )
        return ConnectAPIError(
            f"{where}: Connect refused the call{f': {detail}' if detail else ''}; "
            "fix the request and run it again",
            **kwargs,
        )

    def _ambiguous(self, method: str, path: str, cause: str) -> ConnectAmbiguousWriteError:
        return ConnectAmbiguousWriteError(
            f"{method} {path}: {cause}, so Connect may or may not have applied the write; it was not "
            "resent: look for what it would have created (e.g. an open request of the asset) "
            "before trying again",
            method=method,
            path=path,
        )

    def _next_step(
        self,
        *,
        method: str,
        path: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        attempt: int,
        settings: _Settings,
    ) -> float | None:
        """Decide after an answer: ``None`` = done (2xx/3xx), a delay = retry, else raise."""
        attempts = settings.max_retries + 1
        if status < 400:
            return None
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if status == 429 or status >= 500:
            if method in _WRITE_METHODS and status in _AMBIGUOUS_WRITE_STATUSES:
                raise self._ambiguous(method, path, f"a gateway answered {status}")
            if attempt >= attempts:
                raise self._status_error(status, body, method, path, attempts)
            if retry_after is not None:
                delay, why = min(retry_after, settings.max_wait), "Retry-After"
            else:
                delay, why = _backoff_delay(attempt, settings.max_wait), "back-off"
            self.log.warning(
                "%s on %s %s (attempt %d of %d): retrying in %.2f s (%s)",
                status,
                method,
                path,
                attempt,
                attempts,
                delay,
                why,
            )
            return delay
        raise self._status_error(status, body, method, path, attempts)

    def _transport_failure(
        self, exc: BaseException, *, method: str, path: str, attempt: int, settings: _Settings
    ) -> float:
        """Decide after a transport error: a delay to retry, or raise."""
        attempts = settings.max_retries + 1
        cause = _describe_transport_error(exc, settings.timeout)
        if method in _WRITE_METHODS and not _nothing_sent(exc):
            raise self._ambiguous(method, path, cause) from None
        if attempt >= attempts:
            raise ConnectTransportError(
                f"{method} {path}: could not reach Connect at {settings.base_url} after {attempts} "
                f"attempt(s) (last: {cause}); check the host of connection {self.connect_conn_id!r} "
                "and the network, or raise its timeout/max_retries",
                method=method,
                path=path,
            ) from None
        delay = _backoff_delay(attempt, settings.max_wait)
        self.log.warning(
            "%s %s failed (%s; attempt %d of %d): retrying in %.2f s",
            method,
            path,
            cause,
            attempt,
            attempts,
            delay,
        )
        return delay

    def _request(
        self,
        method: str,
        path: str,
        *,
        query_string: str = "",
        json_body: Any = None,
        has_body: bool = False,
        retries: int | None = None,
    ) -> requests.Response:
        """Send one call with the retry policy; returns a 2xx/3xx response or raises a ConnectError.

        ``retries`` overrides the connection's ``max_retries`` for this call only.
        """
        method = method.upper()
        rel = _normalize_path(path)
        session = self.get_conn()
        settings = self.settings if retries is None else replace(self.settings, max_retries=retries)
        url = settings.base_url + rel + (f"?{query_string}" if query_string else "")
        shown = rel + (f"?{query_string}" if query_string else "")
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = session.request(
                    method,
                    url,
                    json=json_body if has_body else None,
                    timeout=(settings.connect_timeout, settings.timeout),
                )
            except requests.exceptions.SSLError:
                raise ConnectTransportError(
                    f"{method} {rel}: the TLS handshake with {urlsplit(settings.base_url).hostname} failed "
                    "(certificate not trusted?); fix the certificate or, for a local sandbox only, set the "
                    f"extra verify_ssl of connection {self.connect_conn_id!r} to false",
                    method=method,
                    path=rel,
                ) from None
            except requests.exceptions.RequestException as exc:
                self.log.debug("%s %s -> %s", method, shown, type(exc).__name__)
                time.sleep(
                    self._transport_failure(exc, method=method, path=rel, attempt=attempt, settings=settings)
                )
                continue
            body = response.content
            self.log.debug(
                "%s %s -> %s in %.0f ms (%d bytes)",
                method,
                shown,
                response.status_code,
                (time.monotonic() - started) * 1000,
                len(body),
            )
            delay = self._next_step(
                method=method,
                path=rel,
                status=response.status_code,
                headers=response.headers,
                body=body,
                attempt=attempt,
                settings=settings,
            )
            if delay is None:
                return response
            time.sleep(delay)

    # ------------------------------------------------------------------ generic calls

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, query: R | str | None = None) -> Any:
        """GET ``path`` (relative to the API base) and return the decoded JSON (``None`` if empty).

        ``params`` become ``name=value`` terms with values rendered safely; ``query`` is RQL.
        """
        rel = _normalize_path(path)
        response = self._request("GET", rel, query_string=self._query_string(query, params=params))
        return _json_or_none(response.content, "GET", rel)

    def post(self, path: str, json: Any = None) -> Any:
        """POST ``json`` (no body if ``None``).

        Raises ConnectAmbiguousWriteError, without resending, when the outcome is unknown.
        """
        rel = _normalize_path(path)
        response = self._request("POST", rel, json_body=json, has_body=json is not None)
        return _json_or_none(response.content, "POST", rel)

    def put(self, path: str, json: Any = None) -> Any:
        """PUT ``json``; like :meth:`post`, never resent once possibly applied."""
        rel = _normalize_path(path)
        response = self._request("PUT", rel, json_body=json, has_body=json is not None)
        return _json_or_none(response.content, "PUT", rel)

    def _page_size(self, page_size: int | None, default: int) -> int:
        if page_size is not None:
            return _int_setting("page_size", page_size, 1, MAX_PAGE_SIZE, None)
        return self.settings.page_size or default

    def iter_raw_pages(
        self,
        path: str,
        query: R | str | None = None,
        page_size: int | None = None,
        select: str | Sequence[str] | None = None,
        ordering: str | Sequence[str] | None = None,
        *,
        label: str | None = None,
        default_page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[RawPage]:
        """Yield the pages of a collection lazily as :class:`RawPage` (body bytes, offset, count, total).

        One page is in memory at a time. The offset advances by what the server actually sent, so a
        server that caps the page size is paged correctly; paging stops when the last item of the
        total is reached or a page is empty. Progress is logged at INFO as ``label: page i/n, x/y``.
        """
        rel = _normalize_path(path)
        size = self._page_size(page_size, default_page_size)
        what = label or rel
        offset = 0
        page_number = 0
        per_page = size
        while True:
            query_string = self._query_string(
                query, select=select, ordering=ordering, limit=size, offset=offset
            )
            response = self._request("GET", rel, query_string=query_string)
            body = response.content
            content_range = parse_content_range(response.headers.get("Content-Range"))
            if content_range is None:
                items = _json_or_none(body, "GET", rel)
                if not isinstance(items, list):
                    raise ConnectAPIError(
                        f"GET {rel}: expected a JSON array (a collection); check the path",
                        method="GET",
                        path=rel,
                    )
                count = len(items)
                total = offset + count if count < size else -1
                del items
            else:
                first, last, total = content_range
                count = 0 if total == 0 or first >= total or _is_empty_array(body) else last - first + 1
            if count == 0:
                if page_number == 0:
                    self.log.info("%s: no items", what)
                return
            page_number += 1
            per_page = max(per_page if page_number > 1 else count, count)
            done = offset + count
            self._log_progress(what, page_number, per_page, done, total)
            yield RawPage(body=body, offset=offset, count=count, total=total)
            offset = done
            if (total >= 0 and offset >= total) or (total < 0 and count < size):
                return

    def _log_progress(self, what: str, page_number: int, per_page: int, done: int, total: int) -> None:
        if total < 0:
            self.log.info("%s: page %d, %s so far", what, page_number, f"{done:,}")
            return
        pages = max(1, math.ceil(total / max(per_page, 1)))
        every = max(1, pages // 20)
        if page_number == 1 or page_number % every == 0 or done >= total:
            self.log.info("%s: page %d/%d, %s/%s", what, page_number, pages, f"{done:,}", f"{total:,}")

    def iter_pages(
        self,
        path: str,
        query: R | str | None = None,
        page_size: int | None = None,
        select: str | Sequence[str] | None = None,
        ordering: str | Sequence[str] | None = None,
        *,
        label: str | None = None,
        default_page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield a collection one decoded page (a list of objects) at a time; see :meth:`iter_raw_pages`."""
        rel = _normalize_path(path)
        for page in self.iter_raw_pages(
            rel, query, page_size, select, ordering, label=label, default_page_size=default_page_size
        ):
            items = json.loads(page.body)
            if not isinstance(items, list):
                raise ConnectAPIError(
                    f"GET {rel}: expected a JSON array (a collection); check the path", method="GET", path=rel
                )
            yield items

    def iter_items(
        self,
        path: str,
        query: R | str | None = None,
        page_size: int | None = None,
        select: str | Sequence[str] | None = None,
        ordering: str | Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield the objects of a collection one by one, reading pages lazily."""
        for page in self.iter_pages(path, query, page_size, select, ordering):
            yield from page

    def count(self, path: str, query: R | str | None = None, *, retries: int | None = None) -> int:
        """The size of a collection: one ``limit=0`` call, the total from ``Content-Range``."""
        rel = _normalize_path(path)
        response = self._request("GET", rel, query_string=self._query_string(query, limit=0), retries=retries)
        content_range = parse_content_range(response.headers.get("Content-Range"))
        if content_range is None:
            raise ConnectAPIError(
                f"GET {rel}: the answer has no Content-Range, so the collection cannot be counted; "
                "check that the path is a collection",
                method="GET",
                path=rel,
            )
        return content_range[2]

    # ------------------------------------------------------------------ requests

    def create_request(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /requests``. Never resent once possibly applied (see ConnectAmbiguousWriteError)."""
        if (
            not isinstance(payload, Mapping)
            or not payload.get("type")
            or not isinstance(payload.get("asset"), Mapping)
        ):
            raise ConnectValidationError(
                "payload", "a request needs a 'type' (purchase, change, ...) and an 'asset' object"
            )
        return self.post("/requests", json=dict(payload))

    def get_request(self, request_id: str) -> dict[str, Any]:
        """``GET /requests/{id}``; ConnectNotFoundError if there is none."""
        return self.get(f"/requests/{_id_segment(request_id, 'request_id')}")

    def list_requests(self, query: R | str | None = None) -> list[dict[str, Any]]:
        """All requests matching ``query`` (RQL), read page by page."""
        return list(self.iter_items("/requests", query))

    def approve_request(
        self, request_id: str, template_id: str, effective_date: dt.date | str | None = None
    ) -> dict[str, Any]:
        """``POST /requests/{id}/approve`` with the activation template (and effective date)."""
        segment = _id_segment(request_id, "request_id")
        body: dict[str, Any] = {"template_id": _id_segment(template_id, "template_id")}
        if effective_date is not None:
            body["effective_date"] = (
                effective_date.isoformat()
                if isinstance(effective_date, (dt.date, dt.datetime))
                else str(effective_date)
            )
        return self.post(f"/requests/{segment}/approve", json=body)

    def fail_request(self, request_id: str, reason: str) -> dict[str, Any]:
        """``POST /requests/{id}/fail`` with a reason (terminal)."""
        segment = _id_segment(request_id, "request_id")
        if not isinstance(reason, str) or not reason.strip():
            raise ConnectValidationError(
                "reason", "say why the request fails; Connect shows it to the customer"
            )
        return self.post(f"/requests/{segment}/fail", json={"reason": reason})

    def inquire_request(self, request_id: str, template_id: str | None = None) -> dict[str, Any]:
        """``POST /requests/{id}/inquire`` (optionally with an inquire template)."""
        segment = _id_segment(request_id, "request_id")
        body = {} if template_id is None else {"template_id": _id_segment(template_id, "template_id")}
        return self.post(f"/requests/{segment}/inquire", json=body)

    # ------------------------------------------------------------------ lookups

    def find_assets(
        self, external_id: str | None = None, external_uid: str | None = None, product_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Assets matching every criterion given (at least one is required)."""
        criteria = {"external_id": external_id, "external_uid": external_uid, "product__id": product_id}
        given = {k: v for k, v in criteria.items() if v is not None}
        if not given:
            raise ConnectValidationError(
                "external_id", "give external_id, external_uid or product_id to look assets up"
            )
        return list(self.iter_items("/assets", R(**given)))

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        """``GET /assets/{id}``; ConnectNotFoundError if there is none."""
        return self.get(f"/assets/{_id_segment(asset_id, 'asset_id')}")

    def find_marketplace(self, name_or_id: str) -> dict[str, Any]:
        """The marketplace with this id (``MP-...``) or exact name; ConnectNotFoundError if none."""
        if not isinstance(name_or_id, str) or not name_or_id.strip():
            raise ConnectValidationError("marketplace", "give a marketplace id (MP-...) or name")
        wanted = name_or_id.strip()
        by_id = bool(_MARKETPLACE_ID_RE.fullmatch(wanted))
        query = R().id.eq(wanted) if by_id else R().name.eq(wanted)
        found = list(self.iter_items("/marketplaces", query))
        if not found:
            raise ConnectNotFoundError(
                f"marketplace {wanted!r} not found: no marketplace has this {'id' if by_id else 'name'}; "
                "check the spelling (names match exactly) or use the id",
                path="/marketplaces",
                method="GET",
            )
        if len(found) > 1:
            ids = ", ".join(str(m.get("id")) for m in found)
            raise ConnectError(
                f"marketplace name {wanted!r} matches several marketplaces ({ids}); use the id"
            )
        return found[0]

    def find_tier_account(self, external_id: str, hub_id: str | None = None) -> dict[str, Any] | None:
        """The tier account with this external id (on hub ``hub_id``, when given), or ``None``."""
        if not isinstance(external_id, str) or not external_id.strip():
            raise ConnectValidationError("external_id", "give the tier account's external id")
        query = R(external_id=external_id.strip())
        if hub_id is not None:
            query = query & R(hub__id=hub_id)
        found = list(self.iter_items("/tier/accounts", query))
        if len(found) > 1:
            self.log.warning(
                "tier accounts with external_id %r: %s; using %s",
                external_id,
                ", ".join(str(a.get("id")) for a in found),
                found[0].get("id"),
            )
        return found[0] if found else None

    def find_connection(
        self, product_id: str, hub_id: str, connection_type: str = "production"
    ) -> dict[str, Any]:
        """The one connection of a product to a hub of this type (``production``/``test``/``preview``).

        ConnectNotFoundError when there is none; a ConnectError listing the ids when there are several
        (then the caller must name the connection).
        """
        product = _id_segment(product_id, "product_id")
        hub = _id_segment(hub_id, "hub_id")
        found = [
            c
            for c in self.iter_items(f"/products/{product}/connections", R(hub__id=hub))
            if c.get("type") == connection_type
        ]
        if not found:
            raise ConnectNotFoundError(
                f"product {product_id} has no {connection_type} connection to hub {hub_id}; "
                "check the hub id and the connection type, or create the connection in Connect",
                method="GET",
                path=f"/products/{product}/connections",
            )
        if len(found) > 1:
            ids = ", ".join(str(c.get("id")) for c in found)
            raise ConnectError(
                f"product {product_id} has several {connection_type} connections to hub {hub_id} ({ids}); "
                "name the connection id to use"
            )
        return found[0]

    # ------------------------------------------------------------------ usage

    def get_usage_file(self, usage_file_id: str) -> dict[str, Any]:
        """``GET /usage/files/{id}``; ConnectNotFoundError if there is none."""
        return self.get(f"/usage/files/{_id_segment(usage_file_id, 'usage_file_id')}")

    def iter_usage_record_raw_pages(
        self, usage_file_id: str, page_size: int | None = None
    ) -> Iterator[RawPage]:
        """The records of a usage file, page by page as raw JSON bytes (for fast Arrow parsing)."""
        _id_segment(usage_file_id, "usage_file_id")
        return self.iter_raw_pages(
            "/usage/records",
            R().usagefile.id.eq(usage_file_id.strip()),
            page_size,
            label=f"usage records of {usage_file_id.strip()}",
            default_page_size=USAGE_RECORDS_PAGE_SIZE,
        )

    def iter_usage_record_pages(
        self, usage_file_id: str, page_size: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """The records of a usage file, one decoded page at a time (every page, not just the first)."""
        _id_segment(usage_file_id, "usage_file_id")
        return self.iter_pages(
            "/usage/records",
            R().usagefile.id.eq(usage_file_id.strip()),
            page_size,
            label=f"usage records of {usage_file_id.strip()}",
            default_page_size=USAGE_RECORDS_PAGE_SIZE,
        )

    # ------------------------------------------------------------------ async (triggers)

    async def aget_request(self, request_id: str) -> dict[str, Any]:
        """``GET /requests/{id}`` without blocking the event loop (for triggers).

        The connection is read with the async-safe lookup and the key masked with ``amask_secret``.
        """
        return await self._aget(f"/requests/{_id_segment(request_id, 'request_id')}")

    async def _aget(self, path: str) -> Any:
        import aiohttp
        from airflow.sdk.log import amask_secret

        rel = _normalize_path(path)
        conn = await self.aget_connection(self.connect_conn_id)
        authorization, secrets = self._authorization(conn)
        for secret in secrets:
            await amask_secret(secret)
        settings = self._settings_from(conn)
        url = settings.base_url + rel
        timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_read=settings.timeout
        )
        headers = {"Authorization": authorization, "Accept": "application/json", "User-Agent": _USER_AGENT}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            attempt = 0
            while True:
                attempt += 1
                try:
                    async with session.get(url, ssl=settings.verify_ssl) as response:
                        body = await response.read()
                        status, response_headers = response.status, response.headers
                except aiohttp.ClientSSLError:
                    raise ConnectTransportError(
                        f"GET {rel}: the TLS handshake with {urlsplit(settings.base_url).hostname} failed; "
                        "fix the certificate or, for a local sandbox only, set verify_ssl of connection "
                        f"{self.connect_conn_id!r} to false",
                        method="GET",
                        path=rel,
                    ) from None
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    await asyncio.sleep(self._atransport_failure(exc, rel, attempt, settings))
                    continue
                self.log.debug("GET %s -> %s (%d bytes, async)", rel, status, len(body))
                delay = self._next_step(
                    method="GET",
                    path=rel,
                    status=status,
                    headers=response_headers,
                    body=body,
                    attempt=attempt,
                    settings=settings,
                )
                if delay is None:
                    return _json_or_none(body, "GET", rel)
                await asyncio.sleep(delay)

    def _atransport_failure(self, exc: BaseException, rel: str, attempt: int, settings: _Settings) -> float:
        attempts = settings.max_retries + 1
        cause = "no answer in time" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
        if attempt >= attempts:
            raise ConnectTransportError(
                f"GET {rel}: could not reach Connect at {settings.base_url} after {attempts} attempt(s) "
                f"(last: {cause}); check the host of connection {self.connect_conn_id!r} and the network",
                method="GET",
                path=rel,
            ) from None
        delay = _backoff_delay(attempt, settings.max_wait)
        self.log.warning(
            "GET %s failed (%s; attempt %d of %d): retrying in %.2f s", rel, cause, attempt, attempts, delay
        )
        return delay

    # ------------------------------------------------------------------ connection test

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call (``GET /marketplaces?limit=0``); says what is wrong if it fails.

        A single attempt, no retries: the button in the UI answers at once.
        """
        try:
            visible = self.count("/marketplaces", retries=0)
        except ConnectError as exc:
            return False, str(exc)
        except Exception as exc:  # the UI shows the message; never let a test raise
            return False, self._redact(f"{type(exc).__name__}: {exc}")
        return (
            True,
            f"Connected to {self.settings.base_url}: the API key was accepted "
            f"({visible} marketplaces visible)",
        )
