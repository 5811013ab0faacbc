"""Message events: per-message events with their metadata, POSTed in batches to the
campaign's callback URL (opt-in at submit with ``callback_message_events``), like SendGrid's
Event Webhook.

What is delivered: each event of a message, at least once (SES's SENT, DELIVERED, BOUNCED,
COMPLAINED, OPENED, CLICKED, REJECTED, FAILED, and the platform's FAILED, SUPPRESSED, CANCELLED),
each with its transaction, batch and message ids, the status it reports, the time, an
``event_id`` to de-duplicate on (stable: the same event always has the same id), and the
message's metadata (the campaign's ``metadata_columns``). Events arrive late and out of order (a
Delivery may come before its Send): each one the message records is delivered, and the message's
own status follows precedence (``GET /messages/{id}``). A replay is not delivered again, except
after a crash or a failed write, when an event may come twice. No address is sent.

Cost (issue #15): a campaign that did not opt in costs nothing here. The sender tags an opted-in
campaign's mails with ``TAG``; the events Lambda decides from the SES event's own tags, without a
read. For an opted-in campaign the events of one SQS batch (or one send chunk, or one cancelled
batch) are gathered per campaign and written as one outbox item (``MessageEventBuffer.flush``),
split only past ``MAX_EVENTS`` events or ``MAX_BYTES``: never a write per event. The metadata
comes back with the message write the event makes anyway (``Recorded.metadata``).

Delivery: the controller's callbacks pass (``deliver_due``) takes due batches from the ``due``
index (``MSGEVENTS``, apart from campaign callbacks), reads the campaign's URL once, and POSTs
each batch signed exactly like campaign callbacks (``callbacks.deliver_callback``: Standard
Webhooks headers and ``X-Signature``, the SSRF-guarded client, the same retry schedule, dead
letter, ``Retry-After``). Batches are independent (no order); a 410 disables the batch and the
campaign's other due batches in that pass.

Nothing is lost (at least once): the outbox item is written *before* what it reports is
recorded, with a key derived from its events (no time) and a create-only put, so a rerun after a
crash or a failed write writes it again only if it is missing:
  * SES events: ``record_ses_events`` folds the SQS batch's events into the messages it read,
    writes the opted-in campaigns' outbox items, then the messages. A failed outbox write fails
    that campaign's SQS records (retried by SQS) and writes none of its messages.
  * CANCELLED: ``reconcile.cancel_unsent`` writes the events of every CANCELLED message of the
    batch (those moved now and those an earlier, killed run moved) before the batch is closed.
  * FAILED/SUPPRESSED at send: the chunk's item is written before its send log is DONE; a chunk
    whose attempt died (INTENT left) has its failed messages' events written again (key: the
    batch, chunk and attempt) before the next attempt.
Receivers de-duplicate on ``event_id``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from core.domain.errors import Fenced, StaleWrite
from core.domain.models import (
    MESSAGE_EVENTS,
    MESSAGE_EVENTS_DUE,
    CallbackRecord,
    batch_of_message,
    iso,
)
from core.observability import log
from core.services import privacy
from core.services.callbacks import (
    DISABLED,
    PENDING,
    PER_HOST,
    WORKERS,
    Stop,
    deliver_callback,
    host_of,
    item_failed,
    run_per_campaign,
)
from core.services.ports import (
    CallbackRepository,
    Clock,
    DueMessageEvents,
    MessageEventOutbox,
    SigningSecrets,
    WebhookHttp,
)

TAG = "message_events"  # SES tag on the mails of an opted-in campaign (value "true")
MAX_EVENTS = 100  # events per POST
MAX_BYTES = 256 * 1024  # a batch's events as JSON: one outbox item stays under DynamoDB's 400 KB
PAYLOAD_TYPE = "message.events"


def wanted(tags: dict[str, list[str]]) -> bool:
    """Does this SES event's mail belong to a campaign that opted in (the sender tagged it)?"""
    return "true" in (tags.get(TAG) or ())


def message_event(*, event_id: str, status: str, at: str, message_id: str, transaction_id: str,
                  metadata: dict[str, str] | None, source: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """One event as the receiver gets it (no address, no free text that could hold one)."""
    out: dict[str, Any] = {"event_id": event_id, "status": status, "timestamp": at, "source": source,
                           "transaction_id": transaction_id, "batch_id": batch_of_message(message_id),
                           "message_id": message_id, "metadata": dict(metadata or {})}
    if detail:
        out.update({k: v for k, v in detail.items() if v is not None})
    return out


def platform_event_id(status: str, message_id: str) -> str:
    """The id of a status the platform itself gave a message (FAILED, SUPPRESSED, CANCELLED: once each)."""
    return hashlib.sha256(f"{status}|{message_id}".encode()).hexdigest()[:20]


class MessageEventBuffer:
    """Message events gathered while one unit of work runs, written at ``flush`` as one outbox item
    per campaign (more only past MAX_EVENTS / MAX_BYTES). Thread-safe.

    At least once: each item's key is ``ref_prefix`` plus a hash of the sorted (message id, event
    id) pairs it carries (no time), and the write is create-only, so a unit of work run again
    after a crash writes the same item again only if it was not written (``put_message_events``
    returns False), and a regrouped rerun at worst delivers an event twice (receivers de-duplicate
    on ``event_id``). ``flush`` raises the first write error after trying every campaign and keeps
    the events it could not write: the caller must not report its work done (an SQS record fails,
    a cancel leaves its batch open, a send chunk keeps its INTENT).

    Each item expires with the tenant's message retention: at ``expiration`` given with the
    events (the messages' own TTL, which the events path has read anyway), else the retention
    read once per tenant."""

    def __init__(self, store: MessageEventOutbox, clock: Clock, ref_prefix: str = ""):
        self.store, self.clock, self.ref_prefix = store, clock, ref_prefix
        self._pending: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self._expiration: dict[tuple[str, str], int] = {}
        self._retention: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, tenant_id: str | None, event: dict[str, Any], expiration: int | None = None) -> None:
        if tenant_id:
            key = (tenant_id, event["transaction_id"])
            with self._lock:
                self._pending[key].append(event)
                if expiration:
                    self._expiration[key] = max(self._expiration.get(key, 0), int(expiration))

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())

    def flush(self) -> int:
        """Write what was gathered; returns the outbox items written (not counting items that
        already existed). Raises the first error (see the class docstring)."""
        written, failed = self._write()
        if failed:
            raise next(iter(failed.values()))
        return written

    def flush_each(self) -> dict[str, Exception]:
        """Write what was gathered, campaign by campaign; returns each campaign whose events could
        not all be written, with the error (those events stay pending). Fenced propagates."""
        return self._write()[1]

    def _write(self) -> tuple[int, dict[str, Exception]]:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(list)
            expiration, self._expiration = self._expiration, {}
        written = 0
        failed: dict[str, Exception] = {}
        now = self.clock.now()
        for (tenant_id, tx_id), events in pending.items():
            try:
                ttl = expiration.get((tenant_id, tx_id)) or self._retention_ttl(tenant_id, now)
                for chunk in _chunks(sorted(events, key=lambda e: (e["message_id"], e["event_id"]))):
                    written += bool(self.store.put_message_events(
                        _record(tenant_id, tx_id, chunk, now, self.ref_prefix), expiration=ttl))
            except Fenced:
                raise
            except Exception as exc:  # noqa: BLE001 - reported to the caller, which must not count the work done
                log.warning("message events not written, retried", transaction_id=tx_id, events=len(events),
                            error=f"{type(exc).__name__}: {exc}"[:300])
                failed[tx_id] = exc
                with self._lock:
                    self._pending[(tenant_id, tx_id)].extend(events)
                    if (tenant_id, tx_id) in expiration:
                        self._expiration[(tenant_id, tx_id)] = expiration[(tenant_id, tx_id)]
        return written, failed

    def _retention_ttl(self, tenant_id: str, now: datetime) -> int:
        if tenant_id not in self._retention:
            self._retention[tenant_id] = privacy.store_retention(self.store, tenant_id)["messages"]
        return int((now + timedelta(days=self._retention[tenant_id])).timestamp())


def outbox_ref(events: list[dict[str, Any]], prefix: str = "") -> str:
    """The outbox key of a group of events: the same events give the same key, whenever written."""
    pairs = sorted(f"{e['message_id']}|{e['event_id']}" for e in events)
    return prefix + hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:24]


def _chunks(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[]]
    size = 0
    for ev in events:
        n = len(json.dumps(ev, separators=(",", ":")))
        if out[-1] and (len(out[-1]) >= MAX_EVENTS or size + n > MAX_BYTES):
            out.append([])
            size = 0
        out[-1].append(ev)
        size += n
    return [c for c in out if c]


def _record(tenant_id: str, tx_id: str, events: list[dict[str, Any]], now: datetime, prefix: str = "") -> CallbackRecord:
    ref = outbox_ref(events, prefix)
    # the URL is the campaign's, read when delivering (the events Lambda never reads the campaign)
    return CallbackRecord(transaction_id=tx_id, tenant_id=tenant_id, seq=0, webhook_id=f"msg_{tx_id}_ev_{ref[-24:]}",
                          url="", payload={"type": PAYLOAD_TYPE, "transaction_id": tx_id, "events": events},
                          next_attempt_at=now, created_at=now, kind=MESSAGE_EVENTS, ref=ref)


def deliver_due(*, store: DueMessageEvents, http: WebhookHttp, secrets: SigningSecrets, clock: Clock, timeout: float,
                limit: int = 50, workers: int = WORKERS, per_host: int = PER_HOST,
                should_stop: Callable[[], bool] | None = None, deadline: float | None = None) -> int:
    """Deliver the message-event batches whose next attempt is due; returns the attempts made.

    Blocking, like ``callbacks.deliver_due`` (same concurrency per receiver host, same stop rules).
    Each campaign's URL is read once per pass; a campaign without one any more gets nothing.
    """
    stop = Stop(should_stop, deadline, timeout)
    if stop():
        return 0
    due: dict[str, list[str]] = defaultdict(list)
    for item in store.due(MESSAGE_EVENTS_DUE, clock.now(), limit=limit):
        if item.get("transaction_id") and item.get("ref"):
            due[item["transaction_id"]].append(item["ref"])
    if not due:
        return 0
    urls: dict[str, str | None] = {}
    for tx_id in due:
        try:
            urls[tx_id] = store.get_transaction(tx_id).callback_url
        except Fenced:
            raise
        except Exception as exc:  # noqa: BLE001 - one campaign never stops the pass
            item_failed(tx_id, None, exc)
    hosts = {tx_id: host_of(url) for tx_id, url in urls.items()}

    def one(tx_id: str) -> int:
        return _deliver_campaign(tx_id, due[tx_id], urls[tx_id], store=store, http=http, secrets=secrets,
                                 clock=clock, timeout=timeout, stop=stop)

    return run_per_campaign(hosts, one, workers=workers, per_host=per_host, stop=stop)


def _deliver_campaign(tx_id: str, refs: list[str], url: str | None, *, store: CallbackRepository, http: WebhookHttp,
                      secrets: SigningSecrets, clock: Clock, timeout: float, stop: Stop) -> int:
    attempted = 0
    gone = False
    for ref in sorted(refs):
        try:
            cb = store.message_events(tx_id, ref)  # the table's copy: the index may lag an attempt
            if cb is None or cb.state != PENDING or (cb.next_attempt_at and cb.next_attempt_at > clock.now()):
                continue
            if gone or not url:
                _disable(store, cb, "the campaign has no callback URL" if not url else None)
                continue
            if stop():
                return attempted
            attempted += 1
            updated = deliver_callback(cb.model_copy(update={"url": url}), store=store, http=http, secrets=secrets,
                                       clock=clock, timeout=timeout)
            gone = updated.state == DISABLED
        except Fenced:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad batch never stops the others
            item_failed(tx_id, None, exc)
    return attempted


def _disable(store: CallbackRepository, cb: CallbackRecord, why: str | None) -> None:
    attempts = [*cb.attempts, {"at": iso(cb.next_attempt_at or cb.created_at), "status": None, "error": why}] \
        if why else cb.attempts
    try:
        store.save_callback_attempt(cb.model_copy(update={"state": DISABLED, "attempts": attempts}), len(cb.attempts))
    except StaleWrite:
        pass


def list_batches(store: CallbackRepository, tx_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    """A campaign's message-event batches with their delivery state and attempts (in key
    order: batches are independent of each other)."""
    items, nxt = store.message_event_batches(tx_id, limit, cursor)
    return {"items": [cb.model_dump(mode="json", exclude={"tenant_id", "seq", "url", "kind"}) for cb in items],
            "next_cursor": nxt}


def redeliver(store: CallbackRepository, tx_id: str, clock: Clock) -> list[str]:
    """Put a campaign's dead-lettered (or disabled) message-event batches back on the schedule,
    keeping their webhook-id; returns their refs. Reads every batch of the campaign (an operator's
    action, never a pass)."""
    requeued, cursor = [], None
    while True:
        items, cursor = store.message_event_batches(tx_id, 100, cursor)
        for cb in items:
            if cb.state in ("DEAD", DISABLED):
                store.save_callback_attempt(cb.model_copy(update={"state": PENDING, "next_attempt_at": clock.now()}),
                                            len(cb.attempts))
                requeued.append(cb.ref or "")
        if not cursor:
            return requeued
