"""A controller redeploy (issue 19 leftover): the senders fence themselves while no controller lease
of their region is live (core/services/regions.py), so the hand-over from the old task to the new
one is what bounds the pause in sending. ECS starts the new task first (infra: minimum healthy
100 %); the old one releases the lease on SIGTERM; the new one, a standby until then, takes it at
its next takeover poll, not when the old lease would have run out. Against moto, no sleeping."""

from __future__ import annotations

from controller.jobs import LEASE_TAKEOVER_POLL_SECONDS, Controller
from core.services.regions import ActiveRegionGate
from runbooks.regions import _set_flag


def test_the_new_task_takes_the_released_lease_at_its_next_poll_and_sending_resumes(deps, clock, counter):
    s = deps.settings
    _set_flag(s, s.region, s.region)  # two regions, this one active: the senders' gate checks the lease
    gate = ActiveRegionGate(deps.store.table.get, s.region, clock, s.lease_seconds, recheck_seconds=0)
    old = Controller(deps, "task-old")
    assert old.heartbeat() and gate.refusal() is None

    # GIVEN the new task running beside the old one (ECS starts it first): a standby that polls
    new = Controller(deps, "task-new")
    transactions = counter.calls["dynamodb.TransactWriteItems"]
    for _ in range(3):
        assert new.takeover_poll() is False
        clock.advance(LEASE_TAKEOVER_POLL_SECONDS)
    # a poll against a live lease is reads only: no refused election transaction each second
    assert counter.calls["dynamodb.TransactWriteItems"] == transactions
    assert gate.refusal() is None  # the old leader still holds it: sending goes on

    # WHEN ECS stops the old task (SIGTERM → Controller.stop releases the lease)
    old.stop()
    assert gate.refusal() == f"no live controller lease in {s.region}: the active region is unconfirmed"

    # THEN the new task leads at its next poll, long before the old lease would have run out
    clock.advance(LEASE_TAKEOVER_POLL_SECONDS)
    assert new.takeover_poll() is True and new.lease.epoch is not None
    assert gate.refusal() is None
    assert LEASE_TAKEOVER_POLL_SECONDS < s.lease_seconds / 3  # sooner than the next heartbeat


def test_a_killed_leader_is_replaced_once_its_lease_runs_out(deps, clock):
    """Past the stop timeout ECS kills the task: nothing is released, the lease runs out."""
    s = deps.settings
    _set_flag(s, s.region, s.region)
    old, new = Controller(deps, "task-old"), Controller(deps, "task-new")
    assert old.heartbeat()
    clock.advance(s.lease_seconds - 1)
    assert new.takeover_poll() is False
    clock.advance(1.001)
    assert new.takeover_poll() is True
