"""What was exported, at which version of each usage file.

One small JSON per usage file, ``<dest>/_manifest/<UF-...>.json``, written atomically (staging
name, then one move). One file per usage file rather than one shared document, so the mapped
export tasks of a DAG run never race on a read-modify-write.

The *version* of a usage file is a fingerprint of what Connect changes when the file or its
records change: its status, its events (``created``, ``uploaded``, ``submitted``, ``accepted``,
``closed``... each with a timestamp; an ``updated`` event when present) and its ``stats`` (record
counts per record status), plus this exporter's schema version (a new schema re-exports
everything). Only fields of the *list* representation count (``GET /usage/files`` has no
``records`` block, the detail has), so the list the DAG reads and the detail the export reads give
the same version. A file whose version equals the manifest's is not exported again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from connect_provider.usage.schema import SCHEMA_VERSION
from connect_provider.usage.writer import DatasetLayout, write_bytes_atomically

MANIFEST_FORMAT = 1


def version_basis(usage_file: dict[str, Any]) -> dict[str, Any]:
    """The parts of a usage file object whose change means its records may have changed."""
    events = usage_file.get("events") or {}
    return {
        "status": usage_file.get("status"),
        "events": {
            name: (event or {}).get("at") if isinstance(event, dict) else event
            for name, event in sorted(events.items())
        },
        "stats": usage_file.get("stats"),
        "schema_version": SCHEMA_VERSION,
    }


def usage_file_version(usage_file: dict[str, Any]) -> str:
    """A short stable fingerprint of :func:`version_basis`."""
    canonical = json.dumps(version_basis(usage_file), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ManifestEntry:
    """The last successful export of one usage file."""

    usage_file_id: str
    version: str
    status: str | None
    product_id: str
    period: str
    rows: int
    quarantined: int
    bytes: int
    path: str
    quarantine_path: str | None
    exported_at: str
    schema_version: int = SCHEMA_VERSION
    basis: dict[str, Any] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    #: Paths of record fields the schema did not know (kept in the ``extra`` column).
    unknown_fields: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ManifestEntry:
        raw = json.loads(data)
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


def read_entry(layout: DatasetLayout, usage_file_id: str) -> ManifestEntry | None:
    """The manifest entry of a usage file, or None when it was never exported (or is unreadable)."""
    path = layout.manifest_path(usage_file_id)
    if not path.exists():
        return None
    try:
        return ManifestEntry.from_json(path.read_bytes())
    except (ValueError, TypeError, KeyError):
        # A damaged entry means "unknown": exporting again is the safe answer.
        return None


def read_all(layout: DatasetLayout) -> list[ManifestEntry]:
    """Every manifest entry under the destination, sorted by usage file id."""
    directory = layout.manifest_dir()
    if not directory.exists():
        return []
    entries = []
    for path in directory.iterdir():
        if path.name.endswith(".json") and not path.name.startswith(("_", ".")):
            entry = read_entry(layout, path.name[: -len(".json")])
            if entry is not None:
                entries.append(entry)
    return sorted(entries, key=lambda e: e.usage_file_id)


def write_entry(layout: DatasetLayout, entry: ManifestEntry, token: str | None = None) -> None:
    """Record an export; atomic, so a reader sees the previous entry or this one. ``token`` is the
    export's lease token, so that no other export's cleanup takes the staged entry for litter."""
    final = layout.manifest_path(entry.usage_file_id)
    staged = layout.staging_path(entry.usage_file_id, "manifest", suffix="json", token=token)
    write_bytes_atomically(final, entry.to_json(), staged)


def needs_export(usage_file: dict[str, Any], entry: ManifestEntry | None) -> bool:
    """True when the usage file was never exported or changed since (or the schema changed)."""
    if entry is None:
        return True
    return entry.version != usage_file_version(usage_file) or entry.schema_version != SCHEMA_VERSION


def data_file_exists(entry: ManifestEntry) -> bool:
    """Whether the exported data file of an entry is still there (someone may have deleted it)."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(entry.path).exists()


def select_for_export(layout: DatasetLayout, usage_files: list[dict[str, Any]]) -> list[str]:
    """Ids of the usage files that are new, changed since their export, or whose data file is gone."""
    selected = []
    for usage_file in usage_files:
        entry = read_entry(layout, str(usage_file["id"]))
        if needs_export(usage_file, entry) or (entry is not None and not data_file_exists(entry)):
            selected.append(str(usage_file["id"]))
    return selected
