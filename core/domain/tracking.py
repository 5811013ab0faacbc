"""What SES events make of a message item: a pure fold over the part of the item the events path
owns (``Tracking``), so the events Lambda reads a message once per SQS batch, applies every event
of the batch for it, and writes it once, only if something changed.

The fold is idempotent and order-insensitive where counts are concerned: the status moves only by
precedence, ``seen`` only grows, and a campaign's counts are a function of (status, seen)
(``core.domain.statuses.contribution``). A replayed or late event therefore never changes a count
twice, without remembering every event id.

The item stays small (issue 15, C15: a DynamoDB write is billed per KB of the item, before or
after, whichever is larger): the history keeps the first event of each kind with a short detail,
never every open or click (the analytics index has each one), and no IP address or user agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from core.domain.statuses import MessageStatus, count_delta, outranks

# What each kind of event keeps in the message's history (the rest goes to analytics only).
HISTORY_DETAIL: dict[str, tuple[str, ...]] = {
    "Delivery": ("smtp_response",),
    "Bounce": ("bounce_type", "bounce_subtype", "diagnostic"),
    "Complaint": ("feedback_type",),
    "Click": ("link",),
    "Reject": ("reason",),
    "Rendering Failure": ("error",),
    "DeliveryDelay": ("delay_type",),
}
DETAIL_CHARS = 200  # a diagnostic or a link longer than this is cut in the history

APPLIED, KEPT, DUPLICATE = "applied", "kept", "duplicate"


@dataclass(frozen=True)
class TrackedEvent:
    """One SES event as the fold needs it."""

    event_id: str
    kind: str  # the SES eventType
    status: MessageStatus
    at: str
    ses_message_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def hard_bounce(self) -> bool:
        """What SES's bounce rate counts (a permanent bounce), once per message."""
        return self.kind == "Bounce" and self.detail.get("bounce_type") == "Permanent"

    def history_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.event_id, "type": self.kind, "at": self.at}
        for k in HISTORY_DETAIL.get(self.kind, ()):
            v = self.detail.get(k)
            if v is not None:
                entry[k] = v[:DETAIL_CHARS] if isinstance(v, str) else v
        return entry


def history_key(entry: dict[str, Any]) -> str:
    """Events of one kind share a history slot; a bounce's type has its own (a permanent bounce
    after a transient one is kept)."""
    kind = str(entry.get("type"))
    return f"{kind}:{entry.get('bounce_type')}" if kind == "Bounce" else kind


@dataclass(frozen=True)
class Tracking:
    """The events path's part of a message item. ``gen`` counts the events path's writes to it:
    with the status it is the condition of the next write (optimistic concurrency)."""

    status: str | None
    seen: frozenset[str]
    history: tuple[dict[str, Any], ...]
    stamps: dict[str, str]  # "ts_<status>" -> the first time an event brought that status
    ses_message_id: str | None
    hard_bounced: bool
    gen: int

    @classmethod
    def of(cls, item: dict[str, Any]) -> Tracking:
        return cls(
            status=item.get("status"), seen=frozenset(item.get("seen") or ()),
            history=tuple(item.get("events") or ()),
            stamps={k: v for k, v in item.items() if k.startswith("ts_")},
            ses_message_id=item.get("ses_message_id"), hard_bounced=bool(item.get("hard_bounced")),
            gen=int(item.get("ev_gen", 0)),
        )

    def apply(self, ev: TrackedEvent) -> tuple[Tracking, str]:
        """The state after ``ev`` and what it did: ``applied`` (the status moved), ``kept``
        (recorded without moving it: late or out of order), ``duplicate`` (nothing changed: a
        replay, a repeated open or click)."""
        moved = self.status is None or outranks(ev.status, MessageStatus(self.status))
        stamp = f"ts_{ev.status.value.lower()}"
        keys = {history_key(e) for e in self.history}
        entry = ev.history_entry()
        after = replace(
            self,
            status=ev.status.value if moved else self.status,
            seen=self.seen | {ev.status.value},
            history=self.history if history_key(entry) in keys else (*self.history, entry),
            stamps=self.stamps if stamp in self.stamps else {**self.stamps, stamp: ev.at},
            ses_message_id=self.ses_message_id or ev.ses_message_id,
            hard_bounced=self.hard_bounced or ev.hard_bounce,
        )
        if after == self:
            return self, DUPLICATE
        return after, APPLIED if moved else KEPT

    def changed(self, before: Tracking) -> dict[str, Any]:
        """The attributes to write to turn ``before`` into this state (with the next ``gen``)."""
        sets: dict[str, Any] = {"ev_gen": before.gen + 1}
        if self.status != before.status:
            sets["status"] = self.status
        if self.seen != before.seen:
            sets["seen"] = set(self.seen)
        if self.history != before.history:
            sets["events"] = list(self.history)
        sets.update({k: v for k, v in self.stamps.items() if before.stamps.get(k) != v})
        if self.ses_message_id != before.ses_message_id:
            sets["ses_message_id"] = self.ses_message_id
        if self.hard_bounced and not before.hard_bounced:
            sets["hard_bounced"] = True
        return sets

    def delta(self, before: Tracking) -> dict[str, int]:
        """How the campaign's counts change from ``before`` to this state."""
        d = count_delta((before.status, set(before.seen)), (self.status, set(self.seen)))
        if self.hard_bounced and not before.hard_bounced:
            d["hard_bounced"] = 1
        return d


@dataclass(frozen=True)
class TrackingWrite:
    """One message's events to write: ``after`` replaces ``before``, conditional on the item still
    being in ``before`` (its status and the events path's write generation)."""

    batch_id: str
    message_id: str
    before: Tracking
    after: Tracking
