"""The project's event-driven scheduling glue (``connect_project.events``) and the vendor rule.

Settings are read from the environment when the DAG files are parsed; the asset events a run is
triggered by are read back into trigger payloads; the export plans the files the events name;
the vendor decides pending purchases against the sandbox, one failure never stopping the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from connect_project import events, vendor
from connect_project import usage_pipeline as pipeline
from connect_provider.hooks.connect import ConnectHook
from connect_provider.triggers.events import ConnectRequestEventTrigger, ConnectUsageFileEventTrigger
from purchase_factory import buy


class TestEventSettings:
    @pytest.mark.parametrize(
        ("env", "schedule", "follow"),
        [
            ({}, "events", "poll"),
            ({"CONNECT_USAGE_SCHEDULE": "@daily"}, "@daily", "poll"),
            ({"CONNECT_USAGE_SCHEDULE": "none", "CONNECT_CHANGES_FOLLOW": "events"}, None, "events"),
        ],
        ids=["defaults", "keep-the-daily-schedule", "manual-export-and-follow-by-events"],
    )
    def test_the_schedules_come_from_the_environment(self, env, schedule, follow):
        settings = events.EventSettings.from_env(env)
        assert settings.usage_schedule == schedule and settings.changes_follow == follow
        expected = [events.USAGE_FILES_ASSET] if schedule == "events" else schedule
        assert events.usage_schedule(settings) == expected

    @pytest.mark.parametrize(
        "env",
        [{"CONNECT_CHANGES_FOLLOW": "sometimes"}, {"CONNECT_EVENTS_POLL_SECONDS": "0"}],
        ids=["unknown-follow-mode", "zero-poll-interval"],
    )
    def test_a_bad_setting_is_refused_naming_the_variable(self, env):
        (name,) = env
        with pytest.raises(ValueError, match=name):
            events.EventSettings.from_env(env)

    def test_the_watched_assets_carry_the_providers_event_triggers(self):
        (usage,) = events.USAGE_FILES_ASSET.watchers
        assert isinstance(usage.trigger, ConnectUsageFileEventTrigger)
        assert usage.trigger.statuses == ("ready", "pending", "accepted", "closed")
        (pending,) = events.PENDING_PURCHASES_ASSET.watchers
        assert isinstance(pending.trigger, ConnectRequestEventTrigger)
        assert (pending.trigger.types, pending.trigger.statuses) == (("purchase",), ("pending",))


class TestEventPayloads:
    def test_the_payloads_of_watcher_events_are_read_and_other_events_skipped(self):
        from_watcher = {"from_trigger": True, "payload": {"kind": "usage_file", "usage_file_id": "UF-1"}}
        duplicate = {"from_trigger": True, "payload": {"kind": "usage_file", "usage_file_id": "UF-1"}}
        by_hand = {"note": "posted from the UI"}
        request = {"from_trigger": True, "payload": {"kind": "request", "request_id": "PR-1"}}
        triggering = {
            "connect_usage_files": [{"extra": from_watcher}, {"extra": by_hand}, {"extra": duplicate}],
            "other": [{"extra": request}],
        }
        found = events.payloads(triggering, "usage_file")
        assert [p["usage_file_id"] for p in found] == ["UF-1", "UF-1"]
        assert events.ids_of(found, "usage_file_id") == ["UF-1"]
        assert events.payloads(None, "usage_file") == []


class TestExportPlanFromEvents:
    def test_the_files_named_by_events_are_planned_when_in_the_statuses_and_not_exported(
        self, sandbox, dest: Path
    ):
        hook = ConnectHook()
        # ...0001 is ready, ...0003 a draft (not an exported status), UF-NOPE does not exist.
        named = ["UF-2026-10-0000000001", "UF-2026-11-0000000003", "UF-2026-10-0000000001"]
        plan = pipeline.plan_exports(hook, destination=str(dest), event_file_ids=named)
        assert plan == [{"usage_file_id": "UF-2026-10-0000000001", "destination": str(dest)}]


class TestVendorDecisions:
    @pytest.mark.parametrize(
        ("quantities", "decision"),
        [(["1", "100"], "approve"), (["101"], "inquire"), (["unlimited"], "inquire"), (["2.5"], "inquire")],
        ids=["within-the-limit", "over-the-limit", "unlimited", "not-whole"],
    )
    def test_the_rule_approves_whole_quantities_up_to_the_limit(self, quantities, decision):
        request = {"asset": {"items": [{"quantity": q} for q in quantities]}}
        assert vendor.rule(request, max_quantity=100) == decision

    def test_pending_purchases_are_approved_or_inquired_and_one_failure_stops_no_other(self, sandbox):
        small, large = buy("manual-vendor-small", 5), buy("manual-vendor-large", 500)
        hook = ConnectHook()
        done = vendor.decide_purchases(hook, [small, "PR-9999-9999-9999-001", large, small])
        assert done.approved == [small] and done.inquired == [large]
        assert list(done.failed) == ["PR-9999-9999-9999-001"]
        assert hook.get_request(small)["status"] == "approved"
        assert hook.get_request(large)["status"] == "inquiring"
        # A duplicate event later: nothing is decided twice.
        again = vendor.decide_purchases(hook, [small, large])
        assert again.skipped == [small, large] and not again.approved and not again.inquired
