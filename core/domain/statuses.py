"""Statuses of every entity and the moves allowed between them, as data.

Transactions and batches move only along their tables. Messages are moved by SES events that
arrive late, twice and out of order, so a message's status follows a precedence: an event
applies only when it ranks higher than the status the message already has.
"""

from __future__ import annotations

from enum import StrEnum


class TransactionStatus(StrEnum):
    ACCEPT = "ACCEPT"
    PROCESSING = "PROCESSING"
    SCHEDULED = "SCHEDULED"
    READY_TO_SEND = "READY_TO_SEND"
    SENT = "SENT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PAUSED = "PAUSED"


class BatchStatus(StrEnum):
    PROCESSING = "PROCESSING"
    SCHEDULED = "SCHEDULED"
    READY = "READY"
    QUEUED = "QUEUED"  # handed to the send queue, sender working on it
    SENT = "SENT"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class MessageStatus(StrEnum):
    CREATED = "CREATED"
    SCHEDULED = "SCHEDULED"
    READY_TO_SEND = "READY_TO_SEND"
    SENDING = "SENDING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    REJECTED = "REJECTED"
    BOUNCED = "BOUNCED"
    OPENED = "OPENED"
    CLICKED = "CLICKED"
    COMPLAINED = "COMPLAINED"
    SUPPRESSED = "SUPPRESSED"
    FAILED = "FAILED"


T, B, M = TransactionStatus, BatchStatus, MessageStatus

TRANSACTION_TRANSITIONS: dict[TransactionStatus, frozenset[TransactionStatus]] = {
    T.ACCEPT: frozenset({T.PROCESSING, T.FAILED, T.CANCELLED}),
    T.PROCESSING: frozenset({T.SCHEDULED, T.READY_TO_SEND, T.FAILED, T.CANCELLED}),
    T.SCHEDULED: frozenset({T.READY_TO_SEND, T.PAUSED, T.CANCELLED}),
    T.READY_TO_SEND: frozenset({T.SENT, T.PAUSED, T.CANCELLED, T.FAILED}),  # FAILED: unsendable (template gone)
    T.PAUSED: frozenset({T.SCHEDULED, T.READY_TO_SEND, T.CANCELLED}),
    T.SENT: frozenset({T.COMPLETED}),
    T.COMPLETED: frozenset(),
    T.FAILED: frozenset(),
    T.CANCELLED: frozenset(),
}

BATCH_TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    B.PROCESSING: frozenset({B.SCHEDULED, B.READY, B.CANCELLED}),
    B.SCHEDULED: frozenset({B.READY, B.CANCELLED}),
    B.READY: frozenset({B.QUEUED, B.CANCELLED}),
    B.QUEUED: frozenset({B.SENT, B.CANCELLED}),
    B.SENT: frozenset({B.COMPLETED}),
    B.COMPLETED: frozenset(),
    B.CANCELLED: frozenset(),
}

TERMINAL_TRANSACTION = frozenset({T.COMPLETED, T.FAILED, T.CANCELLED})
TERMINAL_BATCH = frozenset({B.COMPLETED, B.CANCELLED})
# Message statuses after which nothing is sent and no delivery outcome is awaited.
FINAL_MESSAGE = frozenset(
    {M.DELIVERED, M.REJECTED, M.BOUNCED, M.OPENED, M.CLICKED, M.COMPLAINED, M.SUPPRESSED, M.FAILED}
)
SENDABLE_MESSAGE = frozenset({M.CREATED, M.SCHEDULED, M.READY_TO_SEND})

# Precedence for event-driven moves. Higher wins; equal or lower is a late/duplicate event
# that is recorded but does not change the status. SUPPRESSED and FAILED are decided before a
# send and absorb everything; a bounce may follow a delivery (asynchronous bounce); a
# complaint is the strongest signal about a recipient and outranks engagement.
MESSAGE_PRECEDENCE: dict[MessageStatus, int] = {
    M.CREATED: 0,
    M.SCHEDULED: 1,
    M.READY_TO_SEND: 2,
    M.SENDING: 3,
    M.SENT: 4,
    M.DELIVERED: 5,
    M.REJECTED: 5,
    M.BOUNCED: 6,
    M.OPENED: 7,
    M.CLICKED: 8,
    M.COMPLAINED: 9,
    M.SUPPRESSED: 10,
    M.FAILED: 10,
}


def outranks(new: MessageStatus, current: MessageStatus) -> bool:
    """True when an event carrying ``new`` may replace ``current``."""
    return MESSAGE_PRECEDENCE[new] > MESSAGE_PRECEDENCE[current]


def statuses_below(new: MessageStatus) -> list[MessageStatus]:
    """The statuses a message may hold for ``new`` to apply (used in conditional writes)."""
    return [s for s, r in MESSAGE_PRECEDENCE.items() if r < MESSAGE_PRECEDENCE[new]]


def apply_event(current: MessageStatus, new: MessageStatus) -> MessageStatus:
    return new if outranks(new, current) else current
