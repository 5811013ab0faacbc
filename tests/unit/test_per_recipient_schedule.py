"""Per-recipient send times and message-event batching, as pure rules (issue 18)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.domain import schedule
from core.domain.statuses import TRANSACTION_TRANSITIONS, batch_released, on_release, while_sending
from core.domain.statuses import BatchStatus as B
from core.domain.statuses import TransactionStatus as T
from core.services import message_events

START = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
END = START + schedule.DEFAULT_WINDOW


def test_a_row_time_with_an_offset_inside_the_window_is_read_and_goes_in_its_minute():
    at, why = schedule.recipient_send_at(" 2026-12-03T09:00:30+01:00 ", START, END)
    assert why is None and at == datetime(2026, 12, 3, 8, 0, 30, tzinfo=UTC)
    assert schedule.send_minute(at) == datetime(2026, 12, 3, 8, 1, tzinfo=UTC)  # never before its time
    assert schedule.send_minute(at.replace(second=0)) == at.replace(second=0)
    assert schedule.recipient_send_at("2026-12-03T08:00:00Z", START, END)[0] == datetime(2026, 12, 3, 8, tzinfo=UTC)
    assert schedule.recipient_send_at("", START, END) == (None, None)  # the campaign's own time


def test_unreadable_offsetless_or_out_of_window_times_are_refused_with_a_reason():
    for value, reason in (("tomorrow 9am", "send_at_invalid"), ("2026-12-03T09:00:00", "send_at_invalid"),
                          ("2026-12-03", "send_at_invalid"), ("x" * 500, "send_at_invalid"),
                          ("2026-12-03T05:59:00Z", "send_at_outside_window"),
                          ((END + timedelta(minutes=1)).isoformat(), "send_at_outside_window")):
        at, why = schedule.recipient_send_at(value, START, END)
        assert at is None and why.split(":")[0] == reason, value
        assert len(why) < 300


def test_the_window_ends_at_send_until_or_after_the_default():
    assert schedule.window(START, None) == (START, START + timedelta(hours=48))
    assert schedule.window(START, START + timedelta(hours=5)) == (START, START + timedelta(hours=5))


def test_a_campaign_waits_scheduled_between_its_recipients_send_times():
    now = START
    assert batch_released(now + timedelta(minutes=1), now) == B.SCHEDULED
    assert batch_released(now, now) == B.READY and batch_released(None, now) == B.READY
    assert on_release([B.SCHEDULED, B.READY]) == T.READY_TO_SEND
    assert on_release([B.SCHEDULED, B.SCHEDULED]) == T.SCHEDULED
    assert while_sending([B.SENT, B.QUEUED, B.SCHEDULED]) is None  # still sending what was due
    assert while_sending([B.SENT, B.SCHEDULED, B.CANCELLED]) == T.SCHEDULED  # waiting for the next minute
    assert while_sending([B.SENT, B.COMPLETED, B.CANCELLED]) == T.SENT
    assert T.SCHEDULED in TRANSACTION_TRANSITIONS[T.READY_TO_SEND]


def _event(i: int, metadata_bytes: int = 10) -> dict:
    return message_events.message_event(event_id=f"e{i}", status="DELIVERED", at="2026-01-01T00:00:00Z",
                                        message_id=f"tx_1-b00001-{i:05d}", transaction_id="tx_1",
                                        metadata={"crm": "x" * metadata_bytes}, source="Delivery")


def test_events_are_batched_per_campaign_up_to_a_count_and_a_size():
    assert [len(c) for c in message_events._chunks([_event(i) for i in range(250)])] == [100, 100, 50]
    big = [_event(i, metadata_bytes=100 * 1024) for i in range(5)]
    assert [len(c) for c in message_events._chunks(big)] == [2, 2, 1]  # each item stays under 400 KB
    ev = _event(1)
    assert ev["batch_id"] == "tx_1-b00001" and "recipient" not in str(ev)


def test_only_tagged_mails_belong_to_opted_in_campaigns():
    assert message_events.wanted({"message_events": ["true"]})
    assert not message_events.wanted({"tenant_id": ["t"]})
