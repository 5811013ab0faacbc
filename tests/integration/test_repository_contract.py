"""The repository contract: each case runs against the in-memory fakes (tests/fakes) and against
the real DynamoStore on the moto server, so the service tests on the fakes (tests/services) test
what the real store does. A case states a behaviour a service relies on, never how it is stored."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core import schema
from core.domain.errors import Fenced, IllegalTransition, InvalidInput, NotFound, StaleWrite
from core.domain.models import (
    ApiKey,
    Batch,
    CallbackRecord,
    Message,
    Rejection,
    Summary,
    TemplateVersion,
    Transaction,
    batch_id_for,
    message_id_for,
)
from core.domain.statuses import BatchStatus, MessageStatus, TransactionStatus
from core.domain.tracking import TrackedEvent, Tracking, TrackingWrite
from tests.fakes import FakeStore

T, B, M = TransactionStatus, BatchStatus, MessageStatus
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TX = "tx_contract"


@pytest.fixture(params=["fake", "dynamo"])
def store(request: pytest.FixtureRequest) -> Any:
    """Every case runs twice: on FakeStore, and on DynamoStore over the moto server."""
    if request.param == "fake":
        return FakeStore()
    return request.getfixturevalue("deps").store


def _cursor(key: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _tx(tx_id: str = TX, tenant: str = "tenant-a", **kw: Any) -> Transaction:
    return Transaction(transaction_id=tx_id, tenant_id=tenant, template_id="tpl", template_version=1,
                       csv_s3_key="k", **kw)


def _batch(store: Any, index: int = 1, status: BatchStatus = B.PROCESSING, tx_id: str = TX, **kw: Any) -> Batch:
    b = Batch(batch_id=batch_id_for(tx_id, index), transaction_id=tx_id, tenant_id="tenant-a", index=index,
              status=status, message_count=3, **kw)
    assert store.put_batch(b)
    return b


def _queued(store: Any, index: int = 1) -> Batch:
    ready = store.change_batch_status(_batch(store, index), B.READY)
    return store.mark_queued(ready, NOW, NOW + timedelta(minutes=15))


def _messages(batch_id: str, n: int, tenant: str = "tenant-a") -> list[Message]:
    return [Message(message_id=message_id_for(batch_id, i), batch_id=batch_id, transaction_id=TX, tenant_id=tenant,
                    recipient_email=f"u{i}@example.org", placeholder_data={"n": str(i)}) for i in range(1, n + 1)]


# ---- transactions -----------------------------------------------------------------------------

def test_a_campaign_is_created_once_and_read_only_by_its_tenant(store):
    store.create_transaction(_tx(callback_url="https://hooks.example.com/cb", tags={"team": "a"}))
    got = store.get_transaction(TX, "tenant-a")
    assert (got.status, got.version, got.tags, got.callback_url) == (T.ACCEPT, 0, {"team": "a"},
                                                                     "https://hooks.example.com/cb")
    assert store.transaction_status(TX) == T.ACCEPT
    with pytest.raises(NotFound):
        store.get_transaction(TX, "tenant-b")
    with pytest.raises(NotFound):
        store.transaction_status("tx_missing")
    with pytest.raises(StaleWrite):
        store.create_transaction(_tx())


def test_a_status_move_is_conditional_on_the_status_and_version_read(store):
    tx = store.create_transaction(_tx())
    with pytest.raises(IllegalTransition):
        store.change_transaction_status(tx, T.SENT)
    moved = store.change_transaction_status(tx, T.PROCESSING, fields={"refused_rows": 2})
    assert (moved.status, moved.version, moved.refused_rows) == (T.PROCESSING, 1, 2)
    with pytest.raises(StaleWrite):  # the version-0 copy lost
        store.change_transaction_status(tx, T.CANCELLED)
    with pytest.raises(StaleWrite):
        store.update_transaction(tx, {"batch_count": 9})
    updated = store.update_transaction(moved, {"batch_count": 3, "failure_reason": None})
    got = store.get_transaction(TX)
    assert (got.status, got.version, got.batch_count, got.refused_rows) == (T.PROCESSING, 2, 3, 2)
    assert updated.version == got.version


def test_a_status_move_and_its_callback_are_written_together(store):

    tx = store.create_transaction(_tx(callback_url="https://hooks.example.com/cb"))
    cb = tx.status_callback(T.PROCESSING, Summary(), NOW)
    store.change_transaction_status(tx, T.PROCESSING, callback=cb)
    with pytest.raises(StaleWrite):  # a lost condition writes neither the move nor the callback
        store.change_transaction_status(tx, T.CANCELLED, callback=cb.model_copy(update={"seq": 7}))
    assert [(c.seq, c.payload["status"], c.state) for c in store.callbacks(TX)] == [(1, "PROCESSING", "PENDING")]
    assert [i["transaction_id"] for i in store.due("CALLBACK", NOW)] == [TX]  # due at once for delivery
    assert store.get_callback(TX, 1).webhook_id == f"msg_{TX}_1"
    with pytest.raises(NotFound):
        store.get_callback(TX, 2)


def test_a_worker_can_ask_for_a_failure_only_of_a_campaign_being_sent_and_only_once(store):
    tx = store.create_transaction(_tx())
    assert store.request_failure(TX, "template gone") is False  # ACCEPT: not being sent
    tx = store.change_transaction_status(tx, T.PROCESSING)
    tx = store.change_transaction_status(tx, T.READY_TO_SEND)
    assert store.request_failure(TX, "template gone") is True
    assert store.request_failure(TX, "another reason") is False
    got = store.get_transaction(TX)
    assert got.failure_reason == "template gone" and got.version == tx.version  # no version bump


def test_the_active_index_lists_campaigns_until_they_are_deactivated(store):
    first = store.create_transaction(_tx("tx_a", created_at=NOW))
    store.create_transaction(_tx("tx_b", created_at=NOW + timedelta(seconds=1)))
    assert [t.transaction_id for t in store.active_transactions()] == ["tx_a", "tx_b"]
    with pytest.raises(StaleWrite):  # conditional on the status read
        store.deactivate(first.model_copy(update={"status": T.PROCESSING}))
    store.deactivate(first)
    assert [t.transaction_id for t in store.active_transactions()] == ["tx_b"]
    store.reactivate(first)
    store.reactivate(first)  # idempotent
    assert [t.transaction_id for t in store.active_transactions()] == ["tx_a", "tx_b"]


def test_a_pass_reads_only_the_campaigns_due_and_a_change_makes_one_due_at_once(store):
    """``due_transactions``: what a pass reads. ``look_again`` leaves a waiting campaign out until
    a time, conditional on what was read; a status move, or the count addition that makes every
    message of a SENT campaign final, makes it due at once."""
    store.create_transaction(_tx("tx_a", created_at=NOW, status=T.SENT, total_messages=2))
    store.create_transaction(_tx("tx_b", created_at=NOW + timedelta(seconds=1)))
    assert [t.transaction_id for t in store.due_transactions(NOW + timedelta(seconds=1))] == ["tx_a", "tx_b"]
    assert [t.transaction_id for t in store.due_transactions(NOW)] == ["tx_a"]  # tx_b's time is still to come
    store.look_again(store.get_transaction("tx_a"), NOW + timedelta(hours=1))
    assert [t.transaction_id for t in store.due_transactions(NOW + timedelta(minutes=59))] == ["tx_b"]
    assert [t.transaction_id for t in store.active_transactions()] == ["tx_b", "tx_a"]  # still active
    assert "tx_a" in [t.transaction_id for t in store.due_transactions(NOW + timedelta(hours=1))]
    stale = store.get_transaction("tx_a")
    store.add_counts("tx_a", {"sent": 2, "final": 1}, NOW)  # not every message final: still waiting
    assert [t.transaction_id for t in store.due_transactions(NOW)] == []
    with pytest.raises(StaleWrite):  # counts were added since it was read
        store.look_again(stale, NOW + timedelta(hours=2))
    store.add_counts("tx_a", {"final": 1}, NOW)
    assert [t.transaction_id for t in store.due_transactions(NOW)] == ["tx_a"]
    b = store.get_transaction("tx_b")
    store.look_again(b, NOW + timedelta(hours=1))
    store.change_transaction_status(b, T.PROCESSING)
    assert [t.transaction_id for t in store.due_transactions(NOW)] == ["tx_a", "tx_b"]
    done = store.change_transaction_status(store.get_transaction("tx_a"), T.COMPLETED)
    store.deactivate(done)
    store.add_counts("tx_a", {"final": 1}, NOW)  # a settled campaign is never put back
    assert [t.transaction_id for t in store.due_transactions(NOW)] == ["tx_b"]


def test_a_tenants_campaigns_are_listed_newest_first_a_page_at_a_time(store):
    for i in range(5):
        store.create_transaction(_tx(f"tx_{i}", created_at=NOW + timedelta(minutes=i)))
    store.create_transaction(_tx("tx_other", tenant="tenant-b", created_at=NOW))
    seen, cursor = [], None
    for _ in range(10):
        page, cursor = store.list_transactions("tenant-a", 2, cursor)
        assert len(page) <= 2
        seen += [t.transaction_id for t in page]
        if cursor is None:
            break
    assert seen == ["tx_4", "tx_3", "tx_2", "tx_1", "tx_0"]
    with pytest.raises(InvalidInput):
        store.list_transactions("tenant-a", 2, "not a cursor!")
    # JSON that is no key (a 500 before), and another tenant's cursor (DynamoDB: ValidationException)
    for bad in ("WzFd", "e30=", "eyJhIjogMX0="):  # [1], {}, {"a": 1}
        with pytest.raises(InvalidInput):
            store.list_transactions("tenant-a", 2, bad)
    _, mine = store.list_transactions("tenant-a", 2, None)
    assert mine is not None
    with pytest.raises(InvalidInput):
        store.list_transactions("tenant-b", 2, mine)
    # a key of the right partition but of another query: short, with an index's keys, out of range
    with pytest.raises(InvalidInput):
        store.batches_page("tx_4", 2, _cursor({"PK": "TRANSACTION#tx_4"}))
    with pytest.raises(InvalidInput):
        store.batches_page("tx_4", 2, _cursor({"PK": "TRANSACTION#tx_4", "SK": "METADATA",
                                                 "tenant_pk": "TENANT#tenant-a#CAMPAIGNS", "tenant_sk": "x"}))
    with pytest.raises(InvalidInput):
        store.batches_page("tx_4", 2, _cursor({"PK": "TRANSACTION#tx_4", "SK": "REJECTION#00002"}))


def test_counts_add_up_without_a_version_bump_and_stamp_the_sending_period(store):
    tx = store.create_transaction(_tx())
    store.add_counts(TX, {"sent": 3, "delivered": 2, "bounced": 0}, NOW)
    store.add_counts(TX, {"sent": 1, "cancelled": 4}, NOW + timedelta(minutes=5))
    store.add_counts(TX, {"delivered": 0}, NOW + timedelta(hours=1))  # nothing to add: nothing written
    got = store.get_transaction(TX)
    assert got.counts == {"sent": 4, "delivered": 2, "cancelled": 4} and got.count_gen == 2
    assert got.version == tx.version and got.counts_at == NOW + timedelta(minutes=5)
    assert got.live_summary().sent == 4
    raw = store.get_flag(schema.transaction_key(TX))
    assert (raw["first_sent_at"], raw["last_sent_at"]) == ("2026-03-02T09:00:00.000000Z", "2026-03-02T09:05:00.000000Z")
    store.change_transaction_status(tx, T.PROCESSING)  # a status write read before the counts still wins
    with pytest.raises(StaleWrite):
        store.add_counts("tx_missing", {"sent": 1}, NOW)


def test_a_final_recount_applies_only_if_no_count_was_added_since_it_was_taken(store):
    store.create_transaction(_tx())
    store.add_counts(TX, {"sent": 1}, NOW)
    tx = store.get_transaction(TX)
    store.start_recount(tx, {"sent": 2, "final": 2}, NOW)
    taken = store.get_transaction(TX)
    assert taken.recount["gen"] == 1 and taken.recount["truth"] == {"sent": 2, "final": 2}
    store.add_counts(TX, {"sent": 1}, NOW)  # an event landed after the recount was taken
    with pytest.raises(StaleWrite):
        store.finish_recount(taken, apply=True)
    store.finish_recount(taken, apply=False)  # dropped, to be taken again
    again = store.get_transaction(TX)
    assert again.recount is None and not again.recounted and again.counts == {"sent": 2}
    store.start_recount(again, {"sent": 2, "final": 2}, NOW)
    store.finish_recount(store.get_transaction(TX), apply=True)
    done = store.get_transaction(TX)
    assert done.recounted and done.counts == {"sent": 2, "final": 2} and done.recount is None


# ---- batches ------------------------------------------------------------------------------------

def test_a_batch_is_written_once_and_moves_only_along_its_table(store):
    b = _batch(store)
    assert store.put_batch(b) is False
    with pytest.raises(IllegalTransition):
        store.change_batch_status(b, B.SENT)
    ready = store.change_batch_status(b, B.READY)
    with pytest.raises(StaleWrite):
        store.change_batch_status(b, B.CANCELLED)
    recounted = store.update_batch_summary(store.get_batch(b.batch_id, TX), Summary(total_messages=3, sent=1))
    assert recounted.version == ready.version  # a recount never makes a status write lose
    queued = store.mark_queued(ready, NOW, NOW + timedelta(minutes=15))
    got = store.get_batch(b.batch_id, TX)
    assert (got.status, got.version, got.dispatches, got.summary.sent) == (B.QUEUED, 2, 1, 1)
    assert queued.version == got.version and got.queued_at == NOW
    with pytest.raises(NotFound):
        store.get_batch(batch_id_for(TX, 99), TX)


def test_only_one_live_worker_holds_a_batchs_send_lease(store):
    b = _queued(store)
    assert store.claim_batch(b, "w1", NOW, 60)
    assert not store.claim_batch(b, "w2", NOW + timedelta(seconds=30), 60)  # w1's lease is live
    assert store.claim_batch(b, "w1", NOW + timedelta(seconds=30), 60)  # its holder renews it
    assert store.dispatch_state(b)["lease_owner"] == "w1"
    assert not store.hand_back_unclaimed(b, NOW + timedelta(seconds=40), NOW + timedelta(minutes=1))
    assert store.claim_batch(b, "w2", NOW + timedelta(seconds=91), 60)  # expired: another may take it
    store.release_batch(b, NOW + timedelta(minutes=2))
    state = store.dispatch_state(b)
    assert state["lease_owner"] is None and state["lease_until"] is None and state["released_at"]
    ready = store.change_batch_status(_batch(store, 2), B.READY)
    assert not store.claim_batch(ready, "w1", NOW, 60)  # not QUEUED: nothing to claim


def test_a_redispatch_never_takes_a_batch_from_a_live_lease_holder(store):
    b = _queued(store)
    assert store.claim_batch(b, "w1", NOW, 60)
    with pytest.raises(StaleWrite):
        store.mark_queued(b, NOW + timedelta(seconds=30), NOW + timedelta(minutes=15))
    current = store.get_batch(b.batch_id, TX)
    again = store.mark_queued(current, NOW + timedelta(seconds=60), NOW + timedelta(minutes=16))
    assert again.dispatches == 2
    state = store.dispatch_state(again)
    assert state["lease_owner"] is None and state["released_at"] is None  # waits for a new claim
    store.postpone_redispatch(b, NOW + timedelta(hours=1))  # a stale copy: silently nothing
    assert store.get_batch(b.batch_id, TX).redispatch_at == NOW + timedelta(minutes=16)
    store.postpone_redispatch(again, NOW + timedelta(hours=1))
    assert store.get_batch(b.batch_id, TX).redispatch_at == NOW + timedelta(hours=1)


def test_the_due_index_pages_through_due_batches_only_and_a_dispatch_leaves_it(store):
    for i in range(1, 6):
        store.change_batch_status(_batch(store, i), B.SCHEDULED, due_at=NOW - timedelta(minutes=10 - i))
    store.change_batch_status(_batch(store, 6), B.SCHEDULED, due_at=NOW + timedelta(minutes=1))
    due, cursor = [], None
    for _ in range(10):
        page = store.due_page("BATCH", NOW, 2, cursor)
        assert len(page.items) <= 2
        due += [(i["transaction_id"], i["batch_id"]) for i in page.items]
        cursor = page.cursor
        if not cursor:
            break
    assert due == [(TX, batch_id_for(TX, i)) for i in range(1, 6)]  # oldest first, the future one left out
    assert store.due("CALLBACK", NOW) == []
    first = store.get_batch(batch_id_for(TX, 1), TX)
    assert store.snooze_due(first, NOW + timedelta(hours=1))
    assert batch_id_for(TX, 1) not in [i["batch_id"] for i in store.due("BATCH", NOW)]
    second = store.change_batch_status(store.get_batch(batch_id_for(TX, 2), TX), B.READY)
    store.mark_queued(second, NOW, NOW + timedelta(minutes=15))
    assert [i["batch_id"] for i in store.due("BATCH", NOW + timedelta(hours=2))] == [
        batch_id_for(TX, i) for i in (3, 4, 5, 6, 1)]
    assert not store.snooze_due(store.get_batch(batch_id_for(TX, 2), TX), NOW)  # QUEUED: not due any more


# ---- messages -----------------------------------------------------------------------------------

def test_messages_are_put_idempotently_and_read_a_page_at_a_time(store):
    b = batch_id_for(TX, 1)
    msgs = _messages(b, 7)
    assert store.put_messages(msgs) == 1 and store.put_messages(msgs[:3]) == 1  # 25 a call; a rerun is harmless
    got = store.get_message(b, msgs[0].message_id, "tenant-a")
    assert got.placeholder_data == {"n": "1"} and got.status == M.READY_TO_SEND and got.timestamps == {}
    with pytest.raises(NotFound):
        store.get_message(b, msgs[0].message_id, "tenant-b")
    ids, cursor = [], None
    for _ in range(10):
        page = store.messages_page(b, None, 3, cursor)
        ids += [i["message_id"] for i in page.items]
        cursor = page.cursor
        if not cursor:
            break
    assert ids == [m.message_id for m in msgs]
    store.fail_message(b, msgs[4].message_id, M.SUPPRESSED, "suppressed")
    failed, cursor = [], None
    for _ in range(10):
        page = store.messages_page(b, "SUPPRESSED", 3, cursor)
        failed += [i["message_id"] for i in page.items]
        cursor = page.cursor
        if not cursor:
            break
    assert failed == [msgs[4].message_id]


def test_events_move_a_message_by_precedence_and_a_replay_changes_nothing(store):
    b = batch_id_for(TX, 1)
    (m,) = _messages(b, 1)
    store.put_messages([m])
    click = {"id": "e-click", "type": "Click", "at": "2026-01-01T10:04:00Z"}
    first = store.record_message_event(b, m.message_id, M.CLICKED, click, {"ses_message_id": "ses-1"})
    assert first.moved is True and first.delta == {"sent": 1, "delivered": 1, "opened": 1, "clicked": 1, "final": 1}
    late = store.record_message_event(b, m.message_id, M.DELIVERED, {"id": "e-del", "type": "Delivery",
                                                                   "at": "2026-01-01T10:01:00Z"})
    assert late.moved is False and late.delta == {}
    assert store.record_message_event(b, m.message_id, M.CLICKED, click).moved is None
    assert store.record_message_event(b, message_id_for(b, 99), M.SENT, {"id": "x", "at": "t"}).moved is None
    got = store.get_message(b, m.message_id)
    assert got.status == M.CLICKED and got.ses_message_id == "ses-1"
    assert [e["id"] for e in got.events] == ["e-click", "e-del"]
    assert got.timestamps == {"CLICKED": "2026-01-01T10:04:00Z", "DELIVERED": "2026-01-01T10:01:00Z"}
    (counted,) = store.message_statuses(b)
    assert counted["status"] == "CLICKED" and counted["seen"] == {"CLICKED", "DELIVERED"}
    assert "placeholder_data" not in counted  # just what counting needs


def test_a_tracking_write_that_lost_its_race_comes_back_with_the_item_as_it_is(store):
    b = batch_id_for(TX, 1)
    (m,) = _messages(b, 1)
    store.put_messages([m])
    before = Tracking.of(store.message_items([(b, m.message_id)])[m.message_id])
    sent, _ = before.apply(TrackedEvent("e1", "Send", M.SENT, "2026-01-01T10:00:00Z"))
    assert store.save_tracking(b, m.message_id, before, sent) is None
    delivered, _ = before.apply(TrackedEvent("e2", "Delivery", M.DELIVERED, "2026-01-01T10:00:01Z"))
    current = store.save_tracking(b, m.message_id, before, delivered)  # applied to what was read before e1
    assert current["status"] == "SENT" and current["ev_gen"] == 1
    assert store.save_tracking(b, message_id_for(b, 99), before, delivered) == {}  # gone


def test_tracking_writes_in_one_request_settle_each_message_on_its_own(store):
    """The events Lambda writes a whole SQS batch's messages in one round: one write may win while
    the next loses its race or finds its message gone; each answer is that message's own."""
    b = batch_id_for(TX, 1)
    m1, m2 = _messages(b, 2)
    store.put_messages([m1, m2])
    items = store.message_items([(b, m1.message_id), (b, m2.message_id)])
    before1, before2 = Tracking.of(items[m1.message_id]), Tracking.of(items[m2.message_id])
    sent2, _ = before2.apply(TrackedEvent("s2", "Send", M.SENT, "2026-01-01T10:00:00Z"))
    assert store.save_tracking(b, m2.message_id, before2, sent2) is None  # another invocation first
    delivered = [before.apply(TrackedEvent(f"d{i}", "Delivery", M.DELIVERED, "2026-01-01T10:00:01Z"))[0]
                 for i, before in ((1, before1), (2, before2))]

    outcomes = store.save_trackings([
        TrackingWrite(b, m1.message_id, before1, delivered[0]),
        TrackingWrite(b, m2.message_id, before2, delivered[1]),  # applied to what was read before s2
        TrackingWrite(b, message_id_for(b, 99), before1, delivered[0]),
    ])

    assert outcomes[0] is None and store.get_message(b, m1.message_id).status == M.DELIVERED
    assert outcomes[1]["status"] == "SENT" and outcomes[1]["ev_gen"] == 1
    assert outcomes[2] == {}  # gone
    assert store.get_message(b, m2.message_id).status == M.SENT


def test_only_an_unsent_message_can_be_cancelled_or_failed(store):
    b = batch_id_for(TX, 1)
    m1, m2, m3 = _messages(b, 3)
    store.put_messages([m1, m2, m3])
    store.record_message_event(b, m1.message_id, M.SENT, {"id": "s1", "type": "Send", "at": "2026-01-01T10:00:00Z"})
    assert store.cancel_message(b, m1.message_id, NOW) is False  # SES has it
    assert store.cancel_message(b, m2.message_id, NOW) is True
    assert store.cancel_message(b, m2.message_id, NOW) is False
    assert store.fail_message(b, m3.message_id, M.FAILED, "template gone") is True
    assert store.fail_message(b, m3.message_id, M.SUPPRESSED, "again") is False
    assert store.cancel_message(b, message_id_for(b, 99), NOW) is False
    messages, logs = store.batch_partition(b)
    by_id = {m.message_id: m for m in messages}
    assert [by_id[m.message_id].status for m in (m1, m2, m3)] == [M.SENT, M.CANCELLED, M.FAILED]
    assert by_id[m2.message_id].timestamps["CANCELLED"] == "2026-03-02T09:00:00.000000Z"
    assert by_id[m3.message_id].failure_reason == "template gone" and logs == []


def test_rejections_and_the_ingest_watermark(store):
    store.put_rejections(TX, [Rejection(line=i, reason="invalid_email", email=f"x{i}") for i in range(2, 9)])
    lines, cursor = [], None
    for _ in range(10):
        rows, cursor = store.rejections_page(TX, 3, cursor)
        lines += [r.line for r in rows]
        if cursor is None:
            break
    assert lines == list(range(2, 9))
    assert store.ingest_watermark(TX) == 0
    store.set_ingest_watermark(TX, 120)
    assert store.ingest_watermark(TX) == 120


# ---- send log ------------------------------------------------------------------------------------

def test_a_chunks_intent_is_written_once_and_closed_once(store):
    b = batch_id_for(TX, 1)
    args = dict(region="eu-west-1", now=NOW, send_by=NOW + timedelta(minutes=1))
    assert store.send_log_intent(b, 1, 1, ["m1", "m2"], "w1", **args)
    assert not store.send_log_intent(b, 1, 1, ["m1", "m2"], "w2", **args)
    store.extend_send_by(b, 1, 1, NOW + timedelta(minutes=2))
    store.send_log_done(b, 1, 1, {"m1": {"outcome": "SENT", "ses_id": "s1"}})
    with pytest.raises(StaleWrite):
        store.send_log_done(b, 1, 1, {})
    with pytest.raises(StaleWrite):
        store.extend_send_by(b, 1, 1, NOW + timedelta(minutes=3))
    _, (log,) = store.batch_partition(b)
    assert (log["state"], log["worker"], log["send_by"]) == ("DONE", "w1", "2026-03-02T09:02:00.000000Z")
    assert log["results"] == {"m1": {"outcome": "SENT", "ses_id": "s1"}} and "in_doubt_at" not in log
    assert store.send_evidence("eu-west-1") is None
    store.advance_send_evidence("eu-west-1", NOW, NOW)
    store.advance_send_evidence("eu-west-1", NOW - timedelta(minutes=1), NOW + timedelta(minutes=1))  # never back
    assert store.send_evidence("eu-west-1") == (NOW, NOW)


# ---- callbacks -----------------------------------------------------------------------------------

def test_a_callback_attempt_is_recorded_once_and_leaves_the_due_index_when_settled(store):
    tx = store.create_transaction(_tx(callback_url="https://hooks.example.com/cb"))
    cb = CallbackRecord(transaction_id=TX, tenant_id="tenant-a", seq=1, webhook_id=f"msg_{TX}_1",
                        url="https://hooks.example.com/cb", payload={"status": "PROCESSING"}, next_attempt_at=NOW)
    store.change_transaction_status(tx, T.PROCESSING, callback=cb)
    retry = cb.model_copy(update={"attempts": [{"at": "t", "status": 500, "error": None}],
                                  "next_attempt_at": NOW + timedelta(seconds=5)})
    store.save_callback_attempt(retry, 0)
    with pytest.raises(StaleWrite):  # another deliverer recorded this attempt first
        store.save_callback_attempt(retry, 0)
    assert store.due("CALLBACK", NOW) == []
    assert [i["transaction_id"] for i in store.due("CALLBACK", NOW + timedelta(seconds=5))] == [TX]
    got = store.get_callback(TX, 1)
    assert got.attempts == [{"at": "t", "status": 500}]  # a None is not stored
    delivered = retry.model_copy(update={"state": "DELIVERED", "next_attempt_at": None,
                                         "attempts": [*got.attempts, {"at": "u", "status": 200}]})
    store.save_callback_attempt(delivered, 1)
    assert store.due("CALLBACK", NOW + timedelta(days=1)) == []
    assert store.get_callback(TX, 1).state == "DELIVERED"


def test_message_event_batches_are_created_once_and_due_apart_from_campaign_callbacks(store):
    from core.domain.models import MESSAGE_EVENTS, MESSAGE_EVENTS_DUE

    cb = CallbackRecord(transaction_id=TX, tenant_id="tenant-a", seq=0, webhook_id="msg_ev_1", url="",
                        payload={"events": [{"event_id": "e1"}]}, next_attempt_at=NOW, kind=MESSAGE_EVENTS,
                        ref="ref-1")
    assert store.put_message_events(cb) is True
    assert store.put_message_events(cb.model_copy(update={"payload": {"events": []}})) is False
    assert store.message_events(TX, "ref-1").payload == {"events": [{"event_id": "e1"}]}
    assert store.message_events(TX, "ref-2") is None
    assert store.due("CALLBACK", NOW) == []
    assert [i["ref"] for i in store.due(MESSAGE_EVENTS_DUE, NOW)] == ["ref-1"]
    store.save_callback_attempt(cb.model_copy(update={"state": "DELIVERED", "attempts": [{"status": 200}]}), 0)
    assert store.due(MESSAGE_EVENTS_DUE, NOW) == []
    batches, cursor = store.message_event_batches(TX, 10, None)
    assert [c.state for c in batches] == ["DELIVERED"] and store.callbacks(TX) == []


# ---- templates, uploads, suppressions, tenants, switches ----------------------------------------

def test_template_versions_follow_each_other_and_the_newest_active_one_is_the_default(store):
    def version(n: int, tenant: str = "tenant-a") -> TemplateVersion:
        return TemplateVersion(template_id="tpl_1", tenant_id=tenant, version=n, name="t", subject="s", s3_key=f"k{n}")

    store.put_template_version(version(1))
    with pytest.raises(StaleWrite):
        store.put_template_version(version(3))  # not the next one
    with pytest.raises(StaleWrite):
        store.put_template_version(version(2, tenant="tenant-b"))
    store.put_template_version(version(2))
    assert store.template_head("tpl_1", "tenant-a")["latest_version"] == 2
    with pytest.raises(NotFound):
        store.template_head("tpl_1", "tenant-b")
    v2 = store.set_template_version_status(store.get_template_version("tpl_1", 2), "ACTIVE", {"variables": ["a"]})
    store.set_template_version_status(store.get_template_version("tpl_1", 1), "ACTIVE", {})
    assert store.template_head("tpl_1", "tenant-a")["active_version"] == 2  # the older one never wins it back
    with pytest.raises(StaleWrite):  # conditional on the status read
        store.set_template_version_status(version(2), "INVALID", {})
    assert v2.variables == ["a"] and [v.version for v in store.template_versions("tpl_1")] == [1, 2]


def test_an_address_is_suppressed_once_and_an_erased_one_by_its_hash(store):
    assert store.suppress("tenant-a", "a@example.org", "complaint", "m1") is True
    assert store.suppress("tenant-a", "a@example.org", "hard_bounce") is False  # the first reason stays
    assert store.get_suppression("tenant-a", "a@example.org")["reason"] == "complaint"
    digest = store.address_hasher("tenant-a", "gone@example.org")
    store.table.put({**schema.suppression_hash_key("tenant-a", digest), "tenant_id": "tenant-a",
                     "address_hash": digest})  # what an erasure leaves
    assert store.suppress("tenant-a", "gone@example.org", "unsubscribe") is False  # never written out again
    assert store.hash_suppressed("tenant-a", "gone@example.org")
    assert store.are_suppressed("tenant-a", ["a@example.org", "gone@example.org", "b@example.org"]) == {
        "a@example.org", "gone@example.org"}
    assert store.are_suppressed("tenant-b", ["a@example.org"]) == set()
    assert list(store.suppressed_emails("tenant-a")) == ["a@example.org"]
    assert list(store.suppression_hashes("tenant-a")) == [digest]
    assert [i["email"] for i in store.suppressions_page("tenant-a", 10, None).items] == ["a@example.org"]
    assert store.unsuppress("tenant-a", "a@example.org") is True and store.unsuppress("tenant-a", "a@example.org") is False
    assert store.get_suppression("tenant-a", "a@example.org") is None


def test_api_keys_are_found_by_hash_listed_by_tenant_and_revoked(store):
    store.put_api_key("h1", ApiKey(key_id="key_1", tenant_id="tenant-a", scopes=["campaigns:write"]))
    store.put_api_key("h2", ApiKey(key_id="key_2", tenant_id="tenant-a", scopes=["campaigns:read"]))
    store.put_api_key("h3", ApiKey(key_id="key_3", tenant_id="tenant-b", scopes=["campaigns:read"]))
    assert store.api_key("h1").scopes == ["campaigns:write"] and store.api_key("nope") is None
    assert [(h, k.key_id) for h, k in store.api_keys("tenant-a")] == [("h1", "key_1"), ("h2", "key_2")]
    store.revoke_api_key("h1")
    assert store.api_key("h1").revoked and not store.api_key("h2").revoked
    with pytest.raises(StaleWrite):
        store.revoke_api_key("nope")


def test_a_tenants_senders_and_the_sending_switches(store):
    with pytest.raises(StaleWrite):  # no such tenant
        store.set_tenant_senders("tenant-a", ["a@x.org"])
    store.put_tenant("tenant-a", {"name": "A"})
    store.set_tenant_senders("tenant-a", ["b@x.org", "@x.org", "b@x.org"])
    assert store.get_tenant("tenant-a") == {"tenant_id": "tenant-a", "name": "A", "senders": ["@x.org", "b@x.org"]}
    assert store.get_tenant("tenant-z") is None
    assert store.sending_paused("tenant-a") is None
    store.set_sending_switch(tenant_id="tenant-a", tenant_paused=True, reason="probe failed", source="automatic")
    store.set_sending_switch(tenant_id="tenant-b", tenant_paused=True, reason="abuse")
    assert store.sending_paused("tenant-a") == "tenant (automatic): probe failed"
    assert store.sending_paused("tenant-b") == "tenant: abuse"
    store.lift_automatic_hold("tenant-a", ["tenant"])
    assert store.sending_paused("tenant-a") is None and store.sending_paused("tenant-b") == "tenant: abuse"
    store.set_sending_switch(tenant_id="tenant-b", tenant_paused=False)
    assert store.sending_holds("tenant-b") == {"operator": None, "automatic": [], "reason": None}
    assert store.claim_sending_probe("platform", NOW, 60)
    assert not store.claim_sending_probe("platform", NOW + timedelta(seconds=30), 60)
    assert store.claim_sending_probe("platform", NOW + timedelta(seconds=60), 60)


def test_a_deposed_leaders_writes_are_fenced(store):
    tx = store.create_transaction(_tx())
    new_leader, old_leader = store.fenced(4), store.fenced(3)
    moved = new_leader.change_transaction_status(tx, T.PROCESSING)
    with pytest.raises(Fenced):
        old_leader.update_transaction(moved, {"refused_rows": 1})
    assert store.get_transaction(TX).refused_rows == 0
    assert new_leader.update_transaction(moved, {"refused_rows": 2}).refused_rows == 2
