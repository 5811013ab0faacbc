"""Automatic failover under faults, with the fakes of tests/unit/test_failover_decider.py:
a killed or failed promotion is finished (M1); a lagging replica never lets both regions send (H2)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from controller.failover import (
    Action,
    FailoverDecider,
    FailoverWatch,
    Promotion,
    ReplicatedHeartbeat,
    SesSending,
    decision_key,
)
from controller.lease import Lease
from core import schema
from core.domain.models import iso
from core.services.ports import FakeClock
from core.services.regions import AWAITING_QUIET_OF, ActiveRegionGate, active_region_flag
from tests.unit.test_failover_decider import DR, PRIMARY, T0, FakeTable, FixedSignal, Reads


class Killed(BaseException):
    """SIGKILL of the DR controller in the middle of the runbook (nothing after this line runs)."""


def _watch(table: FakeTable, clock: FakeClock, promote: Any, extra: list[Any] | None = None) -> FailoverWatch:
    signals = [ReplicatedHeartbeat(table.get, PRIMARY), FixedSignal("api", "bad"), FixedSignal("route53", "bad"),
               *(extra or [])]
    return FailoverWatch(table=table, region=DR, watched=PRIMARY, signals=signals,
                         decider=FailoverDecider(3, grace_seconds=20), promote=promote,
                         notify=lambda kind, detail: None, clock=clock)


def _primary_gone(table: FakeTable) -> None:
    table.put({**schema.ACTIVE_REGION_KEY, "region": PRIMARY})
    table.put({**schema.lease_key(PRIMARY), "holder": "p", "epoch": 9, "expires_at": iso(T0 - timedelta(seconds=1))})


def unfinished_since() -> float | None:
    return REGISTRY.get_sample_value("emailplatform_failover_unfinished_since_timestamp_seconds", {"region": DR})


# -- M1: a promotion that stopped half-way is finished ----------------------------------------
def test_a_promotion_killed_half_way_is_taken_over_after_a_bounded_time_and_finished():
    table, clock = FakeTable(), FakeClock(T0)
    _primary_gone(table)

    def killed(verdict: Any) -> Promotion:  # e.g. after the checks, before the flag is written
        raise Killed()

    first = _watch(table, clock, killed)
    first.run_once()
    clock.advance(20)
    with pytest.raises(Killed):
        first.run_once()
    record = table.get(decision_key(PRIMARY, 9))
    assert record["outcome"] == "in_progress"

    # the controller restarts (ECS replaces the task); the primary is still gone
    promoted: list[Any] = []

    def promote(verdict: Any) -> Promotion:
        promoted.append(verdict)
        table.put({**schema.ACTIVE_REGION_KEY, "region": DR})
        return Promotion(True, [])

    restarted = _watch(table, clock, promote)
    restarted.run_once()
    assert unfinished_since() == T0.replace(second=20).timestamp()  # alerted on (EmailPlatformFailoverUnfinished)
    while clock.now() < T0 + timedelta(seconds=20 + 599):  # within the bound: the attempt may still be running
        restarted.run_once()
        clock.advance(5)
    assert promoted == []
    for _ in range(10):
        restarted.run_once()
        clock.advance(5)
    assert len(promoted) == 1
    record = table.get(decision_key(PRIMARY, 9))
    assert (record["outcome"], record["attempt"]) == ("promoted", 2)
    assert unfinished_since() == 0


def test_a_promotion_that_failed_after_the_switch_is_resumed_until_every_step_is_done():
    """The flag was set, then Route 53 failed: the next passes see DR active and must still finish."""
    table, clock = FakeTable(), FakeClock(T0)
    _primary_gone(table)
    steps: list[str] = []

    def promote(verdict: Any) -> Promotion:  # the runbook: each step skipped once done
        if "flag" not in steps:
            table.put({**schema.ACTIVE_REGION_KEY, "region": DR})
            steps.append("flag")
        if len([s for s in steps if s == "route53 failed"]) < 1:
            steps.append("route53 failed")
            return Promotion(False, [], "Route 53: ThrottlingException")
        steps.append("route53")
        return Promotion(True, [])

    w = _watch(table, clock, promote)
    w.run_once()
    clock.advance(20)
    assert w.run_once().action is Action.PROMOTE
    assert table.get(decision_key(PRIMARY, 9))["outcome"] == "failed"
    assert unfinished_since() == (T0 + timedelta(seconds=20)).timestamp()
    clock.advance(5)
    w.run_once()
    assert steps == ["flag", "route53 failed"]  # not every pass: a grace after the failure
    clock.advance(20)
    assert w.run_once().action is Action.STANDBY
    assert steps == ["flag", "route53 failed", "route53"]
    assert table.get(decision_key(PRIMARY, 9))["outcome"] == "promoted"
    assert unfinished_since() == 0


def test_a_slow_first_attempt_never_overwrites_the_attempt_that_took_it_over():
    table, clock = FakeTable(), FakeClock(T0)
    _primary_gone(table)
    takeover: list[FailoverWatch] = []

    def slow(verdict: Any) -> Promotion:  # hangs past the bound; meanwhile another controller takes over
        clock.advance(700)
        takeover[0].run_once()
        return Promotion(False, [], "timed out")

    def promote(verdict: Any) -> Promotion:
        table.put({**schema.ACTIVE_REGION_KEY, "region": DR})
        return Promotion(True, [])

    takeover.append(_watch(table, clock, promote))
    takeover[0].decider.bad_since = T0 - timedelta(seconds=60)  # it has seen the quorum for a grace too
    first = _watch(table, clock, slow)
    first.run_once()
    clock.advance(20)
    first.run_once()
    record = table.get(decision_key(PRIMARY, 9))
    assert (record["outcome"], record["attempt"]) == ("promoted", 2)


# -- H2: a lagging replica never lets both regions send ----------------------------------------
class ReplicaTable(FakeTable):
    """One region's replica: its transactions check conditions against this replica only."""

    def transact(self, updates: list[Any]) -> None:
        for u in updates:
            item = self.items.setdefault((u.key["PK"], u.key["SK"]), dict(u.key))
            item.update({k: v for k, v in u.set.items() if v is not None})


class SesFigures:
    """The primary region's SES sends as DR reads them (CloudWatch in the primary's region)."""

    def __init__(self) -> None:
        self.sends_at: list[datetime] = []

    def __call__(self, since: datetime, now: datetime) -> int:
        return sum(1 for t in self.sends_at if since <= t <= now)


def test_a_lagging_replica_never_lets_both_regions_send():
    """The primary is alive (its controller renews its lease, its senders run) but its API is down
    (route53 + api bad) and the global-table replication to DR lags by more than a lease period
    (heartbeat bad). DR promotes (quorum 3); the flag is written in DR only (source unreachable)."""
    clock = FakeClock(T0)
    primary_replica = Reads()
    live = iso(T0 + timedelta(seconds=15))
    primary_replica.set(schema.ACTIVE_REGION_KEY, region=PRIMARY)
    primary_replica.set(schema.lease_key(PRIMARY), holder="p", epoch=9, expires_at=live)
    dr = FakeTable()  # DR's replica, behind: the primary's lease as last replicated, long expired
    dr.put({**schema.ACTIVE_REGION_KEY, "region": PRIMARY})
    dr.put({**schema.lease_key(PRIMARY), "holder": "p", "epoch": 9, "expires_at": iso(T0 - timedelta(seconds=60))})

    def promote(verdict: Any) -> Promotion:  # runbooks.regions.switch_active_region(source_reachable=False)
        dr.put(active_region_flag(DR, clock.now(), awaiting_quiet=PRIMARY))
        return Promotion(True, [])

    w = _watch(dr, clock, promote)
    w.run_once()
    clock.advance(20)
    assert w.run_once().action is Action.PROMOTE
    assert dr.get(schema.ACTIVE_REGION_KEY)[AWAITING_QUIET_OF] == PRIMARY
    primary_replica.set(schema.lease_key(PRIMARY), holder="p", epoch=9,
                        expires_at=iso(clock.now() + timedelta(seconds=15)))  # the primary leader renews

    # DR's controller takes no lease, and its senders claim nothing, while the primary may be sending
    dr_lease = Lease(dr, DR, "d", 15, clock, peer_region=PRIMARY)
    assert dr_lease.acquire_or_renew() is False
    primary_gate = ActiveRegionGate(primary_replica, PRIMARY, clock, lease_seconds=15, recheck_seconds=0,
                                    monotonic=lambda: 0.0)
    dr_gate = ActiveRegionGate(dr.get, DR, clock, lease_seconds=15, recheck_seconds=0, monotonic=lambda: 0.0)
    assert primary_gate.refusal() is None
    assert dr_gate.refusal() == f"region {DR} waits for evidence that {PRIMARY} stopped sending"
    assert dr_gate.flag_names_us is False  # nor does it hand batches back (no write in DR's replica)
    for _ in range(100):  # no SES signal to prove the primary quiet: DR waits (an operator confirms)
        w.run_once()
        clock.advance(5)
    assert dr_gate.refusal() is not None


def test_the_promoted_region_sends_only_once_the_old_regions_ses_was_quiet_for_a_whole_window():
    clock = FakeClock(T0)
    dr = ReplicaTable()
    dr.put(active_region_flag(DR, T0, awaiting_quiet=PRIMARY))
    dr_lease = Lease(dr, DR, "d", 15, clock, peer_region=PRIMARY)
    figures = SesFigures()
    ses = SesSending(figures, lambda: True, window_seconds=300)
    w = _watch(dr, clock, lambda v: Promotion(True, []), extra=[ses])
    dr_gate = ActiveRegionGate(dr.get, DR, clock, lease_seconds=15, recheck_seconds=0, monotonic=lambda: 0.0)

    # the primary keeps sending until DR's flag replicates to it, 200 s after the switch
    figures.sends_at = [T0 + timedelta(seconds=t) for t in range(0, 201, 10)]
    while clock.now() < T0 + timedelta(seconds=499):
        assert w.run_once().action is Action.STANDBY
        assert dr_gate.refusal() is not None, f"DR may send at {clock.now()} while the primary sent at 200 s"
        assert dr_lease.acquire_or_renew() is False
        clock.advance(5)
    clock.advance(5)  # 300 s of silence since its last send
    w.run_once()
    assert dr_lease.acquire_or_renew() is True  # now DR's controller leads, and its senders send
    assert dr_gate.refusal() is None


def test_the_decider_never_promotes_while_the_primary_is_observably_sending():
    table, clock = FakeTable(), FakeClock(T0)
    _primary_gone(table)
    promoted: list[Any] = []
    w = _watch(table, clock, lambda v: promoted.append(v) or Promotion(True, []),
               extra=[FixedSignal("ses", "ok")])
    for _ in range(100):
        assert w.run_once().action is Action.VETOED
        clock.advance(5)
    assert promoted == []


def test_two_regions_electing_on_lagging_replicas_never_take_the_same_epoch():
    clock = FakeClock(T0)
    replicas = {PRIMARY: ReplicaTable(), DR: ReplicaTable()}
    for r in replicas.values():  # both replicas agree on the last election (epoch 9) and not since
        r.put({"PK": "PLATFORM", "SK": "EPOCH", "epoch": 9})
    replicas[PRIMARY].put({**schema.ACTIVE_REGION_KEY, "region": PRIMARY})
    replicas[DR].put({**schema.ACTIVE_REGION_KEY, "region": DR})  # split view: each replica names its own
    epochs = {}
    for region, peer in ((PRIMARY, DR), (DR, PRIMARY)):
        lease = Lease(replicas[region], region, f"{region}-0", 15, clock, peer_region=peer)
        assert lease.acquire_or_renew() is True
        epochs[region] = lease.epoch
    assert epochs[PRIMARY] != epochs[DR]
    assert min(epochs.values()) > 9
    again = Lease(replicas[DR], DR, "dr-1", 15, clock, peer_region=PRIMARY)
    clock.advance(16)
    assert again.acquire_or_renew() is True and again.epoch % 2 == epochs[DR] % 2 and again.epoch > epochs[DR]
