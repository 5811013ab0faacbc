"""Controller passes: release via the due index, dispatch exactly once, crash points, leader lease,
and cost proportional to active work."""

from datetime import timedelta

import pytest

from core.domain.models import Transaction
from core.domain.statuses import BatchStatus, TransactionStatus
from core.services import reconcile
from handlers import ses_events
from handlers.context import LocalContext, use
from runbooks import stuck_campaign
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import RecordingMailer, batch_sender, leader, recipients, submit
from tests.integration.test_ses_events import ev, sqs_event


def drain(queue):
    got = []
    while True:
        msgs = queue.receive(10, wait_seconds=0, visibility=0)
        if not msgs:
            return got
        got += msgs
        queue.delete([m["ReceiptHandle"] for m in msgs])


def test_ready_batches_are_dispatched_once(deps, tenant):
    tx_id = submit(deps, "tenant-a", recipients(120))
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    c.advance_pass()  # a second pass must not dispatch again
    msgs = drain(deps.send_queue)
    assert sorted(m["Body"] for m in msgs) == sorted({m["Body"] for m in msgs})
    assert len(msgs) == 3
    assert {b.status for b in deps.store.batches(tx_id)} == {BatchStatus.QUEUED}


def test_crash_before_the_status_write_does_not_duplicate(deps, tenant, monkeypatch):
    tx_id = submit(deps, "tenant-a", recipients(50))
    c = leader(deps)
    c.ingest_pass()
    real = type(deps.store).mark_queued

    def dies(*a, **kw):
        raise RuntimeError("killed before the status write")

    monkeypatch.setattr(type(deps.store), "mark_queued", dies)
    tx = deps.store.get_transaction(tx_id)
    with pytest.raises(RuntimeError):
        reconcile.dispatch(tx, deps.store.batches(tx_id), store=deps.store, queue=deps.send_queue,
                           clock=deps.clock, stale_after=timedelta(minutes=15))
    monkeypatch.setattr(type(deps.store), "mark_queued", real)
    assert drain(deps.send_queue) == []  # the status is written before the queue message is sent
    c.advance_pass()  # restart: the batch is still READY, so it is dispatched now
    assert len(drain(deps.send_queue)) == 1
    assert deps.store.batches(tx_id)[0].status == BatchStatus.QUEUED


def test_crash_between_status_write_and_queue_send_is_repaired_by_the_redispatch_rule(deps, tenant, clock,
                                                                                    monkeypatch):
    tx_id = submit(deps, "tenant-a", recipients(50))
    c = leader(deps)
    c.ingest_pass()

    def dies(*a, **kw):
        raise RuntimeError("killed after the status write, before the queue send")

    monkeypatch.setattr(deps.send_queue, "send", dies)
    c.advance_pass()  # the pass logs the item's failure and goes on
    monkeypatch.undo()
    assert deps.store.batches(tx_id)[0].status == BatchStatus.QUEUED and drain(deps.send_queue) == []
    c.advance_pass()
    assert drain(deps.send_queue) == []  # not yet: the message might still be on its way
    clock.advance(deps.settings.redispatch_after_seconds + 1)
    c.heartbeat()
    c.advance_pass()  # nobody claimed it and the queue is empty: the message is lost
    assert len(drain(deps.send_queue)) == 1
    c.advance_pass()
    assert drain(deps.send_queue) == []


def test_a_batch_waiting_in_a_busy_queue_is_not_redispatched(deps, tenant, clock):
    """No redispatch storm: a backed-up queue is not fed a copy of every waiting batch."""
    tx_id = submit(deps, "tenant-a", recipients(120))
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    for _ in range(5):
        clock.advance(deps.settings.redispatch_after_seconds + 1)
        c.heartbeat()
        c.advance_pass()
    assert len(drain(deps.send_queue)) == 3  # one message per batch, still waiting
    assert {b.dispatches for b in deps.store.batches(tx_id)} == {1}


def test_an_expired_claim_or_a_handed_back_batch_is_redispatched(deps, tenant, clock):
    tx_id = submit(deps, "tenant-a", recipients(100))
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    assert len(drain(deps.send_queue)) == 2  # both messages consumed by senders
    b1, b2 = deps.store.batches(tx_id)
    assert deps.store.claim_batch(b1, "dead-worker", clock.now(), 60)  # dies holding the lease
    assert deps.store.claim_batch(b2, "live-worker", clock.now(), 60)
    deps.store.release_batch(b2, clock.now() + timedelta(seconds=30))  # e.g. throttled: give it back
    clock.advance(31)
    c.heartbeat()
    c.advance_pass()
    assert [m["Body"] for m in drain(deps.send_queue)] == [
        f'{{"tenant_id": "tenant-a", "transaction_id": "{tx_id}", "batch_id": "{b2.batch_id}"}}']
    clock.advance(30)  # b1's claim has expired now
    c.heartbeat()
    c.advance_pass()
    assert len(drain(deps.send_queue)) == 1
    c.advance_pass()
    assert drain(deps.send_queue) == []


def test_paused_campaigns_due_batches_do_not_starve_other_tenants(deps, tenant, clock):
    from core.domain.models import Batch, batch_id_for, iso

    early = clock.now() - timedelta(hours=1)
    paused = Transaction(transaction_id="tx_paused", tenant_id="tenant-p", template_id="t", template_version=1,
                         csv_s3_key="k", status=TransactionStatus.PAUSED, paused_from=TransactionStatus.SCHEDULED)
    deps.store.table.put({"PK": "TRANSACTION#tx_paused", "SK": "METADATA", **paused.model_dump()})
    deps.store.table.batch_put(
        {"PK": "TRANSACTION#tx_paused", "SK": f"BATCH#{batch_id_for('tx_paused', i)}", "due_pk": "BATCH",
         "due_at": iso(early + timedelta(seconds=i)),
         **Batch(batch_id=batch_id_for("tx_paused", i), transaction_id="tx_paused", tenant_id="tenant-p", index=i,
                 status=BatchStatus.SCHEDULED, message_count=1).model_dump()} for i in range(1, 151))
    tx_id = submit(deps, "tenant-a", recipients(60), schedule={"send_at": clock.now() + timedelta(minutes=5)})
    c = leader(deps)
    c.ingest_pass()
    clock.advance(6 * 60)
    c.heartbeat()
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.READY_TO_SEND
    assert {b.status for b in deps.store.batches("tx_paused")} == {BatchStatus.SCHEDULED}  # still held
    # resumed: its batches are due again within the recheck time
    tx = deps.store.get_transaction("tx_paused")
    deps.store.change_transaction_status(tx, TransactionStatus.SCHEDULED)
    clock.advance(reconcile.PAUSED_RECHECK.total_seconds() + 1)
    reconcile.release_due(store=deps.store, clock=clock)
    assert {b.status for b in deps.store.batches("tx_paused")} == {BatchStatus.READY}


def test_scheduled_batches_are_released_when_due(deps, tenant, clock):
    send_at = clock.now() + timedelta(minutes=30)
    tx_id = submit(deps, "tenant-a", recipients(60), schedule={"send_at": send_at})
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.SCHEDULED
    assert drain(deps.send_queue) == []
    clock.advance(31 * 60)
    c.heartbeat()
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.READY_TO_SEND
    c.advance_pass()
    assert len(drain(deps.send_queue)) == 2


def test_crash_mid_release_converges(deps, tenant, clock, monkeypatch):
    send_at = clock.now() + timedelta(minutes=5)
    tx_id = submit(deps, "tenant-a", recipients(150), schedule={"send_at": send_at})
    c = leader(deps)
    c.ingest_pass()
    clock.advance(600)
    c.heartbeat()
    real = type(deps.store).change_batch_status
    n = {"calls": 0}

    def dies_on_second(self, *a, **kw):
        n["calls"] += 1
        if n["calls"] == 2:
            raise RuntimeError("killed mid-release")
        return real(self, *a, **kw)

    monkeypatch.setattr(type(deps.store), "change_batch_status", dies_on_second)
    with pytest.raises(RuntimeError):
        reconcile.release_due(store=deps.store, clock=clock)
    monkeypatch.setattr(type(deps.store), "change_batch_status", real)
    c.advance_pass()
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.READY_TO_SEND
    assert {b.status for b in deps.store.batches(tx_id)} == {BatchStatus.QUEUED}
    assert len(drain(deps.send_queue)) == 3


def test_two_controllers_exactly_one_acts_and_the_other_takes_over(deps, tenant, clock):
    from controller.jobs import Controller

    a, b = Controller(deps, "a"), Controller(deps, "b")
    assert a.heartbeat() is True
    assert b.heartbeat() is False  # passive while a's lease is live
    tx_id = submit(deps, "tenant-a", recipients(10))
    b.ingest_pass()  # a passive controller does nothing
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.ACCEPT
    a.ingest_pass()
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.READY_TO_SEND
    clock.advance(deps.settings.lease_seconds + 1)  # a dies: no renewal
    assert b.heartbeat() is True and b.lease.epoch == a.lease.epoch + 2  # the next token of this region's parity
    assert a.heartbeat() is False  # the old leader finds it lost the lease
    b.advance_pass()
    assert deps.store.batches(tx_id)[0].status == BatchStatus.QUEUED


def test_a_deposed_leader_is_fenced(deps, tenant, clock):
    from controller.jobs import Controller
    from core.domain.errors import Fenced

    a = Controller(deps, "a")
    a.heartbeat()
    stale_store = a.store  # a keeps its epoch-1 store while paused (GC, network partition...)
    clock.advance(deps.settings.lease_seconds + 1)
    b = Controller(deps, "b")
    b.heartbeat()
    tx_id = submit(deps, "tenant-a", recipients(5))
    b.ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    with pytest.raises(Fenced):
        stale_store.update_transaction(tx, {"refused_rows": 99})


def test_a_pass_reads_only_active_campaigns(deps, tenant, counter):
    items = [{"PK": f"TRANSACTION#tx_done{i}", "SK": "METADATA", **Transaction(
        transaction_id=f"tx_done{i}", tenant_id="tenant-a", template_id="t", template_version=1, csv_s3_key="k",
        status=TransactionStatus.COMPLETED).model_dump()} for i in range(1000)]
    deps.store.table.batch_put(items)
    active = [submit(deps, "tenant-a", recipients(5, start=i * 5)) for i in range(5)]
    c = leader(deps)
    c.ingest_pass()
    counter.reset()
    c.advance_pass()
    ddb = {k: v for k, v in counter.calls.items() if k.startswith("dynamodb.")}
    assert "dynamodb.Scan" not in ddb
    assert sum(ddb.values()) < 5 * 20, ddb  # a handful of calls per active campaign, nothing per finished one
    assert {deps.store.get_transaction(t).status for t in active} == {TransactionStatus.READY_TO_SEND}


def test_a_sent_campaign_waiting_for_its_events_is_not_read_until_they_finish_it(deps, tenant, clock, counter):
    """On the real store: once SENT, a campaign leaves the passes until the events that make every
    message final arrive (the events Lambda's count addition makes it due), then completes; the
    stuck-campaign runbook shows when it is looked at next and can make it due now."""
    deps.settings = deps.settings.model_copy(update={"recount_quiet_seconds": 600})
    tx_id = submit(deps, "tenant-a", recipients(2))
    c = leader(deps)
    c.deps.settings = c.settings = deps.settings
    c.ingest_pass()
    c.advance_pass()
    mailer = RecordingMailer(deps.mailer)
    (batch,) = deps.store.batches(tx_id)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.SENT
    assert tx_id not in [t.transaction_id for t in deps.store.due_transactions(clock.now())]

    lines: list[str] = []
    assert stuck_campaign.main(["--campaign", tx_id], settings=deps.settings, out=lines.append) == 0
    assert any("the controller looks at it: ok — at " in line for line in lines), lines
    assert stuck_campaign.main(["--campaign", tx_id, "--execute"], settings=deps.settings, out=lines.append) == 0
    assert tx_id in [t.transaction_id for t in deps.store.due_transactions(clock.now())]  # nudged
    c.advance_pass()
    assert tx_id not in [t.transaction_id for t in deps.store.due_transactions(clock.now())]  # and waits again

    use(deps)
    try:
        done = [ses_event_for("ses_delivery.json", tenant="tenant-a", message_id=s["tags"]["message_id"],
                              recipient=s["to"], ses_id=s["ses_id"]) for s in mailer.sent]
        assert ses_events.handler(sqs_event([ev("ses_send.json", s) for s in mailer.sent]), LocalContext())[
            "batchItemFailures"] == []
        assert tx_id not in [t.transaction_id for t in deps.store.due_transactions(clock.now())]  # sent, not final
        assert ses_events.handler(sqs_event([sns_envelope(e) for e in done]), LocalContext())[
            "batchItemFailures"] == []
    finally:
        use(None)
    assert tx_id in [t.transaction_id for t in deps.store.due_transactions(clock.now())]
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.COMPLETED
