"""Per-recipient send times and message events (issue 18) under kills, races and failed writes.

Each test states what must hold: a campaign never strands a released batch, a cancel cancels
every unsent message, message events are delivered at least once, ingest resumes alike."""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

import pytest

from core.adapters.store import DynamoStore
from core.domain.models import MESSAGE_EVENTS_DUE
from core.domain.statuses import BatchStatus
from core.services import campaigns, message_events, reconcile
from core.services.events import record_ses_event
from core.services.ingest import ingest_transaction
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import RecordingMailer, batch_sender, leader, queued_campaign, recipients, submit


class Killed(Exception):
    """Stands in for a SIGKILL at this line: the pass stops here, nothing after it runs."""


def _at(deps: Any, minutes: float, offset_hours: int = 1) -> str:
    tz = timezone(timedelta(hours=offset_hours))
    return (deps.clock.now() + timedelta(minutes=minutes)).astimezone(tz).isoformat()


def _outbox_events(deps: Any, tx_id: str) -> list[dict[str, Any]]:
    return [e for cb in deps.store.message_event_batches(tx_id, 100, None)[0] for e in cb.payload["events"]]


# --- status machine --------------------------------------------------------------------------------


def _scheduled_then_due(deps: Any) -> tuple[str, Any, Any]:
    """A campaign whose only recipient is due in 10 minutes, SCHEDULED; then the clock is past it."""
    tx_id = submit(deps, "tenant-a", f"email,first_name,send_at\nlater@x.org,L,{_at(deps, 10)}\n")
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status.value == "SCHEDULED"
    (batch,) = deps.store.batches(tx_id)
    deps.clock.advance(11 * 60)
    return tx_id, batch, c


def _converges_to_sending(deps: Any, c: Any, tx_id: str, batch: Any) -> None:
    for _ in range(3):
        deps.clock.advance(120)
        c.advance_pass()
    assert deps.store.get_transaction(tx_id).status.value == "READY_TO_SEND"
    assert deps.store.get_batch(batch.batch_id, tx_id).status.value == "QUEUED"
    # dispatched: out of the due index (the controller reads it no more)
    assert not [i for i in deps.store.due("BATCH", deps.clock.now()) if i["transaction_id"] == tx_id]


def test_a_kill_between_the_campaign_move_and_the_batch_release_leaves_the_batch_due(deps, tenant, monkeypatch):
    # GIVEN a SCHEDULED campaign whose only batch has come due
    tx_id, batch, c = _scheduled_then_due(deps)
    # WHEN the controller dies after the campaign moved READY_TO_SEND, before the batch write
    real = DynamoStore.change_batch_status

    def killed(self: Any, b: Any, target: Any, *a: Any, **kw: Any) -> Any:
        if target == BatchStatus.READY:
            raise Killed("SIGKILL after the campaign write, before the batch write")
        return real(self, b, target, *a, **kw)

    monkeypatch.setattr(DynamoStore, "change_batch_status", killed)  # the controller's store is a fenced copy
    c.advance_pass()
    monkeypatch.setattr(DynamoStore, "change_batch_status", real)
    assert deps.store.get_transaction(tx_id).status.value == "READY_TO_SEND"
    assert deps.store.get_batch(batch.batch_id, tx_id).status.value == "SCHEDULED"  # still in the due index
    # THEN the restarted controller releases and dispatches it
    _converges_to_sending(deps, c, tx_id, batch)


def test_a_released_batch_under_a_scheduled_campaign_moves_the_campaign_on(deps, tenant):
    # GIVEN the state a kill under an earlier release order (batch first) or a racing resume leaves:
    # the batch released (READY, still in the due index) while its campaign is SCHEDULED
    tx_id, batch, c = _scheduled_then_due(deps)
    deps.store.change_batch_status(batch, BatchStatus.READY)
    assert deps.store.get_transaction(tx_id).status.value == "SCHEDULED"
    # THEN the controller repairs it from the due index alone (no read of the campaign's batches)
    _converges_to_sending(deps, c, tx_id, batch)


def test_a_pause_and_resume_racing_the_release_pass_do_not_strand_the_released_batch(deps, tenant, monkeypatch):
    # GIVEN a SCHEDULED campaign whose batch has come due
    tx_id = submit(deps, "tenant-a", f"email,first_name,send_at\nlater@x.org,L,{_at(deps, 10)}\n")
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    (batch,) = deps.store.batches(tx_id)
    deps.clock.advance(11 * 60)
    before = deps.store.batches(tx_id)  # what the API's resume reads, before the controller's batch write lands
    # WHEN (API) pause lands after release_due read the campaign as SCHEDULED and before it writes the batch,
    real = deps.store.change_batch_status

    def pause_first(b: Any, target: Any, *a: Any, **kw: Any) -> Any:
        if b.batch_id == batch.batch_id:
            campaigns.pause_campaign(deps.store, deps.clock, "tenant-a", tx_id)
        return real(b, target, *a, **kw)

    monkeypatch.setattr(deps.store, "change_batch_status", pause_first)
    reconcile.release_due(store=deps.store, clock=deps.clock)  # batch READY; the campaign is PAUSED: left alone
    monkeypatch.setattr(deps.store, "change_batch_status", real)
    assert deps.store.get_batch(batch.batch_id, tx_id).status.value == "READY"
    # and (API) resume had read the batches before that write: it puts the campaign back to SCHEDULED
    real_batches = deps.store.batches
    monkeypatch.setattr(deps.store, "batches", lambda t: before)
    # (the campaign moved before its batch, so the pause saw READY_TO_SEND; were it SCHEDULED, the
    # released batch's due entry would move it on: test_a_released_batch_under_a_scheduled_campaign...)
    assert campaigns.resume_campaign(deps.store, deps.clock, "tenant-a", tx_id)["status"] in (
        "SCHEDULED", "READY_TO_SEND")
    monkeypatch.setattr(deps.store, "batches", real_batches)
    # THEN the controller still sends the released batch
    for _ in range(3):
        deps.clock.advance(120)
        c.advance_pass()
    assert deps.store.get_batch(batch.batch_id, tx_id).status.value in ("QUEUED", "SENT")
    assert deps.store.get_transaction(tx_id).status.value == "READY_TO_SEND"


def test_a_cancel_that_meets_a_due_batch_cancels_its_messages_with_exact_counts_and_events(deps, tenant):
    # GIVEN an opted-in campaign whose second recipient's batch is due by the time the controller looks
    tx_id = submit(deps, "tenant-a", f"email,first_name,send_at,crm\nsoon@x.org,S,,C-1\nlater@x.org,L,{_at(deps, 5)},C-2\n",
                   callback_url="http://127.0.0.1:9/hook", callback_message_events=True, metadata_columns=["crm"])
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    first, later = deps.store.batches(tx_id)
    batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, first.batch_id)
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status.value == "SCHEDULED"
    # WHEN the user cancels at the minute the later batch comes due
    deps.clock.advance(6 * 60)
    campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    for _ in range(3):
        c.advance_pass()
        deps.clock.advance(400)
    # THEN its message is CANCELLED (release_due must not close the batch past cancel_unsent)
    assert deps.store.get_batch(later.batch_id, tx_id).status.value == "CANCELLED"
    msg = deps.store.get_message(later.batch_id, f"{later.batch_id}-00001")
    assert msg.status.value == "CANCELLED"
    assert deps.store.get_transaction(tx_id).counts.get("cancelled", 0) == 1
    assert [e["status"] for e in _outbox_events(deps, tx_id) if e["message_id"] == msg.message_id] == ["CANCELLED"]


# --- cost: batches must not grow with rows when send minutes interleave ----------------------------


def test_interleaved_send_minutes_fill_one_batch_per_minute(deps, tenant):
    # 10 send minutes, 10 rows each, in round-robin order (a CSV sorted by customer, each with their
    # own "best time"): the rows of each minute wait on disk until the minute's batch is full
    rows = [f"r{i}@x.org,R,{_at(deps, 10 + (i % 10))}" for i in range(100)]
    tx_id = submit(deps, "tenant-a", "email,first_name,send_at\n" + "\n".join(rows) + "\n")
    leader(deps).ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.total_messages == 100 and tx.batch_count == 10
    batches = deps.store.batches(tx_id)
    assert [b.message_count for b in batches] == [10] * 10
    assert len({b.send_at for b in batches}) == 10


def test_a_minute_past_the_batch_size_fills_full_batches_whatever_the_interleaving(deps, tenant):
    # 120 rows over 2 minutes, alternating (batch_size=50 in tests): 50 + 10 per minute, never more
    rows = [f"r{i}@x.org,R,{_at(deps, 10 + (i % 2))}" for i in range(120)]
    tx_id = submit(deps, "tenant-a", "email,first_name,send_at\n" + "\n".join(rows) + "\n")
    leader(deps).ingest_pass()
    assert sorted(b.message_count for b in deps.store.batches(tx_id)) == [10, 10, 50, 50]


# --- message events: nothing lost ----------------------------------------------------------------


class Throttled(Exception):
    pass


def test_a_throttled_outbox_write_of_cancelled_events_keeps_the_batch_open_until_written(deps, tenant, monkeypatch):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\nq@x.org,Q\n",
                                      callback_url="http://127.0.0.1:9/hook", callback_message_events=True)
    campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    real = DynamoStore.put_message_events
    calls = []

    def once_throttled(self: Any, cb: Any, **kw: Any) -> bool:  # the controller's store is a fenced copy
        calls.append(cb)
        if len(calls) == 1:
            raise Throttled("ProvisionedThroughputExceededException")
        return real(self, cb, **kw)

    monkeypatch.setattr(DynamoStore, "put_message_events", once_throttled)
    c = leader(deps)
    for _ in range(3):
        c.advance_pass()
        deps.clock.advance(400)
    assert deps.store.get_message(batch.batch_id, f"{batch.batch_id}-00001").status.value == "CANCELLED"
    assert [e["status"] for e in _outbox_events(deps, tx_id)] == ["CANCELLED"]


def test_a_kill_after_the_cancel_writes_and_before_the_outbox_write_loses_no_cancelled_event(deps, tenant, monkeypatch):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\nq@x.org,Q\n",
                                      callback_url="http://127.0.0.1:9/hook", callback_message_events=True)
    campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    real = message_events.MessageEventBuffer.flush
    state = {"n": 0}

    def killed_once(self: Any) -> int:
        state["n"] += 1
        if state["n"] == 1:
            raise Killed("SIGKILL before the outbox write")
        return real(self)

    monkeypatch.setattr(message_events.MessageEventBuffer, "flush", killed_once)
    c = leader(deps)
    for _ in range(3):
        c.advance_pass()
        deps.clock.advance(400)
    assert [e["status"] for e in _outbox_events(deps, tx_id)] == ["CANCELLED"]


def _delivery(deps: Any, tenant: Any) -> tuple[str, str, str]:
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\na@x.org,A\n",
                                      callback_url="http://127.0.0.1:9/hook", callback_message_events=True)
    mid = f"{batch.batch_id}-00001"
    batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id)
    ev = ses_event_for("ses_delivery.json", tenant="tenant-a", message_id=mid)
    ev["mail"]["tags"]["message_events"] = ["true"]
    return tx_id, mid, sns_envelope(ev)


def test_a_failed_outbox_write_fails_the_ses_record_and_its_redelivery_brings_the_event(deps, tenant, monkeypatch):
    tx_id, mid, body = _delivery(deps, tenant)
    real = deps.store.put_message_events
    monkeypatch.setattr(deps.store, "put_message_events",
                        lambda cb, **kw: (_ for _ in ()).throw(Throttled("ProvisionedThroughputExceededException")))
    # the record fails (SQS delivers it again) and its message is not written before its events are
    with pytest.raises(Throttled):
        record_ses_event(body, store=deps.store, message_events=message_events.MessageEventBuffer(deps.store, deps.clock))
    assert deps.store.get_message(mid.rsplit("-", 1)[0], mid).status.value != "DELIVERED"
    monkeypatch.setattr(deps.store, "put_message_events", real)
    # the same SQS record again (SQS redelivery)
    assert record_ses_event(body, store=deps.store,
                            message_events=message_events.MessageEventBuffer(deps.store, deps.clock)) == "applied"
    assert deps.store.get_message(mid.rsplit("-", 1)[0], mid).status.value == "DELIVERED"
    assert [e["status"] for e in _outbox_events(deps, tx_id)] == ["DELIVERED"]


def test_a_kill_between_the_outbox_write_and_the_message_write_redelivers_the_same_outbox_item(deps, tenant,
                                                                                             monkeypatch):
    tx_id, mid, body = _delivery(deps, tenant)
    real = deps.store.save_trackings
    monkeypatch.setattr(deps.store, "save_trackings", lambda *a, **kw: (_ for _ in ()).throw(Killed("SIGKILL")))
    with pytest.raises(Killed):
        record_ses_event(body, store=deps.store, message_events=message_events.MessageEventBuffer(deps.store, deps.clock))
    monkeypatch.setattr(deps.store, "save_trackings", real)
    assert record_ses_event(body, store=deps.store,
                            message_events=message_events.MessageEventBuffer(deps.store, deps.clock)) == "applied"
    # one outbox item (same key: the same events), one DELIVERED event; a third delivery is a replay
    assert record_ses_event(body, store=deps.store,
                            message_events=message_events.MessageEventBuffer(deps.store, deps.clock)) == "duplicate"
    (item,) = deps.store.message_event_batches(tx_id, 100, None)[0]
    assert [e["status"] for e in item.payload["events"]] == ["DELIVERED"]


def test_a_send_chunk_killed_before_its_outbox_write_has_its_suppressed_events_written_by_the_next_attempt(
        deps, tenant, monkeypatch):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\ngone@x.org,G\nok@x.org,O\n",
                                      callback_url="http://127.0.0.1:9/hook", callback_message_events=True)
    deps.store.suppress("tenant-a", "gone@x.org", "manual")  # after ingest: the sender suppresses it
    real = message_events.MessageEventBuffer.flush
    state = {"n": 0}

    def killed_once(self: Any) -> int:
        state["n"] += 1
        if state["n"] == 1:
            raise Killed("SIGKILL before the chunk's outbox write")
        return real(self)

    monkeypatch.setattr(message_events.MessageEventBuffer, "flush", killed_once)
    mailer = RecordingMailer(deps.mailer)
    with pytest.raises(Killed):
        batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert deps.store.get_message(batch.batch_id, f"{batch.batch_id}-00001").status.value == "SUPPRESSED"
    assert _outbox_events(deps, tx_id) == []
    # SES's Send event for the mail that went out is the evidence the next attempt goes by
    record_ses_event(sns_envelope(ses_event_for("ses_send.json", tenant="tenant-a",
                                                message_id=f"{batch.batch_id}-00002")), store=deps.store)
    deps.clock.advance(3600)  # the dead worker's lease and the evidence window are over
    batch_sender(deps, mailer, worker="w2").send_batch(tx_id, batch.batch_id)
    assert [(e["status"], e["message_id"]) for e in _outbox_events(deps, tx_id)] == \
        [("SUPPRESSED", f"{batch.batch_id}-00001")]
    assert mailer.per_recipient() == {"ok@x.org": 1}


def test_message_event_batches_do_not_copy_their_payload_into_the_due_index(deps, tenant):
    """The ``due`` GSI projects ALL: every pending batch of up to 256 KB is written twice (table and
    index) and the callbacks pass reads it twice (index, then table)."""
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\nq@x.org,Q\n",
                                      callback_url="http://127.0.0.1:9/hook", callback_message_events=True)
    campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    leader(deps).advance_pass()
    (item,) = deps.store.due(MESSAGE_EVENTS_DUE, deps.clock.now() + timedelta(seconds=1))
    assert "payload" not in item


@pytest.mark.parametrize("value", ["2026-12-03T09:00:00+05:30:30"])
def test_a_send_at_with_a_seconds_offset_still_lands_on_a_utc_minute(value):
    from datetime import UTC, datetime

    from core.domain import schedule

    at = datetime.fromisoformat(value)
    m = schedule.send_minute(at)
    assert m.astimezone(UTC).second == 0 and m >= at


def test_message_event_batches_expire_with_the_tenants_message_retention(deps, tenant):
    """They copy each message's metadata: without a TTL they outlive the messages they describe."""
    from core import schema

    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name,crm\nq@x.org,Q,C-9\n",
                                      callback_url="http://127.0.0.1:9/hook", callback_message_events=True,
                                      metadata_columns=["crm"])
    campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    leader(deps).advance_pass()
    (cb,) = deps.store.message_event_batches(tx_id, 10, None)[0]
    raw = deps.store.table.get(schema.message_events_key(tx_id, cb.ref))
    msg = deps.store.table.get(schema.message_key(batch.batch_id, f"{batch.batch_id}-00001"))
    assert msg.get(schema.TTL_ATTRIBUTE) and raw.get(schema.TTL_ATTRIBUTE)


def test_ses_message_events_expire_with_their_messages(deps, tenant):
    from core import schema

    tx_id, mid, body = _delivery(deps, tenant)
    record_ses_event(body, store=deps.store, message_events=message_events.MessageEventBuffer(deps.store, deps.clock))
    (cb,) = deps.store.message_event_batches(tx_id, 10, None)[0]
    raw = deps.store.table.get(schema.message_events_key(tx_id, cb.ref))
    msg = deps.store.table.get(schema.message_key(mid.rsplit("-", 1)[0], mid))
    assert raw[schema.TTL_ATTRIBUTE] == msg[schema.TTL_ATTRIBUTE]


# --- ingest resumes with the decisions it made --------------------------------------------------


class Crash(Exception):
    pass


def test_a_resumed_ingest_keeps_every_recipient_exactly_once_whatever_the_suppressions_became(deps, tenant,
                                                                                            monkeypatch):
    # GIVEN 120 rows (batch_size=50 in tests), user10 suppressed before the campaign
    deps.store.suppress("tenant-a", "user10@example.org", "manual")
    tx_id = submit(deps, "tenant-a", recipients(120))
    real = DynamoStore.put_messages
    calls = {"n": 0}

    def dies_half_way_through_batch_2(self: Any, messages: Any, *a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        messages = list(messages)
        if calls["n"] == 2:
            real(self, messages[:20], *a, **kw)  # part of batch 2 lands ...
            raise Crash("SIGKILL mid-batch")  # ... and the process dies
        return real(self, messages, *a, **kw)

    monkeypatch.setattr(DynamoStore, "put_messages", dies_half_way_through_batch_2)
    with pytest.raises(Crash):
        ingest_transaction(deps.store.get_transaction(tx_id), store=deps.store, blobs=deps.blobs,
                           settings=deps.settings, clock=deps.clock)
    monkeypatch.setattr(DynamoStore, "put_messages", real)
    assert deps.store.get_transaction(tx_id).ingest_checkpoint == 1
    # WHEN, before the resume, addresses in the written batch and in the partial one are suppressed
    # and the one the first attempt refused is suppressed no more
    for email in ("user3@example.org", "user60@example.org", "user75@example.org"):
        deps.store.suppress("tenant-a", email, "manual")
    deps.store.unsuppress("tenant-a", "user10@example.org")
    tx = ingest_transaction(deps.store.get_transaction(tx_id), store=deps.store, blobs=deps.blobs,
                            settings=deps.settings, clock=deps.clock)
    # THEN every recipient is a message exactly once, or the rejection the first attempt made
    assert tx.total_messages == 119 and tx.refused_rows == 1
    emails = [m.recipient_email for b in deps.store.batches(tx_id) for m in deps.store.batch_partition(b.batch_id)[0]]
    assert len(emails) == len(set(emails)) == 119
    assert set(emails) == {f"user{i}@example.org" for i in range(120)} - {"user10@example.org"}
    rows, _ = deps.store.rejections_page(tx_id, 500, None)
    assert [r.email for r in rows] == ["user10@example.org"]
