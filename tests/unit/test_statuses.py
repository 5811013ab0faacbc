from hypothesis import given
from hypothesis import strategies as st

from core.domain.statuses import (
    BATCH_TRANSITIONS,
    MESSAGE_PRECEDENCE,
    TERMINAL_TRANSACTION,
    TRANSACTION_TRANSITIONS,
    BatchStatus,
    MessageStatus,
    TransactionStatus,
    apply_event,
    outranks,
    statuses_below,
)


def test_every_status_has_a_transition_row():
    assert set(TRANSACTION_TRANSITIONS) == set(TransactionStatus)
    assert set(BATCH_TRANSITIONS) == set(BatchStatus)
    assert set(MESSAGE_PRECEDENCE) == set(MessageStatus)


def test_terminal_transaction_statuses_lead_nowhere():
    for s in TERMINAL_TRANSACTION:
        assert TRANSACTION_TRANSITIONS[s] == frozenset()


def test_happy_path_is_allowed_and_skipping_is_not():
    path = ["ACCEPT", "PROCESSING", "SCHEDULED", "READY_TO_SEND", "SENT", "COMPLETED"]
    for a, b in zip(path, path[1:]):
        assert TransactionStatus(b) in TRANSACTION_TRANSITIONS[TransactionStatus(a)]
    assert TransactionStatus.SENT not in TRANSACTION_TRANSITIONS[TransactionStatus.ACCEPT]
    assert TransactionStatus.READY_TO_SEND not in TRANSACTION_TRANSITIONS[TransactionStatus.COMPLETED]


def test_late_delivery_does_not_undo_a_click():
    assert apply_event(MessageStatus.CLICKED, MessageStatus.DELIVERED) == MessageStatus.CLICKED
    assert apply_event(MessageStatus.DELIVERED, MessageStatus.CLICKED) == MessageStatus.CLICKED


def test_bounce_after_delivery_wins_and_complaint_outranks_engagement():
    assert outranks(MessageStatus.BOUNCED, MessageStatus.DELIVERED)
    assert outranks(MessageStatus.COMPLAINED, MessageStatus.CLICKED)
    assert not outranks(MessageStatus.SENT, MessageStatus.SENT)  # duplicate


def test_statuses_below_is_the_condition_set():
    assert MessageStatus.SENDING in statuses_below(MessageStatus.SENT)
    assert MessageStatus.SENT not in statuses_below(MessageStatus.SENT)
    assert MessageStatus.FAILED not in statuses_below(MessageStatus.CLICKED)


@given(st.lists(st.sampled_from(list(MessageStatus)), min_size=1, max_size=40))
def test_no_sequence_of_events_moves_a_message_backwards(events):
    current = MessageStatus.READY_TO_SEND
    for ev in events:
        nxt = apply_event(current, ev)
        assert MESSAGE_PRECEDENCE[nxt] >= MESSAGE_PRECEDENCE[current]
        current = nxt
    assert MESSAGE_PRECEDENCE[current] == max(
        [MESSAGE_PRECEDENCE[MessageStatus.READY_TO_SEND]] + [MESSAGE_PRECEDENCE[e] for e in events])


@given(st.permutations([MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.OPENED, MessageStatus.CLICKED]))
def test_order_of_arrival_does_not_change_the_outcome(order):
    current = MessageStatus.SENDING
    for ev in order:
        current = apply_event(current, ev)
    assert current == MessageStatus.CLICKED
