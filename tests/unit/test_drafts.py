"""Draft campaigns: where the model sends a campaign after ingest and on release."""

from datetime import UTC, datetime, timedelta

from core.domain.statuses import (
    NOT_RELEASED,
    TRANSACTION_TRANSITIONS,
    TransactionStatus,
    after_ingest,
    release_refusal,
    released,
)

T = TransactionStatus
NOW = datetime(2026, 1, 1, 9, tzinfo=UTC)


def test_a_draft_rests_after_ingest_and_others_go_on():
    assert after_ingest(True, None, NOW) == T.DRAFT
    assert after_ingest(True, NOW + timedelta(days=1), NOW) == T.DRAFT
    assert after_ingest(False, None, NOW) == T.READY_TO_SEND
    assert after_ingest(False, NOW + timedelta(hours=1), NOW) == T.SCHEDULED


def test_a_released_draft_is_scheduled_only_while_its_send_time_is_ahead():
    assert released(NOW + timedelta(seconds=1), NOW) == T.SCHEDULED
    assert released(NOW - timedelta(hours=1), NOW) == T.READY_TO_SEND  # its time passed while it was a draft
    assert released(None, NOW) == T.READY_TO_SEND
    for target in (T.SCHEDULED, T.READY_TO_SEND, T.CANCELLED):
        assert target in TRANSACTION_TRANSITIONS[T.DRAFT]
    assert T.DRAFT in TRANSACTION_TRANSITIONS[T.PROCESSING]
    assert T.SENT not in TRANSACTION_TRANSITIONS[T.DRAFT]


def test_only_a_draft_can_be_released_and_the_refusal_says_why():
    assert release_refusal(T.DRAFT) is None
    assert "still being ingested" in release_refusal(T.PROCESSING)
    for s in (T.SCHEDULED, T.READY_TO_SEND, T.PAUSED, T.SENT, T.COMPLETED, T.CANCELLED, T.FAILED):
        assert "only DRAFT" in release_refusal(s)
    assert T.DRAFT in NOT_RELEASED and T.READY_TO_SEND not in NOT_RELEASED
