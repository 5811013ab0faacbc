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
  * A single SES call can be in doubt too: a timeout, a dropped connection, a 5xx or an error
    we do not know (the SES client makes one attempt, never an SDK retry). The chunk stops there,
    its send log is closed with that message's outcome IN_DOUBT and ``in_doubt_at`` (the call had
    ended by then), and the same evidence rule decides it: a Send event moves it to SENT, without
    one after the window it is sent again. Throttling is the only error retried at once (SES did
    not accept the call), and never past ``send_by``.
  * An SES error about the account or its configuration (permissions, configuration set,
    unverified identity or from domain, sandbox, suspended or paused sending, a refused tag) would
    fail every message alike: nothing is failed, the batch is given back and an automatic hold
    (distinct from the operators' kill switch) stops the tenant or the platform. Every
    ``HOLD_PROBE_SECONDS`` one held batch probes SES with one message; its success lifts the hold.
  * A template that cannot be loaded for good (deleted, access denied) fails the campaign.
  * The batch is SENT when every chunk is DONE; until then the controller re-dispatches it.
This keeps the hot path to two small writes per chunk instead of two per message. A stalled
(not lagging) event pipeline looks quiet. A chunk whose call was in doubt after SES accepted some
of its batch knows better: it waits (up to a day, as long as Firehose retries) until those
messages' Send events are in; so does a chunk whose worker died, when the batch's other chunks
have such mail. Where nothing accepted is known, the alarms are the guard: the events queue's
age, and before the queue the Firehose stream's freshness (a stalled stream leaves the queue empty).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from config.settings import Settings
from core.domain.attachments import AttachedFile, as_inline_if_shown
from core.domain.compliance import footer_variables
from core.domain.errors import (
    MessageRefused,
    NotFound,
    PayloadTooLarge,
    SendInDoubt,
    SendingHeld,
    StaleWrite,
    TemporaryError,
)
from core.domain.models import Batch, Message, Transaction, iso, parse_iso
from core.domain.statuses import SENDABLE_MESSAGE, BatchStatus, MessageStatus, count_delta
from core.domain.statuses import TransactionStatus as T
from core.domain.unsubscribe import sign_unsubscribe_token
from core.observability import SEND_THROTTLED, SENDS, log
from core.services.events import CountBuffer
from core.services.failover_doubt import give_up_after_failover
from core.services.message_events import TAG as MESSAGE_EVENTS_TAG
from core.services.message_events import MessageEventBuffer, message_event, platform_event_id
from core.services.ports import (
    AttachmentSource,
    CampaignStore,
    Clock,
    Mailer,
    RateLimiter,
    SendBooking,
    TemplateLoader,
)
from core.services.privacy import ERASED_REASON, expiration, store_retention
from core.services.rendering import RenderedMail, RenderError, render_mail

IN_DOUBT = "IN_DOUBT"  # a send-log outcome: SES may have accepted it; Send evidence decides
# Firehose keeps what it could not deliver for a day, retrying: an in-doubt call whose batch has
# accepted mail without a recorded Send event waits that long at most, looking again after an
# eighth of the time waited so far (from a minute up to 15: a day of waiting is ~100 looks)
STALLED_PIPELINE_MAX = timedelta(hours=24)
STALLED_PIPELINE_RECHECK, STALLED_PIPELINE_RECHECK_MAX = timedelta(minutes=1), timedelta(minutes=15)
HOLD_PROBE_SECONDS = 60.0  # how often a held tenant/platform is probed with one real send
# S3 answers that no retry will change: the campaign cannot be sent with this template.
_TEMPLATE_GONE = {"AccessDenied", "403", "NoSuchKey", "404", "NoSuchBucket", "NotFound", "KMS.DisabledException",
                  "KMS.KMSInvalidStateException", "KMS.NotFoundException", "AccessDeniedException"}


@dataclass
class SendOutcome:
    state: str  # sent · in_doubt · busy · stopped · held · failed · nothing_to_do
    sent: int = 0
    failed: int = 0


@dataclass
class ChunkRun:
    """What one chunk's sends came to; ``stop`` says why it ended early (None: it did not)."""

    results: dict[str, dict[str, str]]
    stop: str | None = None  # partial (throttled, send-by reached) · in_doubt · held
    in_doubt_at: datetime | None = None
    held: SendingHeld | None = None
    events: MessageEventBuffer | None = None  # FAILED/SUPPRESSED of an opted-in campaign (message events)


def unsubscribe_link(settings: Settings, tenant_id: str, email: str, message_id: str) -> str:
    """The signed one-click link every mail carries (header and ``{{ unsubscribe_url }}``)."""
    token = sign_unsubscribe_token(settings.unsubscribe_secret, tenant_id, email, message_id)
    return f"{settings.public_base_url}/api/v1/email/unsubscribe/{token}"


class BatchSender:
    def __init__(self, *, store: CampaignStore, mailer: Mailer, limiter: RateLimiter, clock: Clock, settings: Settings,
                 template_loader: TemplateLoader, worker: str, attachment_files: AttachmentSource | None = None):
        self.store, self.mailer, self.limiter, self.clock = store, mailer, limiter, clock
        self.settings, self.worker = settings, worker
        self.attachment_files = attachment_files  # id -> AttachedFile (core.services.attachments.AttachmentFiles)
        # (template_id, version) -> (subject, html source, text source or None); a loader of the
        # first version answered (subject, html): those mails get a text part derived from the HTML
        self.template_loader = template_loader
        self._templates: dict[tuple[str, int], tuple[str, str, str | None]] = {}

    def _source(self, tx: Transaction) -> tuple[str, str, str | None]:
        key = (tx.template_id, tx.template_version)
        if key not in self._templates:  # compiled once per version per process
            loaded = self.template_loader(*key)
            self._templates[key] = (loaded[0], loaded[1], loaded[2] if len(loaded) > 2 else None)
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
        outcomes: dict[int, dict[str, dict[str, str]]] = {}  # every attempt's outcomes, later ones winning
        for entry in sorted(logs, key=lambda e: int(e["attempt"])):
            c = int(entry["chunk"])
            latest[c] = entry
            if entry["state"] == "DONE":
                outcomes.setdefault(c, {}).update(entry.get("results") or {})
        k = self.settings.send_chunk_size
        outcome = SendOutcome("sent")
        in_doubt_until: datetime | None = None
        source: tuple[str, str, str | None] | None = None  # loaded once there is something to send
        log_ttl: int | None = None  # the send log lives as long as message detail (it may quote an SES error)
        for c in range(0, (len(messages) + k - 1) // k):
            chunk = messages[c * k:(c + 1) * k]
            prev = latest.get(c)
            attempt = 1
            gave_up: set[str] = set()  # in doubt in a region no longer active: never re-sent (failover_doubt)
            if prev is not None:
                if prev["state"] == "DONE":
                    if self._doubt_left(chunk, prev):  # a call that did not complete: wait for evidence
                        until = (self._evidence_pending_until({**prev, "send_by": prev["in_doubt_at"]})
                                 or self._accepted_unrecorded_until(messages, outcomes, prev))
                        if until is not None:
                            in_doubt_until = max(in_doubt_until or until, until)
                            continue
                        gave_up = self._not_resent_after_failover(tx, chunk, {**prev, "send_by": prev["in_doubt_at"]}, {
                            mid for mid, r in (prev.get("results") or {}).items() if r.get("outcome") == IN_DOUBT})
                    if self._chunk_complete(chunk, outcomes.get(c, {})):
                        continue
                if prev["state"] == "INTENT":
                    until = self._evidence_pending_until(prev) or self._accepted_unrecorded_until(messages, outcomes, prev)
                    if until is not None:
                        in_doubt_until = max(in_doubt_until or until, until)
                        continue
                    gave_up = self._not_resent_after_failover(tx, chunk, prev, set(prev.get("message_ids") or ()))
                    self._events_of_dead_attempt(tx, batch_id, chunk, prev)
                attempt = int(prev["attempt"]) + 1
            # Without evidence (no Send event moved it to SENT) a message was never accepted.
            todo = [m for m in chunk if m.status in SENDABLE_MESSAGE or m.status == MessageStatus.SENDING]
            # Sent in an earlier attempt but not yet moved to SENT by its event: never again.
            done = {mid for mid, r in outcomes.get(c, {}).items() if r.get("outcome") != IN_DOUBT}
            todo = [m for m in todo if m.message_id not in done and m.message_id not in gave_up]
            if not todo:
                continue
            if source is None:
                try:
                    source = self._source(tx)
                except Exception as exc:  # noqa: BLE001 - classified there; anything unknown is retried
                    return self._template_unavailable(tx, batch, exc)
            subject_src, html_src, text_src = source
            claimed_at = self.clock.now()
            if not store.claim_batch(batch, me, claimed_at, lease):
                return SendOutcome("busy", outcome.sent, outcome.failed)  # our lease lapsed: another worker owns it
            holds = store.sending_holds(tx.tenant_id)
            if holds["operator"]:
                log.warning("batch send held by kill switch", transaction_id=transaction_id, batch_id=batch_id,
                            why=holds["operator"])
                self._redispatch_at(batch, self.clock.now() + timedelta(seconds=30))
                return SendOutcome("stopped", outcome.sent, outcome.failed)
            probing: list[str] = holds["automatic"]
            if probing and not store.claim_sending_probe(self._probe_scope(tx, probing), self.clock.now(),
                                                         self._probe_every()):
                log.info("batch send held until SES works again", transaction_id=transaction_id,
                         batch_id=batch_id, scopes=probing, why=holds["reason"])
                self._redispatch_at(batch, self.clock.now() + timedelta(seconds=self._probe_every()))
                return SendOutcome("held", outcome.sent, outcome.failed)
            current = store.get_transaction(transaction_id)
            if current.status != T.READY_TO_SEND:
                log.info("batch send stopped", transaction_id=transaction_id, batch_id=batch_id,
                         status=current.status.value)
                self._redispatch_at(batch, self.clock.now())
                return SendOutcome("stopped", outcome.sent, outcome.failed)
            lease_end = claimed_at + timedelta(seconds=lease)
            if log_ttl is None:  # one read per batch, and only when it sends
                log_ttl = expiration(store_retention(store, tx.tenant_id)["messages"], self.clock.now())
            if not store.send_log_intent(batch_id, c, attempt, [m.message_id for m in todo], me,
                                         region=self.settings.region, now=self.clock.now(), send_by=lease_end,
                                         expiration=log_ttl):
                return SendOutcome("busy", outcome.sent, outcome.failed)
            suppressed = store.are_suppressed(tx.tenant_id, [m.recipient_email.lower() for m in todo])
            booking = self.limiter.book(len(todo))  # right before the sends
            send_by = self._cover_booking(batch, me, c, attempt, booking.end, lease_end)
            if send_by is None:
                return SendOutcome("busy", outcome.sent, outcome.failed)
            run = self._send_chunk(tx, todo, suppressed, subject_src, html_src, text_src, outcome, booking, send_by,
                                   probing, events_key=f"send-{batch_id}-{c:05d}-{attempt:03d}-")
            store.send_log_done(batch_id, c, attempt, run.results, in_doubt_at=run.in_doubt_at)
            if run.stop == "in_doubt" and run.in_doubt_at is not None:  # in_doubt_at comes with that stop
                until = self._evidence_pending_until({"send_by": iso(run.in_doubt_at), "region": self.settings.region,
                                                      "created_at": iso(run.in_doubt_at)})
                until = until or self.clock.now()
                self._redispatch_at(batch, until)
                log.warning("batch has in-doubt chunks", transaction_id=transaction_id, batch_id=batch_id,
                            resolve_at=iso(until))
                return SendOutcome("in_doubt", outcome.sent, outcome.failed)
            if run.stop == "held" and run.held is not None:  # held comes with that stop
                self._hold(tx, batch, run.held)
                return SendOutcome("held", outcome.sent, outcome.failed)
            if run.stop == "campaign_stopped":  # cancelled or paused between two sends
                log.info("batch send stopped", transaction_id=transaction_id, batch_id=batch_id)
                self._redispatch_at(batch, self.clock.now())
                return SendOutcome("stopped", outcome.sent, outcome.failed)
            if run.stop is not None:  # stopped early (throttling, or the lease ran out): retry later
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

    # -- holds (SES account/configuration errors) -----------------------------------------
    def _probe_every(self) -> float:
        return float(getattr(self.settings, "ses_hold_probe_seconds", HOLD_PROBE_SECONDS))

    @staticmethod
    def _probe_scope(tx: Transaction, scopes: list[str]) -> str:
        return "platform" if "platform" in scopes else f"tenant#{tx.tenant_id}"

    def _hold(self, tx: Transaction, batch: Batch, held: SendingHeld) -> None:
        """Trip the automatic hold for the error's scope and give the batch back: it comes back
        after a delay and probes SES with one message (half-open), which lifts the hold."""
        reason = f"SES {held.ses_code}: {held.message}"[:500]
        if held.scope == "tenant":
            self.store.set_sending_switch(tenant_id=tx.tenant_id, tenant_paused=True, reason=reason,
                                          source="automatic")
        else:
            self.store.set_sending_switch(paused=True, reason=reason, source="automatic")
        later = self.clock.now() + timedelta(seconds=self._probe_every())
        self.store.delay_sending_probe(self._probe_scope(tx, [held.scope]), later)
        self._redispatch_at(batch, later)
        log.error("sending held: SES account or configuration error", transaction_id=tx.transaction_id,
                  batch_id=batch.batch_id, tenant_id=tx.tenant_id, scope=held.scope, code=held.ses_code,
                  why=held.message[:300], probe_at=iso(later))

    # -- templates ------------------------------------------------------------------------
    def _template_unavailable(self, tx: Transaction, batch: Batch, exc: Exception) -> SendOutcome:
        """A template that cannot be loaded for good fails the campaign (the controller writes the
        FAILED status and its callback); anything else is given back for a later attempt."""
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        permanent = isinstance(exc, NotFound | PayloadTooLarge | UnicodeDecodeError) or code in _TEMPLATE_GONE
        if not permanent:
            log.warning("template could not be loaded, retrying later", transaction_id=tx.transaction_id,
                        batch_id=batch.batch_id, error=str(exc)[:300])
            self._redispatch_at(batch, self.clock.now() + timedelta(seconds=30))
            return SendOutcome("stopped")
        what = f"{code}: " if code else f"{type(exc).__name__}: "
        reason = f"template {tx.template_id} version {tx.template_version} cannot be loaded ({what}{exc})"[:500]
        # The controller moves the campaign to FAILED (with its callback) on its next pass; the
        # batches are cancelled with it. Asking instead of writing keeps the sender to UpdateItem.
        self.store.request_failure(tx.transaction_id, reason)
        log.error("campaign cannot be sent: template cannot be loaded", transaction_id=tx.transaction_id,
                  template_id=tx.template_id, version=tx.template_version, error=str(exc)[:300])
        self._redispatch_at(batch, self.clock.now() + timedelta(seconds=self._probe_every()))
        return SendOutcome("failed")

    @staticmethod
    def _doubt_left(chunk: list[Message], log_entry: dict[str, Any]) -> bool:
        """A message of this chunk is in doubt and no Send event has settled it yet."""
        results = log_entry.get("results") or {}
        return bool(log_entry.get("in_doubt_at")) and any(
            (results.get(m.message_id) or {}).get("outcome") == IN_DOUBT
            and (m.status in SENDABLE_MESSAGE or m.status == MessageStatus.SENDING) for m in chunk)

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

    def _accepted_unrecorded_until(self, messages: list[Message], outcomes: dict[int, dict[str, Any]],
                                   entry: dict[str, Any]) -> datetime | None:
        """A quiet pipeline may be stalled, not drained: Firehose retries a bucket it cannot write
        for up to a day while the events queue stays empty. So while a message of this batch that
        SES accepted (any chunk, any attempt: its answer came back) has no recorded Send event,
        the chunk in doubt (a call without an answer, or a worker that died mid-chunk) is not sent
        again. It waits at most ``STALLED_PIPELINE_MAX`` after its last possible call, looking again
        at a growing interval. Only this region's chunks: another region's in-doubt call is never
        re-sent without its evidence (``failover_doubt``)."""
        if entry.get("region", self.settings.region) != self.settings.region:
            return None
        accepted = {mid for results in outcomes.values() for mid, r in results.items() if r.get("outcome") == "SENT"}
        unrecorded = [m for m in messages if m.message_id in accepted
                      and (m.status in SENDABLE_MESSAGE or m.status == MessageStatus.SENDING)]
        if not unrecorded:
            return None
        now, since = self.clock.now(), parse_iso(entry.get("in_doubt_at") or entry.get("send_by") or entry["created_at"])
        if now >= since + STALLED_PIPELINE_MAX:
            log.error("in-doubt call resolved without the Send events of mail SES accepted",
                      batch_id=unrecorded[0].batch_id, chunk=entry.get("chunk"), unrecorded=len(unrecorded))
            return None
        log.warning("in-doubt call waits: the event pipeline has not recorded mail SES accepted",
                    batch_id=unrecorded[0].batch_id, chunk=entry.get("chunk"), unrecorded=len(unrecorded))
        return now + min(STALLED_PIPELINE_RECHECK_MAX, max(STALLED_PIPELINE_RECHECK, (now - since) / 8))

    def _not_resent_after_failover(self, tx: Transaction, chunk: list[Message], intent: dict[str, Any],
                                   in_doubt: set[str]) -> set[str]:
        """After the evidence wait: the in-doubt messages of another (no longer active) region's
        chunk without complete evidence end FAILED instead of being re-sent (core/services/failover_doubt.py)."""
        counts = CountBuffer(self.store, self.clock)
        key = f"send-{chunk[0].batch_id}-{int(intent['chunk']):05d}-{int(intent['attempt']):03d}-" if chunk else ""
        events = MessageEventBuffer(self.store, self.clock, ref_prefix=key) if tx.message_events else None
        try:
            return give_up_after_failover(
                store=self.store, own_region=self.settings.region, intent=intent, chunk=chunk, in_doubt=in_doubt,
                window=timedelta(seconds=self.settings.send_evidence_window_seconds),
                fail=lambda m, status, reason: self._fail(m, status, reason, counts, events))
        finally:
            counts.flush()
            if events is not None:
                events.flush()

    @staticmethod
    def _chunk_complete(chunk: list[Message], results: dict[str, dict[str, str]]) -> bool:
        return all((m.message_id in results and results[m.message_id].get("outcome") != IN_DOUBT)
                   or m.status not in SENDABLE_MESSAGE for m in chunk)

    def _redispatch_at(self, batch: Batch, when: datetime) -> None:
        self.store.release_batch(batch, when)

    def _cover_booking(self, batch: Batch, me: str, chunk: int, attempt: int, booked_until: float,
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

    def _send_chunk(self, tx: Transaction, todo: list[Message], suppressed: set[str], subject_src: str, html_src: str,
                    text_src: str | None, outcome: SendOutcome, booking: SendBooking, send_by: datetime,
                    probing: list[str], events_key: str = "") -> ChunkRun:
        """Send a chunk's messages in order. Stops at the first call in doubt (recorded as such),
        at an account/configuration error (nothing more can go out), when throttling outlasts our
        patience, at ``send_by``, or when the campaign is no longer READY_TO_SEND (checked before
        every call). With ``probing`` (automatic holds in force) the first message is the probe:
        its success lifts those holds.

        The chunk's FAILED/SUPPRESSED message events (an opted-in campaign) are written at its end
        under ``events_key`` (its batch, chunk and attempt) before the caller marks the send log
        DONE; a failed write raises, leaving the INTENT, and the next attempt writes them again."""
        run = ChunkRun(results={}, events=MessageEventBuffer(self.store, self.clock, ref_prefix=events_key)
                       if tx.message_events else None)
        counts = CountBuffer(self.store, self.clock)
        try:
            return self._send_messages(tx, todo, suppressed, subject_src, html_src, text_src, outcome, booking,
                                       send_by, probing, run, counts)
        finally:
            counts.flush()  # the campaign's counts for the messages this chunk failed or suppressed
            if run.events is not None:
                run.events.flush()  # one outbox item for the chunk's failed/suppressed messages

    def _events_of_dead_attempt(self, tx: Transaction, batch_id: str, chunk: list[Message], intent: dict[str, Any]) -> None:
        """An attempt that died (its INTENT left, no DONE) may have failed or suppressed messages
        without writing their message events: write them (an opted-in campaign) before the next
        attempt, under that attempt's key. Create-only: nothing new when its own write was done."""
        if not tx.message_events:
            return
        ids = set(intent.get("message_ids") or ())
        events = MessageEventBuffer(self.store, self.clock, ref_prefix=(
            f"send-{batch_id}-{int(intent['chunk']):05d}-{int(intent['attempt']):03d}-"))
        for m in chunk:
            if m.message_id in ids and m.status in (MessageStatus.FAILED, MessageStatus.SUPPRESSED) \
                    and m.failure_reason != ERASED_REASON:
                events.add(m.tenant_id, message_event(
                    event_id=platform_event_id(m.status.value, m.message_id), status=m.status.value,
                    at=m.timestamps.get(m.status.value) or iso(self.clock.now()), message_id=m.message_id,
                    transaction_id=m.transaction_id, metadata=m.metadata, source="platform"))
        if len(events):
            events.flush()  # raises: this send stops here and the next one tries again

    def _fail(self, m: Message, status: MessageStatus, reason: str, counts: CountBuffer,
              events: MessageEventBuffer | None = None) -> None:
        if self.store.fail_message(m.batch_id, m.message_id, status, reason):
            counts.add(m.transaction_id, count_delta((None, set()), (status.value, {status.value})))
            if events is not None:
                events.add(m.tenant_id, message_event(
                    event_id=platform_event_id(status.value, m.message_id), status=status.value,
                    at=iso(self.clock.now()), message_id=m.message_id, transaction_id=m.transaction_id,
                    metadata=m.metadata, source="platform"))

    def _still_sending(self, tx: Transaction) -> bool:
        """Read the campaign's status right before each SES call: a cancel or a pause stops every
        worker within one call (one small strongly consistent read per message)."""
        return self.store.transaction_status(tx.transaction_id) == T.READY_TO_SEND

    def _send_messages(self, tx: Transaction, todo: list[Message], suppressed: set[str], subject_src: str, html_src: str,
                       text_src: str | None, outcome: SendOutcome, booking: SendBooking, send_by: datetime,
                       probing: list[str], run: ChunkRun, counts: CountBuffer) -> ChunkRun:
        settings, results = self.settings, run.results
        cache_key = f"{tx.template_id}:{tx.template_version}"
        identity = self.store.compliance_identity(tx.tenant_id)  # postal address, sender name (CAN-SPAM)
        for i, m in enumerate(todo):
            if m.recipient_email.lower() in suppressed:
                self._fail(m, MessageStatus.SUPPRESSED, "address is suppressed", counts, run.events)
                results[m.message_id] = {"outcome": "SUPPRESSED"}
                SENDS.labels("suppressed").inc()
                continue
            try:
                link = unsubscribe_link(settings, tx.tenant_id, m.recipient_email, m.message_id)
                data = {**m.placeholder_data, "email": m.recipient_email, **footer_variables(identity, link)}
                mail = render_mail(cache_key, tx.subject or subject_src, html_src, text_src, data)
            except RenderError as exc:
                self._fail(m, MessageStatus.FAILED, str(exc), counts, run.events)
                results[m.message_id] = {"outcome": "FAILED", "reason": str(exc)}
                outcome.failed += 1
                SENDS.labels("render_failed").inc()
                continue
            try:
                files = self._files(tx, m, mail.html)
            except (NotFound, PayloadTooLarge) as exc:  # gone since it was checked: this mail cannot go as asked
                reason = f"attachment unavailable: {exc}"[:500]
                self._fail(m, MessageStatus.FAILED, reason, counts, run.events)
                results[m.message_id] = {"outcome": "FAILED", "reason": reason}
                outcome.failed += 1
                SENDS.labels("attachment_failed").inc()
                continue
            except Exception as exc:  # noqa: BLE001 - S3 throttled or down: the rest go in a later attempt
                log.warning("attachment could not be read; chunk stops here", batch_id=m.batch_id,
                            message_id=m.message_id, error=str(exc)[:300])
                run.stop = "partial"
                break
            token = sign_unsubscribe_token(settings.unsubscribe_secret, tx.tenant_id, m.recipient_email, m.message_id)
            unsub = f"{settings.public_base_url}/api/v1/email/unsubscribe/{token}"
            if not self._still_sending(tx):  # before the slot wait, which keeps sends 1/rate apart
                run.stop = "campaign_stopped"
                break
            booking.wait_turn()
            if self.clock.now() >= send_by:
                log.warning("chunk stopped at its send-by time", batch_id=m.batch_id, left=len(todo) - i)
                run.stop = "partial"
                break  # our lease is over: another worker may own the batch now
            try:
                ses_id = self._send_one(tx, m, mail, unsub, results, send_by, counts, files, run.events)
            except SendInDoubt as exc:
                run.in_doubt_at = self.clock.now()  # SES accepted it by now, if at all
                results[m.message_id] = {"outcome": IN_DOUBT, "reason": str(exc)[:300]}
                run.stop = "in_doubt"
                SENDS.labels("in_doubt").inc()
                log.warning("send in doubt: waiting for SES evidence", batch_id=m.batch_id,
                            message_id=m.message_id, error=str(exc)[:300])
                break
            except SendingHeld as exc:
                run.held, run.stop = exc, "held"
                SENDS.labels("held").inc()
                break
            if ses_id is None and m.message_id not in results:
                run.stop = "partial"
                break  # throttled past our patience (or send-by reached): the rest go in a later attempt
            if ses_id:
                results[m.message_id] = {"outcome": "SENT", "ses": ses_id}
                outcome.sent += 1
                SENDS.labels("sent").inc()
                if probing:
                    self.store.lift_automatic_hold(tx.tenant_id, probing)
                    log.info("sending hold lifted: a probe send succeeded", tenant_id=tx.tenant_id,
                             scopes=probing, batch_id=m.batch_id)
                    probing = []
        return run

    def _files(self, tx: Transaction, m: Message, html: str) -> list[AttachedFile]:
        """The campaign's attachments and the recipient's own (read once per process); the images
        the HTML shows as ``cid:<attachment id>`` go inline."""
        ids = list(dict.fromkeys([*tx.attachments, *m.attachments]))  # one file once, named by both
        if not ids:
            return []
        if self.attachment_files is None:
            raise NotFound("this sender was built without attachment access")
        return [as_inline_if_shown(i, self.attachment_files.get(i), html) for i in ids]

    def _send_one(self, tx: Transaction, m: Message, mail: RenderedMail, unsub: str,
                  results: dict[str, dict[str, str]], send_by: datetime, counts: CountBuffer,
                  files: list[AttachedFile] | None = None, events: MessageEventBuffer | None = None) -> str | None:
        """One message, retried only on throttling (SES did not accept those calls). Raises
        SendInDoubt and SendingHeld; None when it failed for good or must wait for a later attempt."""
        delay = 0.2
        for attempt in range(6):
            if attempt and self.clock.now() >= send_by:
                return None  # no SES call starts after the chunk's send-by time
            try:
                return self.mailer.send(
                    **({"attachments": files} if files else {}),
                    sender=tx.from_address or self.settings.default_from, to=m.recipient_email,
                    subject=mail.subject, html=mail.html, text=mail.text, reply_to=tx.reply_to,
                    headers={**tx.headers,  # validated at submit: none overrides the platform's own
                             "List-Unsubscribe": f"<{unsub}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
                    tags={"tenant_id": tx.tenant_id, "transaction_id": tx.transaction_id,
                          "batch_id": m.batch_id, "message_id": m.message_id,
                          # the events Lambda forwards its status changes without reading the campaign
                          **({MESSAGE_EVENTS_TAG: "true"} if tx.message_events else {})},
                )
            except TemporaryError as exc:
                SEND_THROTTLED.inc()
                self.clock.sleep(max(delay, exc.delay if exc.delay < 5 else delay))
                delay = min(delay * 2, 5.0)
            except MessageRefused as exc:
                self._fail(m, MessageStatus.FAILED, f"SES refused: {exc}", counts, events)
                results[m.message_id] = {"outcome": "FAILED", "reason": str(exc)}
                SENDS.labels("refused").inc()
                return None
        return None
