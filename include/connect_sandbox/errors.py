"""Connect's error answers, as the sandbox's parts raise them and its routes send them."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An answer in Connect's error shape: ``{"error_code": ..., "errors": [...]}``.

    A 409 adds ``params``, naming what already exists (``request_id``, ``asset_id``,
    ``request_status``, ``asset_status``): the shape connect-extension-for-cb-commerce reads from
    Connect's 409 answers (``error.additional_info['params']`` in
    cbcext/services/fulfillment/base.py and purchase.py).
    """

    def __init__(self, status: int, error_code: str, *errors: str, params: dict | None = None) -> None:
        super().__init__(f"{status} {error_code}: {'; '.join(errors)}")
        self.status = status
        self.error_code = error_code
        self.errors = list(errors)
        self.params = params

    def body(self) -> dict:
        out: dict[str, Any] = {"error_code": self.error_code, "errors": self.errors}
        if self.params is not None:
            out["params"] = self.params
        return out


def bad(*errors: str, code: str = "VAL_001") -> ApiError:
    """A 400 naming the field and the fix."""
    return ApiError(400, code, *errors)


def conflict(*errors: str, code: str, params: dict) -> ApiError:
    """A 409 whose ``params`` name what already exists."""
    return ApiError(409, code, *errors, params=params)


def not_found(kind: str, oid: str) -> ApiError:
    return ApiError(404, "NFND_001", f"{kind} {oid} not found.")
