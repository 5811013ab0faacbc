"""Controller passes. Each reads state from DynamoDB and moves it one safe step; any of them can
be killed at any line and run again. Cost is proportional to what changed: transactions come
from the sparse ``active`` index, only those due (a waiting one is pushed to its next look),
due work from the ``due`` index.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from config.settings import Settings
from core.domain.errors import DomainError, StaleWrite
from core.domain.models import Batch, Summary, Transaction, batch_id_for, iso, parse_iso
from core.domain.reputation import rate_exceeds
from core.domain.statuses import (
    COUNTERS,
    SENDABLE_MESSAGE,
    TERMINAL_BATCH,
    BatchStatus,
    MessageStatus,
    contribution,
    count_delta,
    while_sending,
)
from core.domain.statuses import TransactionStatus as T
from core.observability import BATCHES_DISPATCHED, REPUTATION_ALARM, REPUTATION_PAUSES, log
from core.services.campaigns import change_status
from core.services.events import CountBuffer
from core.services.message_events import MessageEventBuffer, message_event, platform_event_id
from core.services.ports import (
    BatchMessages,
    BatchRepository,
    CampaignBatches,
    CampaignStore,
    Clock,
    SendQueue,
    TransactionRepository,
)

B = BatchStatus


# A pass reads the due index page by page up to this many items: enough to get past items that
# cannot act (paused campaigns), bounded so one pass stays short.
DUE_PAGE, DUE_BUDGET = 100, 2000
PAUSED_RECHECK = timedelta(seconds=60)  # a paused campaign's due batch is looked at again after this


def release_due(*, store: CampaignBatches, clock: Clock, page_size: int = DUE_PAGE, budget: int = DUE_BUDGET) -> int:
    """Scheduled batches whose send_at has come: the campaign SCHEDULED → READY_TO_SEND first, then
    the batch SCHEDULED → READY (it keeps its ``due`` entry until it is dispatched).

    A campaign moves SCHEDULED → READY_TO_SEND as soon as one of its batches is released, even
    while others wait for their own (per-recipient) send time; ``advance`` sends it back to
    SCHEDULED once what was due is sent. Work follows the ``due`` index: batches not yet due are
    never read.

    Converges from a kill at any line: the campaign moves before its batch, so a kill in between
    leaves a READY_TO_SEND campaign whose batch is still due (the next pass releases it). A
    released batch stays in the index while READY: should its campaign be SCHEDULED anyway (a
    pause and resume racing this pass, a controller of an earlier version), the next pass finds
    it and moves the campaign on. ``dispatch`` (``mark_queued``) removes the entry.

    A paused campaign's batches stay due but cannot act: each is snoozed (its due entry moved
    ``PAUSED_RECHECK`` ahead) and the pass pages on, so however many there are they never
    starve another tenant's schedule. Resuming the campaign makes them due again within that time.
    A cancelled or failed campaign's batches are left to ``settle``, which cancels their messages
    first (with their message events) and then closes them.
    """
    released = 0
    txs: dict[str, Transaction] = {}
    now, cursor, seen = clock.now(), None, 0
    while seen < budget:
        page = store.due_page("BATCH", now, min(page_size, budget - seen), cursor)
        seen += len(page.items)
        for item in page.items:
            batch = store.get_batch(item["batch_id"], item["transaction_id"])
            if batch.status not in (B.SCHEDULED, B.READY):
                continue
            tx = txs.get(batch.transaction_id) or store.get_transaction(batch.transaction_id)
            if tx.status in (T.PAUSED, T.CANCELLED, T.FAILED):
                # paused: held until resumed; cancelled/failed: settle (this same pass) cancels them
                store.snooze_due(batch, now + PAUSED_RECHECK)
                continue
            if tx.status == T.SCHEDULED:  # the campaign first: a kill after it leaves the batch due
                try:
                    tx = change_status(store, clock, tx, T.READY_TO_SEND)
                except StaleWrite:
                    txs.pop(batch.transaction_id, None)
                    continue  # paused or cancelled meanwhile: the next pass looks again
            txs[batch.transaction_id] = tx
            if batch.status == B.READY:
                continue  # released earlier; its campaign is READY_TO_SEND now: dispatch takes it
            try:
                store.change_batch_status(batch, B.READY)
                released += 1
            except StaleWrite:
                continue
        cursor = page.cursor
        if not cursor:
            break
    return released


def dispatch(tx: Transaction, batches: list[Batch], *, store: BatchRepository, queue: SendQueue, clock: Clock,
             stale_after: timedelta) -> int:
    """READY batches → the send queue once; a QUEUED batch again only when its message is gone.

    The QUEUED status is written (conditionally) *before* the queue message is sent, so two
    controllers cannot both send it and a crash in between leaves a QUEUED batch with no message,
    which the re-dispatch rule repairs. A QUEUED batch is sent again only when (a) a sender
    handed it back (it consumed the message: paused, throttled, held, in doubt), (b) its claim
    expired (the sender died), or (c) no sender claimed it for ``stale_after`` and its message is
    known lost: the send queue is empty, or it has waited ``LOST_AFTER`` re-dispatch periods
    (gone to the dead-letter queue). A message still waiting in a backed-up queue is left alone:
    re-sending it would only grow the backlog.
    """
    now = clock.now()
    sent = 0
    queue_empty: bool | None = None
    for batch in batches:
        redispatch = batch.status == B.QUEUED and batch.redispatch_at is not None and batch.redispatch_at <= now
        if batch.status != B.READY and not redispatch:
            continue
        if redispatch:
            state = store.dispatch_state(batch)
            lease_until = parse_iso(state["lease_until"]) if state.get("lease_until") else None
            if lease_until is not None and lease_until > now:
                continue  # a sender holds it
            if lease_until is None and not state.get("released_at"):
                # Never claimed since it was queued: is its message waiting, or lost?
                lost_at = (batch.queued_at or now) + stale_after * LOST_AFTER
                if queue_empty is None:
                    queue_empty = _queue_empty(queue)
                if not queue_empty and now < lost_at:
                    store.postpone_redispatch(batch, min(now + stale_after, lost_at))
                    continue
        try:
            queued = store.mark_queued(batch, now, now + stale_after)
        except StaleWrite:
            continue
        # A re-dispatch goes in a new FIFO group: a lost in-flight copy must not block it.
        queue.send({"tenant_id": tx.tenant_id, "transaction_id": tx.transaction_id, "batch_id": batch.batch_id},
                   group=f"{batch.batch_id}:{queued.dispatches}", dedup_id=f"{batch.batch_id}:{queued.version}")
        sent += 1
        BATCHES_DISPATCHED.inc()
        log.info("batch dispatched", transaction_id=tx.transaction_id, batch_id=batch.batch_id,
                 redispatch=redispatch)
    return sent


LOST_AFTER = 30  # re-dispatch periods an unclaimed batch may wait in a busy queue before it counts as lost


def _queue_empty(queue: SendQueue) -> bool:
    """True when the send queue holds no message at all (visible or in flight)."""
    depth = getattr(queue, "depth", None)
    if depth is None:
        return False
    d = depth()
    return sum(d.values()) == 0


RECOUNT_TRIES = 3


def campaign_truth(store: BatchMessages, tx: Transaction, batches: list[Batch] | None = None) -> dict[str, int]:
    """The campaign's counts recounted from its messages (the source of truth): one paginated
    query of small projections per batch, done once when the campaign settles. With ``batches``
    each batch's own summary is stored too (its counts exist only from this recount)."""
    total: Counter[str] = Counter()
    by_id = {b.batch_id: b for b in batches or ()}
    for ix in range(1, tx.batch_count + 1):
        batch_id = batch_id_for(tx.transaction_id, ix)
        mine: Counter[str] = Counter()
        for item in store.message_statuses(batch_id):
            mine.update(contribution(item.get("status"), set(item.get("seen") or ())))
        total.update(mine)
        if batch_id in by_id:
            b = by_id[batch_id]
            store.update_batch_summary(b, Summary(total_messages=b.message_count, **{
                k: int(mine.get(k, 0)) for k in Summary.model_fields if k in COUNTERS}))
    return {k: int(total.get(k, 0)) for k in COUNTERS}


def cancel_unsent(tx: Transaction, batch: Batch, *, store: CampaignStore, clock: Clock, workers: int = 8) -> int:
    """Mark a stopped campaign's never-sent messages CANCELLED (conditional, so a message a sender
    got out first keeps its status, and a rerun after a crash does only what is left).

    For an opted-in campaign the CANCELLED message events of the whole batch (those moved now and
    those an earlier run moved before it was killed) are written before this returns, create-only
    under a key derived from the batch and its events: the caller closes the batch only after
    that, so a kill or a failed write (raised) leaves the batch open and the next pass writes them.
    """
    metadata: dict[str, dict[str, str]] = {}
    cancelled_at: dict[str, str] = {}
    if tx.message_events:  # the receiver gets each cancelled message with its metadata: read them whole
        messages, _ = store.batch_partition(batch.batch_id)
        items = [{"message_id": m.message_id, "status": m.status.value} for m in messages]
        metadata = {m.message_id: m.metadata for m in messages}
        cancelled_at = {m.message_id: m.timestamps.get(MessageStatus.CANCELLED.value) or iso(clock.now())
                        for m in messages if m.status == MessageStatus.CANCELLED}
    else:
        items = list(store.message_statuses(batch.batch_id))
    sendable = [i["message_id"] for i in items
                if MessageStatus(i["status"]) in SENDABLE_MESSAGE or i["status"] == MessageStatus.SENDING.value]
    done = 0
    if sendable:
        counts = CountBuffer(store, clock)
        now = clock.now()
        delta = count_delta((MessageStatus.READY_TO_SEND.value, set()),
                            (MessageStatus.CANCELLED.value, {"CANCELLED"}))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cancel") as pool:
            moved = list(pool.map(lambda mid: store.cancel_message(batch.batch_id, mid, now), sendable))
        done = sum(moved)
        counts.add(tx.transaction_id, {k: v * done for k, v in delta.items()})
        counts.flush()
        cancelled_at.update({mid: iso(now) for mid, ok in zip(sendable, moved, strict=True) if ok})
    if cancelled_at and tx.message_events:  # only a campaign that opted in gets message events
        events = MessageEventBuffer(store, clock, ref_prefix=f"cancel-{batch.batch_id}-")
        for mid in sorted(cancelled_at):
            events.add(tx.tenant_id, message_event(
                event_id=platform_event_id(MessageStatus.CANCELLED.value, mid), status=MessageStatus.CANCELLED.value,
                at=cancelled_at[mid], message_id=mid, transaction_id=tx.transaction_id, metadata=metadata.get(mid),
                source="platform"))
        events.flush()  # raises: the batch stays open and the next pass writes them again
    return done


def settle(tx: Transaction, *, store: CampaignStore, clock: Clock, settings: Settings) -> Transaction:
    """A campaign in a terminal status: cancel what was never sent, close its batches, make its
    counts exact, then drop it from the active index (the controller stops reading it).

    The final recount is taken once and applied only if no count was added for
    ``recount_quiet_seconds`` after it (longer than any events Lambda runs), so an addition for
    a message the recount already saw cannot be counted twice.
    """
    now = clock.now()
    for b in store.batches(tx.transaction_id):
        if b.status in TERMINAL_BATCH:
            continue
        if b.status == B.SENT:
            store.change_batch_status(b, B.COMPLETED)
            continue
        cancelled = cancel_unsent(tx, b, store=store, clock=clock)
        store.change_batch_status(b, B.CANCELLED, clear_due=True)
        if cancelled:
            log.info("unsent messages cancelled", transaction_id=tx.transaction_id, batch_id=b.batch_id,
                     messages=cancelled)
    tx = store.get_transaction(tx.transaction_id)
    if not tx.recounted:
        rc = tx.recount
        quiet_for = timedelta(seconds=settings.recount_quiet_seconds)
        if rc is None:
            truth = campaign_truth(store, tx, store.batches(tx.transaction_id))
            store.start_recount(tx, {**truth, "tries": 0}, now)
            return _look_at(store, tx, now + quiet_for, now)
        if now < parse_iso(rc["at"]) + quiet_for:
            return _look_at(store, tx, parse_iso(rc["at"]) + quiet_for, now)
        tries = int((rc.get("truth") or {}).get("tries", 0))
        quiet = int(rc.get("gen", 0)) == tx.count_gen
        if quiet:
            truth = {k: v for k, v in (rc.get("truth") or {}).items() if k != "tries"}
            if {k: tx.counts.get(k, 0) for k in truth} != truth:
                log.warning("campaign counts corrected by the final recount", transaction_id=tx.transaction_id,
                            live=tx.counts, recounted=truth)
            store.finish_recount(tx.model_copy(update={"recount": {**rc, "truth": truth}}), apply=True)
        elif tries + 1 < RECOUNT_TRIES:
            store.finish_recount(tx, apply=False)
            store.start_recount(store.get_transaction(tx.transaction_id),
                                {**campaign_truth(store, tx, store.batches(tx.transaction_id)), "tries": tries + 1},
                                now)
            return _look_at(store, tx, now + quiet_for, now)
        else:
            log.info("campaign still receiving events: live counts kept", transaction_id=tx.transaction_id)
            store.finish_recount(tx, apply=False)
    store.deactivate(tx)
    log.info("campaign settled", transaction_id=tx.transaction_id, status=tx.status.value)
    return tx


def advance(tx: Transaction, *, store: CampaignStore, queue: SendQueue, clock: Clock, settings: Settings) -> Transaction:
    """Move one active transaction one step: dispatch, batch and transaction statuses.

    Counts are not read here: whoever moves a message adds to the campaign's counters, so a pass
    reads the campaign item and its batch items, never its messages.
    """
    now = clock.now()
    if tx.status in (T.CANCELLED, T.FAILED, T.COMPLETED):
        return settle(tx, store=store, clock=clock, settings=settings)
    if tx.status not in (T.READY_TO_SEND, T.SENT):
        return _look_at(store, tx, next_look(tx, now, settings), now) if tx.status in WAITING else tx
    if tx.status == T.READY_TO_SEND and tx.failure_reason:  # a sender found it unsendable (store.request_failure)
        log.error("campaign failed", transaction_id=tx.transaction_id, reason=tx.failure_reason)
        return change_status(store, clock, tx, T.FAILED, {"failure_reason": tx.failure_reason})
    if tx.status == T.READY_TO_SEND:
        batches = store.batches(tx.transaction_id)
        dispatch(tx, batches, store=store, queue=queue, clock=clock,
                 stale_after=timedelta(seconds=settings.redispatch_after_seconds))
        target = while_sending(b.status for b in batches)  # SENT, or SCHEDULED until the next batch is due
        if target == T.SCHEDULED and any(b.status == B.SCHEDULED and b.send_at is not None and b.send_at <= now
                                         for b in batches):
            target = None  # a batch already due (release_due was cut short): it is released next pass
        if target is not None:
            tx = change_status(store, clock, tx, target)
    if tx.status == T.SENT:
        window = timedelta(seconds=settings.completion_window_seconds)
        if tx.all_final or tx.updated_at + window <= now \
                or all_final_by_recount(tx, store=store, clock=clock, settings=settings):
            for b in store.batches(tx.transaction_id):
                if b.status == B.SENT:
                    store.change_batch_status(b, B.COMPLETED)
            return change_status(store, clock, tx, T.COMPLETED)
    if tx.status in WAITING:
        return _look_at(store, tx, next_look(store.get_transaction(tx.transaction_id) if tx.status == T.SENT
                                             else tx, now, settings), now)
    return tx


def _look_at(store: TransactionRepository, tx: Transaction, at: datetime, now: datetime) -> Transaction:
    """Leave ``tx`` out of the passes until ``at`` (``look_again``), when that is still to come."""
    if at > now:
        store.look_again(tx, at)
    return tx


# What a campaign in these statuses waits for comes with a write that makes it due again (a status
# move, or the count addition that makes every message final), or at a time ``next_look`` knows.
WAITING = (T.SENT, T.SCHEDULED, T.PAUSED, T.DRAFT)
LOOK_AGAIN_MAX = timedelta(hours=1)  # a waiting campaign is read at least this often all the same
FINAL_CHECK_MAX = timedelta(hours=1)


def next_look(tx: Transaction, now: datetime, settings: Settings) -> datetime:
    """When the controller must look at a waiting campaign again: a SENT one at the end of its
    completion window or at its next final recount (``all_final_by_recount``), whichever is first;
    any at most ``LOOK_AGAIN_MAX`` on (a lost "due now" write, after a kill, costs that delay)."""
    at = now + LOOK_AGAIN_MAX
    if tx.status == T.SENT:
        at = min(at, tx.updated_at + timedelta(seconds=settings.completion_window_seconds), _next_final_check(tx, settings))
    return at


def _next_final_check(tx: Transaction, settings: Settings) -> datetime:
    """When ``all_final_by_recount`` next recounts: once the counts are quiet, then at a doubling interval."""
    quiet = timedelta(seconds=settings.recount_quiet_seconds)
    at = max(filter(None, (tx.counts_at, tx.updated_at))) + quiet
    check = tx.final_check or {}
    if check.get("at"):
        at = max(at, parse_iso(check["at"]) + min(quiet * 2 ** int(check.get("tries", 0)), FINAL_CHECK_MAX))
    return at


def all_final_by_recount(tx: Transaction, *, store: CampaignStore, clock: Clock, settings: Settings) -> bool:
    """Are all of a SENT campaign's messages final although its live counts say not?

    Live counts fall short when a process died between a message's status write and its count
    addition (a kill -9). Once the counts have been quiet for ``recount_quiet_seconds`` the
    messages are recounted, then again with a doubling interval (at most hourly), so a campaign
    waiting for slow delivery events costs one recount per interval, not one per pass.
    """
    now = clock.now()
    if now < _next_final_check(tx, settings):
        return False
    tries = int((tx.final_check or {}).get("tries", 0))
    final = campaign_truth(store, tx).get("final", 0)
    store.note_final_check(tx.transaction_id, {"at": now, "tries": tries + 1, "final": final})
    if final >= tx.total_messages:
        log.warning("live counts short: every message is final by recount", transaction_id=tx.transaction_id,
                    live_final=tx.counts.get("final", 0), final=final)
        return True
    return False


def guard_reputation(active: list[Transaction], *, store: TransactionRepository, clock: Clock,
                     settings: Settings) -> list[str]:
    """Pause a tenant's sending campaigns when its bounce or complaint rate crosses our
    thresholds (below SES's own) over a representative volume."""
    per_tenant: dict[str, Counter[str]] = defaultdict(Counter)
    for tx in active:  # live counts: no read beyond the campaign items the pass already has
        per_tenant[tx.tenant_id].update(tx.counts)
    paused = []
    for tenant, s in per_tenant.items():
        if s["sent"] < settings.reputation_min_volume:
            continue
        reasons = []
        # SES's bounce rate counts hard bounces only: a soft bounce (mailbox full) is no reputation signal
        # over the threshold beyond chance (core/domain/reputation.py), not by one unlucky mail
        if rate_exceeds(s["hard_bounced"], s["sent"], settings.bounce_rate_threshold):
            reasons.append("bounce_rate")
        if rate_exceeds(s["complained"], s["sent"], settings.complaint_rate_threshold):
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
                                tenant_id=tenant, reasons=reasons, sent=s["sent"], bounced=s["hard_bounced"],
                                complained=s["complained"])
                except DomainError:
                    continue
    return paused
