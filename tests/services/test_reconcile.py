"""core/services/reconcile.py on the fakes: the controller's passes with a FakeClock (release due
batches, dispatch once, re-dispatch only a lost or given-back batch, SENT → COMPLETED, settle)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.domain.errors import StaleWrite
from core.domain.models import Batch, batch_id_for, message_id_for, utcnow
from core.domain.statuses import BatchStatus, MessageStatus, TransactionStatus
from core.services import campaigns, reconcile
from tests.services.builders import NOW, TENANT, message_statuses, stored_campaign

T, B, M = TransactionStatus, BatchStatus, MessageStatus
STALE = timedelta(seconds=120)


def scheduled(store, tx_id="tx_1", due=(NOW + timedelta(minutes=5),), tenant=TENANT, status=T.SCHEDULED):
    """A campaign whose batches wait in the due index, each for its own time."""
    stored_campaign(store, tx_id, status=status, batches=[B.PROCESSING] * len(due), tenant=tenant)
    for i, at in enumerate(due, start=1):
        store.change_batch_status(store.get_batch(batch_id_for(tx_id, i), tx_id), B.SCHEDULED, due_at=at)


def advance(store, queue, clock, settings, tx_id="tx_1"):
    return reconcile.advance(store.get_transaction(tx_id), store=store, queue=queue, clock=clock, settings=settings)


# ---- release_due ---------------------------------------------------------------------------------

def test_a_due_batch_is_released_with_its_campaign_first_and_a_later_one_waits(store, clock):
    scheduled(store, due=(NOW + timedelta(minutes=5), NOW + timedelta(hours=2)))
    assert reconcile.release_due(store=store, clock=clock) == 0  # nothing due yet
    clock.advance(6 * 60)
    assert reconcile.release_due(store=store, clock=clock) == 1
    assert store.get_transaction("tx_1").status == T.READY_TO_SEND
    assert [b.status for b in store.batches("tx_1")] == [B.READY, B.SCHEDULED]
    assert reconcile.release_due(store=store, clock=clock) == 0  # a second pass changes nothing


def test_a_paused_campaigns_batches_are_snoozed_and_never_starve_another_tenants(store, clock):
    scheduled(store, "tx_paused", due=[NOW - timedelta(hours=1, seconds=-i) for i in range(30)], tenant="tenant-p",
              status=T.PAUSED)
    scheduled(store, "tx_other", due=(NOW + timedelta(minutes=1),))
    clock.advance(120)
    assert reconcile.release_due(store=store, clock=clock, page_size=10) == 1  # pages past the 30 held ones
    assert store.get_transaction("tx_other").status == T.READY_TO_SEND
    assert {b.status for b in store.batches("tx_paused")} == {B.SCHEDULED}
    # snoozed: the next pass does not read them again (the released batch stays due until dispatched)
    assert [i["transaction_id"] for i in store.due("BATCH", clock.now())] == ["tx_other"]
    tx = store.get_transaction("tx_paused")
    store.change_transaction_status(tx, T.SCHEDULED)  # resumed
    clock.advance(reconcile.PAUSED_RECHECK.total_seconds() + 1)
    assert reconcile.release_due(store=store, clock=clock) == 30


def test_a_cancelled_campaigns_due_batches_are_left_for_settle(store, clock):
    scheduled(store, due=(NOW,), status=T.CANCELLED)
    assert reconcile.release_due(store=store, clock=clock) == 0
    assert store.batches("tx_1")[0].status == B.SCHEDULED


# ---- dispatch ------------------------------------------------------------------------------------

def test_ready_batches_are_dispatched_once(store, queue, clock, settings):
    stored_campaign(store, batches=[B.READY, B.READY, B.SENT])
    advance(store, queue, clock, settings)
    advance(store, queue, clock, settings)
    assert [m["body"]["batch_id"] for m in queue.sent] == [batch_id_for("tx_1", 1), batch_id_for("tx_1", 2)]
    assert queue.sent[0]["body"] == {"tenant_id": TENANT, "transaction_id": "tx_1", "batch_id": batch_id_for("tx_1", 1)}
    assert [b.status for b in store.batches("tx_1")] == [B.QUEUED, B.QUEUED, B.SENT]
    assert {b.dispatches for b in store.batches("tx_1")[:2]} == {1}


def test_a_queued_batch_whose_message_is_lost_is_dispatched_again_in_a_new_group(store, queue, clock, settings):
    stored_campaign(store)
    advance(store, queue, clock, settings)
    queue.take()  # the message is gone (a crash after the queue send, say) and nobody claimed it
    clock.advance(60)
    advance(store, queue, clock, settings)
    assert queue.sent[1:] == []  # not yet: it may still be on its way
    clock.advance(STALE.total_seconds())
    advance(store, queue, clock, settings)
    assert [(m["group"], m["dedup_id"]) for m in queue.sent] == [
        (f"{batch_id_for('tx_1', 1)}:1", f"{batch_id_for('tx_1', 1)}:1"),
        (f"{batch_id_for('tx_1', 1)}:2", f"{batch_id_for('tx_1', 1)}:2")]


def test_a_batch_waiting_in_a_busy_queue_is_not_dispatched_again(store, queue, clock, settings):
    stored_campaign(store, "tx_1")
    stored_campaign(store, "tx_2")
    advance(store, queue, clock, settings, "tx_1")
    advance(store, queue, clock, settings, "tx_2")
    for _ in range(5):
        clock.advance(STALE.total_seconds() + 1)
        advance(store, queue, clock, settings, "tx_1")
    assert len(queue.sent) == 2 and store.batches("tx_1")[0].dispatches == 1
    clock.advance(STALE.total_seconds() * reconcile.LOST_AFTER)  # waited so long it went to the dead-letter queue
    advance(store, queue, clock, settings, "tx_1")
    assert store.batches("tx_1")[0].dispatches == 2


def test_a_live_claim_is_left_alone_and_a_given_back_batch_is_dispatched_again(store, queue, clock, settings):
    stored_campaign(store, batches=[B.READY, B.READY])
    advance(store, queue, clock, settings)
    queue.take()
    b1, b2 = store.batches("tx_1")
    assert store.claim_batch(b1, "w1", clock.now(), 600)
    assert store.claim_batch(b2, "w2", clock.now(), 600)
    store.release_batch(b2, clock.now() + timedelta(seconds=30))  # throttled: handed back
    clock.advance(STALE.total_seconds() + 31)
    advance(store, queue, clock, settings)
    assert [body["batch_id"] for body in queue.take()] == [b2.batch_id]
    assert store.dispatch_state(b1)["lease_owner"] == "w1"


# ---- advance -------------------------------------------------------------------------------------

def test_a_sent_campaign_completes_once_every_message_is_final(store, queue, clock, settings):
    stored_campaign(store, batches=[B.SENT, B.SENT], callback_url="https://hooks.example.com/cb")
    assert advance(store, queue, clock, settings).status == T.SENT  # counts not final yet: it waits
    store.add_counts("tx_1", {"sent": 4, "final": 4}, clock.now())
    assert advance(store, queue, clock, settings).status == T.COMPLETED
    assert {b.status for b in store.batches("tx_1")} == {B.COMPLETED}
    assert [(c.seq, c.payload["status"]) for c in store.callbacks("tx_1")] == [(1, "SENT"), (2, "COMPLETED")]


def due(store, clock):
    return [t.transaction_id for t in store.due_transactions(clock.now())]


def test_a_sent_campaign_waiting_for_events_is_not_read_until_something_is_due(store, queue, clock, settings):
    """A pass reads only due campaigns: a SENT one is left out until its next final recount (the
    window's end is later), and made due at once by the addition that makes every message final."""
    stored_campaign(store, batches=[B.SENT, B.SENT])
    clock.current = utcnow()  # the store stamps updated_at with the wall clock
    assert due(store, clock) == ["tx_1"] and advance(store, queue, clock, settings).status == T.SENT
    sent_at = store.get_transaction("tx_1").updated_at
    assert due(store, clock) == []  # waiting: nothing to read
    clock.current = sent_at + timedelta(seconds=settings.recount_quiet_seconds)
    assert due(store, clock) == ["tx_1"]  # the final recount's time
    clock.current = sent_at + timedelta(seconds=5)
    store.add_counts("tx_1", {"sent": 4, "delivered": 3, "final": 3}, clock.now())
    assert due(store, clock) == []  # not every message is final yet
    store.add_counts("tx_1", {"delivered": 1, "final": 1}, clock.now())
    assert due(store, clock) == ["tx_1"]
    assert advance(store, queue, clock, settings).status == T.COMPLETED


def test_a_campaign_that_changed_since_it_was_read_stays_due(store, queue, clock, settings):
    """``look_again`` is conditional on what the pass read: a count added (or a status moved)
    meanwhile keeps the campaign due, so the next pass decides on what is there now."""
    stored_campaign(store, status=T.SENT, batches=[B.SENT])
    read = store.get_transaction("tx_1")
    store.add_counts("tx_1", {"sent": 2}, clock.now())
    with pytest.raises(StaleWrite):
        store.look_again(read, clock.now() + timedelta(hours=1))
    assert due(store, clock) == ["tx_1"]
    store.look_again(store.get_transaction("tx_1"), clock.now() + timedelta(hours=1))
    assert due(store, clock) == []
    store.change_transaction_status(store.get_transaction("tx_1"), T.COMPLETED)
    assert due(store, clock) == ["tx_1"]


def test_a_paused_or_scheduled_campaign_is_read_again_within_the_hour_or_when_it_moves(store, queue, clock, settings):
    scheduled(store, due=(NOW + timedelta(days=2),))
    advance(store, queue, clock, settings)
    assert due(store, clock) == []
    clock.advance(reconcile.LOOK_AGAIN_MAX.total_seconds())
    assert due(store, clock) == ["tx_1"]  # at most an hour on, whatever was lost
    advance(store, queue, clock, settings)
    assert due(store, clock) == []
    campaigns.pause_campaign(store, clock, TENANT, "tx_1")  # the user's move: due at once
    assert due(store, clock) == ["tx_1"]
    advance(store, queue, clock, settings)
    assert due(store, clock) == []


def test_short_live_counts_complete_by_a_quiet_recount(store, queue, clock, settings):
    stored_campaign(store, status=T.SENT, batches=[B.SENT])
    bid = batch_id_for("tx_1", 1)
    for j in (1, 2):  # both delivered, but the count additions were lost with their process
        store.record_message_event(bid, message_id_for(bid, j), M.DELIVERED,
                                   {"id": f"d{j}", "type": "Delivery", "at": "2020-03-02T09:00:01Z"})
    store.update_transaction(store.get_transaction("tx_1"), {})  # updated_at: wall-clock now
    assert advance(store, queue, clock, settings).status == T.SENT  # counts not quiet yet
    clock.current = store.get_transaction("tx_1").updated_at + timedelta(seconds=settings.recount_quiet_seconds + 1)
    assert advance(store, queue, clock, settings).status == T.COMPLETED
    assert store.get_transaction("tx_1").final_check["final"] == 2


def test_a_campaign_a_sender_found_unsendable_fails_with_the_reason(store, queue, clock, settings):
    stored_campaign(store, callback_url="https://hooks.example.com/cb")
    assert store.request_failure("tx_1", "template tpl v1 is gone")
    tx = advance(store, queue, clock, settings)
    assert tx.status == T.FAILED and tx.failure_reason == "template tpl v1 is gone"
    (cb,) = store.callbacks("tx_1")
    assert cb.payload["status"] == "FAILED" and cb.payload["reason"] == "template tpl v1 is gone"
    assert queue.sent == []


def test_a_campaign_whose_due_batches_are_sent_waits_scheduled_for_the_next(store, queue, clock, settings):
    stored_campaign(store, batches=[B.SENT, B.PROCESSING])
    store.change_batch_status(store.get_batch(batch_id_for("tx_1", 2), "tx_1"), B.SCHEDULED,
                              due_at=NOW + timedelta(hours=1))
    assert advance(store, queue, clock, settings).status == T.SCHEDULED
    clock.advance(3601)
    reconcile.release_due(store=store, clock=clock)
    assert advance(store, queue, clock, settings).status == T.READY_TO_SEND
    assert [m["body"]["batch_id"] for m in queue.sent] == [batch_id_for("tx_1", 2)]


# ---- settle --------------------------------------------------------------------------------------

def test_a_cancelled_campaign_settles_its_unsent_messages_and_counts_exactly(store, queue, clock, settings):
    stored_campaign(store, batches=[B.QUEUED, B.READY], per_batch=3)
    bid = batch_id_for("tx_1", 1)
    store.record_message_event(bid, message_id_for(bid, 1), M.SENT, {"id": "s", "type": "Send", "at": "2020-03-02T09:00Z"})
    store.add_counts("tx_1", {"sent": 1}, clock.now())
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    advance(store, queue, clock, settings)
    assert message_statuses(store, "tx_1") == [M.SENT] + [M.CANCELLED] * 5
    assert {b.status for b in store.batches("tx_1")} == {B.CANCELLED}
    tx = store.get_transaction("tx_1")
    assert tx.counts == {"sent": 1, "cancelled": 5, "final": 5} and tx.recount is not None and not tx.recounted
    assert [t.transaction_id for t in store.active_transactions()] == ["tx_1"]  # until the recount is applied
    clock.advance(settings.recount_quiet_seconds + 1)
    advance(store, queue, clock, settings)
    tx = store.get_transaction("tx_1")
    assert tx.recounted and tx.live_summary().cancelled == 5 and list(store.active_transactions()) == []
    assert queue.sent == []
    # it did not opt in to message events: no CANCELLED events are written or delivered for it
    assert not tx.message_events and store.message_event_batches("tx_1", 100, None)[0] == []


def test_a_recount_taken_before_late_events_is_taken_again_never_counted_twice(store, queue, clock, settings):
    stored_campaign(store, status=T.CANCELLED, batches=[B.SENT])
    advance(store, queue, clock, settings)  # recount taken: nothing sent yet
    bid = batch_id_for("tx_1", 1)
    for j in (1, 2):  # the Send events land after it, with their count additions
        rec = store.record_message_event(bid, message_id_for(bid, j), M.SENT,
                                         {"id": f"s{j}", "type": "Send", "at": "2020-03-02T09:00Z"})
        store.add_counts("tx_1", rec.delta, clock.now())
    clock.advance(settings.recount_quiet_seconds + 1)
    advance(store, queue, clock, settings)
    tx = store.get_transaction("tx_1")
    assert not tx.recounted and tx.recount["truth"]["sent"] == 2 and tx.counts["sent"] == 2
    clock.advance(settings.recount_quiet_seconds + 1)
    advance(store, queue, clock, settings)
    tx = store.get_transaction("tx_1")
    assert tx.recounted and tx.counts["sent"] == 2 and tx.status == T.CANCELLED
    (b,) = store.batches("tx_1")
    assert (b.status, b.summary.sent, b.summary.total_messages) == (B.COMPLETED, 2, 2)


def test_a_tenant_over_the_complaint_threshold_has_its_sending_campaigns_paused(store, clock, settings):
    stored_campaign(store, "tx_1")
    stored_campaign(store, "tx_2", status=T.SCHEDULED, batches=[B.SCHEDULED])
    stored_campaign(store, "tx_3", tenant="tenant-b")
    store.add_counts("tx_1", {"sent": 1000, "complained": 20}, clock.now())
    store.add_counts("tx_3", {"sent": 1000, "complained": 0}, clock.now())
    active = list(store.active_transactions())
    paused = reconcile.guard_reputation(active, store=store, clock=clock, settings=settings)
    assert sorted(paused) == ["tx_1", "tx_2"]
    assert {store.get_transaction(t).status for t in ("tx_1", "tx_2")} == {T.PAUSED}
    assert store.get_transaction("tx_3").status == T.READY_TO_SEND
    assert store.get_transaction("tx_1").pause_reason == "complaint_rate"


def test_a_batch_added_by_hand_to_a_paused_campaign_is_not_dispatched(store, queue, clock, settings):
    stored_campaign(store, status=T.PAUSED, batches=[B.READY])
    store.put_batch(Batch(batch_id=batch_id_for("tx_1", 2), transaction_id="tx_1", tenant_id=TENANT, index=2,
                          status=B.READY))
    assert advance(store, queue, clock, settings).status == T.PAUSED
    assert queue.sent == []
