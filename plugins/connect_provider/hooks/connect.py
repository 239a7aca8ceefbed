"""ConnectHook: the one place of the provider that speaks HTTP to CloudBlue Connect.

Why it exists rather than the official client: the official client retries only 5xx with a fixed
1 s sleep and never 429, keeps every page in memory by default, and does not tell a write whose
outcome is unknown from one that failed. Every operator, sensor, trigger and DAG goes through this
hook, so its behaviour under load, faults and bad input is the project's:

* pages are read lazily by ``limit``/``offset`` with the total from ``Content-Range``; once the
  first page tells the total, up to ``max_concurrency`` next pages are asked for side by side
  (each worker thread with its own session) and handed on in order, at most ``concurrency + 1``
  pages in memory whatever the size of the collection; a 429 halves that window;
* one retry policy (:class:`~connect_provider.hooks.retry.RetryPolicy`, in its own module; its
  ``decide()`` judges every answer and every transport error) for the synchronous calls and the
  async one of the triggers: transport errors, timeouts and 5xx are retried with exponential
  back-off and full jitter, 429 waits for ``Retry-After`` (capped by ``max_wait``);
* a POST/PUT whose outcome is unknown (read timeout, connection dropped after sending, a gateway
  502/504) is never resent: :class:`ConnectAmbiguousWriteError` tells the caller to look before
  trying again (Connect has no idempotency key);
* every error says which call failed and what to do; what can be checked locally (the host, the
  key, the extras, ids, bodies) is checked before any call and names the field;
* the API key never leaves: it is registered with Airflow's secret masker, never formatted into a
  message, and every error the hook raises - sync or async - and every line it logs is scrubbed of
  every form of the key (header value, bare key, secret part) taken from the connection itself,
  because Connect's answers are text the server chose and some servers and gateways echo the
  ``Authorization`` header; chained exceptions are dropped (a transport library's exception holds
  the request that was sent, headers included).

Why a :class:`~airflow.sdk.BaseHook` that owns its ``requests.Session``, not the HTTP provider's
``HttpHook``: the hook needs its own base-URL rules, its own retry policy, an async path the
triggers can use, and the HTTP provider's extras applied the same way on both paths. ``HttpHook``
offers none of that through public methods (its ``get_conn`` sends every unknown extra - ours too -
as a header and builds a new session per call; its session setup is private), and reaching into
its private attributes broke with each provider release. The extras users rely on keep the HTTP
provider's meaning here, on the sync and the async path alike: ``proxies`` (or ``proxy``),
``cert``, ``trust_env``, ``max_redirects``, and any other extra as an extra HTTP header.

Connection (type ``cloudblue_connect``): ``host`` = API base URL (default
:data:`connect_provider.CONNECT_API_BASE_URL`; a host without a path gets ``/public/v1``; a host
without a scheme gets ``https://``, or the connection's ``schema`` as the HTTP provider reads it),
``password`` = API key with or without the ``ApiKey `` prefix, extras ``page_size`` (1-1000),
``timeout`` (read timeout, seconds), ``max_retries`` (0-20), ``max_wait`` (seconds, cap of one
back-off sleep including ``Retry-After``), ``max_concurrency`` (1-32, page calls one listing runs
side by side, see :mod:`connect_provider.hooks.paging`), ``verify_ssl`` (default true), and the
HTTP provider's extras above.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import inspect
import json
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import urllib3
from airflow.sdk import BaseHook

from connect_provider import CONNECT_API_BASE_URL, __version__
from connect_provider.config import DEFAULT_CONN_ID
from connect_provider.exceptions import (
    ConnectAmbiguousLookupError,
    ConnectAmbiguousWriteError,
    ConnectAPIError,
    ConnectAuthError,
    ConnectConflictError,
    ConnectError,
    ConnectLookupNotFoundError,
    ConnectNotFoundError,
    ConnectRateLimitError,
    ConnectTransportError,
    ConnectValidationError,
)
from connect_provider.hooks.paging import (
    DEFAULT_MAX_CONCURRENCY,
    MAX_CONCURRENCY,
    AdaptiveWindow,
    PagesAhead,
)
from connect_provider.hooks.retry import (
    AMBIGUOUS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_WAIT,
    DONE,
    DROPPED,
    INVALID,
    RAISE,
    RETRY,
    TIMEOUT,
    TLS,
    UNSENT,
    RetryDecision,
    RetryPolicy,
    chained,
    linked_exceptions,
    parse_retry_after,
    transport_failure_kind,
)
from connect_provider.rql import R, as_rql, render_value, to_query_string
from connect_provider.rql import ordering as rql_ordering
from connect_provider.rql import select as rql_select
from connect_provider.validation import MARKETPLACE_ID_RE

__all__ = [
    "AMBIGUOUS",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_TIMEOUT",
    "DONE",
    "RAISE",
    "REQUESTS_ORDERING",
    "RETRY",
    "USAGE_RECORDS_ORDERING",
    "USAGE_RECORDS_PAGE_SIZE",
    "AsyncPage",
    "ConnectHook",
    "RawPage",
    "RetryDecision",
    "RetryPolicy",
    "parse_content_range",
    "parse_retry_after",
    "transport_failure_kind",
]

#: Page size of list calls when neither the call, the hook nor the connection sets one
#: (the official client's default).
DEFAULT_PAGE_SIZE = 100
#: Page size of usage-record reads when nothing else sets one: records are small and many.
USAGE_RECORDS_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000
#: Offset pages are only consistent under an ORDER BY, so paged lists ask for one the endpoint
#: allows (spec v37: an ordering on any other field is Connect's 400 "Bad ordering filter").
#: Requests: by creation, oldest first. CloudBlue's Zapier app pages them by offset ordered by
#: ``-created`` (cloudblue/connect-fulfillment-zapier-app @ d6b7645 :
#: lib/connect/api/assetRequests/actions.js); ascending, a request created while the list is read
#: lands on a later page instead of shifting every page by one.
REQUESTS_ORDERING = ("created",)
#: Usage records: the spec orders them by created_time, usage_start_time and status only (no
#: unique key; ``ordering(id)`` is a 400), and CloudBlue's clients send no ordering at all
#: (cloudblue/connect-reports @ b408690 : reports/usage_in_subscription/entrypoint.py; the
#: official client's iterator only steps the offset, cloudblue/connect-python-openapi-client @
#: 7cd0e02 : connect/client/models/iterators.py). created_time is the most stable of the three:
#: immutable, and close to unique as records are created one by one, where status changes while
#: a file is read and usage_start_time is shared by a whole period. The exporter's count and
#: unique-id checks still fail an export whose pages skipped or repeated a record.
USAGE_RECORDS_ORDERING = ("created_time",)
#: Read timeout of one call, seconds.
DEFAULT_TIMEOUT = 60.0
#: Connecting never waits longer than this (or ``timeout`` if smaller).
CONNECT_TIMEOUT = 10.0
#: Redirects followed at most, as ``requests`` does by default (the HTTP provider's ``max_redirects``).
DEFAULT_MAX_REDIRECTS = 30

# The hook's own extras: read here, never sent as HTTP headers.
_OWN_EXTRAS = frozenset(
    {"page_size", "timeout", "max_retries", "max_wait", "max_concurrency", "verify_ssl", "verify"}
)
# The HTTP provider's session options (never headers): honoured, or ignored where they have no
# meaning for this hook (stream, allow_redirects, check_response, srv_lookup).
_HTTP_OPTION_EXTRAS = frozenset(
    {
        "proxies",
        "proxy",
        "cert",
        "trust_env",
        "max_redirects",
        "stream",
        "allow_redirects",
        "check_response",
        "srv_lookup",
    }
)
_CONTENT_RANGE_RE = re.compile(r"^\s*items\s+(\d+)-(\d+)/(\d+)\s*$")
_ERRNO_RE = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# A path segment that is a Connect object id (PRD-276-377-545, PR-1234-..., MP-00001, UF-2026-...).
_OBJECT_ID_SEGMENT_RE = re.compile(r"/[A-Z]{2,4}(-[0-9A-Za-z]+)+(/|$)")
_APIKEY_PREFIX_RE = re.compile(r"apikey(\s+|$)", re.IGNORECASE)
# OpenSSL's words for "the peer answered, but not in TLS" (a plain-HTTP server on an https URL).
_NOT_TLS_MARKERS = (
    "WRONG_VERSION_NUMBER",
    "wrong version number",
    "record layer failure",
    "unknown protocol",
)
_UNTRUSTED_MARKERS = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed")
_USER_AGENT = f"airflow-provider-cloudblue-connect/{__version__}"
# Secrets shorter than this are not searched for in text: they would match ordinary words.
_MIN_SECRET_LENGTH = 4
_HOST_EXAMPLE = f"e.g. {CONNECT_API_BASE_URL}"

_F = TypeVar("_F", bound=Callable[..., Any])
#: A page as a listing yields it: a RawPage, or the decoded list of objects.
_P = TypeVar("_P")


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


class AsyncPage(NamedTuple):
    """One decoded page read by :meth:`ConnectHook.aget_page`: its items, where it starts, the total."""

    items: list[dict[str, Any]]
    offset: int
    total: int


def _read_body(response: requests.Response) -> bytes:
    """The whole body in one read, then the connection back to the pool.

    ``response.content`` reads a 1 MB page of usage records in about a hundred 10 KB chunks, each
    a trip through urllib3 in Python; one read of the known length costs a third less CPU (measured:
    0.43 -> 0.27 s per 200,000 records), CPU that the page workers otherwise take from the thread
    converting pages. Failures are raised as ``requests`` raises them from ``.content``, so the
    retry policy judges them alike.
    """
    try:
        return response.raw.read(decode_content=True) or b""
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:  # a body cut off or a connection reset
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    finally:
        response.close()


def _next_page(
    ahead: PagesAhead[RawPage] | None,
    fetch: Callable[..., RawPage],
    window: AdaptiveWindow,
    offset: int,
    step: int,
    total: int,
) -> RawPage:
    """The page at ``offset``: from the workers when it was planned, else fetched now (a miss
    drops the plan, see :meth:`PagesAhead.take`)."""
    if ahead is not None:
        ahead.plan(offset, step, total)
        page = ahead.take(offset)
        if page is not None:
            return page
    return fetch(offset, window=window)


def _drive(
    steps: Generator[float | None, Any, _Answer],
    send: Callable[[], _Answer | BaseException],
    pause: Callable[[float], Any],
) -> _Answer:
    """Run the retry loop (:meth:`ConnectHook._exchange`) with blocking I/O: the answer it settles on.

    The loop yields ``None`` for an attempt (``send``, whose answer or exception goes back to it)
    or a number of seconds to wait (``pause``); it returns the answer or raises the error.
    """
    step = next(steps)
    while True:
        reply: _Answer | BaseException | None = None
        if step is None:
            reply = send()
        else:
            pause(step)
        try:
            step = steps.send(reply)
        except StopIteration as done:
            return done.value


def _release(window: AdaptiveWindow, token: int, reply: _Answer | BaseException, policy: RetryPolicy) -> None:
    """Tell the paging window how an attempt ended (a 429's ``Retry-After`` capped as the policy caps it)."""
    if isinstance(reply, BaseException):
        window.release(token, None)
        return
    retry_after = parse_retry_after(reply.headers.get("Retry-After")) if reply.status == 429 else None
    window.release(token, reply.status, None if retry_after is None else min(retry_after, policy.max_wait))


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class _Settings:
    """Connection settings, read and validated once per hook. Holds no secret (it is logged)."""

    base_url: str
    page_size: int | None
    timeout: float
    max_retries: int
    max_wait: float
    verify_ssl: bool
    #: True when the host had no scheme and ``https`` was assumed (errors then say to add one).
    scheme_assumed: bool = False
    #: Page calls one listing may run side by side.
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    @property
    def connect_timeout(self) -> float:
        return min(CONNECT_TIMEOUT, self.timeout)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, max_wait=self.max_wait)


@dataclass(frozen=True)
class _HttpOptions:
    """The HTTP provider's extras the hook honours, read once for the sync and the async path.

    Header values may be tokens of a proxy or gateway: the repr names the headers only.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    proxies: Mapping[str, str] = field(default_factory=dict)
    cert: str | tuple[str, str] | None = None
    trust_env: bool = True
    max_redirects: int = DEFAULT_MAX_REDIRECTS

    def __repr__(self) -> str:
        return (
            f"_HttpOptions(headers={sorted(self.headers)}, proxies={sorted(self.proxies)}, "
            f"cert={'set' if self.cert else None}, trust_env={self.trust_env}, "
            f"max_redirects={self.max_redirects})"
        )


class _Answer(NamedTuple):
    """One HTTP answer, whichever client received it."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_ms: float


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``"items 0-99/1234"`` -> ``(0, 99, 1234)``; ``None`` if absent or not in that form."""
    if not value:
        return None
    match = _CONTENT_RANGE_RE.match(value)
    if not match:
        return None
    first, last, total = (int(g) for g in match.groups())
    return first, last, total


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


#: The numeric settings a hook argument or the connection's extra may give, in the order they are
#: checked: each one's check and its default when neither gives it. One table, so an argument and
#: the extra field of the same name are always held to the same bounds.
_NUMBER_SETTINGS: dict[str, tuple[Callable[..., Any], Any]] = {
    "page_size": (functools.partial(_int_setting, low=1, high=MAX_PAGE_SIZE), None),
    "timeout": (functools.partial(_float_setting, positive=True), DEFAULT_TIMEOUT),
    "max_retries": (functools.partial(_int_setting, low=0, high=20), DEFAULT_MAX_RETRIES),
    "max_wait": (functools.partial(_float_setting, positive=False), DEFAULT_MAX_WAIT),
    "max_concurrency": (
        functools.partial(_int_setting, low=1, high=MAX_CONCURRENCY),
        DEFAULT_MAX_CONCURRENCY,
    ),
}


def _number_setting(name: str, value: Any, conn_id: str | None) -> Any:
    """``value`` of the numeric setting ``name`` checked against its bounds (``conn_id``: from an extra)."""
    check, _ = _NUMBER_SETTINGS[name]
    return check(name, value, conn_id=conn_id)


def _header_problem(text: str) -> str | None:
    """Why ``text`` cannot be an HTTP header value (``http.client`` sends Latin-1), or None."""
    for char in text:
        code = ord(char)
        if char in "\r\n":
            return "contains a line break (CR or LF)"
        if code == 0:
            return "contains a NUL character"
        if code < 32 or code == 127:
            return "contains a control character"
        if code > 255:
            return (
                "contains a character that cannot be sent in an HTTP header (outside Latin-1, "
                "such as a typographic quote or a non-Latin letter)"
            )
    return None


def _resolve_base_url(conn: Any) -> tuple[str, bool]:
    """The API base URL of a connection, and whether its scheme was assumed (the host had none).

    The API base is what the official client calls its endpoint,
    ``https://api.connect.cloudblue.com/public/v1`` by default (cloudblue/connect-python-openapi-client
    @ 7cd0e02 : ``connect/client/constants.py``); errors about the host show it as the example.

    Refused before any call, never printing the host: a user name or password in it (Connect
    takes only the API key, and the host is shown in errors), a scheme other than http/https, a
    query or a fragment.
    """
    cid = conn.conn_id
    host = (conn.host or "").strip()
    if not host:
        return CONNECT_API_BASE_URL, False
    assumed = "://" not in host
    if assumed:
        # The HTTP provider reads the connection's schema as the URL scheme of a bare host.
        schema = (conn.schema or "").strip().lower()
        if schema and schema not in ("http", "https"):
            raise ConnectValidationError(
                "schema",
                f"connection {cid!r} has a schema that is not http or https (the HTTP provider "
                "reads it as the URL scheme): leave the schema empty and write the whole API base "
                f"URL in the host, {_HOST_EXAMPLE}",
            )
        host = f"{schema or 'https'}://{host}"
        assumed = not schema
    try:
        parts = urlsplit(host)
        port = parts.port
    except ValueError:
        raise ConnectValidationError(
            "host",
            f"the host of connection {cid!r} is not a valid URL: write the API base URL, {_HOST_EXAMPLE}",
        ) from None
    if "@" in parts.netloc:
        raise ConnectValidationError(
            "host",
            f"the host of connection {cid!r} holds a user name or password (user:password@): "
            "remove it; Connect takes only the API key, in the password field",
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectValidationError(
            "host", f"the host of connection {cid!r} must be the API base URL, {_HOST_EXAMPLE}"
        )
    if parts.query or parts.fragment:
        raise ConnectValidationError(
            "host",
            f"the host of connection {cid!r} must be the API base URL without a query or fragment, "
            f"{_HOST_EXAMPLE}",
        )
    netloc = parts.netloc
    if conn.port and port is None:
        netloc = f"{netloc}:{conn.port}"
    path = parts.path.rstrip("/") or "/public/v1"
    return urlunsplit((parts.scheme, netloc, path, "", "")), assumed


def _api_key(conn: Any) -> tuple[str, list[str]]:
    """The ``Authorization`` value of a connection and every form of the key to keep secret.

    The password holds the key with or without the ``ApiKey `` prefix (the official client sends
    the whole ``ApiKey SU-...:...`` string as the header, cloudblue/connect-python-openapi-client
    @ 7cd0e02 : ``connect/client/utils.py`` ``get_headers``; the legacy SDK adds the prefix when
    it is missing).
    What can never work is refused here, naming the password and never showing it: no key, the
    prefix alone, and characters an HTTP header cannot carry (which would otherwise fail inside
    the HTTP client on every attempt, looking like a network error).
    """
    cid = conn.conn_id
    raw = conn.password or ""
    text = raw.strip()
    prefix = _APIKEY_PREFIX_RE.match(text)
    key = text[prefix.end() :].strip() if prefix else text
    if not key:
        if prefix:
            raise ConnectValidationError(
                "password",
                f"the password of connection {cid!r} is only the 'ApiKey' prefix: put the whole key "
                "after it (ApiKey SU-...:...)",
            )
        raise ConnectValidationError(
            "password",
            f"connection {cid!r} has no API key: put the key (ApiKey SU-...:...) in its password",
        )
    problem = _header_problem(key)
    if problem:
        raise ConnectValidationError(
            "password",
            f"the API key in the password of connection {cid!r} {problem}; copy the key again "
            "from Connect (ApiKey SU-...:...) into the password, without it",
        )
    header = f"ApiKey {key}"
    secrets = {raw, text, key, header}
    if ":" in key:
        secrets.add(key.split(":", 1)[1])
    return header, sorted((s for s in secrets if len(s) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


def _http_options(conn: Any) -> _HttpOptions:
    """The HTTP provider's extras: session options, and any other extra as an HTTP header."""
    cid = conn.conn_id
    extra = conn.extra_dejson or {}
    trust_env = extra.get("trust_env")
    redirects = extra.get("max_redirects")
    return _HttpOptions(
        headers=_extra_headers(cid, extra),
        proxies=_proxies(cid, extra.get("proxies", extra.get("proxy"))),
        cert=_cert(cid, extra.get("cert")),
        trust_env=True if trust_env in (None, "") else _bool_setting("trust_env", trust_env, cid),
        max_redirects=DEFAULT_MAX_REDIRECTS
        if redirects in (None, "")
        else _int_setting("max_redirects", redirects, 0, 100, cid),
    )


def _extra_headers(cid: str, extra: Mapping[str, Any]) -> dict[str, str]:
    """Every extra that is neither the hook's nor a session option, as an HTTP header (text only)."""
    headers: dict[str, str] = {}
    for name, value in extra.items():
        if name in _OWN_EXTRAS or name in _HTTP_OPTION_EXTRAS:
            continue
        source = f"the extra {name!r} of connection {cid!r}"
        # The official client refuses default headers that hold Authorization, for the same reason
        # (cloudblue/connect-python-openapi-client @ 7cd0e02 : connect/client/fluent.py).
        if str(name).strip().lower() == "authorization":
            raise ConnectValidationError(
                name,
                f"{source} would replace the API key's header: remove it and put the key in the password",
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConnectValidationError(
                name,
                f"{source} is sent as an HTTP header (the HTTP provider's meaning of an extra it does "
                f"not know), so it must be text, got {type(value).__name__}",
            )
        text = str(value)
        problem = _header_problem(str(name)) or _header_problem(text)
        if problem:
            raise ConnectValidationError(name, f"{source} is sent as an HTTP header and {problem}")
        headers[str(name)] = text
    return headers


def _proxies(cid: str, raw: Any) -> dict[str, str]:
    """The ``proxies`` (or ``proxy``) extra: one URL for every scheme, or scheme -> URL."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, str):
        return {"http": raw, "https": raw}
    if isinstance(raw, Mapping) and all(isinstance(v, str) for v in raw.values()):
        return {str(k): v for k, v in raw.items()}
    raise ConnectValidationError(
        "proxies",
        f"the extra 'proxies' of connection {cid!r} must map schemes to proxy URLs, "
        'e.g. {"https": "http://proxy.example:3128"}',
    )


def _cert(cid: str, raw: Any) -> str | tuple[str, str] | None:
    """The ``cert`` extra: a client certificate's path, or [certificate path, key path]."""
    if raw in (None, ""):
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (list, tuple)) and len(raw) == 2 and all(isinstance(p, str) for p in raw):
        return (raw[0], raw[1])
    raise ConnectValidationError(
        "cert",
        f"the extra 'cert' of connection {cid!r} must be the path of a client certificate, "
        "or [certificate path, key path]",
    )


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


def _json_body(value: Any) -> bytes:
    """A request body as JSON, checked locally: a value JSON cannot carry is refused before any call."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ConnectValidationError(
            "json", f"the body cannot be sent as JSON ({exc}); pass strings, numbers, lists and dicts only"
        ) from None


def _errno_text(exc: BaseException) -> str | None:
    """``[Errno 111] Connection refused`` from either client's exception, without host or URL."""
    os_error = getattr(exc, "os_error", None)  # aiohttp keeps the socket's OSError here
    code = getattr(os_error, "errno", None)
    if isinstance(code, int):
        reason = os.strerror(code) if code > 0 else (getattr(os_error, "strerror", None) or "")
        return f"[Errno {code}] {reason}".strip()
    match = _ERRNO_RE.search(str(exc))
    return match.group(0).strip() if match else None


def _describe_transport_error(exc: BaseException, timeout: float) -> str:
    """A short cause without URLs or headers (the exception's own text repeats the URL)."""
    kind = transport_failure_kind(exc)
    if kind == TIMEOUT:
        return f"no answer within {timeout:g} s (read timeout)"
    if isinstance(exc, requests.exceptions.ConnectTimeout) or "Timeout" in type(exc).__name__:
        return "connecting timed out"
    if (
        isinstance(exc, requests.exceptions.ChunkedEncodingError)
        or type(exc).__name__ == "ClientPayloadError"
    ):
        return "the answer was cut off"
    if kind == UNSENT:
        return f"could not connect ({_errno_text(exc) or 'connection failed'})"
    if kind == DROPPED:
        return "the connection was dropped before an answer came"
    return type(exc).__name__


def _tls_problem(exc: BaseException) -> str:
    text = str(exc)
    if any(marker in text for marker in _NOT_TLS_MARKERS):
        return "not-tls"
    if any(marker in text for marker in _UNTRUSTED_MARKERS) or "Certificate" in type(exc).__name__:
        return "untrusted"
    return "handshake"


def _error_details(body: bytes) -> tuple[bool, str | None, list[str], dict[str, Any]]:
    """Whether ``body`` is Connect's error shape, and its ``error_code``, ``errors`` and ``params``.

    Connect's shape is a JSON object with ``error_code`` and ``errors``: the official client reads
    an error's details only from such a body (cloudblue/connect-python-openapi-client @ 7cd0e02 :
    ``connect/client/fluent.py`` ``_get_api_error_details``).
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False, None, [], {}
    if not isinstance(payload, dict):
        return False, None, [], {}
    code = payload.get("error_code")
    errors = payload.get("errors")
    shaped = "error_code" in payload and "errors" in payload
    if isinstance(errors, str):
        errors = [errors]
    elif not isinstance(errors, list):
        errors = []
    params = payload.get("params")
    return (
        shaped,
        (str(code) if code is not None else None),
        [str(e) for e in errors],
        dict(params) if isinstance(params, dict) else {},
    )


def _is_empty_array(body: bytes) -> bool:
    stripped = body.strip()
    return stripped == b"[]" or not stripped


def _signed_fields(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [f.strip() for f in value.split(",") if f.strip()]
    return list(value)


def _redacting(func: _F) -> _F:
    """Make a public method of the hook raise only errors scrubbed of the API key.

    Works for plain methods, generators (the error may come on any page) and coroutines. A
    :class:`ConnectError` is scrubbed in place; any other exception that mentions the key (it can
    only come from below the hook) is replaced by a ConnectError with the key removed; any other
    exception passes unchanged. Chained causes of a scrubbed error are dropped.
    """
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def coroutine(self: ConnectHook, *args: Any, **kwargs: Any) -> Any:
            try:
                return await func(self, *args, **kwargs)
            except Exception as exc:
                error = self._clean_error(exc)
                if error is exc:
                    raise
            raise error

        wrapper: Any = coroutine
    elif inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def generator(self: ConnectHook, *args: Any, **kwargs: Any) -> Any:
            try:
                return (yield from func(self, *args, **kwargs))
            except Exception as exc:
                error = self._clean_error(exc)
                if error is exc:
                    raise
            raise error

        wrapper = generator
    else:

        @functools.wraps(func)
        def plain(self: ConnectHook, *args: Any, **kwargs: Any) -> Any:
            try:
                return func(self, *args, **kwargs)
            except Exception as exc:
                error = self._clean_error(exc)
                if error is exc:
                    raise
            raise error

        wrapper = plain
    wrapper.redacting = True
    return wrapper  # type: ignore[no-any-return]


class ConnectHook(BaseHook):
    """Talk to the CloudBlue Connect public API (see the module docstring for the connection).

    :param connect_conn_id: the Airflow connection of type ``cloudblue_connect``.
    :param page_size: items per page of list calls; overrides the connection's ``page_size``.
    :param timeout: read timeout of one call in seconds; overrides the connection's ``timeout``.
    :param max_retries: retries after a transport error, timeout, 5xx or 429; overrides the connection.
    :param max_wait: cap of one back-off sleep in seconds (also caps ``Retry-After``).
    :param max_concurrency: page calls one listing may run side by side (1-32); overrides the
        connection's ``max_concurrency`` (default 4).
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
        max_concurrency: int | None = None,
    ) -> None:
        super().__init__()
        self.connect_conn_id = connect_conn_id
        # Constructor arguments are checked now (no I/O); the connection is read on first use.
        given = {
            "page_size": page_size,
            "timeout": timeout,
            "max_retries": max_retries,
            "max_wait": max_wait,
            "max_concurrency": max_concurrency,
        }
        self._number_args: dict[str, Any] = {
            name: _number_setting(name, value, None) for name, value in given.items() if value is not None
        }
        self._settings: _Settings | None = None
        self._options: _HttpOptions | None = None
        self._authorization: str | None = None
        # Every form of the connection's key, longest first: what redact() removes from text.
        self._secrets: tuple[str, ...] = ()
        self._session: requests.Session | None = None
        self._ssl_context: ssl.SSLContext | bool | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(connect_conn_id={self.connect_conn_id!r})"

    # ------------------------------------------------------------------ connection, settings, session

    def _settings_from(self, conn: Any) -> _Settings:
        """The settings of ``conn``: a number from the hook's argument, else the extra, else its default."""
        extra = conn.extra_dejson or {}
        cid = self.connect_conn_id
        base_url, scheme_assumed = _resolve_base_url(conn)
        numbers = dict(self._number_args)
        for name, (_, default) in _NUMBER_SETTINGS.items():
            if name not in numbers:
                raw = extra.get(name)
                numbers[name] = default if raw is None or raw == "" else _number_setting(name, raw, cid)
        verify_raw = extra.get("verify_ssl", extra.get("verify"))
        return _Settings(
            base_url=base_url,
            verify_ssl=True
            if verify_raw is None or verify_raw == ""
            else _bool_setting("verify_ssl", verify_raw, cid),
            scheme_assumed=scheme_assumed,
            **numbers,
        )

    def _load(self, conn: Any) -> list[str]:
        """Validate a connection once (key first, so later errors can be scrubbed of it).

        Returns the forms of the key, for the caller to register with Airflow's secret masker.
        """
        authorization, secrets = _api_key(conn)
        self._secrets = tuple(secrets)
        settings = self._settings_from(conn)
        options = _http_options(conn)
        self._authorization = authorization
        self._options = options
        self._settings = settings
        return secrets

    def _ensure_connection(self) -> None:
        if self._settings is None:
            from airflow.sdk.log import mask_secret

            for secret in self._load(self.get_connection(self.connect_conn_id)):
                mask_secret(secret)

    async def _aensure_connection(self) -> None:
        """The connection through Airflow's async-safe lookup (a trigger must not block the loop)."""
        if self._settings is None:
            from airflow.sdk.log import amask_secret

            for secret in self._load(await self.aget_connection(self.connect_conn_id)):
                await amask_secret(secret)

    @property
    @_redacting
    def settings(self) -> _Settings:
        """The validated settings (base URL, page size, timeout, retries, max wait, TLS): no secret."""
        self._ensure_connection()
        assert self._settings is not None
        return self._settings

    @property
    @_redacting
    def retry_policy(self) -> RetryPolicy:
        """The :class:`RetryPolicy` of this hook's calls (from the connection and the arguments)."""
        return self.settings.retry_policy

    def _headers(self) -> dict[str, str]:
        assert self._options is not None and self._authorization is not None
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT, **self._options.headers}
        headers["Authorization"] = self._authorization
        return headers

    @_redacting
    def get_conn(self, headers: Mapping[str, str] | None = None) -> requests.Session:
        """The hook's one ``requests.Session`` (keep-alive), built on first use.

        Reads the connection once: validates the host, the key and the extras, sets
        ``Authorization: ApiKey ...`` and registers the key with Airflow's secret masker. The HTTP
        provider's extras apply (proxies, cert, trust_env, max_redirects, extra headers).
        ``headers`` are added to the session's (never ``Authorization``).
        """
        self._ensure_connection()
        if self._session is None:
            self._session = self._new_session()
        if headers:
            if any(str(k).lower() == "authorization" for k in headers):
                raise ConnectValidationError(
                    "headers", "the Authorization header comes from the connection's password"
                )
            self._session.headers.update(headers)
        return self._session

    def _new_session(self, headers: Mapping[str, str] | None = None) -> requests.Session:
        """A session with the connection's settings: the hook's own, or one per paging worker thread.

        ``headers`` replace the connection's (a worker copies those of the hook's own session, so
        headers added through :meth:`get_conn` go along).
        """
        assert self._settings is not None and self._options is not None
        session = requests.Session()
        session.headers.update(headers if headers is not None else self._headers())
        session.verify = self._settings.verify_ssl
        session.cert = self._options.cert
        session.proxies.update(self._options.proxies)
        session.trust_env = self._options.trust_env
        session.max_redirects = self._options.max_redirects
        return session

    def close(self) -> None:
        """Close the pooled connections (the hook opens a new session if used again)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def redact(self, text: str) -> str:
        """``text`` with every form of this hook's API key (header value, key, secret) as ``***``.

        The forms come from the connection itself once it was read, so this works on the async
        path too, where there is no session. Before the connection is read nothing is known and
        nothing was sent.
        """
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def _mentions_key(self, exc: BaseException) -> bool:
        """Whether ``exc`` or any exception chained to it shows a form of the key (str or repr)."""
        return any(
            any(secret in f"{current}\n{current!r}" for secret in self._secrets)
            for current in linked_exceptions(exc, chained)
        )

    def _clean_error(self, exc: Exception) -> Exception:
        """``exc`` scrubbed of the key, or a ConnectError in its place (see :func:`_redacting`)."""
        if isinstance(exc, ConnectError):
            return exc.scrub(self.redact)
        if self._secrets and self._mentions_key(exc):
            return ConnectError(f"{type(exc).__name__} in a call to Connect: {self.redact(str(exc))}").scrub(
                self.redact
            )
        return exc

    def _emit(self, level: str, message: str, *args: Any) -> None:
        """Log through the hook's logger, the text formatted first and scrubbed of the key."""
        text = message % args if args else message
        getattr(self.log, level)(self.redact(text))

    def _ssl_for_aiohttp(self) -> ssl.SSLContext | bool:
        """``verify_ssl`` and ``cert`` as aiohttp takes them (the same meaning as on the sync path)."""
        if self._ssl_context is None:
            assert self._settings is not None and self._options is not None
            verify, cert = self._settings.verify_ssl, self._options.cert
            if not cert:
                self._ssl_context = verify
            else:
                context = ssl.create_default_context()
                if not verify:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                if isinstance(cert, tuple):
                    context.load_cert_chain(cert[0], cert[1])
                else:
                    context.load_cert_chain(cert)
                self._ssl_context = context
        return self._ssl_context

    # ------------------------------------------------------------------ the one retry loop

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

    def _exchange(
        self, method: str, path: str, shown: str, policy: RetryPolicy, *, collection: bool = False
    ) -> Generator[float | None, Any, _Answer]:
        """The one retry loop of both paths, without any I/O of its own.

        It yields ``None`` to ask its driver for one attempt and is sent the :class:`_Answer` or the
        exception raised instead; it yields a number of seconds to ask for a sleep. It returns the
        answer to use, or raises the ConnectError the last attempt stands for. The drivers
        (:meth:`_call` with ``requests``, :meth:`_acall` with ``aiohttp``) only send and sleep.
        """
        attempt = 0
        while True:
            attempt += 1
            outcome = yield None
            if isinstance(outcome, BaseException):
                self._emit("debug", "%s %s -> %s", method, shown, type(outcome).__name__)
                decision = policy.decide(method, attempt, error=outcome)
            else:
                self._emit(
                    "debug",
                    "%s %s -> %s in %.0f ms (%d bytes)",
                    method,
                    shown,
                    outcome.status,
                    outcome.elapsed_ms,
                    len(outcome.body),
                )
                decision = policy.decide(method, attempt, status=outcome.status, headers=outcome.headers)
            if decision.action == DONE:
                return outcome
            if decision.action == RETRY:
                if isinstance(outcome, BaseException):
                    self._emit(
                        "warning",
                        "%s %s failed (%s; attempt %d of %d): retrying in %.2f s",
                        method,
                        path,
                        _describe_transport_error(outcome, self.settings.timeout),
                        attempt,
                        policy.attempts,
                        decision.delay,
                    )
                else:
                    self._emit(
                        "warning",
                        "%s on %s %s (attempt %d of %d): retrying in %.2f s (%s)",
                        outcome.status,
                        method,
                        path,
                        attempt,
                        policy.attempts,
                        decision.delay,
                        decision.why,
                    )
                yield decision.delay
                continue
            raise self._final_error(method, path, attempt, decision, outcome, collection=collection)

    def _final_error(
        self,
        method: str,
        path: str,
        attempt: int,
        decision: RetryDecision,
        outcome: _Answer | BaseException,
        *,
        collection: bool,
    ) -> ConnectError:
        """The error an attempt the policy did not accept stands for."""
        if isinstance(outcome, BaseException):
            cause = _describe_transport_error(outcome, self.settings.timeout)
            if decision.action == AMBIGUOUS:
                return self._ambiguous(method, path, cause)
            return self._transport_error(method, path, attempt, outcome, cause)
        if decision.action == AMBIGUOUS:
            return self._ambiguous(method, path, decision.why)
        return self._status_error(
            outcome.status,
            outcome.body,
            method,
            path,
            attempt,
            collection=collection,
            content_type=outcome.headers.get("Content-Type"),
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        query_string: str = "",
        json_body: Any = None,
        has_body: bool = False,
        retries: int | None = None,
        collection: bool = False,
        session: requests.Session | None = None,
        window: AdaptiveWindow | None = None,
    ) -> _Answer:
        """Send one call with the retry policy (``requests``); a 2xx/3xx answer or a ConnectError.

        ``retries`` overrides the connection's ``max_retries`` for this call only; ``collection``
        says the path is a collection (a 404 then means the host is not the API base URL).
        ``session`` is a paging worker's own (default: the hook's); ``window`` paces the attempts
        of concurrent page calls (each attempt takes a slot; a 429 cuts the window and pauses it
        for ``Retry-After``), while the retries themselves stay this policy's.
        """
        method = method.upper()
        rel = _normalize_path(path)
        data = _json_body(json_body) if has_body else None
        session = session or self.get_conn()
        settings = self.settings
        policy = (
            settings.retry_policy if retries is None else replace(settings.retry_policy, max_retries=retries)
        )
        shown = rel + (f"?{query_string}" if query_string else "")
        request = {
            "data": data,
            "headers": {"Content-Type": "application/json"} if data is not None else None,
            "timeout": (settings.connect_timeout, settings.timeout),
            "stream": True,
        }
        url = settings.base_url + shown
        return _drive(
            self._exchange(method, rel, shown, policy, collection=collection),
            functools.partial(self._attempt, session, method, url, request, policy, window),
            time.sleep if window is None else window.sleep,
        )

    def _attempt(
        self,
        session: requests.Session,
        method: str,
        url: str,
        request: Mapping[str, Any],
        policy: RetryPolicy,
        window: AdaptiveWindow | None,
    ) -> _Answer | BaseException:
        """One attempt of a call: the answer, or the exception raised instead (the policy judges both).

        ``request`` is the keywords of ``session.request`` (body, headers, timeouts, streaming).
        With a paging ``window`` the attempt waits for a slot first and gives it back with how it
        ended, so a 429 narrows the window and pauses it for ``Retry-After``.
        """
        token = window.acquire() if window is not None else 0
        started = time.monotonic()
        reply: _Answer | BaseException
        try:
            response = session.request(method, url, **request)
            reply = _Answer(
                response.status_code,
                response.headers,
                _read_body(response),
                (time.monotonic() - started) * 1000,
            )
        except Exception as exc:  # every failure to get an answer is the policy's to judge
            reply = exc
        if window is not None:
            _release(window, token, reply, policy)
        return reply

    async def _acall(self, method: str, path: str, *, query_string: str = "") -> _Answer:
        """:meth:`_call` for the event loop (``aiohttp``): the same loop, the same policy and errors."""
        import aiohttp
        from yarl import URL

        method = method.upper()
        rel = _normalize_path(path)
        await self._aensure_connection()
        settings, options = self.settings, self._options
        assert options is not None
        shown = rel + (f"?{query_string}" if query_string else "")
        url = URL(settings.base_url + shown, encoded=True)
        scheme = urlsplit(settings.base_url).scheme
        proxy = options.proxies.get(scheme) or options.proxies.get("all")
        timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_read=settings.timeout
        )
        async with aiohttp.ClientSession(
            timeout=timeout, headers=self._headers(), trust_env=options.trust_env
        ) as session:
            steps = self._exchange(method, rel, shown, settings.retry_policy)
            step = next(steps)
            while True:
                reply: _Answer | BaseException | None = None
                if step is None:
                    started = time.monotonic()
                    try:
                        async with session.request(
                            method,
                            url,
                            ssl=self._ssl_for_aiohttp(),
                            proxy=proxy,
                            max_redirects=options.max_redirects,
                        ) as response:
                            body = await response.read()
                            reply = _Answer(
                                response.status, response.headers, body, (time.monotonic() - started) * 1000
                            )
                    except Exception as exc:  # every failure to get an answer is the policy's to judge
                        reply = exc
                else:
                    await asyncio.sleep(step)
                try:
                    step = steps.send(reply)
                except StopIteration as done:
                    return done.value

    # ------------------------------------------------------------------ errors

    def _status_error(
        self,
        status: int,
        body: bytes,
        method: str,
        path: str,
        attempts: int,
        *,
        collection: bool = False,
        content_type: str | None = None,
    ) -> ConnectError:
        """The error a refused answer stands for, with Connect's details and what to do."""
        shaped, error_code, errors, params = _error_details(body)
        if error_code or errors:
            detail = f"{error_code} - {'; '.join(errors)}"
        elif body.strip() and not shaped:
            kind = (content_type or "").split(";")[0].strip() or "text"
            detail = f"an answer in {kind}, not Connect's JSON error"
        else:
            detail = ""
        # Connect answers a missing object in its error shape, and every top-level collection
        # exists: a 404 in another shape, or on such a collection, comes from a server that is
        # not the API. (A collection under an object, /products/PRD-.../connections, may 404
        # because that object does not exist: that is the id's fault, not the host's.)
        wrong_host = status == 404 and ((collection and not _OBJECT_ID_SEGMENT_RE.search(path)) or not shaped)
        cls, advice = self._status_advice(status, self.redact(detail)[:1000], attempts, path, wrong_host)
        return cls(
            f"{status} on {method} {path}: {advice}",
            status=status,
            error_code=error_code,
            errors=errors,
            method=method,
            path=path,
            params=params,
        ).scrub(self.redact)

    def _status_advice(
        self, status: int, detail: str, attempts: int, path: str, wrong_host: bool
    ) -> tuple[type[ConnectAPIError], str]:
        """The error class of a status, and the message after ``<status> on <method> <path>: ``."""
        cid = self.connect_conn_id
        said = f" ({detail})" if detail else ""
        if status == 401:
            return ConnectAuthError, (
                f"the API key of connection {cid!r} was refused; check the password of that connection"
            )
        if status == 403:
            return ConnectAuthError, (
                f"the API key of connection {cid!r} may not do this{said}; give its account the "
                "permission or use another key"
            )
        if wrong_host:
            base = self._settings.base_url if self._settings is not None else "the host"
            return ConnectNotFoundError, (
                f"{base}{path} does not exist, so the host of connection {cid!r} is not Connect's API "
                f"base URL; set the host to the API base URL, {_HOST_EXAMPLE}"
            )
        if status == 404:
            return ConnectNotFoundError, f"not found{said}; check the id or path"
        if status == 409:
            return ConnectConflictError, (
                f"Connect refused the call because it exists already{said}; the existing request is in "
                "the error's params"
            )
        if status == 429:
            return ConnectRateLimitError, (
                f"Connect still rate-limited the call after {attempts} attempts; lower the load (fewer "
                f"parallel tasks in the API pool) or raise max_retries/max_wait of connection {cid!r}"
            )
        if status >= 500:
            return ConnectAPIError, (
                f"Connect failed {attempts} time(s){said}; try again later or raise max_retries of "
                f"connection {cid!r}"
            )
        return (
            ConnectAPIError,
            f"Connect refused the call{f': {detail}' if detail else ''}; fix the request and run it again",
        )

    def _ambiguous(self, method: str, path: str, cause: str) -> ConnectAmbiguousWriteError:
        return ConnectAmbiguousWriteError(
            f"{method} {path}: {cause}, so Connect may or may not have applied the write; it was not "
            "resent: look for what it would have created (e.g. an open request of the asset) "
            "before trying again",
            method=method,
            path=path,
        )

    def _transport_error(
        self, method: str, path: str, attempts: int, exc: BaseException, cause: str
    ) -> ConnectTransportError:
        settings = self.settings
        cid = self.connect_conn_id
        kind = transport_failure_kind(exc)
        parts = urlsplit(settings.base_url)
        if kind == TLS:
            problem = _tls_problem(exc)
            where = f"{parts.hostname}:{parts.port or 443}"
            if problem == "not-tls" and settings.scheme_assumed:
                message = (
                    f"{method} {path}: {where} does not speak TLS, and https was assumed because the host "
                    f"of connection {cid!r} has no scheme: write the scheme in the host, add https:// "
                    f"for Connect ({CONNECT_API_BASE_URL}) or http:// for a plain-HTTP server such as a "
                    "local sandbox"
                )
            elif problem == "not-tls":
                message = (
                    f"{method} {path}: {where} does not speak TLS (https): if it is a plain-HTTP server "
                    f"such as a local sandbox, write http:// in the host of connection {cid!r}; Connect "
                    f"itself is {CONNECT_API_BASE_URL}"
                )
            elif problem == "untrusted":
                message = (
                    f"{method} {path}: the TLS certificate of {parts.hostname} is not trusted; install "
                    "its certificate authority (e.g. REQUESTS_CA_BUNDLE) or, for a local sandbox only, "
                    f"set the extra verify_ssl of connection {cid!r} to false"
                )
            else:
                message = (
                    f"{method} {path}: the TLS handshake with {parts.hostname} failed; check the host "
                    f"of connection {cid!r} ({_HOST_EXAMPLE}) and any proxy in between"
                )
            return ConnectTransportError(message, method=method, path=path, retryable=False)
        if kind == INVALID:
            return ConnectTransportError(
                f"{method} {path}: the call could not be sent ({type(exc).__name__}: "
                f"{self.redact(str(exc))[:300]}); check the host and the extras of connection {cid!r}",
                method=method,
                path=path,
                retryable=False,
            )
        hint = ""
        if settings.scheme_assumed and kind == UNSENT:
            hint = (
                "; its host has no scheme, so https was assumed: write the scheme in the host (add "
                "https://, or http:// for a plain-HTTP server such as a local sandbox)"
            )
        return ConnectTransportError(
            f"{method} {path}: could not reach Connect at {settings.base_url} after {attempts} "
            f"attempt(s) (last: {cause}); check the host of connection {cid!r} and the network, or "
            f"raise its timeout/max_retries{hint}",
            method=method,
            path=path,
        )

    def _json_or_none(self, body: bytes, method: str, path: str) -> Any:
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except ValueError:
            base = self._settings.base_url if self._settings is not None else "the host"
            raise ConnectAPIError(
                f"{method} {path}: Connect answered with something that is not JSON; check that the "
                f"host of the connection is the API base URL (now {base}), {_HOST_EXAMPLE}",
                method=method,
                path=path,
            ) from None

    def _json_array(self, body: bytes, rel: str) -> list[Any]:
        """The items of a collection's page; a clear error when the answer is not a JSON array.

        One check for every reader of a collection (the sync pages, the async page), so a path
        that is not a collection fails alike wherever it is read.
        """
        items = self._json_or_none(body, "GET", rel)
        if not isinstance(items, list):
            raise ConnectAPIError(
                f"GET {rel}: expected a JSON array (a collection); check the path", method="GET", path=rel
            )
        return items

    # ------------------------------------------------------------------ generic calls

    @_redacting
    def get(self, path: str, params: Mapping[str, Any] | None = None, *, query: R | str | None = None) -> Any:
        """GET ``path`` (relative to the API base) and return the decoded JSON (``None`` if empty).

        ``params`` become ``name=value`` terms with values rendered safely; ``query`` is RQL.
        """
        rel = _normalize_path(path)
        answer = self._call("GET", rel, query_string=self._query_string(query, params=params))
        return self._json_or_none(answer.body, "GET", rel)

    @_redacting
    def post(self, path: str, json: Any = None) -> Any:
        """POST ``json`` (no body if ``None``).

        Raises ConnectAmbiguousWriteError, without resending, when the outcome is unknown.
        """
        rel = _normalize_path(path)
        answer = self._call("POST", rel, json_body=json, has_body=json is not None)
        return self._json_or_none(answer.body, "POST", rel)

    @_redacting
    def put(self, path: str, json: Any = None) -> Any:
        """PUT ``json``; like :meth:`post`, never resent once possibly applied."""
        rel = _normalize_path(path)
        answer = self._call("PUT", rel, json_body=json, has_body=json is not None)
        return self._json_or_none(answer.body, "PUT", rel)

    def _page_size(self, page_size: int | None, default: int) -> int:
        if page_size is not None:
            return _number_setting("page_size", page_size, None)
        return self.settings.page_size or default

    def _concurrency(self, concurrency: int | None) -> int:
        """Pages one listing asks for side by side: ``concurrency``, capped by ``max_concurrency``.

        The connection's ``max_concurrency`` is a ceiling (what the deployment lets one listing
        do), so a caller asking for more gets the ceiling.
        """
        cap = self.settings.max_concurrency
        if concurrency is None:
            return cap
        return min(cap, _int_setting("concurrency", concurrency, 1, MAX_CONCURRENCY, None))

    def _fetch_page(
        self,
        rel: str,
        query_of: Callable[[int], str],
        size: int,
        offset: int,
        *,
        session: requests.Session | None = None,
        window: AdaptiveWindow | None = None,
    ) -> RawPage:
        """One page at ``offset``: its body, and count and total from ``Content-Range`` (count 0: empty)."""
        answer = self._call(
            "GET", rel, query_string=query_of(offset), collection=True, session=session, window=window
        )
        body = answer.body
        content_range = parse_content_range(answer.headers.get("Content-Range"))
        if content_range is None:
            count = len(self._json_array(body, rel))
            total = offset + count if count < size else -1
            return RawPage(body=body, offset=offset, count=count, total=total)
        first, last, total = content_range
        count = 0 if total == 0 or first >= total or _is_empty_array(body) else last - first + 1
        return RawPage(body=body, offset=offset, count=count, total=total)

    def _pages_ahead(
        self, fetch: Callable[..., RawPage], window: AdaptiveWindow, workers: int
    ) -> PagesAhead[RawPage]:
        """Worker threads for the next pages, each with its own session (never the hook's own).

        A ``requests.Session`` is not safe across concurrent calls, and the consumer may use the
        hook's session between pages (``for r in iter_items(...): hook.get(...)``), so every
        worker thread gets a session of its own, with the connection's settings and the headers
        of the hook's session; they are closed when the listing ends or its consumer stops.
        """
        headers = dict(self.get_conn().headers)
        local = threading.local()
        sessions: list[requests.Session] = []
        lock = threading.Lock()

        def in_worker(offset: int) -> RawPage:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = self._new_session(headers)
                with lock:
                    sessions.append(session)
            return fetch(offset, session=session, window=window)

        def close_sessions() -> None:
            for session in sessions:
                session.close()

        return PagesAhead(
            in_worker,
            workers=workers,
            depth=workers,
            window=window,
            name="connect-page",
            on_close=close_sessions,
        )

    def _window_changed(self, what: str, old: int, new: int, why: str) -> None:
        if new < old:
            self._emit(
                "warning",
                "%s: Connect rate-limited the listing (%s): %d page call(s) at once now, was %d",
                what, why, new, old,
            )  # fmt: skip
        else:
            self._emit("info", "%s: %d page calls at once again, was %d (%s)", what, new, old, why)

    @_redacting
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
        concurrency: int | None = None,
    ) -> Iterator[RawPage]:
        """Yield the pages of a collection lazily as :class:`RawPage` (body bytes, offset, count, total).

        The first page alone is read for the first ``next()``. From the second on, the total is
        known and up to ``concurrency`` (default and ceiling: ``max_concurrency``) next pages are
        fetched side by side in worker threads, through the same retry policy, and yielded in
        order: at most ``concurrency + 1`` pages in memory. A 429 halves the calls in flight and
        pauses them for its ``Retry-After`` (:mod:`connect_provider.hooks.paging`). The pages are
        the sequential loop's: the offset advances by what the server sent (a capped page size
        is paged right; a short page drops the plan after it), the latest total bounds the
        listing, an empty page ends it. Progress is logged at INFO as ``label: page i/n, x/y``.
        """
        rel = _normalize_path(path)
        size = self._page_size(page_size, default_page_size)
        workers = self._concurrency(concurrency)
        what = label or rel

        def query_of(offset: int) -> str:
            return self._query_string(query, select=select, ordering=ordering, limit=size, offset=offset)

        window = AdaptiveWindow(workers, on_change=functools.partial(self._window_changed, what))
        fetch = functools.partial(self._fetch_page, rel, query_of, size)
        yield from self._page_through(fetch, window, workers, size, what)

    def _page_through(
        self, fetch: Callable[..., RawPage], window: AdaptiveWindow, workers: int, size: int, what: str
    ) -> Iterator[RawPage]:
        """The pages of one listing in order (see :meth:`iter_raw_pages`), the workers planned as it goes.

        The first page is read alone; once the total is known and two or more pages are left, up to
        ``workers`` worker threads fetch the next ones while the consumer holds a page. The offset
        advances by what the server sent, the latest total bounds the listing, and a short or empty
        page ends it. The workers are closed when the listing ends or its consumer stops.
        """
        ahead: PagesAhead[RawPage] | None = None
        offset = page_number = 0
        per_page = step = size
        total = -1
        try:
            while True:
                if ahead is None and page_number and total >= 0 and total - offset > step:
                    # The consumer asked for a page after the first, and two or more are left.
                    ahead = self._pages_ahead(fetch, window, min(workers, math.ceil((total - offset) / step)))
                page = _next_page(ahead, fetch, window, offset, step, total)
                if page.count == 0:
                    if page_number == 0:
                        self._emit("info", "%s: no items", what)
                    return
                page_number += 1
                per_page = max(per_page if page_number > 1 else page.count, page.count)
                offset, total = page.offset + page.count, page.total
                self._log_progress(what, page_number, per_page, offset, total)
                if (total >= 0 and offset >= total) or (total < 0 and page.count < size):
                    yield page
                    return
                if page_number == 1:
                    step = page.count  # what the server sends per page (it may cap the page size)
                if ahead is not None:
                    ahead.plan(offset, step, total)  # while the consumer holds this page
                yield page
        finally:
            if ahead is not None:
                ahead.close()

    def _log_progress(self, what: str, page_number: int, per_page: int, done: int, total: int) -> None:
        if total < 0:
            self._emit("info", "%s: page %d, %s so far", what, page_number, f"{done:,}")
            return
        pages = max(1, math.ceil(total / max(per_page, 1)))
        every = max(1, pages // 20)
        if page_number == 1 or page_number % every == 0 or done >= total:
            self._emit("info", "%s: page %d/%d, %s/%s", what, page_number, pages, f"{done:,}", f"{total:,}")

    @_redacting
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
        concurrency: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield a collection one decoded page (a list of objects) at a time; see :meth:`iter_raw_pages`."""
        rel = _normalize_path(path)
        for page in self.iter_raw_pages(
            rel,
            query,
            page_size,
            select,
            ordering,
            label=label,
            default_page_size=default_page_size,
            concurrency=concurrency,
        ):
            yield self._json_array(page.body, rel)

    @_redacting
    def iter_items(
        self,
        path: str,
        query: R | str | None = None,
        page_size: int | None = None,
        select: str | Sequence[str] | None = None,
        ordering: str | Sequence[str] | None = None,
        *,
        concurrency: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield the objects of a collection one by one, reading pages lazily (and side by side
        past the second page, see :meth:`iter_raw_pages`)."""
        for page in self.iter_pages(path, query, page_size, select, ordering, concurrency=concurrency):
            yield from page

    @_redacting
    def count(self, path: str, query: R | str | None = None, *, retries: int | None = None) -> int:
        """The size of a collection: one ``limit=0`` call, the total from ``Content-Range``."""
        rel = _normalize_path(path)
        answer = self._call(
            "GET", rel, query_string=self._query_string(query, limit=0), retries=retries, collection=True
        )
        content_range = parse_content_range(answer.headers.get("Content-Range"))
        if content_range is None:
            self._json_or_none(answer.body, "GET", rel)  # an answer that is not JSON says so first
            raise ConnectAPIError(
                f"GET {rel}: the answer has no Content-Range, so the collection cannot be counted; "
                "check that the path is a collection",
                method="GET",
                path=rel,
            )
        return content_range[2]

    # ------------------------------------------------------------------ requests

    @_redacting
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

    @_redacting
    def get_request(self, request_id: str) -> dict[str, Any]:
        """``GET /requests/{id}``; ConnectNotFoundError if there is none."""
        return self.get(f"/requests/{_id_segment(request_id, 'request_id')}")

    @_redacting
    def list_requests(
        self,
        query: R | str | None = None,
        *,
        ordering: str | Sequence[str] | None = REQUESTS_ORDERING,
    ) -> list[dict[str, Any]]:
        """All requests matching ``query`` (RQL), read page by page, oldest first by default.

        The ordering keeps offset pages from skipping or repeating requests; it must be one
        ``GET /requests`` allows (``created``, ``updated``, ``status``, ...), not ``id``.
        """
        return list(self.iter_items("/requests", query, ordering=ordering))

    @_redacting
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

    @_redacting
    def fail_request(self, request_id: str, reason: str) -> dict[str, Any]:
        """``POST /requests/{id}/fail`` with a reason (terminal)."""
        segment = _id_segment(request_id, "request_id")
        if not isinstance(reason, str) or not reason.strip():
            raise ConnectValidationError(
                "reason", "say why the request fails; Connect shows it to the customer"
            )
        return self.post(f"/requests/{segment}/fail", json={"reason": reason})

    @_redacting
    def inquire_request(self, request_id: str, template_id: str | None = None) -> dict[str, Any]:
        """``POST /requests/{id}/inquire`` (optionally with an inquire template)."""
        segment = _id_segment(request_id, "request_id")
        body = {} if template_id is None else {"template_id": _id_segment(template_id, "template_id")}
        return self.post(f"/requests/{segment}/inquire", json=body)

    # ------------------------------------------------------------------ lookups

    @_redacting
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

    @_redacting
    def get_asset(self, asset_id: str) -> dict[str, Any]:
        """``GET /assets/{id}``; ConnectNotFoundError if there is none."""
        return self.get(f"/assets/{_id_segment(asset_id, 'asset_id')}")

    @_redacting
    def find_marketplace(self, name_or_id: str) -> dict[str, Any]:
        """The marketplace with this id (``MP-...``) or exact name.

        :class:`ConnectLookupNotFoundError` when there is none, :class:`ConnectAmbiguousLookupError`
        (with the candidates' ids) when a name matches several.
        """
        if not isinstance(name_or_id, str) or not name_or_id.strip():
            raise ConnectValidationError("marketplace", "give a marketplace id (MP-...) or name")
        wanted = name_or_id.strip()
        by_id = bool(MARKETPLACE_ID_RE.fullmatch(wanted))
        query = R().id.eq(wanted) if by_id else R().name.eq(wanted)
        found = list(self.iter_items("/marketplaces", query))
        looked_for = {"id" if by_id else "name": wanted}
        if not found:
            raise ConnectLookupNotFoundError(
                f"marketplace {wanted!r} not found: no marketplace has this {'id' if by_id else 'name'}; "
                "check the spelling (names match exactly) or use the id",
                what="marketplace",
                looked_for=looked_for,
                path="/marketplaces",
                method="GET",
            )
        if len(found) > 1:
            ids = [str(m.get("id")) for m in found]
            raise ConnectAmbiguousLookupError(
                f"marketplace name {wanted!r} matches several marketplaces ({', '.join(ids)}); use the id",
                what="marketplace",
                looked_for=looked_for,
                candidates=ids,
            )
        return found[0]

    @_redacting
    def find_tier_account(self, external_id: str, hub_id: str | None = None) -> dict[str, Any] | None:
        """The tier account with this external id (on hub ``hub_id``, when given), or ``None``."""
        if not isinstance(external_id, str) or not external_id.strip():
            raise ConnectValidationError("external_id", "give the tier account's external id")
        query = R(external_id=external_id.strip())
        if hub_id is not None:
            query = query & R(hub__id=hub_id)
        found = list(self.iter_items("/tier/accounts", query))
        if len(found) > 1:
            self._emit(
                "warning",
                "tier accounts with external_id %r: %s; using %s",
                external_id,
                ", ".join(str(a.get("id")) for a in found),
                found[0].get("id"),
            )
        return found[0] if found else None

    @_redacting
    def find_connection(
        self, product_id: str, hub_id: str, connection_type: str = "production"
    ) -> dict[str, Any]:
        """The one connection of a product to a hub of this type (``production``/``test``/``preview``).

        :class:`ConnectLookupNotFoundError` when there is none; :class:`ConnectAmbiguousLookupError`
        listing the ids when there are several (then the caller must name the connection).
        """
        product = _id_segment(product_id, "product_id")
        hub = _id_segment(hub_id, "hub_id")
        found = [
            c
            for c in self.iter_items(f"/products/{product}/connections", R(hub__id=hub))
            if c.get("type") == connection_type
        ]
        looked_for = {"product_id": product_id, "hub_id": hub_id, "type": connection_type}
        if not found:
            raise ConnectLookupNotFoundError(
                f"product {product_id} has no {connection_type} connection to hub {hub_id}; "
                "check the hub id and the connection type, or create the connection in Connect",
                what="connection",
                looked_for=looked_for,
                method="GET",
                path=f"/products/{product}/connections",
            )
        if len(found) > 1:
            ids = [str(c.get("id")) for c in found]
            raise ConnectAmbiguousLookupError(
                f"product {product_id} has several {connection_type} connections to hub {hub_id} "
                f"({', '.join(ids)}); name the connection id to use",
                what="connection",
                looked_for=looked_for,
                candidates=ids,
            )
        return found[0]

    # ------------------------------------------------------------------ usage

    @_redacting
    def get_usage_file(self, usage_file_id: str) -> dict[str, Any]:
        """``GET /usage/files/{id}``; ConnectNotFoundError if there is none."""
        return self.get(f"/usage/files/{_id_segment(usage_file_id, 'usage_file_id')}")

    @_redacting
    def iter_usage_record_raw_pages(
        self, usage_file_id: str, page_size: int | None = None, *, concurrency: int | None = None
    ) -> Iterator[RawPage]:
        """The records of a usage file, page by page as raw JSON bytes (for fast Arrow parsing).

        Up to ``concurrency`` pages are fetched side by side (default and ceiling: the
        connection's ``max_concurrency``), yielded in order, in ``ordering(created_time)``.
        """
        return self._usage_records(self.iter_raw_pages, usage_file_id, page_size, concurrency)

    @_redacting
    def iter_usage_record_pages(
        self, usage_file_id: str, page_size: int | None = None, *, concurrency: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """The records of a usage file, one decoded page at a time (every page, not just the first)."""
        return self._usage_records(self.iter_pages, usage_file_id, page_size, concurrency)

    def _usage_records(
        self,
        listing: Callable[..., Iterator[_P]],
        usage_file_id: str,
        page_size: int | None,
        concurrency: int | None,
    ) -> Iterator[_P]:
        """The listing of one usage file's records: its filter, order, label and page size, in one place.

        Both record readers (raw pages for the export, decoded pages for small files) must page
        the same way, so the id check and the listing's options live here only.
        """
        _id_segment(usage_file_id, "usage_file_id")
        return listing(
            "/usage/records",
            R().usagefile.id.eq(usage_file_id.strip()),
            page_size,
            ordering=USAGE_RECORDS_ORDERING,
            label=f"usage records of {usage_file_id.strip()}",
            default_page_size=USAGE_RECORDS_PAGE_SIZE,
            concurrency=concurrency,
        )

    # ------------------------------------------------------------------ async (triggers)

    @_redacting
    async def aget_request(self, request_id: str) -> dict[str, Any]:
        """``GET /requests/{id}`` without blocking the event loop (for triggers).

        The connection is read with the async-safe lookup and the key masked with ``amask_secret``;
        the retry policy, the errors and their scrubbing are the synchronous calls'.
        """
        path = f"/requests/{_id_segment(request_id, 'request_id')}"
        answer = await self._acall("GET", path)
        return self._json_or_none(answer.body, "GET", path)

    @_redacting
    async def aget_page(
        self,
        path: str,
        query: R | str | None = None,
        *,
        ordering: str | Sequence[str] | None = None,
        select: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> AsyncPage:
        """One page of a collection without blocking the event loop (for the event triggers).

        A coroutine, not an async generator: the caller decides how to page (the event triggers
        page by key, ``ge(updated,...)``, not by offset, so a row that changes while they read
        cannot shift the pages under them). ``limit`` defaults to the hook's page size; the total
        comes from ``Content-Range`` (-1 when the server sends none). Retries, errors and their
        scrubbing are the synchronous calls'.
        """
        rel = _normalize_path(path)
        size = self._page_size(limit, DEFAULT_PAGE_SIZE) if limit is not None else None
        await self._aensure_connection()
        if size is None:
            size = self.settings.page_size or DEFAULT_PAGE_SIZE
        query_string = self._query_string(
            query, select=select, ordering=ordering, limit=size, offset=int(offset)
        )
        answer = await self._acall("GET", rel, query_string=query_string)
        items = self._json_array(answer.body, rel)
        content_range = parse_content_range(answer.headers.get("Content-Range"))
        total = content_range[2] if content_range is not None else -1
        return AsyncPage(items=items, offset=int(offset), total=total)

    # ------------------------------------------------------------------ connection test

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call (``GET /marketplaces?limit=0``); says what is wrong if it fails.

        A single attempt, no retries: the button in the UI answers at once. The message never holds
        the key (every error of the hook is scrubbed, and so is any other text shown here).
        """
        try:
            visible = self.count("/marketplaces", retries=0)
        except ConnectError as exc:
            return False, self.redact(str(exc))
        except Exception as exc:  # the UI shows the message; never let a test raise
            return False, self.redact(f"{type(exc).__name__}: {exc}")
        return (
            True,
            f"Connected to {self.settings.base_url}: the API key was accepted "
            f"({visible} marketplaces visible)",
        )
