"""Statuses of every entity and the moves allowed between them, as data.

Transactions and batches move only along their tables. Messages are moved by SES events that
arrive late, twice and out of order, so a message's status follows a precedence: an event
applies only when it ranks higher than the status the message already has.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum


class TransactionStatus(StrEnum):
    ACCEPT = "ACCEPT"
    PROCESSING = "PROCESSING"
    DRAFT = "DRAFT"  # ingested and validated, waiting for a release
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
    CANCELLED = "CANCELLED"  # never sent: its campaign was cancelled first


T, B, M = TransactionStatus, BatchStatus, MessageStatus

TRANSACTION_TRANSITIONS: dict[TransactionStatus, frozenset[TransactionStatus]] = {
    T.ACCEPT: frozenset({T.PROCESSING, T.FAILED, T.CANCELLED}),
    T.PROCESSING: frozenset({T.DRAFT, T.SCHEDULED, T.READY_TO_SEND, T.FAILED, T.CANCELLED}),
    T.DRAFT: frozenset({T.SCHEDULED, T.READY_TO_SEND, T.CANCELLED}),  # released, or dropped
    T.SCHEDULED: frozenset({T.READY_TO_SEND, T.PAUSED, T.CANCELLED}),
    # FAILED: unsendable (template gone); SCHEDULED: what was due is sent, the rest waits for its own
    # send time (per-recipient send_at, core/domain/schedule.py)
    T.READY_TO_SEND: frozenset({T.SENT, T.SCHEDULED, T.PAUSED, T.CANCELLED, T.FAILED}),
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
# Statuses of a campaign whose recipients have not been sent anything yet (test sends allowed).
NOT_RELEASED = frozenset({T.ACCEPT, T.PROCESSING, T.DRAFT, T.SCHEDULED})


def after_ingest(draft: bool, send_at: datetime | None, now: datetime) -> TransactionStatus:
    """Where an ingested campaign goes: DRAFT when submitted as one, else as ``released``."""
    return T.DRAFT if draft else released(send_at, now)


def released(send_at: datetime | None, now: datetime) -> TransactionStatus:
    """Where a released campaign goes: SCHEDULED while its send time is ahead, else READY_TO_SEND."""
    return T.SCHEDULED if send_at is not None and send_at > now else T.READY_TO_SEND


def batch_released(send_at: datetime | None, now: datetime) -> BatchStatus:
    """Where a written batch goes when its campaign is released: SCHEDULED (due at its own send
    time, the campaign's or its recipients' per-recipient one) while that is ahead, else READY."""
    return B.SCHEDULED if send_at is not None and send_at > now else B.READY


def on_release(batches: Iterable[BatchStatus]) -> TransactionStatus:
    """Where a released campaign goes from its batches' statuses: READY_TO_SEND when one is ready
    or in flight, SCHEDULED while every one waits for its send time."""
    return T.READY_TO_SEND if any(b in (B.READY, B.QUEUED) for b in batches) else T.SCHEDULED


def while_sending(batches: Iterable[BatchStatus]) -> TransactionStatus | None:
    """Where a READY_TO_SEND campaign goes from its batches' statuses: SENT once every batch is sent
    or closed; back to SCHEDULED when what was due is sent and the rest waits for its own
    (per-recipient) send time, so a waiting campaign costs the controller nothing until the ``due``
    index releases its next batch; None (stay) while a batch is ready or in flight."""
    statuses = set(batches)
    if statuses <= {B.SENT, B.COMPLETED, B.CANCELLED}:
        return T.SENT
    if B.SCHEDULED in statuses and statuses <= {B.SCHEDULED, B.SENT, B.COMPLETED, B.CANCELLED}:
        return T.SCHEDULED
    return None


def release_refusal(current: TransactionStatus) -> str | None:
    """Why a campaign in ``current`` cannot be released (None: it can)."""
    if current == T.DRAFT:
        return None
    if current in (T.ACCEPT, T.PROCESSING):
        return f"campaign is {current.value}: it is still being ingested; release it once it is DRAFT"
    return f"campaign is {current.value}; only DRAFT campaigns can be released"
TERMINAL_BATCH = frozenset({B.COMPLETED, B.CANCELLED})
# Message statuses after which nothing is sent and no delivery outcome is awaited.
FINAL_MESSAGE = frozenset(
    {M.DELIVERED, M.REJECTED, M.BOUNCED, M.OPENED, M.CLICKED, M.COMPLAINED, M.SUPPRESSED, M.FAILED, M.CANCELLED}
)
SENDABLE_MESSAGE = frozenset({M.CREATED, M.SCHEDULED, M.READY_TO_SEND})

# Precedence for event-driven moves. Higher wins; equal or lower is a late/duplicate event
# that is recorded but does not change the status. SUPPRESSED and FAILED are decided before a
# send and absorb everything; a bounce may follow a delivery (asynchronous bounce); a
# complaint is the strongest signal about a recipient and outranks engagement. CANCELLED sits just
# below SENT: a cancel marks what was not sent, and a late Send event (SES had accepted a call in
# flight) proves otherwise and wins.
MESSAGE_PRECEDENCE: dict[MessageStatus, int] = {
    M.CREATED: 0,
    M.SCHEDULED: 1,
    M.READY_TO_SEND: 2,
    M.SENDING: 3,
    M.CANCELLED: 4,
    M.SENT: 5,
    M.DELIVERED: 6,
    M.REJECTED: 6,
    M.BOUNCED: 7,
    M.OPENED: 8,
    M.CLICKED: 9,
    M.COMPLAINED: 10,
    M.SUPPRESSED: 11,
    M.FAILED: 11,
}

# What a message contributes to its campaign's counts, from its status and every status it has
# held (``seen``). Engagement implies delivery; anything SES took counts as sent.
_SENT_LIKE = frozenset({M.SENT, M.DELIVERED, M.REJECTED, M.BOUNCED, M.OPENED, M.CLICKED, M.COMPLAINED})
_DELIVERED_LIKE = frozenset({M.DELIVERED, M.OPENED, M.CLICKED, M.COMPLAINED})
COUNTERS = ("sent", "delivered", "bounced", "complained", "opened", "clicked", "rejected", "failed",
            "suppressed", "cancelled", "final")


def contribution(status: str | None, seen: frozenset[str] | set[str] | None) -> dict[str, int]:
    """The counts one message adds to its campaign (pure; deltas are differences of these)."""
    held = {MessageStatus(s) for s in (seen or ())}
    if status:
        held.add(MessageStatus(status))
    st = MessageStatus(status) if status else None
    return {
        "sent": int(bool(held & _SENT_LIKE)),
        "delivered": int(bool(held & _DELIVERED_LIKE)),
        "bounced": int(M.BOUNCED in held),
        "complained": int(M.COMPLAINED in held),
        "opened": int(bool(held & {M.OPENED, M.CLICKED})),
        "clicked": int(M.CLICKED in held),
        "rejected": int(M.REJECTED in held),
        "failed": int(st == M.FAILED),
        "suppressed": int(st == M.SUPPRESSED),
        "cancelled": int(st == M.CANCELLED),
        "final": int(st in FINAL_MESSAGE),
    }


def count_delta(before: tuple[str | None, set[str] | None], after: tuple[str | None, set[str] | None]
                ) -> dict[str, int]:
    """How a message's move from ``before`` to ``after`` (status, seen) changes the counts."""
    old, new = contribution(*before), contribution(*after)
    return {k: new[k] - old[k] for k in COUNTERS if new[k] != old[k]}


def outranks(new: MessageStatus, current: MessageStatus) -> bool:
    """True when an event carrying ``new`` may replace ``current``."""
    return MESSAGE_PRECEDENCE[new] > MESSAGE_PRECEDENCE[current]


def statuses_below(new: MessageStatus) -> list[MessageStatus]:
    """The statuses a message may hold for ``new`` to apply (used in conditional writes)."""
    return [s for s, r in MESSAGE_PRECEDENCE.items() if r < MESSAGE_PRECEDENCE[new]]


def apply_event(current: MessageStatus, new: MessageStatus) -> MessageStatus:
    return new if outranks(new, current) else current
