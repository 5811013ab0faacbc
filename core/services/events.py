"""SES event notifications → message status, suppression, analytics.

SES publishes through SNS to SQS; events arrive late, twice and out of order. Each event gets
a content-derived id, so a replay is recognised on the message itself; the status moves only
by precedence (``core.domain.statuses``), and every event is kept with its time.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.domain.models import batch_of_message, parse_iso, transaction_of_batch
from core.domain.statuses import MessageStatus as M
from core.observability import SES_EVENTS, log


class SesMail(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messageId: str
    timestamp: str
    destination: list[str] = Field(default_factory=list)
    tags: dict[str, list[str]] = Field(default_factory=dict)


class SesEvent(BaseModel):
    """The SES event-publishing record (configuration set → SNS)."""

    model_config = ConfigDict(extra="allow")
    eventType: str
    mail: SesMail


@dataclass
class ParsedEvent:
    event_type: str
    status: M
    event_id: str
    at: str
    tenant_id: str | None
    transaction_id: str | None
    message_id: str | None
    ses_message_id: str
    recipient: str | None
    detail: dict[str, Any]
    suppress_reason: str | None = None


def parse_sns_envelope(body: str) -> SesEvent:
    """An SQS body is the SNS envelope whose ``Message`` is the SES event (or raw delivery)."""
    outer = json.loads(body)
    inner = outer.get("Message", outer) if isinstance(outer, dict) else outer
    if isinstance(inner, str):
        inner = json.loads(inner)
    return SesEvent.model_validate(inner)


def _first(tags: dict[str, list[str]], name: str) -> str | None:
    vals = tags.get(name) or []
    return vals[0] if vals else None


def interpret(ev: SesEvent) -> ParsedEvent | None:
    """What an SES event means for its message; None for types we only count."""
    kind = ev.eventType
    body: dict[str, Any] = (ev.model_extra or {}).get(_detail_key(kind)) or {}
    at = body.get("timestamp") or ev.mail.timestamp
    status: M
    suppress = None
    detail: dict[str, Any] = {}
    recipient = ev.mail.destination[0] if ev.mail.destination else None
    if kind == "Send":
        status = M.SENT
    elif kind == "Delivery":
        status = M.DELIVERED
        detail = {"smtp_response": body.get("smtpResponse"), "processing_ms": body.get("processingTimeMillis")}
    elif kind == "Bounce":
        status = M.BOUNCED
        detail = {"bounce_type": body.get("bounceType"), "bounce_subtype": body.get("bounceSubType"),
                  "diagnostic": ((body.get("bouncedRecipients") or [{}])[0]).get("diagnosticCode")}
        if body.get("bounceType") == "Permanent":
            suppress = "hard_bounce"
    elif kind == "Complaint":
        status = M.COMPLAINED
        detail = {"feedback_type": body.get("complaintFeedbackType"), "user_agent": body.get("userAgent")}
        suppress = "complaint"
    elif kind == "Open":
        status = M.OPENED
        detail = {"user_agent": body.get("userAgent"), "ip": body.get("ipAddress")}
    elif kind == "Click":
        status = M.CLICKED
        detail = {"link": body.get("link"), "user_agent": body.get("userAgent"), "ip": body.get("ipAddress")}
    elif kind == "Reject":
        status = M.REJECTED
        detail = {"reason": body.get("reason")}
    elif kind == "Rendering Failure":
        status = M.FAILED
        detail = {"error": body.get("errorMessage")}
    elif kind == "DeliveryDelay":
        status = M.SENT  # proof SES accepted it; the delay itself is kept as an event
        detail = {"delay_type": body.get("delayType"), "expiration": body.get("expirationTime")}
    else:
        return None
    basis = f"{kind}|{ev.mail.messageId}|{at}|{detail.get('link', '')}|{body.get('feedbackId', '')}"
    return ParsedEvent(kind, status, hashlib.sha256(basis.encode()).hexdigest()[:20], at,
                       _first(ev.mail.tags, "tenant_id"), _first(ev.mail.tags, "transaction_id"),
                       _first(ev.mail.tags, "message_id"),
                       ev.mail.messageId, recipient, {k: v for k, v in detail.items() if v is not None},
                       suppress)


def _detail_key(kind: str) -> str:
    return {"Rendering Failure": "failure", "DeliveryDelay": "deliveryDelay"}.get(kind, kind[0].lower() + kind[1:])


class SendEvidenceMark:
    """How far this region's event pipeline has recorded SES Send events.

    The newest Send time seen goes to the table once per SQS batch (``flush``), not per event.
    An in-doubt chunk (core/services/sending.py) waits until this mark is past it, or the
    pipeline has gone quiet, so a lagging pipeline delays its resolution instead of letting a
    fixed window run out before the evidence is in.
    """

    def __init__(self, store: Any, clock: Any, region: str):
        self.store, self.clock, self.region = store, clock, region
        self._newest: datetime | None = None
        self._written: datetime | None = None
        self._lock = threading.Lock()

    def saw(self, send_time: str) -> None:
        ts = parse_iso(send_time)
        with self._lock:
            if self._newest is None or ts > self._newest:
                self._newest = ts

    def flush(self) -> None:
        with self._lock:
            newest = self._newest
            if newest is None or newest == self._written:
                return
        self.store.advance_send_evidence(self.region, newest, self.clock.now())
        with self._lock:  # only once written: a failed write is tried again by the retried batch
            self._written = max(self._written or newest, newest)


class _WallClock:
    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)


class CountBuffer:
    """Count changes gathered while a batch of events (or a chunk of sends) is handled, written as
    one addition per campaign at ``flush``: the message writes stay one per event.

    If the process dies before ``flush`` the additions are lost (the redelivered events are
    recognised as replays): the campaign's final recount restores the exact counts.
    """

    def __init__(self, store: Any, clock: Any):
        self.store, self.clock = store, clock
        self._pending: dict[str, Counter[str]] = defaultdict(Counter)
        self._lock = threading.Lock()

    def add(self, tx_id: str | None, delta: dict[str, int]) -> None:
        if tx_id and delta:
            with self._lock:
                self._pending[tx_id].update(delta)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(Counter)
        now = self.clock.now()
        for tx_id, delta in pending.items():
            self.store.add_counts(tx_id, dict(delta), now)


def record_ses_event(body: str, *, store: Any, analytics: Any | None = None,
                     evidence: SendEvidenceMark | None = None, counts: CountBuffer | None = None) -> str:
    """Apply one SQS record. Returns the outcome (applied · kept · duplicate · ignored).

    Raises only for transient failures, so the SQS record is retried; malformed input is
    logged, counted and dropped (retrying it could never succeed).
    """
    try:
        ev = parse_sns_envelope(body)
    except (ValueError, ValidationError) as exc:
        SES_EVENTS.labels("unknown", "malformed").inc()
        log.warning("ses event malformed", error=str(exc)[:200])
        return "ignored"
    parsed = interpret(ev)
    if parsed is None or not parsed.message_id:
        SES_EVENTS.labels(ev.eventType, "ignored").inc()
        return "ignored"
    try:
        batch_id = batch_of_message(parsed.message_id)
    except ValueError:
        SES_EVENTS.labels(parsed.event_type, "ignored").inc()
        return "ignored"
    event = {"id": parsed.event_id, "type": parsed.event_type, "at": parsed.at, **parsed.detail}
    extra = {"ses_message_id": parsed.ses_message_id} if parsed.event_type == "Send" else None
    recorded = store.record_message_event(batch_id, parsed.message_id, parsed.status, event, extra)
    moved = recorded.moved
    outcome = {True: "applied", False: "kept", None: "duplicate"}[moved]
    if moved is not None:
        delta = dict(recorded.delta)
        if parsed.event_type == "Bounce" and parsed.detail.get("bounce_type") == "Permanent":
            delta["hard_bounced"] = delta.get("hard_bounced", 0) + 1  # what SES's bounce rate counts
        buffer = counts if counts is not None else CountBuffer(store, _WallClock())
        buffer.add(parsed.transaction_id or transaction_of_batch(batch_id), delta)
        if counts is None:  # a caller without a buffer gets its counts written now
            buffer.flush()
    if evidence is not None and parsed.event_type == "Send":
        evidence.saw(ev.mail.timestamp)
    if parsed.suppress_reason and parsed.tenant_id and parsed.recipient and moved is not None:
        store.suppress(parsed.tenant_id, parsed.recipient.lower(), parsed.suppress_reason, parsed.message_id)
    if analytics is not None and moved is not None:
        try:
            from core.services.analytics import event_document

            analytics.index_event(event_document(parsed, recorded.metadata))
        except Exception as exc:  # analytics never blocks status updates
            log.warning("analytics indexing failed", message_id=parsed.message_id, error=str(exc)[:200])
    SES_EVENTS.labels(parsed.event_type, outcome).inc()
    log.debug("ses event", message_id=parsed.message_id, event_type=parsed.event_type, outcome=outcome)
    return outcome
