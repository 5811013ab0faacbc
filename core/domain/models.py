"""Entities of the platform. Pure data: no I/O, no AWS types.

Ids are shaped so that a child id names its parent: a batch id is ``<transaction>-b<n>`` and a
message id ``<batch>-<n>``. ``GET /messages/{id}`` and SES events therefore find a message's
partition without a lookup index, which saves an index write on every status change.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.domain.errors import IllegalTransition
from core.domain.statuses import (
    BATCH_TRANSITIONS,
    TRANSACTION_TRANSITIONS,
    BatchStatus,
    MessageStatus,
    TransactionStatus,
)
from core.schema import DUE_MESSAGE_EVENTS


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """The inverse of ``iso`` that also reads SES's millisecond timestamps ("...T10:00:00.123Z")."""
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def batch_id_for(transaction_id: str, index: int) -> str:
    return f"{transaction_id}-b{index:05d}"


def message_id_for(batch_id: str, index: int) -> str:
    return f"{batch_id}-{index:05d}"


def batch_of_message(message_id: str) -> str:
    batch_id, sep, _ = message_id.rpartition("-")
    if not sep or "-b" not in batch_id:
        raise ValueError("not a message id")
    return batch_id


def transaction_of_batch(batch_id: str) -> str:
    tx, sep, _ = batch_id.rpartition("-b")
    if not sep:
        raise ValueError("not a batch id")
    return tx


class Summary(BaseModel):
    """Counts a campaign reports. Engagement implies delivery: an opened message counts as delivered."""

    total_messages: int = 0
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    complained: int = 0
    opened: int = 0
    clicked: int = 0
    rejected: int = 0
    failed: int = 0
    suppressed: int = 0
    cancelled: int = 0
    refused_at_ingest: int = 0

    def __add__(self, other: Summary) -> Summary:
        return Summary(**{k: getattr(self, k) + getattr(other, k) for k in Summary.model_fields})


class Entity(BaseModel):
    model_config = ConfigDict(use_enum_values=False)


class Transaction(Entity):
    transaction_id: str
    tenant_id: str
    status: TransactionStatus = TransactionStatus.ACCEPT
    template_id: str
    template_version: int
    csv_s3_key: str
    callback_url: str | None = None
    send_at: datetime | None = None
    # the latest per-recipient send time a CSV row may ask for (core/domain/schedule.py); None: the default window
    send_until: datetime | None = None
    from_address: str | None = None
    reply_to: str | None = None
    subject: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)  # custom mail headers (core.domain.headers)
    metadata_columns: list[str] = Field(default_factory=list)  # CSV columns kept per message, not rendered
    draft: bool = False  # submitted as a draft: rests in DRAFT after ingest until released
    message_events: bool = False  # per-message status changes go to callback_url too (core/services/message_events.py)
    attachments: list[str] = Field(default_factory=list)  # attachment ids attached to every mail
    attachment_column: str | None = None  # the CSV column naming each recipient's own attachment
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    version: int = 0
    total_messages: int = 0
    batch_count: int = 0
    refused_rows: int = 0
    ingest_checkpoint: int = 0  # batches fully written; resume point after a crash
    ingest_line: int = 0  # the CSV line the checkpoint's last batch ended on (where a resumed ingest reads on)
    ingest_done: bool = False  # every row is a message or a rejection (set once, with the totals)
    paused_from: TransactionStatus | None = None
    pause_reason: str | None = None  # why a PAUSED campaign waits: its owner's reason or the reputation guard's
    failure_reason: str | None = None
    summary: Summary = Field(default_factory=Summary)
    # Live counts (``core.domain.statuses.COUNTERS``), added to by whoever moves a message; stored
    # as n_<name> attributes. ``count_gen`` grows with every addition (the final recount's guard).
    counts: dict[str, int] = Field(default_factory=dict)
    count_gen: int = 0
    counts_at: datetime | None = None
    recount: dict[str, Any] | None = None
    recounted: bool = False
    final_check: dict[str, Any] | None = None  # last recount of a SENT campaign whose counts looked short

    def check_move(self, target: TransactionStatus) -> None:
        """Raise ``IllegalTransition`` unless ``TRANSACTION_TRANSITIONS`` allows going to ``target``."""
        if target not in TRANSACTION_TRANSITIONS[self.status]:
            raise IllegalTransition(f"campaign {self.transaction_id} cannot go from {self.status} to {target}")

    def move_to(self, target: TransactionStatus, now: datetime) -> dict[str, Any]:
        """The fields moving to ``target`` writes: the status, the next version (the seq of the
        callback the move produces, ``status_callback``) and when. Raises ``IllegalTransition``
        for a move the table does not allow; the repository writes it conditional on the status
        and version this transaction was read at."""
        self.check_move(target)
        return {"status": target, "version": self.version + 1, "updated_at": now}

    def status_callback(self, target: TransactionStatus, summary: Summary, now: datetime) -> CallbackRecord | None:
        """The callback outbox entry moving to ``target`` produces (None without a callback URL);
        its seq is the version the move writes, so Message Centre can order what it receives."""
        if not self.callback_url:
            return None
        seq = self.version + 1
        payload: dict[str, Any] = {
            "transaction_id": self.transaction_id,
            "status": target.value,
            "timestamp": iso(now),
            "sequence": seq,
            "summary": {k: getattr(summary, k) for k in
                        ("total_messages", "delivered", "bounced", "complained", "opened", "clicked")},
        }
        if target == TransactionStatus.FAILED and self.failure_reason:
            payload["reason"] = self.failure_reason
        return CallbackRecord(transaction_id=self.transaction_id, tenant_id=self.tenant_id, seq=seq,
                              webhook_id=f"msg_{self.transaction_id}_{seq}", url=self.callback_url,
                              payload=payload, next_attempt_at=now)

    @property
    def all_final(self) -> bool:
        """Every message has its final outcome by the live counts (a SENT campaign completes)."""
        return self.counts.get("final", 0) >= self.total_messages

    def live_summary(self) -> Summary:
        """The campaign's summary from its live counts."""
        c = self.counts
        return Summary(total_messages=self.total_messages, refused_at_ingest=self.refused_rows,
                       **{k: max(0, int(c.get(k, 0))) for k in Summary.model_fields
                          if k not in ("total_messages", "refused_at_ingest")})


class Batch(Entity):
    batch_id: str
    transaction_id: str
    tenant_id: str
    index: int
    status: BatchStatus = BatchStatus.PROCESSING
    message_count: int = 0
    s3_file_path: str = ""
    send_at: datetime | None = None
    version: int = 0
    queued_at: datetime | None = None
    redispatch_at: datetime | None = None
    dispatches: int = 0
    sent_at: datetime | None = None
    summary: Summary = Field(default_factory=Summary)

    def check_move(self, target: BatchStatus) -> None:
        """Raise ``IllegalTransition`` unless ``BATCH_TRANSITIONS`` allows going to ``target``."""
        if target not in BATCH_TRANSITIONS[self.status]:
            raise IllegalTransition(f"batch {self.batch_id} cannot go from {self.status} to {target}")

    def move_to(self, target: BatchStatus) -> dict[str, Any]:
        """The fields moving to ``target`` writes (the status and the next version); raises
        ``IllegalTransition`` like ``check_move``. Written conditional on the version read."""
        self.check_move(target)
        return {"status": target, "version": self.version + 1}


class Message(Entity):
    message_id: str
    batch_id: str
    transaction_id: str
    tenant_id: str
    recipient_email: str
    placeholder_data: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)  # the campaign's metadata columns of this row
    attachments: list[str] = Field(default_factory=list)  # this recipient's own attachment ids
    status: MessageStatus = MessageStatus.READY_TO_SEND
    ses_message_id: str | None = None
    timestamps: dict[str, str] = Field(default_factory=dict)  # status → first time seen
    events: list[dict[str, Any]] = Field(default_factory=list)  # every event with its time
    failure_reason: str | None = None


class TemplateStatus:
    PENDING_UPLOAD = "PENDING_UPLOAD"
    ACTIVE = "ACTIVE"
    INVALID = "INVALID"


class TemplateVersion(Entity):
    template_id: str
    tenant_id: str
    version: int
    name: str
    subject: str
    s3_key: str
    text_s3_key: str | None = None  # the plain-text version's source, when the template has one
    status: str = TemplateStatus.PENDING_UPLOAD
    variables: list[str] = Field(default_factory=list)
    size_bytes: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    error: str | None = None


class Upload(Entity):
    upload_id: str
    tenant_id: str
    s3_key: str
    created_at: datetime = Field(default_factory=utcnow)


class Attachment(Entity):
    """A file uploaded through a presigned form, checked on confirm, attached to mails."""

    attachment_id: str
    tenant_id: str
    filename: str
    content_type: str
    s3_key: str
    status: str = TemplateStatus.PENDING_UPLOAD  # PENDING_UPLOAD · ACTIVE · INVALID, like templates
    size_bytes: int | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Rejection(Entity):
    line: int
    reason: str
    email: str | None = None


class ApiKey(Entity):
    key_id: str
    tenant_id: str
    scopes: list[str]
    revoked: bool = False
    created_at: datetime = Field(default_factory=utcnow)


MESSAGE_EVENTS = "message_events"  # CallbackRecord.kind of a batch of message events
MESSAGE_EVENTS_DUE = DUE_MESSAGE_EVENTS  # their due_pk: the campaign callbacks' pass never reads them


class CallbackRecord(Entity):
    """An outbox entry: one callback per transaction status change (``kind`` campaign, ordered by
    ``seq``), or one batch of message events (``kind`` message_events, named by ``ref``, unordered)."""

    transaction_id: str
    tenant_id: str
    seq: int
    webhook_id: str
    url: str
    payload: dict[str, Any]
    state: str = "PENDING"  # PENDING · DELIVERED · DEAD · DISABLED
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    kind: str = "campaign"  # campaign · MESSAGE_EVENTS
    ref: str | None = None  # a message-events batch's key (seq is 0 for those)


@dataclass
class Page:
    """One page of a query: its items and the cursor of the next page (None: the last)."""

    items: list[dict[str, Any]]
    cursor: str | None


@dataclass
class Recorded:
    """What recording one event did: ``moved`` True (status moved), False (kept, late), None
    (replay or unknown message); ``delta`` how the campaign's counts change."""

    moved: bool | None
    delta: dict[str, int]
    metadata: dict[str, str] = field(default_factory=dict)  # the message's metadata, for event consumers
