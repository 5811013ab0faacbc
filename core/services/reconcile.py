"""Controller passes. Each reads state from DynamoDB and moves it one safe step; any of them can
be killed at any line and run again. Cost is proportional to active work: transactions come
from the sparse ``active`` index, due work from the ``due`` index.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from core.domain.errors import DomainError, StaleWrite
from core.domain.models import Summary, Transaction
from core.domain.statuses import FINAL_MESSAGE, TERMINAL_BATCH, BatchStatus, MessageStatus
from core.domain.statuses import TransactionStatus as T
from core.observability import BATCHES_DISPATCHED, REPUTATION_ALARM, REPUTATION_PAUSES, log
from core.services.campaigns import change_status, summarize

B = BatchStatus
DELIVERED_LIKE = {"DELIVERED", "OPENED", "CLICKED", "COMPLAINED"}


def release_due(*, store: Any, clock: Any) -> int:
    """Scheduled batches whose send_at has come: SCHEDULED → READY; then the transaction."""
    released = 0
    touched: set[str] = set()
    for item in store.due("BATCH", clock.now()):
        batch = store.get_batch(item["batch_id"], item["transaction_id"])
        if batch.status != B.SCHEDULED:
            continue
        tx = store.get_transaction(batch.transaction_id)
        if tx.status == T.PAUSED:
            continue
        target = B.CANCELLED if tx.status in (T.CANCELLED, T.FAILED) else B.READY
        try:
            store.change_batch_status(batch, target, clear_due=True)
            released += target == B.READY
            touched.add(batch.transaction_id)
        except StaleWrite:
            continue
    for tx_id in touched:
        tx = store.get_transaction(tx_id)
        if tx.status == T.SCHEDULED and not any(b.status == B.SCHEDULED for b in store.batches(tx_id)):
            change_status(store, clock, tx, T.READY_TO_SEND)
    return released


def dispatch(tx: Transaction, batches: list[Any], *, store: Any, queue: Any, clock: Any,
             stale_after: timedelta) -> int:
    """READY batches → the send queue once; QUEUED batches whose redispatch time passed again.

    The queue message is sent before the status write. A crash between the two re-sends it
    with the same deduplication id (FIFO drops it within 5 minutes) and the sender's lease and
    send log make any later duplicate a no-op.
    """
    now = clock.now()
    sent = 0
    for batch in batches:
        redispatch = batch.status == B.QUEUED and batch.redispatch_at is not None and batch.redispatch_at <= now
        if batch.status != B.READY and not redispatch:
            continue
        # A re-dispatch goes in a new FIFO group: a lost in-flight copy must not block it.
        queue.send({"tenant_id": tx.tenant_id, "transaction_id": tx.transaction_id, "batch_id": batch.batch_id},
                   group=f"{batch.batch_id}:{batch.dispatches}", dedup_id=f"{batch.batch_id}:{batch.version}")
        try:
            store.mark_queued(batch, now, now + stale_after)
        except StaleWrite:
            continue
        sent += 1
        BATCHES_DISPATCHED.inc()
        log.info("batch dispatched", transaction_id=tx.transaction_id, batch_id=batch.batch_id,
                 redispatch=redispatch)
    return sent


def count_batch(store: Any, batch: Any) -> tuple[Summary, bool]:
    """Recount a batch from its messages (the source of truth), never from increments.

    Returns the summary and whether every message has reached a final status. One paginated
    query of small projections per batch.
    """
    s = Summary(total_messages=batch.message_count)
    all_final = True
    for item in store.message_statuses(batch.batch_id):
        seen = set(item.get("seen") or ())
        status = item.get("status")
        all_final &= MessageStatus(status) in FINAL_MESSAGE
        if seen & {"SENT", *DELIVERED_LIKE, "BOUNCED", "REJECTED"}:
            s.sent += 1
        s.delivered += bool(seen & DELIVERED_LIKE)
        s.opened += bool(seen & {"OPENED", "CLICKED"})
        s.clicked += "CLICKED" in seen
        s.bounced += "BOUNCED" in seen
        s.complained += "COMPLAINED" in seen
        s.rejected += "REJECTED" in seen
        s.failed += status == "FAILED"
        s.suppressed += status == "SUPPRESSED"
    return s, all_final


class RecountThrottle:
    """Remembers when each batch was last counted so a busy pass does not re-read it every
    time. Only an optimisation: losing it (restart) just means counting once more."""

    def __init__(self, every_seconds: float):
        self.every = every_seconds
        self.last: dict[str, datetime] = {}

    def due(self, batch_id: str, now: datetime) -> bool:
        last = self.last.get(batch_id)
        if last is not None and (now - last).total_seconds() < self.every:
            return False
        self.last[batch_id] = now
        return True


def advance(tx: Transaction, *, store: Any, queue: Any, clock: Any, settings: Any,
            throttle: RecountThrottle | None = None) -> Transaction:
    """Move one active transaction one step: counts, batch statuses, transaction status."""
    now = clock.now()
    if tx.status in (T.CANCELLED, T.FAILED, T.COMPLETED):
        for b in store.batches(tx.transaction_id):
            if b.status not in TERMINAL_BATCH and b.status != B.SENT:
                store.change_batch_status(b, B.CANCELLED, clear_due=True)
        store.deactivate(tx)
        log.info("campaign settled", transaction_id=tx.transaction_id, status=tx.status.value)
        return tx
    if tx.status not in (T.READY_TO_SEND, T.SENT):
        return tx
    batches = store.batches(tx.transaction_id)
    if tx.status == T.READY_TO_SEND:
        dispatch(tx, batches, store=store, queue=queue, clock=clock,
                 stale_after=timedelta(seconds=settings.redispatch_after_seconds))
    window = timedelta(seconds=settings.completion_window_seconds)
    for b in batches:
        if b.status not in (B.QUEUED, B.SENT) or (throttle and not throttle.due(b.batch_id, now)):
            continue
        counted, all_final = count_batch(store, b)
        if counted != b.summary:
            b = store.update_batch_summary(b, counted)
        if b.status == B.SENT and (all_final or (b.sent_at and b.sent_at + window <= now)):
            store.change_batch_status(b, B.COMPLETED)
    batches = store.batches(tx.transaction_id)
    statuses = {b.status for b in batches}
    if tx.status == T.READY_TO_SEND and statuses <= {B.SENT, B.COMPLETED, B.CANCELLED}:
        tx = change_status(store, clock, tx, T.SENT)
    if tx.status == T.SENT and statuses <= {B.COMPLETED, B.CANCELLED}:
        tx = change_status(store, clock, tx, T.COMPLETED)
    return tx


def guard_reputation(active: list[Transaction], *, store: Any, clock: Any, settings: Any) -> list[str]:
    """Pause a tenant's sending campaigns when its bounce or complaint rate crosses our
    thresholds (below SES's own) over a representative volume."""
    per_tenant: dict[str, Summary] = defaultdict(Summary)
    for tx in active:
        per_tenant[tx.tenant_id] = per_tenant[tx.tenant_id] + summarize(store, tx)
    paused = []
    for tenant, s in per_tenant.items():
        if s.sent < settings.reputation_min_volume:
            continue
        reasons = []
        if s.bounced / s.sent > settings.bounce_rate_threshold:
            reasons.append("bounce_rate")
        if s.complained / s.sent > settings.complaint_rate_threshold:
            reasons.append("complaint_rate")
        REPUTATION_ALARM.labels(tenant, "bounce").set(int("bounce_rate" in reasons))
        REPUTATION_ALARM.labels(tenant, "complaint").set(int("complaint_rate" in reasons))
        if not reasons:
            continue
        for tx in active:
            if tx.tenant_id == tenant and tx.status in (T.READY_TO_SEND, T.SCHEDULED):
                try:
                    change_status(store, clock, tx, T.PAUSED, {"paused_from": tx.status,
                                                              "pause_reason": ",".join(reasons)})
                    REPUTATION_PAUSES.labels(reasons[0]).inc()
                    paused.append(tx.transaction_id)
                    log.warning("campaign paused by reputation guard", transaction_id=tx.transaction_id,
                                tenant_id=tenant, reasons=reasons, sent=s.sent, bounced=s.bounced,
                                complained=s.complained)
                except DomainError:
                    continue
    return paused
