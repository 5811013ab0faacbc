"""Webhook callbacks: outbox records written with each status change, delivered and retried.

Delivery is at-least-once with a stable ``webhook-id`` (receivers de-duplicate on it, as the
Standard Webhooks spec says). The record's state and attempts are written conditionally on the
number of attempts read, so two controllers cannot both log the same attempt.

A campaign's callbacks go out in sequence order: a later one waits while an earlier one is
PENDING (retrying) and goes once the earlier one is DELIVERED, DEAD or DISABLED (a 410 disables
the campaign's later callbacks too).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import hmac
import json
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from core.domain.errors import Fenced, StaleWrite
from core.domain.models import CallbackRecord, iso
from core.observability import CALLBACK_ATTEMPTS, CALLBACK_DEAD, CALLBACK_LATENCY, PASS_ERRORS, log
from core.services.ports import CallbackRepository, Clock, DueCallbacks, SigningSecrets, WebhookHttp

# Standard Webhooks retry schedule: now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
SCHEDULE_SECONDS = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MAX_RETRY_AFTER = timedelta(hours=24)  # a receiver's Retry-After is clamped to [0, 24 h]
WORKERS = 4  # attempts in flight per pass
PER_HOST = 2  # attempts in flight per receiver host, so one slow receiver cannot hold every worker
PENDING, DELIVERED, DEAD, DISABLED = "PENDING", "DELIVERED", "DEAD", "DISABLED"


class InvalidSigningSecret(ValueError):
    """A stored webhook secret cannot be used as a key (empty or not base64)."""


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret, decoded strictly. Raises InvalidSigningSecret."""
    text = secret.removeprefix("whsec_") if isinstance(secret, str) else ""
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSigningSecret("webhook signing secret is not base64 after 'whsec_'") from None
    if not key:
        raise InvalidSigningSecret("webhook signing secret is empty")
    return key


def signature_headers(secrets: list[str], webhook_id: str, when: datetime, body: str) -> dict[str, str]:
    """Standard Webhooks headers plus ``X-Signature``, one signature per live secret (current first).

    ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{webhook-id}.{timestamp}.{body}">`` (the
    standardwebhooks library). ``X-Signature``: ``v1=<hex HMAC-SHA256 of "{timestamp}.{body}">``,
    the timestamp being ``webhook-timestamp``, so neither can be replayed with another timestamp.
    Raises InvalidSigningSecret for a secret that is not a usable key.
    """
    keys = [signing_key(s) for s in secrets]
    timestamp = str(int(when.timestamp()))
    signed = f"{timestamp}.{body}".encode()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": " ".join(Webhook(k).sign(webhook_id, when, body) for k in keys),
        "X-Signature": " ".join(f"v1={hmac.new(k, signed, hashlib.sha256).hexdigest()}" for k in keys),
    }


_DELTA_SECONDS = re.compile(r"[+-]?[0-9]+")


def _retry_after(value: str | None, now: datetime) -> datetime | None:
    """A receiver's ``Retry-After`` (seconds or an HTTP date) as a time in [now, now + 24 h].

    Defensive: whatever the receiver sends (a ``-0000`` or zone-less date, a negative or huge
    number, garbage), this never raises; what cannot be read is ignored.
    """
    if not value:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        negative = text.startswith("-")
        digits = text.lstrip("+-").lstrip("0") or "0"
        seconds = MAX_RETRY_AFTER.total_seconds() if len(digits) > 6 else int(digits)
        return now + min(MAX_RETRY_AFTER, timedelta(seconds=0 if negative else seconds))
    try:
        at = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if at is None:
        return None
    if at.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
        at = at.replace(tzinfo=UTC)
    base = now if now.tzinfo else now.replace(tzinfo=UTC)
    delay = min(MAX_RETRY_AFTER, max(timedelta(0), at - base))
    return now + delay


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
            at = hinted
    return at


def deliver_callback(cb: CallbackRecord, *, store: CallbackRepository, http: WebhookHttp, secrets: SigningSecrets,
                     clock: Clock, timeout: float) -> CallbackRecord:
    """Make one attempt and record it. Idempotent per attempt number.

    Blocks up to ``timeout`` seconds (the HTTP client's total budget). A tenant without a
    usable signing secret gets a failed attempt with the reason, never an exception.
    """
    now = clock.now()
    if cb.state != PENDING:
        return cb
    expected = len(cb.attempts)
    body = json.dumps(cb.payload, separators=(",", ":"), sort_keys=True)
    keys = secrets.signing_secrets(cb.tenant_id)
    result_status: int | None = None
    retry_after: str | None = None
    elapsed = 0.0
    try:
        headers = signature_headers(keys, cb.webhook_id, now, body) if keys else None
        error = None if keys else "tenant has no signing secret"
    except InvalidSigningSecret as exc:
        headers, error = None, f"cannot sign: {exc}"
    if headers is not None:
        res = http.post(cb.url, body.encode(), headers, timeout)
        result_status, error, retry_after, elapsed = res.status, res.error, res.retry_after, res.elapsed
        CALLBACK_LATENCY.observe(elapsed)
    attempt = {"at": iso(now), "status": result_status, "error": error, "elapsed_ms": round(elapsed * 1000, 1)}
    attempts = [*cb.attempts, attempt]
    if result_status is not None and 200 <= result_status < 300:
        state, nxt, outcome = DELIVERED, None, "delivered"
    elif result_status == 410:
        state, nxt, outcome = DISABLED, None, "gone"
    else:
        nxt = next_attempt(len(attempts), now, result_status, retry_after)
        state, outcome = (PENDING, "retry") if nxt else (DEAD, "dead")
    updated = cb.model_copy(update={"state": state, "attempts": attempts, "next_attempt_at": nxt})
    try:
        store.save_callback_attempt(updated, expected)
    except StaleWrite:
        return cb  # another deliverer recorded this attempt first
    CALLBACK_ATTEMPTS.labels(outcome).inc()
    if state == DEAD:
        CALLBACK_DEAD.inc()
    log.info("callback attempt", transaction_id=cb.transaction_id, seq=cb.seq, webhook_id=cb.webhook_id,
             outcome=outcome, http_status=result_status, error=error, attempt=len(attempts))
    return updated


class Stop:
    """When a pass must stop starting attempts: asked to stop, or an attempt would end too late."""

    def __init__(self, should_stop: Callable[[], bool] | None, deadline: float | None, timeout: float):
        self.should_stop, self.deadline, self.timeout = should_stop, deadline, timeout

    def __call__(self) -> bool:
        if self.should_stop is not None and self.should_stop():
            return True
        return self.deadline is not None and time.monotonic() + self.timeout > self.deadline


def deliver_due(*, store: DueCallbacks, http: WebhookHttp, secrets: SigningSecrets, clock: Clock, timeout: float,
                limit: int = 50, workers: int = WORKERS, per_host: int = PER_HOST,
                should_stop: Callable[[], bool] | None = None, deadline: float | None = None) -> int:
    """Deliver the callbacks whose next attempt is due; returns how many attempts were made.

    Blocking: returns when every attempt it started has ended. Campaigns are delivered
    concurrently (``workers`` attempts in flight, at most ``per_host`` per receiver host), each
    campaign's callbacks in sequence order. One failing callback is logged and never stops the
    others. No attempt starts once ``should_stop()`` is true or when it could not end before
    ``deadline`` (a ``time.monotonic()`` value), so a shutdown waits at most one ``timeout``.
    Raises Fenced (after the attempts in flight end) when the store says we are no longer leader.
    """
    stop = Stop(should_stop, deadline, timeout)
    if stop():
        return 0
    hosts: dict[str, str] = {}  # transaction id -> receiver host, in order of first due callback
    for item in store.due("CALLBACK", clock.now(), limit=limit):
        if item.get("transaction_id"):
            hosts.setdefault(item["transaction_id"], host_of(item.get("url")))
    if not hosts:
        return 0
    return run_per_campaign(hosts, lambda tx_id: _deliver_campaign(
        tx_id, store=store, http=http, secrets=secrets, clock=clock, timeout=timeout, stop=stop),
        workers=workers, per_host=per_host, stop=stop)


def run_per_campaign(hosts: dict[str, str], work: Callable[[str], int], *, workers: int, per_host: int,
                     stop: Stop) -> int:
    """``work(transaction id)`` for each campaign of ``hosts`` (id -> receiver host, in order), at most
    ``workers`` at once and ``per_host`` per host; returns the sum of what they return. Blocking.
    Raises Fenced (after the work in flight ends) when one of them was fenced."""
    attempted = 0
    fenced: Fenced | None = None
    waiting = deque(hosts.items())
    in_flight: dict[Future[int], str] = {}
    busy: Counter[str] = Counter()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="callbacks") as pool:
        while waiting or in_flight:
            if fenced is not None or stop():
                waiting.clear()
            for entry in list(waiting):
                tx_id, host = entry
                if len(in_flight) >= max(1, workers):
                    break
                if busy[host] >= max(1, per_host):
                    continue
                waiting.remove(entry)
                busy[host] += 1
                ctx = contextvars.copy_context()  # keeps the caller's log/metrics attribution
                in_flight[pool.submit(ctx.run, work, tx_id)] = host
            if not in_flight:
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                busy[in_flight.pop(future)] -= 1
                try:
                    attempted += future.result()
                except Fenced as exc:
                    fenced = exc
    if fenced is not None:
        raise fenced
    return attempted


def _deliver_campaign(tx_id: str, *, store: CallbackRepository, http: WebhookHttp, secrets: SigningSecrets,
                      clock: Clock, timeout: float, stop: Stop) -> int:
    """Attempt the due callbacks of one campaign in sequence order; returns the attempts made."""
    attempted = 0
    try:
        chain = sorted(store.callbacks(tx_id), key=lambda c: c.seq)
    except Fenced:
        raise
    except Exception as exc:
        item_failed(tx_id, None, exc)
        return 0
    now = clock.now()
    gone = False  # the endpoint answered 410: the campaign's later callbacks are DISABLED
    blocker: CallbackRecord | None = None  # an earlier callback still PENDING: later ones wait
    for cb in chain:
        try:
            if cb.state == DISABLED:
                gone = True
            elif cb.state != PENDING:
                continue
            elif gone:
                _save_quietly(store, cb.model_copy(update={"state": DISABLED}), len(cb.attempts))
            elif blocker is not None:
                _wait_behind(store, cb, blocker, now)
            elif cb.next_attempt_at is not None and cb.next_attempt_at > now:
                blocker = cb
            elif stop():
                return attempted
            else:
                attempted += 1
                updated = deliver_callback(cb, store=store, http=http, secrets=secrets, clock=clock,
                                           timeout=timeout)
                if updated.state == PENDING:
                    blocker = updated
                gone = updated.state == DISABLED
        except Fenced:
            raise
        except Exception as exc:  # one bad callback never stops the pass; later ones wait for it
            item_failed(tx_id, cb.seq, exc)
            blocker = cb
    return attempted


def _wait_behind(store: CallbackRepository, cb: CallbackRecord, blocker: CallbackRecord, now: datetime) -> None:
    """Move a due callback's next attempt to its blocker's, so it stops filling the due index."""
    later = blocker.next_attempt_at
    if later is None or later <= now or (cb.next_attempt_at is not None and cb.next_attempt_at >= later):
        return
    _save_quietly(store, cb.model_copy(update={"next_attempt_at": later}), len(cb.attempts))
    log.info("callback waits for an earlier one", transaction_id=cb.transaction_id, seq=cb.seq,
             behind=blocker.seq, next_attempt_at=iso(later))


def _save_quietly(store: CallbackRepository, cb: CallbackRecord, expected_attempts: int) -> None:
    try:
        store.save_callback_attempt(cb, expected_attempts)
    except StaleWrite:
        pass  # someone else moved it; the next pass decides again


def item_failed(tx_id: str, seq: int | None, exc: Exception) -> None:
    PASS_ERRORS.labels("callbacks", type(exc).__name__).inc()
    log.warning("callback failed", transaction_id=tx_id, seq=seq, error=f"{type(exc).__name__}: {exc}"[:300])


def host_of(url: Any) -> str:
    try:
        return (urlsplit(url).hostname or "") if isinstance(url, str) else ""
    except ValueError:
        return ""


def redeliver(store: CallbackRepository, tx_id: str, clock: Clock, seq: int | None = None) -> list[int]:
    """Put dead-lettered (or a chosen) callback back on the schedule, keeping its webhook-id."""
    requeued = []
    for cb in store.callbacks(tx_id):
        if (seq is None and cb.state in ("DEAD", "DISABLED")) or cb.seq == seq:
            fresh = cb.model_copy(update={"state": "PENDING", "next_attempt_at": clock.now()})
            store.save_callback_attempt(fresh, len(cb.attempts))
            requeued.append(cb.seq)
    return requeued
