"""Webhook callbacks: outbox records written with each status change, delivered and retried.

Delivery is at-least-once with a stable ``webhook-id`` (receivers de-duplicate on it, as the
Standard Webhooks spec says). The record's state and attempts are written conditionally on the
number of attempts read, so two controllers cannot both log the same attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from core.domain.errors import StaleWrite
from core.domain.models import CallbackRecord, Summary, Transaction, iso
from core.domain.statuses import TransactionStatus
from core.observability import CALLBACK_ATTEMPTS, CALLBACK_DEAD, CALLBACK_LATENCY, log

# Standard Webhooks retry schedule: now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
SCHEDULE_SECONDS = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)


def callback_for(tx: Transaction, target: TransactionStatus, summary: Summary, now: datetime) -> CallbackRecord | None:
    """The outbox entry for moving ``tx`` to ``target``; its seq is the version the change writes."""
    if not tx.callback_url:
        return None
    seq = tx.version + 1
    payload = {
        "transaction_id": tx.transaction_id,
        "status": target.value,
        "timestamp": iso(now),
        "sequence": seq,
        "summary": {k: getattr(summary, k) for k in
                    ("total_messages", "delivered", "bounced", "complained", "opened", "clicked")},
    }
    if target == TransactionStatus.FAILED and tx.failure_reason:
        payload["reason"] = tx.failure_reason
    return CallbackRecord(transaction_id=tx.transaction_id, tenant_id=tx.tenant_id, seq=seq,
                          webhook_id=f"msg_{tx.transaction_id}_{seq}", url=tx.callback_url,
                          payload=payload, next_attempt_at=now)


def signature_headers(secrets: list[str], webhook_id: str, when: datetime, body: str) -> dict[str, str]:
    """Standard Webhooks headers (one ``v1,`` signature per live secret) plus the owner's X-Signature."""
    sigs = [Webhook(s).sign(webhook_id, when, body) for s in secrets]
    owner_key = Webhook(secrets[0])._whsecret  # the decoded key bytes
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": " ".join(sigs),
        "X-Signature": hmac.new(owner_key, body.encode(), hashlib.sha256).hexdigest(),
    }


def _retry_after(value: str | None, now: datetime) -> datetime | None:
    if not value:
        return None
    try:
        return now + timedelta(seconds=max(0, int(value)))
    except ValueError:
        try:
            return parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None


def next_attempt(attempts_made: int, now: datetime, status: int | None, retry_after: str | None,
                 rng: random.Random = random.Random()) -> datetime | None:
    """When to try again after ``attempts_made`` attempts, or None when the schedule is exhausted."""
    if attempts_made >= len(SCHEDULE_SECONDS):
        return None
    delay = SCHEDULE_SECONDS[attempts_made] * rng.uniform(0.9, 1.1)
    at = now + timedelta(seconds=delay)
    if status in (429, 503):
        hinted = _retry_after(retry_after, now)
        if hinted and hinted > at:
            at = min(hinted, now + timedelta(days=1))
    return at


def deliver_callback(cb: CallbackRecord, *, store: Any, http: Any, secrets: Any, clock: Any,
                     timeout: float) -> CallbackRecord:
    """Make one attempt and record it. Idempotent per attempt number."""
    now = clock.now()
    if cb.state != "PENDING":
        return cb
    expected = len(cb.attempts)
    body = json.dumps(cb.payload, separators=(",", ":"), sort_keys=True)
    keys = secrets.signing_secrets(cb.tenant_id)
    if not keys:
        result_status, error, retry_after, elapsed = None, "tenant has no signing secret", None, 0.0
    else:
        res = http.post(cb.url, body.encode(), signature_headers(keys, cb.webhook_id, now, body), timeout)
        result_status, error, retry_after, elapsed = res.status, res.error, res.retry_after, res.elapsed
        CALLBACK_LATENCY.observe(elapsed)
    attempt = {"at": iso(now), "status": result_status, "error": error, "elapsed_ms": round(elapsed * 1000, 1)}
    attempts = [*cb.attempts, attempt]
    if result_status is not None and 200 <= result_status < 300:
        state, nxt, outcome = "DELIVERED", None, "delivered"
    elif result_status == 410:
        state, nxt, outcome = "DISABLED", None, "gone"
    else:
        nxt = next_attempt(len(attempts), now, result_status, retry_after)
        state, outcome = ("PENDING", "retry") if nxt else ("DEAD", "dead")
    updated = cb.model_copy(update={"state": state, "attempts": attempts, "next_attempt_at": nxt})
    try:
        store.save_callback_attempt(updated, expected)
    except StaleWrite:
        return cb  # another deliverer recorded this attempt first
    CALLBACK_ATTEMPTS.labels(outcome).inc()
    if state == "DEAD":
        CALLBACK_DEAD.inc()
    log.info("callback attempt", transaction_id=cb.transaction_id, seq=cb.seq, webhook_id=cb.webhook_id,
             outcome=outcome, http_status=result_status, error=error, attempt=len(attempts))
    return updated


def deliver_due(*, store: Any, http: Any, secrets: Any, clock: Any, timeout: float, limit: int = 50) -> int:
    """Deliver every callback whose next attempt is due; returns how many were attempted.

    A campaign whose endpoint answered 410 gets no further callbacks (they become DISABLED).
    """
    done = 0
    disabled: set[str] = set()
    for item in store.due("CALLBACK", clock.now(), limit=limit):
        cb = store.get_callback(item["transaction_id"], int(item["seq"]))
        if cb.transaction_id in disabled or _endpoint_gone(store, cb):
            disabled.add(cb.transaction_id)
            try:
                store.save_callback_attempt(cb.model_copy(update={"state": "DISABLED"}), len(cb.attempts))
            except StaleWrite:
                pass
            continue
        deliver_callback(cb, store=store, http=http, secrets=secrets, clock=clock, timeout=timeout)
        done += 1
    return done


def _endpoint_gone(store: Any, cb: CallbackRecord) -> bool:
    return any(c.state == "DISABLED" and c.seq < cb.seq for c in store.callbacks(cb.transaction_id))


def redeliver(store: Any, tx_id: str, clock: Any, seq: int | None = None) -> list[int]:
    """Put dead-lettered (or a chosen) callback back on the schedule, keeping its webhook-id."""
    requeued = []
    for cb in store.callbacks(tx_id):
        if (seq is None and cb.state in ("DEAD", "DISABLED")) or cb.seq == seq:
            fresh = cb.model_copy(update={"state": "PENDING", "next_attempt_at": clock.now()})
            store.save_callback_attempt(fresh, len(cb.attempts))
            requeued.append(cb.seq)
    return requeued
