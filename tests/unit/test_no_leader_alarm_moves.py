"""The failover and failback runbooks move which region's no-leader alarm notifies."""

from __future__ import annotations

import pytest

from config.settings import Settings
from runbooks import alarms
from runbooks.common import Runbook


class FakeCloudWatch:
    def __init__(self, region: str, enabled: bool, down: bool = False):
        self.region, self.enabled, self.down, self.calls = region, enabled, down, []

    def describe_alarms(self, AlarmNames):  # noqa: N803 - boto3's parameter names
        if self.down:
            raise ConnectionError(f"{self.region} unreachable")
        assert AlarmNames == [f"emailplatform-{self.region}-controller-no-leader"]
        return {"MetricAlarms": [{"AlarmName": AlarmNames[0], "ActionsEnabled": self.enabled}]}

    def enable_alarm_actions(self, AlarmNames):  # noqa: N803
        self.calls.append(("enable", AlarmNames))
        self.enabled = True
        return {}

    def disable_alarm_actions(self, AlarmNames):  # noqa: N803
        self.calls.append(("disable", AlarmNames))
        self.enabled = False
        return {}


@pytest.fixture
def regions(monkeypatch):
    cws = {"eu-west-1": FakeCloudWatch("eu-west-1", True), "eu-central-1": FakeCloudWatch("eu-central-1", False)}
    monkeypatch.setattr(alarms, "client", lambda settings, service, region: cws[region])
    return cws


def test_failover_makes_the_new_active_region_page_and_mutes_the_old(regions):
    book = Runbook("failover", execute=True, out=lambda line: None)
    alarms.move_no_leader_alarm(book, Settings(), source="eu-west-1", target="eu-central-1")
    assert regions["eu-central-1"].enabled is True and regions["eu-west-1"].enabled is False
    # re-running changes nothing (each step checks first)
    alarms.move_no_leader_alarm(book, Settings(), source="eu-west-1", target="eu-central-1")
    assert [c for cw in regions.values() for c in cw.calls] == [
        ("disable", ["emailplatform-eu-west-1-controller-no-leader"]),
        ("enable", ["emailplatform-eu-central-1-controller-no-leader"])]
    assert [s["outcome"] for s in book.steps] == ["done", "done", "already done", "already done"]


def test_a_dry_run_changes_nothing(regions):
    book = Runbook("failover", execute=False, out=lambda line: None)
    alarms.move_no_leader_alarm(book, Settings(), source="eu-west-1", target="eu-central-1")
    assert not regions["eu-central-1"].calls and not regions["eu-west-1"].calls


def test_an_unreachable_old_region_does_not_stop_the_failover(regions):
    regions["eu-west-1"].down = True
    lines: list[str] = []
    book = Runbook("failover", execute=True, out=lines.append)
    alarms.move_no_leader_alarm(book, Settings(), source="eu-west-1", target="eu-central-1")
    assert regions["eu-central-1"].enabled is True
    assert any("disable-alarm-actions --region eu-west-1" in line for line in lines)


def test_a_stack_without_the_alarm_skips_the_step(monkeypatch):
    class NoAlarms(FakeCloudWatch):
        def describe_alarms(self, AlarmNames):  # noqa: N803
            return {"MetricAlarms": []}

    cws = {r: NoAlarms(r, False) for r in ("eu-west-1", "eu-central-1")}
    monkeypatch.setattr(alarms, "client", lambda settings, service, region: cws[region])
    lines: list[str] = []
    book = Runbook("failover", execute=True, out=lines.append)
    alarms.move_no_leader_alarm(book, Settings(), source="eu-west-1", target="eu-central-1")
    assert not any(cw.calls for cw in cws.values()) and any("[skip ]" in line for line in lines)


def test_failover_and_failback_move_the_alarm():
    import inspect

    from runbooks import failback, failover

    assert "move_no_leader_alarm(" in inspect.getsource(failover.fail_over)
    assert "move_no_leader_alarm(" in inspect.getsource(failback.main)
