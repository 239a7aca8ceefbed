"""Usage files: generated or hand-written records behind each, and the file's own lifecycle.

A file moves as Connect's usage module moves it (cloudblue/connect-workflows @
31cd2cd33b66d2e7ee897d171ed13c049522d36f : usage-files/object.json, its transitions):

    draft -> uploading -> processing -> ready -> pending -> accepted -> closed
                             |            |         '-> rejected -> uploading
                             '-> invalid -> uploading
    (ready -> uploading: a processed file uploaded again)

and a draft, invalid or ready file can be deleted (same repo @ 655d2251, cdf6ec18, 440ce191 :
usage-files/s-a-draft.md, s-d-invalid.md, s-e-ready.md). ``uploaded``, in the spec's status enum
but not in the diagram, sits between uploading and processing. Each move into a status that has an
event in the spec's ``usage.UsageFileDetail.events`` (uploaded, submitted, accepted, rejected,
closed, deleted) records it: ``{"at": <when>, "by": {id, name}}``, by the vendor or the provider
as the workflow says who acts. The records follow their file (``RECORD_STATUS_BY_FILE_STATUS``).

Files added while the sandbox runs (``POST /_sandbox/usage-files``) are created now; the seeded
ones at fixed times of the demo's past, so that a watcher sees the added ones as new.
"""

from __future__ import annotations

from collections import deque
from datetime import date
from typing import Any

from . import seed
from .errors import bad, not_found
from .rendering import ref
from .state import State
from .usage import RECORD_STATUS_BY_FILE_STATUS, GeneratedRecords, RecordSource, StoredRecords, us_of_iso

FILE_MOVES = {
    "draft": ("uploading", "deleted"),
    "uploading": ("uploaded", "processing"),
    "uploaded": ("processing",),
    "processing": ("invalid", "ready"),
    "invalid": ("uploading", "deleted"),
    "ready": ("uploading", "pending", "deleted"),
    "pending": ("accepted", "rejected"),
    "rejected": ("uploading",),
    "accepted": ("closed",),
}
# The event a move into a status records, and who acts (the vendor uploads, submits and deletes;
# the provider accepts, rejects and closes).
FILE_EVENTS = {
    "uploading": ("uploaded", seed.VENDOR),
    "pending": ("submitted", seed.VENDOR),
    "accepted": ("accepted", seed.PROVIDER),
    "rejected": ("rejected", seed.PROVIDER),
    "closed": ("closed", seed.PROVIDER),
    "deleted": ("deleted", seed.VENDOR),
}
# The note a move into a status sets, and the demo provider's words when none is given.
FILE_NOTES = {
    "accepted": ("acceptance_note", "Accepted by the demo provider"),
    "rejected": ("rejection_note", "Rejected by the demo provider"),
}
FIRST_GENERATED_FILE = 9000000001


def file_path(start: str, target: str) -> list[str] | None:
    """The statuses a file passes through from ``start`` to ``target`` (the shortest way), or None."""
    came_from: dict[str, str] = {start: start}
    queue = deque([start])
    while queue:
        status = queue.popleft()
        if status == target:
            path = [status]
            while path[-1] != start:
                path.append(came_from[path[-1]])
            return path[-2::-1]
        for nxt in FILE_MOVES.get(status, ()):
            if nxt not in came_from:
                came_from[nxt] = status
                queue.append(nxt)
    return None


class UsageFiles(State):
    """``GET /usage/files``, the records behind each file, and the admin API's files and moves."""

    def add_usage_file(
        self,
        records: int,
        product_id: str = seed.DEMO_PRODUCT,
        status: str = "ready",
        period_from: str | date = "2026-10-01",
        period_to: str | date = "2026-10-31",
    ) -> dict:
        """A new file of ``records`` generated records, created now (admin API, ``--usage-records``)."""
        with self.lock:
            if product_id not in self.products:
                raise bad(f"product_id: product {product_id} does not exist.")
            if status not in RECORD_STATUS_BY_FILE_STATUS:
                raise bad(f"status: unknown usage file status {status!r}.")
            if not isinstance(records, int) or records < 0:
                raise bad("records: must be an integer >= 0.")
            pfrom, pto = _period(period_from, period_to)
            fid = f"UF-{pfrom.year:04d}-{pfrom.month:02d}-{next(self.file_counter):010d}"
            self._create_usage_file(fid, product_id, status, (pfrom, pto), records, created=self.now())
            return self.render_usage_file(fid, detail=True)

    def move_usage_file(self, fid: str, status: Any, note: Any = None) -> dict:
        """Move a file to ``status`` the way Connect would, recording each event on the way now.

        ``ready`` -> ``accepted`` passes through ``pending``: the file is submitted, then accepted.
        """
        with self.lock:
            f = self._usage_file(fid)
            if status not in RECORD_STATUS_BY_FILE_STATUS:
                raise bad(
                    f"status: unknown usage file status {status!r}; use one of {', '.join(FILE_MOVES)}."
                )
            if note is not None and not isinstance(note, str):
                raise bad("note: must be a string (the acceptance or rejection note).")
            if status == f["status"]:
                raise bad(f"status: usage file {fid} is {status} already.")
            path = file_path(f["status"], status)
            if path is None:
                onward = ", ".join(FILE_MOVES.get(f["status"], ())) or "no other status"
                raise bad(
                    f"status: usage file {fid} is {f['status']}; Connect cannot move it to {status} "
                    f"(from {f['status']} a file goes to {onward})."
                )
            for step in path:
                self._enter(f, step, self.now(), note)
            self._records_follow(fid)
            return self.render_usage_file(fid, detail=True)

    def _usage_file(self, fid: str) -> dict:
        f = self.usage_files.get(fid)
        if f is None:
            raise not_found("Usage file", fid)
        return f

    def _enter(self, f: dict, status: str, at: str, note: str | None) -> None:
        """The file is now ``status``: its event and note recorded, copied so readers keep theirs."""
        f["status"] = status
        if status in FILE_EVENTS:
            name, who = FILE_EVENTS[status]
            f["events"] = {**f["events"], name: {"at": at, "by": ref(who, "id", "name")}}
        if status in FILE_NOTES:
            key, default = FILE_NOTES[status]
            f[key] = note or default

    def _records_follow(self, fid: str) -> None:
        """The file's records take the status of the file's new status (a new source, not a change)."""
        f = self.usage_files[fid]
        record_status = RECORD_STATUS_BY_FILE_STATUS[f["status"]]
        if record_status != f["_record_status"]:
            f["_record_status"] = record_status
            self.record_sources[fid] = self.record_sources[fid].with_status(record_status)

    def _create_usage_file(
        self, fid: str, product_id: str, status: str, period: tuple[date, date], count: int, *, created: str
    ) -> None:
        """A file created at ``created`` and moved to ``status`` at once, its records created with it."""
        product = self.products[product_id]
        marketplace = self.marketplaces["MP-00001"]
        pfrom, pto = period
        name = f"{product['name']} usage {pfrom.isoformat()}..{pto.isoformat()}"[:100]
        usagefile = {"id": fid, "name": name, "schema": "qt", "currency": marketplace["currency"]}
        created_us = us_of_iso(created)
        record_status = RECORD_STATUS_BY_FILE_STATUS[status]
        source = self._record_source(fid, product, usagefile, period, (count, created_us, record_status))
        self.reserve(created_us + source.count - 1)  # the records' creation times (see State.now_us)
        f = {
            "id": fid,
            "name": name,
            "description": f"Usage of {product['name']} for {pfrom:%B %Y}",
            "note": "",
            "external_id": f"ext-{fid.lower()}",
            "status": "draft",
            "vendor": dict(seed.VENDOR),
            "provider": dict(seed.PROVIDER),
            "environment": "production",
            "marketplace": ref(marketplace, "id", "name", "icon"),
            "contract": ref(seed.CONTRACT, "id", "name"),
            "product": ref(product, "id", "name", "icon"),
            "error_detail": None,
            "acceptance_note": None,
            "rejection_note": None,
            "schema": "qt",
            "currency": marketplace["currency"],
            "period": {"from": pfrom.isoformat(), "to": pto.isoformat()},
            "events": {"created": {"at": created, "by": ref(seed.SYSTEM_USER, "id", "name")}},
            "_count": source.count,
            "_record_status": record_status,
        }
        for step in file_path("draft", status) or []:
            self._enter(f, step, created, None)
        self.usage_files[fid] = f
        self.record_sources[fid] = source

    def _record_source(
        self,
        fid: str,
        product: dict,
        usagefile: dict,
        period: tuple[date, date],
        records: tuple[int, int, str],
    ) -> RecordSource:
        """The file's records: the hand-written edge values, or ``count`` generated ones.

        ``records`` is (how many, when the first was created in epoch microseconds, their status).
        """
        count, created_us, record_status = records
        if fid == seed.EDGE_FILE_ID:
            return StoredRecords.of(seed.edge_records(usagefile, product["items"][0]), created_us)
        pfrom, pto = period
        return GeneratedRecords(
            count=count,
            created_us=created_us,
            file_id=fid,
            items=product["items"],
            assets=self._record_assets(product["id"]),
            product_id=product["id"],
            usagefile=usagefile,
            period_from=pfrom,
            period_days=(pto - pfrom).days + 1,
            status=record_status,
            categories=seed.USAGE_CATEGORIES,
        )

    def _record_assets(self, product_id: str) -> list[dict]:
        """The assets a product's generated records cycle over, as records name them."""
        out = []
        for aid in seed.RECORD_ASSETS.get(product_id, []):
            asset = seed.record_asset_of(aid, aid, aid)  # an asset no longer listed keeps its ids
            if aid in self.assets:
                asset["external_id"] = self.assets[aid]["external_id"]
                asset["external_uid"] = self.assets[aid]["external_uid"]
            out.append(asset)
        return out or seed.VAULT_RECORD_ASSETS

    def render_usage_file(self, fid: str, detail: bool = False) -> dict:
        """A usage file as ``GET /usage/files`` (list) or ``/usage/files/{id}`` (``detail``) serves it."""
        f = self._usage_file(fid)
        count = f["_count"]
        rs = f["_record_status"]
        out = {k: v for k, v in f.items() if not k.startswith("_")}
        out["stats"] = {
            "uploaded": count,
            "validated": count if rs in ("valid", "approved", "closed") else 0,
            "pending": count if f["status"] == "pending" else 0,
            "accepted": count if rs in ("approved", "closed") else 0,
            "closed": count if rs == "closed" else 0,
            "billed": count if rs == "closed" else 0,
        }
        if detail:
            out.update(_detail(fid, f["status"], count, rs))
        return out


def _detail(fid: str, status: str, count: int, rs: str) -> dict:
    """What the detail adds to the list representation (``usage.UsageFileDetail``)."""
    out: dict[str, Any] = {}
    if status != "draft":  # nullable in the spec, but null is not in its enum: omitted
        out["sub_status"] = "processed"
    out["usage_file_uri"] = f"/files/usage/{fid}/upload.xlsx"
    out["processed_file_uri"] = f"/files/usage/{fid}/processed.xlsx"
    out["reconciliation_file_uri"] = f"/files/usage/{fid}/reconciliation.xlsx"
    out["records"] = {
        "valid": count if rs in ("valid", "approved") else 0,
        "invalid": count if rs == "invalid" else 0,
        "closed": count if rs == "closed" else 0,
    }
    # start_datetime_utc / end_datetime_utc are writeOnly in usage.UsageFileDetail: not sent.
    return out


def _period(period_from: str | date, period_to: str | date) -> tuple[date, date]:
    try:
        pfrom = period_from if isinstance(period_from, date) else date.fromisoformat(period_from)
        pto = period_to if isinstance(period_to, date) else date.fromisoformat(period_to)
    except (TypeError, ValueError) as exc:
        raise bad(f"period_from/period_to: {exc}") from exc
    if pto < pfrom:
        raise bad("period_to: must not be before period_from.")
    return pfrom, pto
