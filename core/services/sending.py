"""Sending one batch: claim, render, send within the shared quota, record.

Crash policy (the dangerous point is between the SES call and recording it):
  * A send call takes the batch's lease, then for each chunk of messages writes a send-log
    entry in state INTENT *before* any SES call and marks it DONE with the SES message ids
    after. The INTENT names its region and a ``send_by`` time (the lease's end, pushed out
    before the first call when the chunk's booked slots end later): no SES call of the chunk
    happens after it, even from a worker that stalled past its lease.
  * An INTENT entry without DONE means a worker died mid-chunk: which of its messages SES
    accepted is unknown. They are never re-sent blindly. SES publishes a Send event for every
    accepted message (the configuration set requires it), and the event recorder moves the
    message to SENT. The chunk is resolved once that evidence is in: ``send_evidence_window``
    after ``send_by`` *and* the region's event pipeline either has recorded Send events of mail
    sent a window later than ``send_by`` or has recorded nothing for a window (drained). A
    lagging pipeline therefore holds the chunk back rather than letting a fixed timer run out
    first. Messages with evidence count as sent; the rest were never accepted and go out in a
    new attempt.
  * The batch is SENT when every chunk is DONE; until then the controller re-dispatches it.
This keeps the hot path to two small writes per chunk instead of two per message. A stalled
(not lagging) event pipeline looks quiet; its queue-age alarm is the guard for that case.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.domain.errors import MessageRefused, StaleWrite, TemporaryError
from core.domain.models import iso, parse_iso
from core.domain.statuses import SENDABLE_MESSAGE, BatchStatus, MessageStatus
from core.domain.statuses import TransactionStatus as T
from core.observability import SEND_THROTTLED, SENDS, log
from core.services.rendering import RenderError, check_header, render


@dataclass
class SendOutcome:
    state: str  # sent · in_doubt · busy · stopped · nothing_to_do
    sent: int = 0
    failed: int = 0


def unsubscribe_token(secret: str, tenant_id: str, email: str, message_id: str) -> str:
    payload = base64.urlsafe_b64encode(f"{tenant_id}\n{email}\n{message_id}".encode()).decode().rstrip("=")
    sig = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{payload}.{sig}"


class BatchSender:
    def __init__(self, *, store: Any, mailer: Any, limiter: Any, clock: Any, settings: Any,
                 template_loader: Any, worker: str):
        self.store, self.mailer, self.limiter, self.clock = store, mailer, limiter, clock
        self.settings, self.worker = settings, worker
        self.template_loader = template_loader  # (template_id, version) -> (subject, html source)
        self._templates: dict[tuple[str, int], tuple[str, str]] = {}

    def _source(self, tx: Any) -> tuple[str, str]:
        key = (tx.template_id, tx.template_version)
        if key not in self._templates:  # compiled once per version per process
            self._templates[key] = self.template_loader(*key)
        return self._templates[key]

    def send_batch(self, transaction_id: str, batch_id: str) -> SendOutcome:
        store, now = self.store, self.clock.now()
        tx = store.get_transaction(transaction_id)
        batch = store.get_batch(batch_id, transaction_id)
        if batch.status != BatchStatus.QUEUED or tx.status in (T.CANCELLED, T.FAILED, T.COMPLETED):
            return SendOutcome("nothing_to_do")
        if tx.status != T.READY_TO_SEND:
            self._redispatch_at(batch, now)
            return SendOutcome("stopped")
        lease = self.settings.lease_seconds * 4  # renewed before every chunk; a dead worker's lapses soon
        # The lease holder is this call, not the process: threads or Lambda sandboxes can share a
        # host name and pid, and a queue copy of the batch delivered twice must not pass as us.
        me = f"{self.worker}:{uuid.uuid4().hex[:8]}"
        if not store.claim_batch(batch, me, now, lease):
            return SendOutcome("busy")
        log.info("batch send started", transaction_id=transaction_id, batch_id=batch_id, worker=me)
        messages, logs = store.batch_partition(batch_id)
        messages.sort(key=lambda m: m.message_id)
        latest: dict[int, dict[str, Any]] = {}
        for entry in logs:
            c = int(entry["chunk"])
            if c not in latest or int(entry["attempt"]) > int(latest[c]["attempt"]):
                latest[c] = entry
        k = self.settings.send_chunk_size
        outcome = SendOutcome("sent")
        in_doubt_until: datetime | None = None
        subject_src, html_src = self._source(tx)
        for c in range(0, (len(messages) + k - 1) // k):
            chunk = messages[c * k:(c + 1) * k]
            prev = latest.get(c)
            attempt = 1
            if prev is not None:
                if prev["state"] == "DONE" and self._chunk_complete(chunk, prev):
                    continue
                if prev["state"] == "INTENT":
                    until = self._evidence_pending_until(prev)
                    if until is not None:
                        in_doubt_until = max(in_doubt_until or until, until)
                        continue
                attempt = int(prev["attempt"]) + 1
            # Without evidence (no Send event moved it to SENT) a message was never accepted.
            todo = [m for m in chunk if m.status in SENDABLE_MESSAGE or m.status == MessageStatus.SENDING]
            if prev is not None:
                done = set((prev.get("results") or {}).keys()) if prev["state"] == "DONE" else set()
                todo = [m for m in todo if m.message_id not in done]
            if not todo:
                continue
            claimed_at = self.clock.now()
            if not store.claim_batch(batch, me, claimed_at, lease):
                return SendOutcome("busy", outcome.sent, outcome.failed)  # our lease lapsed: another worker owns it
            switched_off = store.sending_paused(tx.tenant_id)
            if switched_off:
                log.warning("batch send held by kill switch", transaction_id=transaction_id, batch_id=batch_id,
                            why=switched_off)
                self._redispatch_at(batch, self.clock.now() + timedelta(seconds=30))
                return SendOutcome("stopped", outcome.sent, outcome.failed)
            current = store.get_transaction(transaction_id)
            if current.status != T.READY_TO_SEND:
                log.info("batch send stopped", transaction_id=transaction_id, batch_id=batch_id,
                         status=current.status.value)
                self._redispatch_at(batch, self.clock.now())
                return SendOutcome("stopped", outcome.sent, outcome.failed)
            send_by: datetime | None = claimed_at + timedelta(seconds=lease)
            if not store.send_log_intent(batch_id, c, attempt, [m.message_id for m in todo], me,
                                         region=self.settings.region, now=self.clock.now(), send_by=send_by):
                return SendOutcome("busy", outcome.sent, outcome.failed)
            suppressed = store.are_suppressed(tx.tenant_id, [m.recipient_email.lower() for m in todo])
            booking = self.limiter.book(len(todo))  # right before the sends
            send_by = self._cover_booking(batch, me, c, attempt, booking.end, send_by)
            if send_by is None:
                return SendOutcome("busy", outcome.sent, outcome.failed)
            results = self._send_chunk(tx, todo, suppressed, subject_src, html_src, outcome, booking, send_by)
            store.send_log_done(batch_id, c, attempt, results)
            if len(results) < len(todo):  # stopped early (throttling, or the lease ran out): retry later
                self._redispatch_at(batch, self.clock.now() + timedelta(seconds=30))
                return SendOutcome("stopped", outcome.sent, outcome.failed)
        if in_doubt_until is not None:
            self._redispatch_at(batch, in_doubt_until)
            log.warning("batch has in-doubt chunks", transaction_id=transaction_id, batch_id=batch_id,
                        resolve_at=iso(in_doubt_until))
            return SendOutcome("in_doubt", outcome.sent, outcome.failed)
        try:
            store.change_batch_status(store.get_batch(batch_id, transaction_id), BatchStatus.SENT,
                                      {"sent_at": self.clock.now()}, clear_due=True)
        except StaleWrite:
            pass
        log.info("batch sent", transaction_id=transaction_id, batch_id=batch_id, sent=outcome.sent,
                 failed=outcome.failed)
        return outcome

    def _evidence_pending_until(self, intent: dict[str, Any]) -> datetime | None:
        """None once an in-doubt chunk's Send evidence is complete, else when to look again."""
        window = timedelta(seconds=self.settings.send_evidence_window_seconds)
        last_send = parse_iso(intent.get("send_by") or intent["created_at"])
        now = self.clock.now()
        if now < last_send + window:
            return last_send + window
        mark = self.store.send_evidence(intent["region"]) if intent.get("region") else None
        if mark is None:
            return None  # that region's pipeline never recorded an event: nothing is lagging
        newest_send, recorded_at = mark
        if newest_send >= last_send + window or now >= recorded_at + window:
            return None  # the pipeline is past the chunk, or has been quiet for a window
        log.info("in-doubt chunk waits for a lagging event pipeline", region=intent["region"],
                 pipeline_at=iso(newest_send), chunk_sent_by=iso(last_send))
        return recorded_at + window

    @staticmethod
    def _chunk_complete(chunk: list[Any], log_entry: dict[str, Any]) -> bool:
        results = log_entry.get("results") or {}
        return all(m.message_id in results or m.status not in SENDABLE_MESSAGE for m in chunk)

    def _redispatch_at(self, batch: Any, when: datetime) -> None:
        self.store.release_batch(batch, when)

    def _cover_booking(self, batch: Any, me: str, chunk: int, attempt: int, booked_until: float,
                       send_by: datetime) -> datetime | None:
        """Slots booked behind other workers' can end after our lease: extend the lease and the
        INTENT's send-by time before the first SES call (only then). None if the lease is lost."""
        needed = datetime.fromtimestamp(booked_until, UTC) + timedelta(
            seconds=self.settings.lease_seconds)
        if needed <= send_by:
            return send_by
        now = self.clock.now()
        if not self.store.claim_batch(batch, me, now, (needed - now).total_seconds()):
            return None
        self.store.extend_send_by(batch.batch_id, chunk, attempt, needed)
        return needed

    def _send_chunk(self, tx: Any, todo: list[Any], suppressed: set[str], subject_src: str, html_src: str,
                    outcome: SendOutcome, booking: Any, send_by: datetime) -> dict[str, dict[str, str]]:
        store, settings = self.store, self.settings
        results: dict[str, dict[str, str]] = {}
        cache_key = f"{tx.template_id}:{tx.template_version}"
        for i, m in enumerate(todo):
            if m.recipient_email.lower() in suppressed:
                store.fail_message(m.batch_id, m.message_id, MessageStatus.SUPPRESSED, "address is suppressed")
                results[m.message_id] = {"outcome": "SUPPRESSED"}
                SENDS.labels("suppressed").inc()
                continue
            try:
                data = {**m.placeholder_data, "email": m.recipient_email}
                subject = check_header("subject", render(cache_key + ":s", tx.subject or subject_src, data, html=False))
                html = render(cache_key + ":h", html_src, data, html=True)
            except RenderError as exc:
                store.fail_message(m.batch_id, m.message_id, MessageStatus.FAILED, str(exc))
                results[m.message_id] = {"outcome": "FAILED", "reason": str(exc)}
                outcome.failed += 1
                SENDS.labels("render_failed").inc()
                continue
            token = unsubscribe_token(settings.unsubscribe_secret, tx.tenant_id, m.recipient_email, m.message_id)
            unsub = f"{settings.public_base_url}/api/v1/email/unsubscribe/{token}"
            booking.wait_turn()
            if self.clock.now() >= send_by:
                log.warning("chunk stopped at its send-by time", batch_id=m.batch_id, left=len(todo) - i)
                break  # our lease is over: another worker may own the batch now
            ses_id = self._send_one(tx, m, subject, html, unsub, results)
            if ses_id is None and m.message_id not in results:
                break  # throttled past our patience: the rest go in a later attempt
            if ses_id:
                results[m.message_id] = {"outcome": "SENT", "ses": ses_id}
                outcome.sent += 1
                SENDS.labels("sent").inc()
        return results

    def _send_one(self, tx: Any, m: Any, subject: str, html: str, unsub: str,
                  results: dict[str, dict[str, str]]) -> str | None:
        delay = 0.2
        for _ in range(6):
            try:
                return self.mailer.send(
                    sender=tx.from_address or self.settings.default_from, to=m.recipient_email,
                    subject=subject, html=html, reply_to=tx.reply_to,
                    headers={"List-Unsubscribe": f"<{unsub}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
                    tags={"tenant_id": tx.tenant_id, "transaction_id": tx.transaction_id,
                          "batch_id": m.batch_id, "message_id": m.message_id},
                )
            except TemporaryError as exc:
                SEND_THROTTLED.inc()
                self.clock.sleep(max(delay, exc.delay if exc.delay < 5 else delay))
                delay = min(delay * 2, 5.0)
            except MessageRefused as exc:
                self.store.fail_message(m.batch_id, m.message_id, MessageStatus.FAILED, f"SES refused: {exc}")
                results[m.message_id] = {"outcome": "FAILED", "reason": str(exc)}
                SENDS.labels("refused").inc()
                return None
        return None
