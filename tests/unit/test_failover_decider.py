"""The automatic-failover decider (controller/failover.py) and the senders' self-fencing gate
(core/services/regions.py), with fakes of their ports: no AWS, no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.failover import (
    Action,
    FailoverDecider,
    FailoverWatch,
    Health,
    Observation,
    Promotion,
    ReplicatedHeartbeat,
    SendStatisticsCounter,
    SesSending,
    decision_key,
)
from core import schema
from core.domain.errors import StaleWrite
from core.domain.models import iso
from core.services.ports import FakeClock
from core.services.regions import ActiveRegionGate

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PRIMARY, DR = "eu-west-1", "eu-central-1"


def obs(**health: str) -> list[Observation]:
    return [Observation(name, Health(h)) for name, h in health.items()]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the decider -------------------------------------------------------------------------------
def test_one_bad_signal_never_promotes_however_long_it_lasts():
    d = FailoverDecider(quorum=2, grace_seconds=30)
    for t in range(0, 3600, 5):
        v = d.decide(obs(heartbeat="bad", api="ok", ses="ok"), at(t))
        assert v.action is Action.WATCH
    assert v.bad == ("heartbeat",)


def test_a_quorum_promotes_only_after_the_whole_grace_period():
    d = FailoverDecider(quorum=2, grace_seconds=30)
    assert d.decide(obs(heartbeat="bad", api="bad", ses="unknown"), at(0)).action is Action.SUSPECT
    assert d.decide(obs(heartbeat="bad", api="bad", ses="unknown"), at(29)).action is Action.SUSPECT
    v = d.decide(obs(heartbeat="bad", api="bad", ses="unknown"), at(30))
    assert v.action is Action.PROMOTE
    assert v.bad == ("heartbeat", "api") and v.bad_since == at(0)
    assert "heartbeat, api bad for 30s" in v.reason


def test_unknown_signals_do_not_count_as_bad():
    d = FailoverDecider(quorum=2, grace_seconds=0.001)
    for t in (0, 10, 20):
        assert d.decide(obs(heartbeat="bad", api="unknown", ses="unknown"), at(t)).action is Action.WATCH


def test_a_flapping_signal_restarts_the_grace():
    d = FailoverDecider(quorum=2, grace_seconds=30)
    d.decide(obs(heartbeat="bad", api="bad"), at(0))
    d.decide(obs(heartbeat="bad", api="bad"), at(25))
    assert d.decide(obs(heartbeat="bad", api="ok"), at(26)).action is Action.WATCH  # one good pass
    assert d.decide(obs(heartbeat="bad", api="bad"), at(27)).action is Action.SUSPECT
    assert d.decide(obs(heartbeat="bad", api="bad"), at(56)).action is Action.SUSPECT  # not 30s since 27 yet
    assert d.decide(obs(heartbeat="bad", api="bad"), at(57)).action is Action.PROMOTE


def test_a_hold_stops_promotion_and_a_release_starts_a_new_grace():
    d = FailoverDecider(quorum=2, grace_seconds=30)
    d.decide(obs(heartbeat="bad", api="bad"), at(0))
    v = d.decide(obs(heartbeat="bad", api="bad"), at(100), hold="maintenance CHG-1")
    assert v.action is Action.HELD and "maintenance CHG-1" in v.reason
    assert d.decide(obs(heartbeat="bad", api="bad"), at(101)).action is Action.SUSPECT  # released
    assert d.decide(obs(heartbeat="bad", api="bad"), at(131)).action is Action.PROMOTE


def test_a_quorum_of_one_is_refused():
    with pytest.raises(ValueError):
        FailoverDecider(quorum=1, grace_seconds=30)


# -- signals -------------------------------------------------------------------------------------
def test_the_heartbeat_is_bad_once_the_replicated_lease_expired():
    lease = {"holder": "p-1", "epoch": 7, "expires_at": iso(at(15))}
    hb = ReplicatedHeartbeat(lambda key: lease if key == schema.lease_key(PRIMARY) else None, PRIMARY)
    assert hb.observe(at(10)).health is Health.OK
    o = hb.observe(at(20))
    assert o.health is Health.BAD and "expired 5s ago" in o.detail and hb.epoch == 7
    assert ReplicatedHeartbeat(lambda key: None, PRIMARY).observe(at(0)).health is Health.BAD


def test_ses_silence_is_bad_only_while_campaigns_are_sending():
    class Stats:
        count = 0

        def get_send_statistics(self) -> dict[str, Any]:
            return {"SendDataPoints": [{"DeliveryAttempts": self.count}]}

    stats, sending = Stats(), [True]
    signal = SesSending(SendStatisticsCounter(stats), lambda: sending[0], window_seconds=10)
    assert signal.observe(at(0)).health is Health.UNKNOWN  # no history yet
    stats.count = 5
    assert signal.observe(at(10)).health is Health.OK
    assert signal.observe(at(20)).health is Health.BAD  # nothing since t=10 while sending
    sending[0] = False
    assert signal.observe(at(30)).health is Health.UNKNOWN  # idle: silence says nothing


def test_sends_from_before_a_crash_do_not_hold_off_the_promotion_for_a_window():
    """The watched region sent until it died: those sends are in SES's window for a while after.
    Only a send after the quorum went bad vetoes; before, promotion took window + grace."""
    class Stats:
        count = 0

        def get_send_statistics(self) -> dict[str, Any]:
            return {"SendDataPoints": [{"DeliveryAttempts": self.count}]}

    stats = Stats()
    ses = SesSending(SendStatisticsCounter(stats), lambda: True, window_seconds=60)
    d = FailoverDecider(quorum=2, grace_seconds=15)

    def step(t: float) -> Any:
        o = [Observation("heartbeat", Health.BAD), Observation("api", Health.BAD),
             ses.observe(at(t), d.quorum_since)]
        return d.decide(o, at(t))

    ses.observe(at(-100))  # DR has watched for a while
    stats.count = 500  # the primary sent until t=0, then died
    assert step(0).action is Action.VETOED  # sends in the window, none known to be after the quorum yet
    assert step(1).action is Action.SUSPECT  # nothing since: the grace runs
    assert step(16).action is Action.PROMOTE  # grace + 1 s, not window + grace

    alive = FailoverDecider(quorum=2, grace_seconds=15)  # the same, but the primary keeps sending
    d = alive
    step(100)
    stats.count += 3
    assert step(101).action is Action.VETOED and step(130).action is Action.VETOED


def test_cloudwatch_sends_after_a_time_are_unknown_until_its_whole_minutes_are_published():
    """CloudWatch rounds a start down to its minute (that minute may hold earlier sends) and
    publishes a minute's sum a minute or two late: until then the window's sends still veto."""
    from controller.failover import CloudWatchSends

    class CloudWatch:
        starts: list[datetime] = []

        def get_metric_statistics(self, **kw: Any) -> dict[str, Any]:
            self.starts.append(kw["StartTime"])
            return {"Datapoints": [{"Sum": 2.0}] if kw["StartTime"] < at(120) else []}

    cw = CloudWatch()
    count = CloudWatchSends(cw)
    assert count(at(30), at(200)) == 2 and cw.starts[-1] == at(30)  # silence and quiet: never fewer
    assert count.after(at(30), at(200)) is None  # minute 60-120 not surely published before 300
    assert count.after(at(30), at(300)) == 2 and cw.starts[-1] == at(60)
    ses = SesSending(count, lambda: True, window_seconds=400)
    assert ses.observe(at(250), since=at(30)).health is Health.OK  # not known yet: the window vetoes
    assert ses.observe(at(310), since=at(130)).health is Health.OK  # 130 -> from 180: unknown until 420
    assert ses.observe(at(430), since=at(130)).health is Health.UNKNOWN  # known: none after

    class Flaky(CloudWatch):
        def get_metric_statistics(self, **kw: Any) -> dict[str, Any]:
            if kw["StartTime"] != at(0):
                raise RuntimeError("throttled")
            return {"Datapoints": [{"Sum": 5.0}]}

    flaky = SesSending(CloudWatchSends(Flaky()), lambda: True, window_seconds=300)
    assert flaky.observe(at(300), since=at(30)).health is Health.OK  # the question after failed: still a veto


# -- the watch (the job) ---------------------------------------------------------------------
class FakeTable:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, key: dict[str, str], consistent: bool = True) -> dict[str, Any] | None:
        return self.items.get((key["PK"], key["SK"]))

    def put(self, item: dict[str, Any]) -> None:
        self.items[(item["PK"], item["SK"])] = {k: v for k, v in item.items() if v is not None}

    def put_new(self, item: dict[str, Any]) -> bool:
        if (item["PK"], item["SK"]) in self.items:
            return False
        self.put(item)
        return True

    def update(self, u: Any) -> dict[str, Any]:
        """Conditions of the watch's form only: ``a = :x AND #b = :y`` (equality conjunctions)."""
        item = self.items[(u.key["PK"], u.key["SK"])]
        for clause in (u.condition.split(" AND ") if u.condition else []):
            name, value = (part.strip() for part in clause.split("="))
            name = (u.names or {}).get(name, name)
            if item.get(name) != (u.values or {})[value]:
                raise StaleWrite(f"condition failed: {clause}")
        item.update({k: v for k, v in u.set.items() if v is not None})
        for k in (*u.remove, *(k for k, v in u.set.items() if v is None)):
            item.pop(k, None)
        return item


class FixedSignal:
    def __init__(self, name: str, health: str = "ok"):
        self.name, self.health = name, Health(health)

    def observe(self, now: datetime) -> Observation:
        return Observation(self.name, self.health, "fixed")


def watch(table: FakeTable, clock: FakeClock, signals: list[Any], outcomes: list[Promotion]):
    promoted: list[Any] = []
    events: list[tuple[str, dict[str, Any]]] = []

    def promote(verdict: Any) -> Promotion:
        promoted.append(verdict)
        result = outcomes.pop(0)
        if result.ok:
            table.put({**schema.ACTIVE_REGION_KEY, "region": DR})
        return result

    w = FailoverWatch(table=table, region=DR, watched=PRIMARY, signals=signals,
                      decider=FailoverDecider(2, grace_seconds=20), promote=promote,
                      notify=lambda kind, detail: events.append((kind, detail)), clock=clock)
    return w, promoted, events


def test_the_watch_promotes_once_records_why_and_publishes_an_event():
    table, clock = FakeTable(), FakeClock(T0)
    table.put({**schema.ACTIVE_REGION_KEY, "region": PRIMARY})
    table.put({**schema.lease_key(PRIMARY), "holder": "p", "epoch": 9, "expires_at": iso(at(-1))})
    signals = [ReplicatedHeartbeat(table.get, PRIMARY), FixedSignal("api", "bad"), FixedSignal("ses", "unknown")]
    w, promoted, events = watch(table, clock, signals, [Promotion(True, [{"step": "set the active region"}])])

    assert w.run_once().action is Action.SUSPECT
    clock.advance(20)
    assert w.run_once().action is Action.PROMOTE
    clock.advance(5)
    assert w.run_once().action is Action.STANDBY  # DR is active now: nothing more to decide

    assert len(promoted) == 1
    record = table.get(decision_key(PRIMARY, 9))
    assert record["outcome"] == "promoted" and record["promoted_region"] == DR
    assert {s["signal"]: s["health"] for s in record["signals"]} == {"heartbeat": "bad", "api": "bad", "ses": "unknown"}
    assert "heartbeat, api bad for 20s" in record["why"]
    assert [kind for kind, _ in events] == ["failover.promoted"]


def test_the_watch_respects_a_durable_hold_and_never_watches_when_this_region_is_active():
    table, clock = FakeTable(), FakeClock(T0)
    table.put({**schema.ACTIVE_REGION_KEY, "region": PRIMARY})
    table.put({"PK": "PLATFORM", "SK": "FAILOVER_HOLD", "reason": "primary maintenance"})
    w, promoted, _ = watch(table, clock, [FixedSignal("heartbeat", "bad"), FixedSignal("api", "bad")], [])
    for _ in range(10):
        assert w.run_once().action is Action.HELD
        clock.advance(10)
    del table.items[("PLATFORM", "FAILOVER_HOLD")]
    table.put({**schema.ACTIVE_REGION_KEY, "region": DR})  # a manual failover happened meanwhile
    assert w.run_once().action is Action.STANDBY
    assert promoted == []


def test_a_failed_promotion_is_recorded_alarmed_and_retried_after_another_grace():
    table, clock = FakeTable(), FakeClock(T0)
    table.put({**schema.ACTIVE_REGION_KEY, "region": PRIMARY})
    signals = [FixedSignal("heartbeat", "bad"), FixedSignal("api", "bad")]
    w, promoted, events = watch(table, clock, signals, [Promotion(False, [], "DR API healthy: FAILED"),
                                                       Promotion(True, [])])
    w.run_once()
    clock.advance(20)
    assert w.run_once().action is Action.PROMOTE
    assert table.get(decision_key(PRIMARY, 0))["outcome"] == "failed"
    clock.advance(5)
    assert w.run_once().action is Action.SUSPECT  # a new grace
    clock.advance(20)
    assert w.run_once().action is Action.PROMOTE
    assert table.get(decision_key(PRIMARY, 0))["outcome"] == "promoted"
    assert [kind for kind, _ in events] == ["failover.failed", "failover.promoted"]


def test_two_dr_controllers_never_both_act_on_one_failure():
    table, clock = FakeTable(), FakeClock(T0)
    table.put({**schema.ACTIVE_REGION_KEY, "region": PRIMARY})
    signals = [FixedSignal("heartbeat", "bad"), FixedSignal("api", "bad")]
    a, promoted_a, _ = watch(table, clock, list(signals), [Promotion(False, [], "in progress")])
    b, promoted_b, _ = watch(table, clock, list(signals), [Promotion(True, [])])
    a.run_once(), b.run_once()
    clock.advance(20)
    table.items[("PLATFORM", decision_key(PRIMARY, 0)["SK"])] = {**decision_key(PRIMARY, 0), "outcome": "in_progress",
                                                                "decided_at": iso(clock.now())}
    a.run_once(), b.run_once()
    assert promoted_a == [] and promoted_b == []  # the record in progress belongs to someone else


# -- the senders' gate -------------------------------------------------------------------------
class Reads:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail = False

    def __call__(self, key: dict[str, str]) -> dict[str, Any] | None:
        if self.fail:
            raise ConnectionError("dynamodb unreachable")
        return self.items.get((key["PK"], key["SK"]))

    def set(self, key: dict[str, str], **fields: Any) -> None:
        self.items[(key["PK"], key["SK"])] = {**key, **fields}


def gate(reads: Reads, clock: FakeClock) -> ActiveRegionGate:
    return ActiveRegionGate(reads, PRIMARY, clock, lease_seconds=15, recheck_seconds=0, monotonic=lambda: 0.0)


def test_a_region_sends_only_while_the_flag_names_it_and_its_leader_confirms_it():
    reads, clock = Reads(), FakeClock(T0)
    g = gate(reads, clock)
    assert g.refusal() is None  # no flag: a single-region setup
    reads.set(schema.ACTIVE_REGION_KEY, region=PRIMARY)
    reads.set(schema.lease_key(PRIMARY), holder="p", epoch=3, expires_at=iso(at(15)))
    assert g.refusal() is None
    reads.set(schema.ACTIVE_REGION_KEY, region=DR)  # a failover
    assert g.refusal() == f"region {PRIMARY} is passive (active region: {DR})"
    reads.set(schema.ACTIVE_REGION_KEY, region=PRIMARY)
    clock.advance(16)  # the leader stopped renewing (gone, or cannot reach the table)
    assert "no live controller lease" in g.refusal()


def test_an_unreadable_flag_fences_the_senders_after_one_lease_period():
    reads, clock = Reads(), FakeClock(T0)
    reads.set(schema.ACTIVE_REGION_KEY, region=PRIMARY)
    reads.set(schema.lease_key(PRIMARY), holder="p", epoch=3, expires_at=iso(at(15)))
    g = gate(reads, clock)
    assert g.refusal() is None
    reads.fail = True
    clock.advance(14)
    assert g.refusal() is None  # the last confirmation still holds
    clock.advance(1)
    assert g.refusal() == "active region unconfirmed for a lease period (ConnectionError)"


def test_settings_refuse_automation_without_this_regions_api_and_a_quorum_of_one():
    from config.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="failover_api_url"):
        load_settings(failover_automation=True)
    with pytest.raises(SettingsError, match="EMAILPLATFORM_FAILOVER_QUORUM"):
        load_settings(failover_quorum=1)
    s = load_settings(failover_automation=True, failover_api_url="https://dr.example.com")
    assert (s.failover_quorum, s.failover_grace_seconds) == (3, 120.0)


def test_a_watch_with_fewer_signals_than_its_quorum_is_refused():
    with pytest.raises(ValueError, match="exceeds"):
        FailoverWatch(table=FakeTable(), region=DR, watched=PRIMARY, signals=[FixedSignal("api")],
                      decider=FailoverDecider(2, 10), promote=lambda v: Promotion(True, []),
                      notify=lambda k, d: None, clock=FakeClock(T0))
