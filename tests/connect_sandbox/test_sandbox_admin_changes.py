"""A sandbox that changes while it runs: what the ``/_sandbox`` admin routes add and move is seen by
a client that polls Connect's public routes, as an event-driven DAG (an ``AssetWatcher`` whose
trigger polls ``/usage/files`` and ``/requests``) polls them.

Usage files move as Connect's usage module moves them (cloudblue/connect-workflows @
31cd2cd33b66d2e7ee897d171ed13c049522d36f : usage-files/object.json), recording the spec's
``usage.UsageFileDetail.events``.
"""

from __future__ import annotations

import json
import time
import urllib.error
from datetime import datetime, timedelta, timezone

import pytest

SEEDED_READY = "UF-2026-10-0000000001"  # 50 valid records
SEEDED_ACCEPTED = "UF-2026-10-0000000002"  # 20 approved records
SEEDED_DRAFT = "UF-2026-11-0000000003"
SEEDED_CLOSED = "UF-2026-09-0000000004"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def records_of(api, file_id: str, query: str = "") -> list[dict]:
    r = api.get("/usage/records", f"usagefile.id={file_id}&limit=1000{query}")
    assert r.status_code == 200, r.text
    return r.json()


def move(sandbox, file_id: str, status: str, **extra: object) -> dict:
    return sandbox.admin("POST", f"usage-files/{file_id}/status", {"status": status, **extra})


def admin_refusal(sandbox, path: str, body: object) -> tuple[int, dict]:
    try:
        sandbox.admin("POST", path, body)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    raise AssertionError(f"POST /_sandbox/{path} {body} was accepted")


class TestAUsageFileAddedWhileItRuns:
    def test_it_is_created_now(self, api, sandbox) -> None:
        before = utc_now()
        added = sandbox.add_usage_file(5)
        after = utc_now()
        listed = api.get(f"/usage/files/{added['id']}").json()
        assert before <= at(listed["events"]["created"]["at"]) <= after
        assert listed["events"]["created"] == added["events"]["created"]

    def test_a_watcher_polling_by_creation_time_sees_only_the_new_file(self, api, sandbox) -> None:
        seen_until = max(at(f["events"]["created"]["at"]) for f in api.get("/usage/files").json())
        added = sandbox.add_usage_file(5)
        r = api.get("/usage/files", f"gt(created.at,{seen_until.isoformat()})&ordering(created.at,id)")
        assert r.status_code == 200, r.text
        assert [f["id"] for f in r.json()] == [added["id"]]

    @pytest.mark.parametrize(
        ("ordering", "newest_first"),
        [("ordering(created.at)", False), ("ordering(-created.at)", True)],
        ids=["oldest first", "newest first"],
    )
    def test_files_added_one_after_another_sort_in_the_order_they_were_added(
        self, api, sandbox, ordering: str, newest_first: bool
    ) -> None:
        added = [
            sandbox.add_usage_file(1, period_from=p, period_to=p)["id"]
            for p in ("2026-12-01", "2026-10-01", "2026-11-01")
        ]
        listed = [f["id"] for f in api.get("/usage/files", ordering).json()]
        expected = added[::-1] if newest_first else added
        window = listed[: len(added)] if newest_first else listed[-len(added) :]
        assert window == expected
        times = [
            at(f["events"]["created"]["at"]) for f in api.get("/usage/files", "ordering(created.at)").json()
        ]
        assert len(set(times)) == len(times)  # no two files share a creation time


class TestMovingAUsageFile:
    @pytest.mark.parametrize(
        ("file_id", "target", "new_events", "record_status"),
        [
            (SEEDED_READY, "pending", ["submitted"], "valid"),
            (SEEDED_READY, "accepted", ["submitted", "accepted"], "approved"),
            (SEEDED_ACCEPTED, "closed", ["closed"], "closed"),
            (SEEDED_READY, "deleted", ["deleted"], "rejected"),
            (SEEDED_DRAFT, "ready", ["uploaded"], None),
        ],
        ids=[
            "ready is submitted",
            "ready is submitted then accepted",
            "accepted is closed",
            "ready is deleted",
            "draft is uploaded and processed",
        ],
    )
    def test_it_goes_the_way_connect_moves_it_recording_each_event_now(
        self, api, sandbox, file_id: str, target: str, new_events: list[str], record_status: str | None
    ) -> None:
        old = api.get(f"/usage/files/{file_id}").json()
        before = utc_now()
        answer = move(sandbox, file_id, target)
        after = utc_now()
        now = api.get(f"/usage/files/{file_id}").json()
        assert answer == now and now["status"] == target
        assert list(now["events"]) == [*old["events"], *new_events]
        assert {k: now["events"][k] for k in old["events"]} == old["events"]  # earlier events kept
        stamps = [at(now["events"][name]["at"]) for name in new_events]
        assert stamps == sorted(stamps) and all(before <= t <= after for t in stamps)
        statuses = {rec["status"] for rec in records_of(api, file_id)}
        assert statuses == ({record_status} if record_status else set())

    def test_an_accepted_file_carries_the_note_given_and_its_records_are_approved(self, api, sandbox) -> None:
        moved = move(sandbox, SEEDED_READY, "accepted", note="Checked against our meters")
        assert moved["acceptance_note"] == "Checked against our meters"
        assert moved["stats"]["accepted"] == 50 and moved["records"]["valid"] == 50
        assert (
            api.get("/usage/files", "eq(status,accepted)&ordering(created.at,id)").json()[0]["id"]
            == SEEDED_READY
        )

    def test_a_closed_file_s_records_carry_what_closing_sets(self, api, sandbox) -> None:
        move(sandbox, SEEDED_ACCEPTED, "closed")
        records = records_of(api, SEEDED_ACCEPTED)
        assert len(records) == 20
        assert all(rec["closed_at"] and rec["external_billing_id"] for rec in records)

    def test_a_watcher_filtering_on_status_sees_the_file_move_in(self, api, sandbox) -> None:
        query = "eq(status,accepted)&ordering(created.at,id)"
        assert [f["id"] for f in api.get("/usage/files", query).json()] == [SEEDED_ACCEPTED]
        added = sandbox.add_usage_file(3)
        move(sandbox, added["id"], "accepted")
        assert [f["id"] for f in api.get("/usage/files", query).json()] == [SEEDED_ACCEPTED, added["id"]]

    @pytest.mark.parametrize(
        ("file_id", "body", "message"),
        [
            (SEEDED_CLOSED, {"status": "ready"}, "status: usage file UF-2026-09-0000000004 is closed;"),
            (
                SEEDED_ACCEPTED,
                {"status": "rejected"},
                "status: usage file UF-2026-10-0000000002 is accepted;",
            ),
            (SEEDED_READY, {"status": "ready"}, "status: usage file UF-2026-10-0000000001 is ready already."),
            (SEEDED_READY, {"status": "approved"}, "status: unknown usage file status 'approved'"),
            (SEEDED_READY, {}, "status: This field is required"),
            (SEEDED_READY, {"status": "accepted", "note": 7}, "note: must be a string"),
        ],
        ids=[
            "closed is final",
            "accepted cannot be rejected",
            "already there",
            "a record status",
            "no status",
            "note",
        ],
    )
    def test_a_move_connect_would_not_make_is_refused_naming_the_field(
        self, api, sandbox, file_id: str, body: dict, message: str
    ) -> None:
        old = api.get(f"/usage/files/{file_id}").json()
        code, answer = admin_refusal(sandbox, f"usage-files/{file_id}/status", body)
        assert code == 400 and answer["error_code"] == "VAL_001"
        assert answer["errors"][0].startswith(message), answer
        assert api.get(f"/usage/files/{file_id}").json() == old

    def test_an_unknown_file_is_a_404(self, sandbox) -> None:
        code, answer = admin_refusal(sandbox, "usage-files/UF-2026-10-0000000099/status", {"status": "ready"})
        assert (code, answer["error_code"]) == (404, "NFND_001")


class TestRecordsCreationTime:
    """A record's ``created_time`` (filtered on, never sent) is its file's creation, plus its row in µs."""

    def test_a_filter_on_it_finds_the_records_of_a_file_added_since(self, api, sandbox) -> None:
        since = utc_now() - timedelta(microseconds=1)
        added = sandbox.add_usage_file(40)  # a past period: start dates say nothing of creation
        r = api.get("/usage/records", f"ge(created_time,{since.isoformat()})&limit=1000")
        assert r.status_code == 200, r.text
        assert {rec["usagefile"]["id"] for rec in r.json()} == {added["id"]}
        assert r.headers["Content-Range"] == "items 0-39/40"

    @pytest.mark.parametrize(
        ("query", "rows"),
        [
            ("ge(created_time,{t0})", range(0, 40)),
            ("lt(created_time,{t0})", range(0)),
            ("gt(created_time,{t5})", range(6, 40)),
            ("ge(created_time,{t5})&lt(created_time,{t9})", range(5, 9)),
            ("eq(created_time,{t7})", range(7, 8)),
            ("ne(created_time,{t7})", [*range(0, 7), *range(8, 40)]),
            ("in(created_time,({t1},{t3}))", [1, 3]),
            ("or(lt(created_time,{t2}),ge(created_time,{t38}))", [0, 1, 38, 39]),
            ("ge(created_time,{t10})&asset.id=AS-0000-0000-0005", [r for r in range(10, 40) if r % 4 == 1]),
        ],
        ids=[
            "from creation",
            "before creation",
            "after row 5",
            "a window",
            "one row",
            "all but one",
            "in",
            "or",
            "window and class",
        ],
    )
    def test_record_i_was_created_i_microseconds_after_its_file(self, api, sandbox, query: str, rows) -> None:
        added = sandbox.add_usage_file(40)
        t0 = at(added["events"]["created"]["at"])
        times = {f"t{i}": (t0 + timedelta(microseconds=i)).isoformat() for i in range(40)}
        everything = records_of(api, added["id"])
        r = api.get("/usage/records", f"usagefile.id={added['id']}&{query.format(**times)}&limit=1000")
        assert r.status_code == 200, r.text
        assert [rec["id"] for rec in r.json()] == [everything[i]["id"] for i in rows]

    def test_it_is_never_sent(self, api) -> None:
        assert all("created_time" not in rec for rec in records_of(api, SEEDED_READY))

    def test_creation_order_is_the_order_of_creation_times(self, api, sandbox) -> None:
        first = sandbox.add_usage_file(3)["id"]
        second = sandbox.add_usage_file(3)["id"]
        cut = api.get(f"/usage/files/{second}").json()["events"]["created"]["at"]
        r = api.get("/usage/records", f"ge(created_time,{cut})&ordering(created_time)")
        assert [rec["usagefile"]["id"] for rec in r.json()] == [second] * 3
        r = api.get("/usage/records", f"in(usagefile.id,({first},{second}))&ordering(-created_time)")
        assert [rec["usagefile"]["id"] for rec in r.json()] == [second] * 3 + [first] * 3


PENDING_PURCHASES = "and(eq(type,purchase),eq(status,pending))"
SEEDED_PENDING_PURCHASE = "PR-0000-0000-0004-001"


class TestNewPendingPurchasesAppear:
    """What a vendor-side watcher polls: pending purchases, by creation, as the spec lets it order."""

    def test_a_purchase_made_through_the_public_api_is_the_newest_pending_one(self, api, purchase) -> None:
        made = [api.post("/requests", purchase(f"manual-watch-{n}")).json()["id"] for n in range(3)]
        oldest_first = [
            r["id"] for r in api.get("/requests", f"{PENDING_PURCHASES}&ordering(created)").json()
        ]
        newest_first = [
            r["id"] for r in api.get("/requests", f"{PENDING_PURCHASES}&ordering(-created)").json()
        ]
        assert oldest_first == [SEEDED_PENDING_PURCHASE, *made]
        assert newest_first == oldest_first[::-1]

    @pytest.mark.parametrize("field", ["created", "updated"], ids=["by creation", "by last change"])
    def test_a_watcher_asking_for_what_is_newer_than_its_last_poll_sees_only_the_new_ones(
        self, api, purchase, field: str
    ) -> None:
        first = api.post("/requests", purchase("manual-poll-1")).json()
        later = [api.post("/requests", purchase(f"manual-poll-{n}")).json()["id"] for n in (2, 3)]
        r = api.get("/requests", f"{PENDING_PURCHASES}&gt({field},{first[field]})&ordering({field})")
        assert r.status_code == 200, r.text
        assert [x["id"] for x in r.json()] == later

    def test_a_decision_moves_the_request_out_and_makes_it_the_latest_updated(self, api, purchase) -> None:
        made = [api.post("/requests", purchase(f"manual-decide-{n}")).json()["id"] for n in range(2)]
        api.post(f"/requests/{made[0]}/approve", {"template_id": "TL-276-377-545-0001"})
        pending = [r["id"] for r in api.get("/requests", f"{PENDING_PURCHASES}&ordering(created)").json()]
        assert pending == [SEEDED_PENDING_PURCHASE, made[1]]
        latest = api.get("/requests", "eq(type,purchase)&ordering(-updated)&limit=1").json()
        assert [(r["id"], r["status"]) for r in latest] == [(made[0], "approved")]


class TestTheDemoVendorLeavesManualRequestsAlone:
    """``manual-...`` assets: the demo vendor never decides their requests; a vendor DAG does."""

    @pytest.mark.parametrize(
        ("external_id", "status"),
        [("manual-1", "pending"), ("auto-1", "approved"), ("fail-1", "failed")],
        ids=["manual stays pending", "others are approved", "fail- still fails"],
    )
    def test_after_the_delay(self, api, purchase, external_id: str, status: str) -> None:
        rid = api.post("/requests", purchase(external_id)).json()["id"]
        time.sleep(0.7)  # longer than the session sandbox's 0.5 s delay
        assert api.get(f"/requests/{rid}").json()["status"] == status

    def test_every_request_of_a_manual_asset_waits_for_the_vendor(self, api, purchase) -> None:
        bought = api.post("/requests", purchase("manual-later")).json()
        api.post(f"/requests/{bought['id']}/approve", {"template_id": "TL-276-377-545-0001"})
        body = {
            "type": "change",
            "asset": {"id": bought["asset"]["id"], "items": [{"id": "SEATS", "quantity": 9}]},
        }
        change = api.post("/requests", body).json()
        time.sleep(0.7)
        assert api.get(f"/requests/{change['id']}").json()["status"] == "pending"
        decided = api.post(f"/requests/{change['id']}/fail", {"reason": "Seats are sold out"}).json()
        assert (decided["status"], decided["reason"]) == ("failed", "Seats are sold out")
