"""Statuses and types of Connect objects, with their terminal states."""

from __future__ import annotations

from enum import Enum


class RequestType(str, Enum):
    """Types of asset requests that this provider creates."""

    PURCHASE = "purchase"
    CHANGE = "change"
    SUSPEND = "suspend"
    RESUME = "resume"
    CANCEL = "cancel"


class RequestStatus(str, Enum):
    """Statuses of an asset request (``GET /requests`` status filter enum)."""

    DRAFT = "draft"
    TIERS_SETUP = "tiers_setup"
    PENDING = "pending"
    INQUIRING = "inquiring"
    SCHEDULED = "scheduled"
    APPROVED = "approved"
    FAILED = "failed"
    REVOKING = "revoking"
    REVOKED = "revoked"

    @classmethod
    def open_statuses(cls) -> frozenset[RequestStatus]:
        """Statuses in which a request may still change: reuse such a request instead of a new one."""
        return frozenset({cls.DRAFT, cls.TIERS_SETUP, cls.PENDING, cls.INQUIRING, cls.SCHEDULED})

    @classmethod
    def terminal_statuses(cls) -> frozenset[RequestStatus]:
        """Statuses a request never leaves."""
        return frozenset({cls.APPROVED, cls.FAILED, cls.REVOKED})

    @classmethod
    def is_terminal(cls, status: str) -> bool:
        return status in {s.value for s in cls.terminal_statuses()}


class AssetStatus(str, Enum):
    DRAFT = "draft"
    PROCESSING = "processing"
    ACTIVE = "active"
    TERMINATING = "terminating"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class UsageFileStatus(str, Enum):
    DRAFT = "draft"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    INVALID = "invalid"
    PROCESSING = "processing"
    READY = "ready"
    REJECTED = "rejected"
    PENDING = "pending"
    ACCEPTED = "accepted"
    CLOSED = "closed"
    DELETED = "deleted"
