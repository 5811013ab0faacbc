"""Campaign counts are live (added by whoever moves a message), exact after the final recount, and
a cancel or a pause stops every worker within one SES call."""

from __future__ import annotations

from core.domain.statuses import MessageStatus, TransactionStatus
from core.services import campaigns
from core.services.events import record_ses_event
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import RecordingMailer, batch_sender, leader, queued_campaign, recipients


def send_events(deps, sent):
    for s in sent:
        record_ses_event(sns_envelope(ses_event_for("ses_send.json", tenant="tenant-a", message_id=s["tags"]["message_id"],
                                                    recipient=s["to"], ses_id=s["ses_id"])), store=deps.store)


def stop_after(n, action):
    def hook(kw, before):
        if not before and len(mailer.sent) == n:
            action()
    mailer = RecordingMailer(None, hook)
    return mailer


def test_a_cancel_stops_sending_within_one_call_and_unsent_messages_end_cancelled(deps, tenant, clock):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(10))
    mailer = stop_after(3, lambda: campaigns.cancel_campaign(deps.store, clock, "tenant-a", tx_id))
    mailer.real = deps.mailer
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "stopped" and len(mailer.sent) == 3  # not one call more after the cancel
    send_events(deps, mailer.sent)
    c = leader(deps)
    c.advance_pass()  # settles: the 7 unsent messages are CANCELLED, the final recount is taken
    statuses = [m.status for m in deps.store.batch_partition(batch.batch_id)[0]]
    assert statuses.count(MessageStatus.SENT) == 3 and statuses.count(MessageStatus.CANCELLED) == 7
    view = campaigns.get_campaign(deps.store, "tenant-a", tx_id)
    assert view["status"] == "CANCELLED"
    assert (view["summary"]["sent"], view["summary"]["cancelled"]) == (3, 7)
    clock.advance(deps.settings.recount_quiet_seconds + 1)
    c.advance_pass()  # the recount agrees and is applied; the campaign leaves the active index
    tx = deps.store.get_transaction(tx_id)
    assert tx.recounted and tx.counts["final"] == 7
    assert tx_id not in {t.transaction_id for t in deps.store.active_transactions()}
    again = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)  # a late queue copy
    assert again.state == "nothing_to_do" and len(mailer.sent) == 3


def test_a_pause_stops_within_one_call_and_resume_sends_each_message_once(deps, tenant, clock):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(10))
    mailer = stop_after(4, lambda: campaigns.pause_campaign(deps.store, clock, "tenant-a", tx_id))
    mailer.real = deps.mailer
    assert batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "stopped"
    assert len(mailer.sent) == 4
    campaigns.resume_campaign(deps.store, clock, "tenant-a", tx_id)
    mailer.fail = None
    c = leader(deps)
    clock.advance(deps.settings.lease_seconds * 4 + 1)
    c.advance_pass()  # the given-back batch is dispatched again
    assert batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id).state == "sent"
    assert sorted(mailer.per_recipient().values()) == [1] * 10


def test_the_final_recount_restores_counts_a_crashed_flush_lost(deps, tenant, clock):
    """An events Lambda that died after recording a message but before adding to the counts."""
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(4))
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    send_events(deps, mailer.sent[:3])
    s = mailer.sent[3]
    lost = sns_envelope(ses_event_for("ses_send.json", tenant="tenant-a", message_id=s["tags"]["message_id"],
                                      recipient=s["to"], ses_id=s["ses_id"]))
    from core.services.events import CountBuffer

    record_ses_event(lost, store=deps.store, counts=CountBuffer(deps.store, clock))  # never flushed
    assert deps.store.get_transaction(tx_id).counts["sent"] == 3
    campaigns.cancel_campaign(deps.store, clock, "tenant-a", tx_id)
    c = leader(deps)
    c.advance_pass()
    clock.advance(deps.settings.recount_quiet_seconds + 1)
    c.advance_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.recounted and tx.live_summary().sent == 4


def test_a_count_added_after_the_recount_was_taken_is_never_counted_twice(deps, tenant, clock):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(2))
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    campaigns.cancel_campaign(deps.store, clock, "tenant-a", tx_id)
    c = leader(deps)
    c.advance_pass()  # recount taken: nothing recorded yet, sent 0
    send_events(deps, mailer.sent)  # events land after the recount was taken (their additions too)
    clock.advance(deps.settings.recount_quiet_seconds + 1)
    c.advance_pass()  # not quiet: the stale recount is dropped and taken again
    tx = deps.store.get_transaction(tx_id)
    assert not tx.recounted and tx.counts["sent"] == 2
    clock.advance(deps.settings.recount_quiet_seconds + 1)
    c.advance_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.recounted and tx.counts["sent"] == 2 and tx.status == TransactionStatus.CANCELLED


def test_a_sent_campaign_whose_final_counts_a_crash_lost_completes_after_a_quiet_recount(deps, tenant, clock):
    """A kill -9 between a Delivery's status write and its count addition: the campaign must not
    wait for the completion window (72 h) with short counts."""
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(3))
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    from core.services.events import CountBuffer

    for i, s in enumerate(mailer.sent):
        envelope = sns_envelope(ses_event_for("ses_delivery.json", tenant="tenant-a", message_id=s["tags"]["message_id"],
                                              recipient=s["to"], ses_id=s["ses_id"]))
        counts = CountBuffer(deps.store, clock)
        record_ses_event(envelope, store=deps.store, counts=counts)
        if i < 2:
            counts.flush()  # the third addition is lost with its process
    c = leader(deps)
    c.advance_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.SENT and tx.counts["final"] == 2  # quiet period not over
    clock.advance(2 * deps.settings.recount_quiet_seconds)  # (updated_at is wall-clock time)
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.COMPLETED
    c.advance_pass()  # settling: the final recount is taken
    clock.advance(deps.settings.recount_quiet_seconds + 1)
    c.advance_pass()  # and applied: the counts are exact
    tx = deps.store.get_transaction(tx_id)
    assert tx.recounted and tx.counts["final"] == 3 and tx.live_summary().delivered == 3
    (b,) = deps.store.batches(tx_id)  # a batch's summary is its share of the recount
    assert (b.summary.total_messages, b.summary.sent, b.summary.delivered) == (3, 3, 3)


def test_a_sent_campaign_still_waiting_for_events_is_recounted_with_backoff(deps, tenant, clock, counter):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(3))
    batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id)
    c = leader(deps)
    c.advance_pass()
    checks = []
    for _ in range(6):
        clock.advance(2 * deps.settings.recount_quiet_seconds)
        c.advance_pass()
        checks.append((deps.store.get_transaction(tx_id).final_check or {}).get("tries", 0))
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.SENT
    assert checks == [1, 2, 2, 3, 3, 3]  # the interval doubles: 240 s, 480 s, 960 s (passes every 240 s)
