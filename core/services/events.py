"""SES event notifications → message status, suppression, analytics.

SES publishes through Firehose and S3 to SQS; events arrive late, twice and out of order. The status moves
only by precedence (``core.domain.statuses``) and a message keeps the first event of each kind
with its time (``core.domain.tracking``): a replay changes nothing, so it costs no write. Every
event goes to the analytics index, keyed by a content-derived id.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.domain.errors import TemporaryError
from core.domain.models import batch_of_message, parse_iso, transaction_of_batch
from core.domain.statuses import MessageStatus as M
from core.domain.tracking import TrackedEvent, Tracking, TrackingWrite
from core.observability import SES_EVENTS, correlated, log
from core.schema import TTL_ATTRIBUTE
from core.services import message_events
from core.services.analytics import event_document
from core.services.ports import (
    AnalyticsSink,
    Clock,
    MessageEventSink,
    SendLogRepository,
    SesEventStore,
    SystemClock,
    TransactionRepository,
)


class SesMail(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messageId: str
    timestamp: str
    destination: list[str] = Field(default_factory=list)
    tags: dict[str, list[str]] = Field(default_factory=dict)


class SesEvent(BaseModel):
    """The SES event-publishing record (configuration set → Firehose, or SNS)."""

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


class _SnsEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Message: str | None = None


def parse_sns_envelope(body: str) -> SesEvent:
    """An SQS body is the SNS envelope whose ``Message`` is the SES event (or, delivered raw, the
    event itself). Parsed by pydantic's JSON parser straight into the models: no dicts in between."""
    message = _SnsEnvelope.model_validate_json(body).Message
    return SesEvent.model_validate_json(message if message is not None else body)


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

    def __init__(self, store: SendLogRepository, clock: Clock, region: str):
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


class CountBuffer:
    """Count changes gathered while a batch of events (or a chunk of sends) is handled, written as
    one addition per campaign at ``flush``: the message writes stay one per event.

    If the process dies before ``flush`` the additions are lost (the redelivered events are
    recognised as replays): the campaign's final recount restores the exact counts.
    """

    def __init__(self, store: TransactionRepository, clock: Clock):
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


def record_ses_event(body: str, *, store: SesEventStore, analytics: AnalyticsSink | None = None,
                     evidence: SendEvidenceMark | None = None, counts: CountBuffer | None = None,
                     message_events: MessageEventSink | None = None) -> str:
    """Apply one SQS record (``record_ses_events`` with one body). Returns the outcome
    (applied · kept · duplicate · ignored); raises what would make SQS deliver it again."""
    (outcome,) = record_ses_events([body], store=store, analytics=analytics, evidence=evidence, counts=counts,
                                   message_events=message_events)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@dataclass
class _Pending:
    """One record's event on its way to its message."""

    index: int
    ev: SesEvent
    parsed: ParsedEvent
    tracked: TrackedEvent


def record_ses_events(bodies: list[str], *, store: SesEventStore, analytics: AnalyticsSink | None = None,
                      evidence: SendEvidenceMark | None = None, counts: CountBuffer | None = None,
                      message_events: MessageEventSink | None = None) -> list[str | Exception]:
    """Apply a batch of SQS records: each one's outcome (applied · kept · duplicate · ignored), or
    the exception that must make SQS deliver it again (a transient failure).

    The messages the records name are read in one BatchGetItem; each message gets every event of
    the batch applied to it (``core.domain.tracking``) and is written once, conditional on what
    was read, and only if something changed: a replay, a repeated open or a late event that adds
    nothing costs half a read unit instead of a replicated write. The writes go 25 to a request
    (``save_trackings``): the handler's CPU is mostly per request, not per write. A write that
    loses its condition (another invocation wrote the message meanwhile) comes back with the item
    as it is, and the events are applied to that again. Malformed input is logged, counted and
    dropped (retrying it could never succeed).

    Safe to retry after a crash at any point: the message write is conditional and the fold is
    idempotent; the suppression of a hard bounce or a complaint is written before the message,
    so a retried record still suppresses the address; a count addition lost with the process is
    restored by the campaign's final recount; a message's Send evidence is marked (``evidence``)
    only once its write is done.
    """
    outcomes: list[str | Exception] = ["ignored"] * len(bodies)
    by_message: dict[tuple[str, str], list[_Pending]] = defaultdict(list)
    for i, body in enumerate(bodies):
        try:
            ev = parse_sns_envelope(body)
        except (ValueError, ValidationError) as exc:
            SES_EVENTS.labels("unknown", "malformed").inc()
            log.warning("ses event malformed", error=str(exc)[:200])
            outcomes[i] = "malformed"
            continue
        try:
            parsed = interpret(ev)
        except (AttributeError, TypeError, IndexError) as exc:  # a detail of the wrong shape
            SES_EVENTS.labels(ev.eventType, "malformed").inc()
            log.warning("ses event malformed", event_type=ev.eventType, error=str(exc)[:200])
            outcomes[i] = "malformed"
            continue
        if parsed is None or not parsed.message_id:
            SES_EVENTS.labels(ev.eventType, "ignored").inc()
            continue
        try:
            batch_id = batch_of_message(parsed.message_id)
        except ValueError:
            SES_EVENTS.labels(parsed.event_type, "ignored").inc()
            continue
        tracked = TrackedEvent(parsed.event_id, parsed.event_type, parsed.status, parsed.at, parsed.ses_message_id,
                               parsed.detail)
        by_message[(batch_id, parsed.message_id)].append(_Pending(i, ev, parsed, tracked))
    if not by_message:
        return outcomes
    try:
        items = store.message_items(by_message)
    except Exception as exc:  # noqa: BLE001 - nothing was written: every record is tried again
        log.warning("ses events: messages could not be read", error=str(exc)[:200])
        for pending in by_message.values():
            for p in pending:
                outcomes[p.index] = exc
        return outcomes
    buffer = counts if counts is not None else CountBuffer(store, SystemClock())
    documents: list[dict[str, Any]] = []
    folds = {key: _fold(items.get(key[1]), pending) for key, pending in by_message.items()}
    # Message events first (at least once): the opted-in campaigns' outbox items carry what these
    # messages will record, written before the messages; a campaign whose item could not be
    # written has its records retried by SQS, and none of its messages is written now.
    refused: dict[str, Exception] = {}
    covered: set[tuple[str, str]] = set()
    if message_events is not None:
        for (_, message_id), pending in by_message.items():
            fold = folds[(_, message_id)]
            if fold is not None:
                covered |= _message_event_hook(message_events, pending, fold, items.get(message_id) or {})
        if covered:
            refused = message_events.flush_each()
    writable: dict[tuple[str, str], _Fold | None] = {}
    for key, pending in by_message.items():
        failed = refused.get(_transaction_of(pending, key[0]))
        if failed is not None:
            for p in pending:
                outcomes[p.index] = failed
        else:
            writable[key] = folds[key]
    recorded = _record_on_messages(store, by_message, writable, buffer,
                                   covered if message_events is not None else None)
    for (batch_id, message_id), settled in recorded.items():
        pending = by_message[(batch_id, message_id)]
        if isinstance(settled, Exception):  # transient (throttling, 5xx): these records are retried
            first = pending[0].parsed
            with correlated(tenant_id=first.tenant_id, transaction_id=first.transaction_id, message_id=message_id):
                log.warning("ses events not recorded, retried", error=str(settled)[:200])
            for p in pending:
                outcomes[p.index] = settled
            continue
        results, metadata = settled
        for p in pending:
            outcomes[p.index] = results[p.index]
            doc = _after_recorded(p, results[p.index], metadata, indexing=analytics is not None, evidence=evidence)
            if doc is not None:
                documents.append(doc)
    if counts is None:  # a caller without a buffer gets its counts written now
        buffer.flush()
    _index(analytics, documents)
    return outcomes


def _index(analytics: AnalyticsSink | None, documents: list[dict[str, Any]]) -> None:
    """The batch's analytics documents in one bulk request (OpenSearch on AWS: one signed HTTP
    call per SQS batch, not per event). Analytics never blocks status updates: a failure is
    logged and counted, and the index misses those events (ids are content-derived, so a replay
    of the records would overwrite, not double)."""
    if analytics is None or not documents:
        return
    try:
        analytics.index_many(documents)
    except Exception as exc:  # noqa: BLE001 - analytics never blocks status updates
        log.warning("analytics indexing failed", events=len(documents), error=str(exc)[:200])


@dataclass
class _Fold:
    """A message's events applied (in time order) to the item as read: what a write would record."""

    item: dict[str, Any]
    before: Tracking
    state: Tracking
    results: dict[int, str]
    metadata: dict[str, str]


def _fold(item: dict[str, Any] | None, pending: list[_Pending]) -> _Fold | None:
    """None for an unknown (a test send, another stack) or erased message: nothing to record."""
    if not item or item.get("erased"):
        return None
    pending.sort(key=lambda p: p.parsed.at)
    before = state = Tracking.of(item)
    results: dict[int, str] = {}
    for p in pending:  # an event twice in one batch (an SNS redelivery) is a duplicate the second time
        state, results[p.index] = state.apply(p.tracked)
    return _Fold(item, before, state, results, dict(item.get("metadata") or {}))


_Settled = tuple[dict[int, str], dict[str, str] | None] | Exception


def _record_on_messages(store: SesEventStore, by_message: dict[tuple[str, str], list[_Pending]],
                        folds: dict[tuple[str, str], _Fold | None], counts: CountBuffer,
                        covered: set[tuple[str, str]] | None) -> dict[tuple[str, str], _Settled]:
    """Write each message whose events changed it, all in one batched round of conditional
    writes (``save_trackings``: 25 to a request). Returns, per message, each record's outcome and
    the message's metadata (None: an unknown or erased message), or the exception that leaves its
    records to be retried. A write that lost its condition is folded again on the item as it is
    now and goes in the next round; should that record a message event the outbox write did not
    carry (``covered``), its records are retried instead (by SQS, outbox first)."""
    settled: dict[tuple[str, str], _Settled] = {}
    todo = folds
    for _ in range(5):
        writes: list[tuple[tuple[str, str], _Fold]] = []
        for key, fold in todo.items():
            pending = by_message[key]
            if fold is None:
                settled[key] = ({p.index: "duplicate" for p in pending}, None)
            elif fold.state == fold.before:
                settled[key] = (fold.results, fold.metadata)
            elif covered is not None and not _recorded_events(pending, fold) <= covered:
                settled[key] = TemporaryError(f"message {key[1]} changed: its message events are written again "
                                              "first", delay=0.1)
            else:
                try:  # before the message write: a retried record suppresses the address again
                    _suppress(store, key[1], pending, fold)
                    writes.append((key, fold))
                except Exception as exc:  # noqa: BLE001 - transient: these records are retried
                    settled[key] = exc
        if not writes:
            return settled
        try:
            written = store.save_trackings([TrackingWrite(b, m, f.before, f.state) for (b, m), f in writes])
        except Exception as exc:  # noqa: BLE001 - nothing is known written: every record is retried
            written = [exc] * len(writes)
        todo = {}
        for (key, fold), outcome in zip(writes, written, strict=True):
            if outcome is None:
                counts.add(_transaction_of(by_message[key], key[0]), fold.state.delta(fold.before))
                settled[key] = (fold.results, fold.metadata)
            elif isinstance(outcome, Exception):
                settled[key] = outcome
            else:
                todo[key] = _fold(outcome, by_message[key])
    for key in todo:
        settled[key] = TemporaryError(f"message {key[1]} kept changing while its events were recorded", delay=0.1)
    return settled


def _suppress(store: SesEventStore, message_id: str, pending: list[_Pending], fold: _Fold) -> None:
    """Suppress the address of a hard bounce or a complaint this fold records (not a replay)."""
    for p in pending:
        parsed = p.parsed
        if parsed.suppress_reason and parsed.tenant_id and parsed.recipient and fold.results[p.index] != "duplicate":
            with correlated(tenant_id=parsed.tenant_id, transaction_id=parsed.transaction_id, message_id=message_id):
                store.suppress(parsed.tenant_id, parsed.recipient.lower(), parsed.suppress_reason, message_id)


def _recorded_events(pending: list[_Pending], fold: _Fold) -> set[tuple[str, str]]:
    """The (message id, event id) of the opted-in events this fold records (message events)."""
    return {(p.parsed.message_id or "", p.parsed.event_id) for p in pending
            if fold.results[p.index] in ("applied", "kept") and message_events.wanted(p.ev.mail.tags)}


def _transaction_of(pending: list[_Pending], batch_id: str) -> str:
    return next((p.parsed.transaction_id for p in pending if p.parsed.transaction_id), None) or \
        transaction_of_batch(batch_id)


def _after_recorded(p: _Pending, outcome: str, metadata: dict[str, str] | None, *, indexing: bool,
                    evidence: SendEvidenceMark | None) -> dict[str, Any] | None:
    """What follows a recorded event: the Send-evidence mark and metrics; returns its analytics
    document when ``indexing`` and it goes to analytics (indexed with the batch's others)."""
    parsed = p.parsed
    if evidence is not None and parsed.event_type == "Send":
        evidence.saw(p.ev.mail.timestamp)
    SES_EVENTS.labels(parsed.event_type, outcome).inc()
    if metadata is None:  # an unknown or erased message: nothing more
        return None
    log.debug("ses event", message_id=parsed.message_id, event_type=parsed.event_type, outcome=outcome)
    # Every event of a known message goes to analytics, a duplicate too: it is indexed by event id,
    # so a replay overwrites itself, and a batch redelivered after a SIGKILL between its message
    # writes and its bulk index (its events now duplicates) still reaches analytics.
    if indexing:
        return event_document(parsed, metadata)
    return None


# --- message events (issue #18): the only coupling to core/services/message_events.py -------------
def _message_event_hook(buffer: MessageEventSink, pending: list[_Pending], fold: _Fold, item: dict[str, Any]
                        ) -> set[tuple[str, str]]:
    """An opted-in campaign's message events this SQS batch will record on a message (they move
    its status, or are kept as late ones) go into the batch's outbox buffer (one item per
    campaign, written before the message). The SES event's own tags say whether the campaign
    opted in: no read, and nothing at all for the others. The item expires with the message
    (its own TTL, read with it). Returns the (message id, event id) pairs added."""
    added: set[tuple[str, str]] = set()
    for p in pending:
        parsed = p.parsed
        if fold.results[p.index] not in ("applied", "kept") or not message_events.wanted(p.ev.mail.tags) \
                or not parsed.message_id:
            continue
        detail = {k: parsed.detail.get(k) for k in ("bounce_type", "bounce_subtype")} \
            if parsed.status == M.BOUNCED else None
        buffer.add(parsed.tenant_id, message_events.message_event(
            event_id=parsed.event_id, status=parsed.status.value, at=parsed.at, message_id=parsed.message_id,
            transaction_id=parsed.transaction_id or transaction_of_batch(batch_of_message(parsed.message_id)),
            metadata=fold.metadata, source=parsed.event_type, detail=detail), expiration=item.get(TTL_ATTRIBUTE))
        added.add((parsed.message_id, parsed.event_id))
    return added
