"""Hooks of the CloudBlue Connect provider: :class:`~connect_provider.hooks.connect.ConnectHook`."""

from __future__ import annotations

from connect_provider.hooks.connect import ConnectHook, RawPage

__all__ = ["ConnectHook", "RawPage"]
