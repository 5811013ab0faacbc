"""core/services/events.py on the fakes: SES events arrive late, twice and out of order; a
message's status moves only by precedence, a replay is a duplicate that writes nothing, and the
campaign's counts add up to what its messages hold."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.domain.models import batch_id_for, message_id_for, parse_iso
from core.domain.statuses import BatchStatus, MessageStatus
from core.services.events import CountBuffer, SendEvidenceMark, record_ses_event, record_ses_events
from core.services.message_events import MessageEventBuffer
from tests.conftest import ses_event_for, sns_envelope
from tests.fakes import FakeStore, FakeUpdate
from tests.services.builders import NOW, TENANT, stored_campaign

M = MessageStatus
BATCH = batch_id_for("tx_1", 1)


def mid(n: int, batch: int = 1) -> str:
    return message_id_for(batch_id_for("tx_1", batch), n)


def event(name: str, n: int = 1, *, batch: int = 1, ses_id: str | None = None, **changes: Any) -> str:
    """The SQS body of an SES event sample (tests/events/) for message ``n`` of the campaign."""
    ev = ses_event_for(name, tenant=TENANT, message_id=mid(n, batch), recipient=f"u{batch}-{n}@example.org",
                       ses_id=ses_id or f"ses-{batch}-{n}")
    for path, value in changes.items():  # e.g. bounce__bounceType="Transient"
        *parents, leaf = path.split("__")
        target = ev
        for p in parents:
            target = target[p]
        target[leaf] = value
    return sns_envelope(ev)


def record(store, *bodies: str, **kw: Any) -> list[Any]:
    return record_ses_events(list(bodies), store=store, **kw)


@pytest.fixture
def campaign(store):
    return stored_campaign(store, batches=[BatchStatus.SENT], per_batch=4)


def test_events_out_of_order_in_one_batch_are_applied_in_time_order(store, campaign):
    outcomes = record(store, event("ses_click.json"), event("ses_open.json"), event("ses_delivery.json"),
                      event("ses_send.json"))
    assert outcomes == ["applied"] * 4
    msg = store.get_message(BATCH, mid(1))
    assert msg.status == M.CLICKED and [e["type"] for e in msg.events] == ["Send", "Delivery", "Open", "Click"]
    assert msg.ses_message_id == "ses-1-1" and msg.timestamps["DELIVERED"] == "2026-01-01T10:00:01.100Z"
    tx = store.get_transaction("tx_1")
    assert tx.counts == {"sent": 1, "delivered": 1, "opened": 1, "clicked": 1, "final": 1}


def test_a_replayed_batch_is_all_duplicates_and_changes_nothing(store, campaign):
    bodies = [event("ses_send.json"), event("ses_delivery.json")]
    record(store, *bodies)
    before = store.message_items([(BATCH, mid(1))])[mid(1)]
    assert record(store, *bodies) == ["duplicate", "duplicate"]
    assert record(store, bodies[1], bodies[1]) == ["duplicate", "duplicate"]
    assert store.message_items([(BATCH, mid(1))])[mid(1)] == before  # not even a write
    assert store.get_transaction("tx_1").counts == {"sent": 1, "delivered": 1, "final": 1}


def test_a_late_event_is_kept_without_moving_the_status_back_or_counting_twice(store, campaign):
    assert record(store, event("ses_delivery.json")) == ["applied"]
    assert record(store, event("ses_send.json")) == ["kept"]  # the Send arrived after the Delivery
    msg = store.get_message(BATCH, mid(1))
    assert msg.status == M.DELIVERED and [e["type"] for e in msg.events] == ["Delivery", "Send"]
    assert store.get_transaction("tx_1").counts == {"sent": 1, "delivered": 1, "final": 1}


def test_a_bounce_after_a_delivery_moves_the_message_and_suppresses_the_address(store, campaign):
    record(store, event("ses_delivery.json"))
    assert record(store, event("ses_bounce.json")) == ["applied"]
    assert store.get_message(BATCH, mid(1)).status == M.BOUNCED
    assert store.get_suppression(TENANT, "u1-1@example.org")["reason"] == "hard_bounce"
    assert store.get_transaction("tx_1").counts == {"sent": 1, "delivered": 1, "bounced": 1, "final": 1,
                                                    "hard_bounced": 1}


def test_a_transient_bounce_suppresses_nobody_and_counts_no_hard_bounce(store, campaign):
    record(store, event("ses_bounce.json", bounce__bounceType="Transient", bounce__bounceSubType="MailboxFull"))
    assert store.get_message(BATCH, mid(1)).status == M.BOUNCED
    assert store.get_suppression(TENANT, "u1-1@example.org") is None
    assert "hard_bounced" not in store.get_transaction("tx_1").counts


def test_a_complaint_outranks_engagement_and_suppresses(store, campaign):
    record(store, event("ses_complaint.json"), event("ses_click.json"))
    assert store.get_message(BATCH, mid(1)).status == M.COMPLAINED
    assert store.get_suppression(TENANT, "u1-1@example.org")["reason"] == "complaint"
    assert store.are_suppressed(TENANT, ["u1-1@example.org", "u1-2@example.org"]) == {"u1-1@example.org"}


def test_counts_across_messages_add_up_to_what_the_messages_hold(store, campaign):
    bodies = [event("ses_send.json", n) for n in (1, 2, 3, 4)]
    bodies += [event("ses_delivery.json", 1), event("ses_open.json", 1), event("ses_bounce.json", 2),
               event("ses_delivery.json", 3), event("ses_complaint.json", 3), event("ses_reject.json", 4)]
    record(store, *bodies[:5])
    record(store, *bodies[3:])  # overlapping batches: the overlap is a replay
    s = store.get_transaction("tx_1").live_summary()
    assert (s.sent, s.delivered, s.opened, s.bounced, s.complained, s.rejected) == (4, 2, 1, 1, 1, 1)
    assert store.get_transaction("tx_1").counts["final"] == 4
    assert [m.status for m in store.batch_partition(BATCH)[0]] == [M.OPENED, M.BOUNCED, M.COMPLAINED, M.REJECTED]


def test_malformed_foreign_and_unknown_records_are_dropped_not_retried(store, campaign):
    unknown = sns_envelope(ses_event_for("ses_delivery.json", tenant=TENANT, message_id="tx_nope-b00001-00001"))
    no_id = json.loads(json.loads(event("ses_send.json"))["Message"])
    no_id["mail"]["tags"].pop("message_id")
    outcomes = record(store, "{not json", '{"Message": "{}"}', unknown, sns_envelope(no_id),
                      event("ses_send.json", eventType="Subscription"))
    assert outcomes == ["malformed", "malformed", "duplicate", "ignored", "ignored"]
    assert store.get_transaction("tx_1").counts == {}


def test_an_event_whose_detail_has_the_wrong_shape_is_dropped_and_the_batch_goes_on(store, campaign):
    """One SES record with a detail of another type (a string for the bounce object, a list of
    strings for its recipients) is malformed: logged and dropped, never a crash of the whole batch."""
    outcomes = record(store, event("ses_bounce.json", 1, bounce="not an object"),
                      event("ses_bounce.json", 2, bounce__bouncedRecipients=["x"]), event("ses_send.json", 3))
    assert outcomes == ["malformed", "malformed", "applied"]
    assert store.get_transaction("tx_1").counts == {"sent": 1}


def test_an_erased_message_records_nothing(store, campaign):
    store.table.update(FakeUpdate({"PK": f"BATCH#{BATCH}", "SK": f"MESSAGE#{mid(1)}"}, set={"erased": True}))
    assert record(store, event("ses_delivery.json")) == ["duplicate"]
    assert store.get_message(BATCH, mid(1)).status == M.READY_TO_SEND and store.get_transaction("tx_1").counts == {}


def test_counts_given_a_buffer_wait_for_its_flush(store, campaign, clock):
    counts = CountBuffer(store, clock)
    record(store, event("ses_send.json", 1), event("ses_send.json", 2), counts=counts)
    assert store.get_transaction("tx_1").counts == {}
    counts.flush()
    tx = store.get_transaction("tx_1")
    assert tx.counts == {"sent": 2} and tx.counts_at == NOW and tx.count_gen == 1  # one addition for both


def test_a_message_written_meanwhile_is_folded_again_on_what_it_is_now(store, campaign):
    real_save = store.save_tracking
    other_lambda = FakeStore(store.table)  # another invocation, over the same table
    raced: list[bool | None] = []

    def another_invocation_first(batch_id, message_id, before, after):
        if not raced:  # it records the Send between our read and our write
            raced.append(other_lambda.record_message_event(batch_id, message_id, M.SENT, {
                "id": "other", "type": "Send", "at": "2026-01-01T10:00:00.000Z"}).moved)
        return real_save(batch_id, message_id, before, after)

    store.save_tracking = another_invocation_first  # type: ignore[method-assign]
    assert record(store, event("ses_delivery.json")) == ["applied"]
    msg = store.get_message(BATCH, mid(1))
    assert raced == [True] and msg.status == M.DELIVERED and {e["type"] for e in msg.events} == {"Send", "Delivery"}
    assert store.get_transaction("tx_1").counts == {"delivered": 1, "final": 1}  # the other one adds its "sent"


def test_a_store_that_cannot_be_read_makes_every_record_retried(store, campaign):
    def down(keys):
        raise ConnectionError("dynamodb unreachable")

    store.message_items = down  # type: ignore[method-assign]
    outcomes = record(store, event("ses_send.json", 1), event("ses_send.json", 2), "{not json")
    assert [type(o).__name__ for o in outcomes[:2]] == ["ConnectionError"] * 2 and outcomes[2] == "malformed"
    with pytest.raises(ConnectionError):
        record_ses_event(event("ses_send.json", 3), store=store)


def test_a_message_write_that_fails_retries_its_own_records_and_the_others_are_recorded(store, campaign):
    real_saves = store.save_trackings

    def throttled_second(writes):  # DynamoDB still throttles one statement of the batched write
        return [TimeoutError("throttled") if w.message_id == mid(2) else out
                for w, out in zip(writes, real_saves(writes), strict=True)]

    store.save_trackings = throttled_second  # type: ignore[method-assign]
    outcomes = record(store, event("ses_send.json", 1), event("ses_send.json", 2), event("ses_delivery.json", 1))
    assert outcomes[0] == outcomes[2] == "applied" and isinstance(outcomes[1], TimeoutError)
    assert store.get_transaction("tx_1").counts == {"sent": 1, "delivered": 1, "final": 1}  # none for message 2


def test_send_events_move_the_regions_evidence_mark_forward_only(store, campaign, clock):
    mark = SendEvidenceMark(store, clock, "eu-west-1")
    record(store, event("ses_send.json", 1, mail__timestamp="2020-03-02T08:59:30.000Z"), evidence=mark)
    mark.flush()
    record(store, event("ses_send.json", 2, mail__timestamp="2020-03-02T08:50:00.000Z"), evidence=mark)
    mark.flush()
    assert store.send_evidence("eu-west-1") == (parse_iso("2020-03-02T08:59:30.000Z"), NOW)


def test_an_opted_in_campaigns_events_go_to_its_outbox_before_the_message(store, campaign, clock):
    body = event("ses_delivery.json", mail__tags__message_events=["true"])
    outcomes = record(store, body, event("ses_send.json", 2), message_events=MessageEventBuffer(store, clock))
    assert outcomes == ["applied", "applied"]
    (outbox,) = store.message_event_batches("tx_1", 10, None)[0]
    (ev,) = outbox.payload["events"]
    assert (ev["message_id"], ev["status"], ev["metadata"]) == (mid(1), "DELIVERED", {"row": "1-1"})
    assert [i["ref"] for i in store.due("MSGEVENTS", NOW)] == [outbox.ref]
    assert record(store, body, message_events=MessageEventBuffer(store, clock)) == ["duplicate"]
    assert len(store.message_event_batches("tx_1", 10, None)[0]) == 1  # a replay is not delivered again
