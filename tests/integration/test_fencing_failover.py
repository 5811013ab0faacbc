"""Fencing tokens across regions (C4) and fenced bulk puts (C9), against moto.

One moto table stands for the global table (replication with no lag): both regions' lease items,
the active-region flag and the fencing counter live in it, as they do on AWS."""

from __future__ import annotations

import pytest

from controller.jobs import Controller
from core import schema
from core.adapters.dynamodb import Update
from core.domain.errors import Fenced
from core.domain.statuses import BatchStatus, MessageStatus, TransactionStatus
from runbooks.regions import _set_flag
from tests.helpers import recipients, submit


def _restarting_primary(deps, clock, restarts: int) -> Controller:
    """The primary's controller restarts ``restarts`` times (each restart is a new election)."""
    for i in range(restarts):
        c = Controller(deps, f"primary-{i}")
        assert c.heartbeat()
        c.lease.release()
        clock.advance(1)
    c = Controller(deps, f"primary-{restarts}")
    assert c.heartbeat()
    return c


def test_after_a_failover_the_dr_leader_outranks_the_primary_and_the_deposed_primary_is_fenced(deps, tenant, clock):
    s = deps.settings
    # GIVEN a primary whose leader restarted several times and stamped its items
    primary = _restarting_primary(deps, clock, restarts=4)
    tx_id = submit(deps, "tenant-a", recipients(120))
    primary.ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.READY_TO_SEND
    stamped = deps.store.table.get(schema.transaction_key(tx_id))["fence"]
    assert stamped == primary.lease.epoch
    stale = primary.store  # the primary's store, kept by a process that is paused, not dead

    # WHEN the active region switches to DR (runbooks/regions.py) and DR elects its first leader
    _set_flag(s, s.region, s.dr_region)
    assert primary.heartbeat() is False  # the primary stands down
    clock.advance(s.lease_seconds + 1)  # its lease lapses
    dr = Controller(deps, "dr-0", region=s.dr_region)
    assert dr.heartbeat() is True

    # THEN its first writes are not fenced by the primary's higher regional epochs
    dr.advance_pass()
    assert dr.lease.epoch is not None, "the DR leader was fenced out by the primary's items"
    assert dr.lease.epoch > stamped  # tokens order leaderships across regions
    assert {b.status for b in deps.store.batches(tx_id)} == {BatchStatus.QUEUED}
    tx = dr.store.update_transaction(deps.store.get_transaction(tx_id), {"refused_rows": 0})
    assert deps.store.table.get(schema.transaction_key(tx_id))["fence"] == dr.lease.epoch
    counter = deps.store.table.get({"PK": "PLATFORM", "SK": "EPOCH"})  # the fencing counter
    assert (counter["epoch"], counter["region"]) == (dr.lease.epoch, s.dr_region)

    # AND the deposed primary's writes are still refused
    with pytest.raises(Fenced):
        stale.update_transaction(tx, {"refused_rows": 99})
    assert deps.store.get_transaction(tx_id).refused_rows == 0


def test_the_first_election_after_an_upgrade_starts_above_both_regions_epochs(deps, clock):
    """Deployments from before the counter have only regional epochs (and items stamped with them)."""
    s = deps.settings
    deps.store.table.put({**schema.lease_key(s.region), "holder": "old", "epoch": 41, "expires_at": "2000-01-01T00:00:00Z"})
    deps.store.table.put({**schema.lease_key(s.dr_region), "holder": "old", "epoch": 3, "expires_at": "2000-01-01T00:00:00Z"})
    _set_flag(s, s.region, s.dr_region)
    dr = Controller(deps, "dr-0", region=s.dr_region)
    assert dr.heartbeat() is True and dr.lease.epoch == 42


def _message_items(deps, tx_id):
    (batch, *_) = deps.store.batches(tx_id)
    msgs, _ = deps.store.batch_partition(batch.batch_id)
    return batch, msgs


def test_a_deposed_leaders_ingest_re_put_does_not_overwrite_a_sent_message(deps, tenant, clock):
    # GIVEN leader a ingested a campaign, then paused (GC, partition) holding its fenced store
    a = Controller(deps, "a")
    assert a.heartbeat()
    tx_id = submit(deps, "tenant-a", recipients(30))
    a.ingest_pass()
    stale = a.store
    batch, msgs = _message_items(deps, tx_id)
    # AND b took over and the messages were sent meanwhile
    clock.advance(deps.settings.lease_seconds + 1)
    b = Controller(deps, "b")
    assert b.heartbeat()
    for m in msgs:
        deps.store.table.update(Update(schema.message_key(batch.batch_id, m.message_id),
                                       set={"status": MessageStatus.SENT.value}))

    # WHEN a wakes up and its ingest re-puts the batch's messages (deterministic ids, READY_TO_SEND)
    with pytest.raises(Fenced):
        stale.put_messages(msgs)

    # THEN nothing was overwritten
    _, now = _message_items(deps, tx_id)
    assert {m.status for m in now} == {MessageStatus.SENT}


def test_the_current_leaders_re_put_keeps_existing_items_and_writes_missing_ones(deps, tenant, clock):
    """A resumed ingest re-puts the batch it crashed in: existing messages are kept as they are."""
    c = Controller(deps, "c")
    assert c.heartbeat()
    tx_id = submit(deps, "tenant-a", recipients(120))
    c.ingest_pass()
    batch, msgs = _message_items(deps, tx_id)
    first = msgs[0]
    deps.store.table.update(Update(schema.message_key(batch.batch_id, first.message_id),
                                   set={"status": MessageStatus.SENT.value}))
    deps.store.table.delete(schema.message_key(batch.batch_id, msgs[1].message_id))

    calls = c.store.put_messages(msgs)

    _, now = _message_items(deps, tx_id)
    by_id = {m.message_id: m for m in now}
    assert len(now) == len(msgs) == 50
    assert by_id[first.message_id].status == MessageStatus.SENT
    assert by_id[msgs[1].message_id].status == MessageStatus.READY_TO_SEND
    assert calls <= 3  # a transaction per 99 puts, plus a retry without the items that exist
