"""Data protection: retention settings, erasure (right to be forgotten), subject access.

**Retention.** Each tenant has days per kind of data (``core.schema.RETENTION``: defaults and
bounds). Message, rejection, send-log, callback and audit items carry the ``expiration`` TTL set
when they are written; batch files and uploads carry a ``retention-days`` tag that the buckets'
lifecycle rules expire by; analytics events are purged by the leader's privacy pass, in both regions'
stores (and by the index's ISM policy at the platform ceiling). Campaign summaries (transaction items) and
suppressions have no TTL: they outlive message detail.

**Erasure.** ``request_erasure`` writes a durable job; the controller's privacy pass drives it
through ``STEPS``, one conditional write per step, so it survives a crash at any point and is
idempotent (every action finds only what is still there; the receipt's sets are unions). The
person's suppression is written first, as a keyed hash only, so nothing can mail them while the
rest runs and nothing ever mails them afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from config.settings import Settings
from core import schema
from core.domain.errors import InvalidInput, NotFound, StaleWrite
from core.domain.models import batch_of_message, iso, parse_iso
from core.domain.privacy import (
    ERASED_ADDRESS,
    address_forms,
    canonical_address,
    delimiter,
    row_mentions,
    scrub_event,
    text_mentions,
    value_mentions,
    without_rows_mentioning,
)
from core.domain.statuses import MessageStatus, TransactionStatus
from core.observability import NS, PASS_ERRORS, log, metric
from core.services.ports import (
    CampaignStore,
    Clock,
    ErasureJobs,
    ItemReader,
    RetentionSettings,
    SubjectSearch,
    SuppressionHashStore,
    TenantRepository,
)

# --- retention -------------------------------------------------------------------------------


def retention_for(repo: RetentionSettings | None, tenant_id: str) -> dict[str, int]:
    """Days per kind for a tenant: its own settings over the platform defaults."""
    own = repo.get(tenant_id) if repo is not None else {}
    return {r.kind: int(own.get(r.kind, r.default_days)) for r in schema.RETENTION}


def store_retention(store: TenantRepository, tenant_id: str) -> dict[str, int]:
    """The same from the campaign store (what ingest and the sender hold)."""
    own = store.retention_overrides(tenant_id) if hasattr(store, "retention_overrides") else {}
    return {r.kind: int(own.get(r.kind, r.default_days)) for r in schema.RETENTION}


def describe_retention(repo: RetentionSettings | None, tenant_id: str) -> dict[str, Any]:
    days = retention_for(repo, tenant_id)
    return {"retention_days": days,
            "bounds": {r.kind: {"default": r.default_days, "min": r.min_days, "max": r.max_days, "what": r.why}
                       for r in schema.RETENTION},
            "kept_until_erased": ["campaign summaries", "suppressions (a keyed hash once the address is erased)"]}


def set_retention(repo: RetentionSettings, tenant_id: str, changes: dict[str, int], now: datetime) -> dict[str, Any]:
    """Change some kinds' days; each must be within its bounds (422 naming the kind otherwise).
    Applies to data written from now on (items already written keep their TTL)."""
    current = repo.get(tenant_id)
    for kind, days in changes.items():
        spec = schema.RETENTION_BY_KIND.get(kind)
        if spec is None:
            raise InvalidInput(f"unknown retention kind {kind!r}; kinds are {[r.kind for r in schema.RETENTION]}")
        if not spec.min_days <= int(days) <= spec.max_days:
            raise InvalidInput(f"retention of {kind} must be {spec.min_days}..{spec.max_days} days, not {days}")
        current[kind] = int(days)
    repo.put(tenant_id, current, iso(now))
    return describe_retention(repo, tenant_id)


def expiration(days: int, start: datetime) -> int:
    """The TTL value (epoch seconds) ``days`` after ``start``."""
    return int((start + timedelta(days=days)).timestamp())


def retention_class(days: int) -> int:
    """The lifecycle class an object is tagged with: the longest class not longer than ``days``."""
    fitting = [c for c in schema.RETENTION_CLASSES if c <= days]
    return max(fitting) if fitting else min(schema.RETENTION_CLASSES)


def retention_tags(days: int) -> dict[str, str]:
    return {schema.RETENTION_TAG: str(retention_class(days))}


def purge_analytics(repo: RetentionSettings, analytics: AnalyticsErasure | None, now: datetime) -> int:
    """The privacy pass's retention part: each tenant with its own analytics setting loses events
    older than it (the platform ceiling is the index's own ISM policy)."""
    purged = 0
    if analytics is None or not hasattr(analytics, "purge_before"):
        return 0
    for tenant_id, own in repo.tenants():
        if "analytics" in own:
            purged += analytics.purge_before(tenant_id, iso(now - timedelta(days=int(own["analytics"]))))
    return purged


@dataclass
class AnalyticsPurge:
    """What one retention purge did: events purged per region whose store answered, and the
    regions whose store failed (each counted in ``PASS_ERRORS`` with job ``privacy``)."""

    purged: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every configured region's store was purged: only then may the caller wait an hour."""
        return not self.failed


def purge_analytics_everywhere(ports: ErasurePorts, now: datetime) -> AnalyticsPurge:
    """The retention purge in every region's analytics store the erasure reaches (``ports.regions``:
    this region's, and the other region's through ``EMAILPLATFORM_PEER_OPENSEARCH_ENDPOINT``): in
    each store, one ``delete_by_query`` POST per tenant that has its own analytics retention.
    Idempotent: running it again deletes nothing more.

    Why the leader purges the other region too, rather than each region's controller its own: only
    the lease holder of the active region runs passes (controller/lease.py); the other region's
    controller is a standby that acts on nothing. That region's store still holds the events its
    pipeline indexed while the region was active (before a failback); left to its own standby
    controller, they would outlive the tenant's retention for as long as the region stays passive
    (the index's ISM policy keeps them up to the platform ceiling). Letting
    a standby act would break the rule that a passive region writes nothing; the leader already
    reaches the peer store for erasures, with the same grant (es:ESHttpPost on ``peer_search``).

    Never raises for a store's failure: a region whose store fails (unreachable, not granted, this
    region's included) is logged and counted in ``PASS_ERRORS`` (job ``privacy``), and the others
    are still purged; the result says which failed (``complete`` is False), so the caller tries
    again at its next pass instead of an hour later. A region with no store configured is skipped
    (not a failure: an erasure reports it as ``analytics_not_reached``)."""
    result = AnalyticsPurge()
    for region in ports.regions:
        if region.analytics is None:
            continue
        try:
            # bootstrap.privacy_ports always sets ``retention``; without it this raises and the region counts as failed
            result.purged[region.name] = purge_analytics(ports.retention, region.analytics, now)  # type: ignore[arg-type]
        except Exception as exc:  # one region's store never stops the other's purge
            PASS_ERRORS.labels("privacy", type(exc).__name__).inc()
            log.warning("analytics retention purge failed", region=region.name, error=str(exc)[:300])
            result.failed.append(region.name)
    return result


# --- erasure -----------------------------------------------------------------------------------

STEPS = ("suppress", "wait_ingest", "messages", "rejections", "callbacks", "objects", "analytics", "replica",
         "finish", "done")
PENDING, RUNNING, COMPLETED = "PENDING", "RUNNING", "COMPLETED"
WAIT_SECONDS = 5.0  # a step that must wait (an ingest running, the replica behind) looks again after this
REPLICA_PATIENCE_SECONDS = 3600.0  # how long the replica step waits (from its start) before "not confirmed"
INGEST_PATIENCE_SECONDS = 6 * 3600.0  # how long wait_ingest waits for a campaign's ingest before going on
ERASURE_WAITS_ABANDONED = metric(f"{NS}_erasure_waits_abandoned_total", "counter",
                                 "Erasure waits given up at their deadline (an ingest or a replica)", ("wait",),
                                 values={"wait": ("ingest", "replica")})


class AnalyticsErasure(Protocol):
    """What an erasure and a subject access need of a region's analytics store."""

    def erase_recipient(self, tenant_id: str, addresses: set[str]) -> int: ...
    def recipient_events(self, tenant_id: str, addresses: set[str]) -> list[dict[str, Any]]: ...


class VersionedBlobStore(Protocol):
    """A region's buckets with every object version (core.adapters.privacy.VersionedBlobs); a
    version handle is the adapter's own value."""

    def exists(self, bucket: str) -> bool: ...
    def versions(self, bucket: str, prefix: str) -> Iterator[Any]: ...
    def read(self, bucket: str, v: Any) -> bytes: ...
    def mentions(self, bucket: str, v: Any, needles: set[str], chunk: int = ...) -> bool: ...
    def latest_keys(self, bucket: str, prefix: str) -> set[str]: ...
    def tags(self, bucket: str, v: Any) -> dict[str, str]: ...
    def put(self, bucket: str, key: str, data: bytes, tags: dict[str, str] | None = None) -> None: ...
    def delete(self, bucket: str, v: Any) -> None: ...


@dataclass
class Region:
    """What an erasure reaches in one region: its buckets (every version), its analytics store,
    and (for the other region) its copy of the table to confirm replication took the changes."""

    name: str
    blobs: VersionedBlobStore
    analytics: AnalyticsErasure | None = None
    table: ItemReader | None = None  # the region's DynamoTable; None for the home region


@dataclass
class ErasurePorts:
    jobs: ErasureJobs
    finder: SubjectSearch
    hashes: SuppressionHashStore
    store: CampaignStore  # DynamoStore (campaigns, callbacks, suppressions)
    hasher: Callable[[str, str], str]
    settings: Settings
    clock: Clock
    regions: list[Region] = field(default_factory=list)  # the home region first
    retention: RetentionSettings | None = None


def request_erasure(ports: ErasurePorts, tenant_id: str, email: str, requested_by: str) -> dict[str, Any]:
    """Record an erasure job for the tenant (202): the controller carries it out. The address is
    kept on the job only until it finishes; the job's answer never shows it."""
    try:
        address = canonical_address(email)
    except Exception as exc:
        raise InvalidInput(f"not a valid address: {exc}") from None
    now = ports.clock.now()
    job = {"erasure_id": f"era_{uuid.uuid4().hex}", "tenant_id": tenant_id, "address": address,
           "address_hash": ports.hasher(tenant_id, address), "status": PENDING, "step": STEPS[0], "version": 0,
           "requested_at": iso(now), "requested_by": requested_by}
    ports.jobs.create(job, iso(now))
    log.info("erasure requested", erasure_id=job["erasure_id"], tenant_id=tenant_id)
    return view(job)


def view(job: dict[str, Any]) -> dict[str, Any]:
    """Progress and receipt, never the address."""
    step = job.get("step", STEPS[0])
    at = STEPS.index(step) if step in STEPS else 0
    # n_versions_/n_rows_: counts of jobs written before the receipt kept each version
    objects_regions = sorted(set(job.get("r_objregions") or ()) | set(_regions_of(job, "n_versions_"))
                             | set(_regions_of(job, "r_versions_")))
    receipt: dict[str, Any] = {
        "suppression": {"kept_as": "HMAC-SHA256 keyed hash", "address_hash": job.get("address_hash")},
        "messages_pseudonymised": len(job.get("r_messages") or ()),
        "messages_stopped_before_sending": len(job.get("r_stopped") or ()),
        # a send chunk under way when the erasure began mailed them before it could stop them
        "messages_sent_before_the_erasure_could_stop_them": len(job.get("r_sent") or ()),
        # the SES call did not complete (or its worker died): SES may have taken it; never sent again
        "messages_send_in_doubt": len(job.get("r_in_doubt") or ()),
        "rejections_redacted": len(job.get("r_rejections") or ()),
        "callbacks_redacted": len(job.get("r_callbacks") or ()),
        "message_event_batches_redacted": len(job.get("r_msgevents") or ()),
        "send_log_entries_redacted": len(job.get("r_sendlogs") or ()),
        "objects_rewritten": sorted(job.get("r_objects") or ()),
        "object_versions_deleted": {r: len(job.get(f"r_versions_{r}") or ()) + int(job.get(f"n_versions_{r}", 0))
                                    for r in objects_regions},
        "csv_rows_removed": {r: sum(int(m.rsplit("=", 1)[1]) for m in job.get(f"r_rows_{r}") or ())
                             + int(job.get(f"n_rows_{r}", 0)) for r in objects_regions},
        "analytics_events_deleted": {r: int(job.get(f"n_analytics_{r}", 0)) for r in _regions_of(job, "n_analytics_")},
        "replica": {r: job[f"replica_{r}"] for r in _regions_of(job, "replica_")},
        "analytics_not_reached": _regions_of(job, "unreached_analytics_"),
    }
    if job.get("ingest_not_confirmed"):
        receipt["ingest_not_confirmed"] = job["ingest_not_confirmed"]
    return {"erasure_id": job["erasure_id"], "status": job.get("status"), "step": step,
            "steps": [{"name": s, "state": "done" if i < at or step == "done" else ("running" if i == at else "pending")}
                      for i, s in enumerate(STEPS[:-1])],
            "requested_at": job.get("requested_at"), "completed_at": job.get("completed_at"),
            "waiting": job.get("waiting"), "receipt": receipt}


def _regions_of(job: dict[str, Any], prefix: str) -> list[str]:
    return sorted(k.removeprefix(prefix) for k in job if k.startswith(prefix) and k != "replica_since")


def get_erasure(jobs: ErasureJobs, tenant_id: str, erasure_id: str) -> dict[str, Any]:
    return view(jobs.get(erasure_id, tenant_id))


def run_due_erasures(ports: ErasurePorts, should_stop: Callable[[], bool] = lambda: False) -> int:
    """The controller's pass: drive every due job as far as it goes now. Returns jobs finished."""
    done = 0
    for erasure_id in ports.jobs.due(iso(ports.clock.now())):
        if should_stop():
            break
        try:
            job = run_erasure(ports, erasure_id, should_stop)
        except StaleWrite:
            continue  # another pass moved it; the next pass reads it again
        except Interrupted:
            break  # shutting down: the job resumes at its step on the next pass
        except Exception as exc:  # one job's error never stops the others; it is retried next pass
            log.warning("erasure step failed", erasure_id=erasure_id, error=str(exc)[:300])
            continue
        done += job.get("status") == COMPLETED
    return done


class Interrupted(Exception):
    """``should_stop`` asked to stop between two actions (shutdown; tests simulate a crash)."""


def run_erasure(ports: ErasurePorts, erasure_id: str, should_stop: Callable[[], bool] = lambda: False
                ) -> dict[str, Any]:
    """Run a job's remaining steps. Each step is idempotent and ends with a conditional write
    of the next step, so calling this again after a crash (or ``Interrupted``) resumes it."""
    job = ports.jobs.get(erasure_id)
    while job["step"] != "done":
        if should_stop():
            raise Interrupted(f"erasure {erasure_id} stopped at {job['step']}")
        step = job["step"]
        outcome = STEP_FUNCTIONS[step](ports, job, should_stop)
        if outcome is not None:  # the step must wait: look again later
            ports.jobs.snooze(job, iso(ports.clock.now() + timedelta(seconds=WAIT_SECONDS)), outcome)
            return ports.jobs.get(erasure_id)
        nxt = STEPS[STEPS.index(step) + 1]
        fields: dict[str, Any] = {"step": nxt, "status": RUNNING, "waiting": None}
        remove: tuple[str, ...] = ()
        if nxt == "done":
            fields.update(status=COMPLETED, completed_at=iso(ports.clock.now()))
            remove = ("address",)  # from here on the job holds only the hash
        job = ports.jobs.advance(job, fields, remove=remove, clear_due=nxt == "done")
        job = ports.jobs.get(erasure_id)
        log.info("erasure step done", erasure_id=erasure_id, step=step, next=nxt)
    return job


def _forms(job: dict[str, Any]) -> set[str]:
    return address_forms(job["address"])


def _step_suppress(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> str | None:
    tenant = job["tenant_id"]
    now = iso(ports.clock.now())
    for form in _forms(job):  # every form the address may come back in stays unmailable
        ports.hashes.put(tenant, ports.hasher(tenant, form), "erasure", job["erasure_id"], now)
    for form in _forms(job):  # then the plain-text suppression goes (the hash replaces it)
        ports.store.unsuppress(tenant, form)
    return None


def _campaigns(ports: ErasurePorts, tenant_id: str) -> list[dict[str, Any]]:
    return list(ports.finder.campaigns(tenant_id))


def _waited(ports: ErasurePorts, job: dict[str, Any], name: str) -> float:
    """Seconds since the job first waited at ``name`` (recorded once, so a restart keeps counting)."""
    now = ports.clock.now()
    ports.jobs.set_once(job["erasure_id"], name, iso(now))
    return (now - parse_iso(job.get(name) or iso(now))).total_seconds()


def _step_wait_ingest(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> str | None:
    """An ingest that started before the suppression was written may still write this person's
    message; wait until none of the tenant's campaigns is being ingested, for at most
    ``INGEST_PATIENCE_SECONDS`` (an ingest stuck that long is an incident of its own: the job goes
    on, logs an error, counts it and names it on the receipt)."""
    busy = [c["transaction_id"] for c in _campaigns(ports, job["tenant_id"])
            if c.get("status") in (TransactionStatus.ACCEPT.value, TransactionStatus.PROCESSING.value)]
    if not busy:
        return None
    waited = _waited(ports, job, "ingest_wait_since")
    if waited < INGEST_PATIENCE_SECONDS:
        return f"waiting for ingest of {len(busy)} campaign(s)"
    ERASURE_WAITS_ABANDONED.labels("ingest").inc()
    log.error("erasure stopped waiting for ingest", erasure_id=job["erasure_id"], tenant_id=job["tenant_id"],
              campaigns=busy[:20], waited_seconds=int(waited))
    ports.jobs.set_once(job["erasure_id"], "ingest_not_confirmed",
                        f"{len(busy)} campaign(s) still ingesting after {int(waited)} s: {', '.join(busy[:5])}")
    return None


SENDABLE = (MessageStatus.CREATED, MessageStatus.SCHEDULED, MessageStatus.READY_TO_SEND, MessageStatus.SENDING)
_SENDABLE = {s.value for s in SENDABLE}
# statuses only SES events give a message: it was handed to SES
_MAILED = {s.value for s in MessageStatus} - _SENDABLE - {MessageStatus.SUPPRESSED.value, MessageStatus.CANCELLED.value,
                                                         MessageStatus.FAILED.value}
ERASED_REASON = "address erased"  # the failure_reason of a message the erasure stopped


def _open_chunk(message_id: str, logs: list[dict[str, Any]], now: datetime) -> bool:
    """A send chunk that names the message has written its INTENT and may still call SES for it
    (not closed, its send-by time not passed)."""
    return any(e.get("state") == "INTENT" and message_id in (e.get("message_ids") or ())
               and now < parse_iso(e.get("send_by") or e["created_at"]) for e in logs)


def _send_outcome(message_id: str, logs: list[dict[str, Any]]) -> str | None:
    """What the send log says of a message, latest attempt last: SENT, IN_DOUBT (an SES call that
    did not complete, or a chunk whose worker died before closing it), FAILED, SUPPRESSED, None."""
    outcome = None
    for e in sorted(logs, key=lambda e: (int(e.get("chunk", 0)), int(e.get("attempt", 0)))):
        if e.get("state") == "DONE" and message_id in (e.get("results") or {}):
            outcome = str(e["results"][message_id].get("outcome"))
        elif e.get("state") == "INTENT" and message_id in (e.get("message_ids") or ()):
            outcome = "IN_DOUBT"
    return outcome


def _step_messages(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> str | None:
    """Pseudonymise every message of the person and stop the unsent ones.

    The hashed suppression exists (step 1), so every send chunk that writes its INTENT from now
    on finds it. A chunk that wrote its INTENT earlier may have read the suppressions before: its
    messages of the person are left alone until it closes (or its send-by time passes), then the
    send log says truthfully whether it mailed them before the erasure could stop it."""
    forms, tenant, eid = _forms(job), job["tenant_id"], job["erasure_id"]
    now = ports.clock.now()
    under_way = 0
    for tx in _campaigns(ports, tenant):
        for batch_id in ports.finder.batch_ids(tx["transaction_id"]):
            mine, logs = ports.finder.partition(batch_id, forms)
            for m in mine:
                if should_stop():
                    raise Interrupted("stopped in messages")
                if _open_chunk(m["message_id"], logs, now):
                    ports.jobs.note(eid, "awaited", {m["message_id"]})
                    under_way += 1
                    continue
                _erase_message(ports, job, batch_id, m, _send_outcome(m["message_id"], logs), forms)
            for entry in logs:  # SES error texts can name the recipient
                if entry.get("state") == "DONE" and value_mentions(entry.get("results"), forms):
                    ports.jobs.note(eid, "sendlogs", {f"{batch_id}:{entry['SK']}"})
                    ports.finder.redact({"PK": entry["PK"], "SK": entry["SK"]},
                                        {"results": _redacted(entry.get("results"), forms)})
    if under_way:
        return f"waiting for {under_way} send chunk(s) under way that may mail the person"
    return None


def _erase_message(ports: ErasurePorts, job: dict[str, Any], batch_id: str, m: dict[str, Any],
                   outcome: str | None, forms: set[str]) -> None:
    """One message: record what became of it (before acting, so a redo after a crash records the
    same), stop it if it was never sent, then pseudonymise it."""
    eid, mid, status = job["erasure_id"], m["message_id"], str(m.get("status"))
    awaited = mid in (job.get("r_awaited") or ())  # a chunk was under way for it when the erasure looked
    sendable, reason = status in _SENDABLE, m.get("failure_reason")
    ports.jobs.note(eid, "messages", {mid})
    if (outcome == "SENT" and (sendable or awaited)) or (awaited and status in _MAILED):
        ports.jobs.note(eid, "sent", {mid})  # mailed by a chunk under way before the erasure could stop it
    elif outcome == "IN_DOUBT" and (sendable or awaited or reason == ERASED_REASON):
        ports.jobs.note(eid, "in_doubt", {mid})  # SES may have taken it; it is never tried again
        if sendable:
            ports.store.fail_message(batch_id, mid, MessageStatus.SUPPRESSED, ERASED_REASON)
    elif sendable:
        ports.jobs.note(eid, "stopped", {mid})
        if not ports.store.fail_message(batch_id, mid, MessageStatus.SUPPRESSED, ERASED_REASON):
            now = ports.store.get_message(batch_id, mid).status  # it moved meanwhile: say what it became
            if str(now) in _MAILED:
                ports.jobs.forget(eid, "stopped", {mid})
                ports.jobs.note(eid, "sent", {mid})
    elif status == MessageStatus.SUPPRESSED.value and (reason == ERASED_REASON or (awaited and outcome == "SUPPRESSED")):
        ports.jobs.note(eid, "stopped", {mid})  # ours (a redo), or the chunk found the hashed suppression
    elif awaited and status == MessageStatus.CANCELLED.value:
        ports.jobs.note(eid, "stopped", {mid})
    # failure_reason (an SES rejection quoting the address) is redacted in the same write: a crash
    # after the address is gone would leave a resumed erasure unable to find the message again
    ports.finder.pseudonymise_message(batch_id, mid, job["tenant_id"], ERASED_ADDRESS, scrub_event,
                                      lambda value: _redacted(value, forms))


def _step_rejections(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> str | None:
    forms = _forms(job)
    for tx in _campaigns(ports, job["tenant_id"]):
        for r in ports.finder.rejections(tx["transaction_id"], forms):
            if should_stop():
                raise Interrupted("stopped in rejections")
            ports.jobs.note(job["erasure_id"], "rejections", {f"{tx['transaction_id']}:{r['line']}"})
            reason = str(r.get("reason") or "")
            if text_mentions(reason, forms):
                reason = reason.split(":")[0]
            ports.finder.redact({"PK": r["PK"], "SK": r["SK"]}, {"reason": reason}, remove=("email",))
    return None


def _step_callbacks(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> str | None:
    """Campaign callbacks carry summaries, not addresses, but any that mentions the person (an
    error text) is redacted; message-event batches (``MSGEVENTS#``, delivered or not) lose the
    person's events' metadata."""
    forms = _forms(job)
    for tx in _campaigns(ports, job["tenant_id"]):
        for cb in ports.finder.callbacks(tx["transaction_id"], forms):
            ports.jobs.note(job["erasure_id"], "callbacks", {f"{tx['transaction_id']}:{cb['seq']}"})
            ports.finder.redact({"PK": cb["PK"], "SK": cb["SK"]},
                                {"payload": _redacted(cb.get("payload"), forms),
                                 "attempts": _redacted(cb.get("attempts"), forms)})
    _redact_message_events(ports, job, should_stop)
    return None


# what a message event keeps once its message is erased: what happened, when, to which message id
MESSAGE_EVENT_FIELDS_KEPT = ("event_id", "status", "timestamp", "source", "transaction_id", "batch_id", "message_id",
                             "bounce_type", "bounce_subtype")


def _erased_event(event: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in event.items() if k in MESSAGE_EVENT_FIELDS_KEPT}, "metadata": {}}


def _person_events(payload: dict[str, Any], message_ids: set[str], forms: set[str]) -> list[dict[str, Any]]:
    return [e for e in payload.get("events") or []
            if (e.get("message_id") in message_ids and e != _erased_event(e)) or value_mentions(e, forms)]


def _redact_message_events(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> None:
    """The person's events in the campaigns' message-event outbox items: found by message id (they
    carry no address), written back with the metadata gone. Run again at the end of the job for
    an events handler that wrote a batch after the messages were erased."""
    mids, forms = set(job.get("r_messages") or ()), _forms(job)
    if not mids:
        return
    for tx in _campaigns(ports, job["tenant_id"]):
        tx_id = tx["transaction_id"]
        if not any(mid.startswith(f"{tx_id}-") for mid in mids):
            continue
        for _ in range(5):  # an item that changed under us is read again
            stale = False
            for item in ports.finder.message_event_batches(tx_id):
                payload = dict(item.get("payload") or {})
                if not _person_events(payload, mids, forms):
                    continue
                if should_stop():
                    raise Interrupted("stopped in message events")
                ports.jobs.note(job["erasure_id"], "msgevents", {f"{tx_id}:{item['SK'].removeprefix('MSGEVENTS#')}"})
                payload["events"] = [_erased_event(e) if e.get("message_id") in mids else _redacted(e, forms)
                                     for e in payload.get("events") or []]
                if not ports.finder.redact_message_events({"PK": item["PK"], "SK": item["SK"]}, payload):
                    stale = True
            if not stale:
                break


def _redacted(value: Any, forms: set[str]) -> Any:
    if isinstance(value, str):
        return "[erased]" if text_mentions(value, forms) else value
    if isinstance(value, dict):
        return {k: _redacted(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, forms) for v in value]
    return value


def _erase_objects(ports: ErasurePorts, job: dict[str, Any], region: Region, should_stop: Callable[[], bool]) -> int:
    """One region's uploads and batch files of the tenant, every version: the current version that
    holds the person is rewritten without their rows (same tags), then every version that holds
    them is deleted. Each version is noted on the receipt (by version id, rows with it) before it
    is acted on, so a redo after a crash counts it once. Returns the versions found."""
    forms, tenant, eid = _forms(job), job["tenant_id"], job["erasure_id"]
    ports.jobs.note(eid, "objregions", {region.name})
    found = 0
    for purpose in ("uploads", "batches"):
        bucket = ports.settings.bucket(purpose, region.name)
        if not region.blobs.exists(bucket):
            continue
        for v in list(region.blobs.versions(bucket, f"{tenant}/")):
            if should_stop():
                raise Interrupted("stopped in objects")
            if not region.blobs.mentions(bucket, v, forms):
                continue
            found += 1
            ref = f"{bucket}/{v.key}@{v.version_id or 'null'}"
            if v.latest:  # rewritten in memory: only objects that hold the person get here
                clean, removed = without_rows_mentioning(region.blobs.read(bucket, v), forms)
                ports.jobs.note(eid, f"rows_{region.name}", {f"{ref}={removed}"})
                ports.jobs.note(eid, "objects", {f"{region.name}:{bucket}/{v.key}"})
                region.blobs.put(bucket, v.key, clean, region.blobs.tags(bucket, v))
            ports.jobs.note(eid, f"versions_{region.name}", {ref})
            region.blobs.delete(bucket, v)
    return found


def _step_objects(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> str | None:
    """Every region (the replicas keep their own versions, so DR is erased explicitly)."""
    for region in ports.regions:
        _erase_objects(ports, job, region, should_stop)
    return None


def _count_events(analytics: AnalyticsErasure, tenant_id: str, forms: set[str]) -> int:
    count = getattr(analytics, "count_recipient", None)
    return int(count(tenant_id, forms)) if count is not None else len(analytics.recipient_events(tenant_id, forms))


def _step_analytics(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> str | None:
    """Each region's analytics store. The count found is recorded before the deletion, so a pass
    that dies after deleting adds exactly what went (found less what is left)."""
    forms, tenant, eid = _forms(job), job["tenant_id"], job["erasure_id"]
    for region in ports.regions:
        if region.analytics is None:  # no store configured for that region (PEER_OPENSEARCH_ENDPOINT unset)
            ports.jobs.set_once(eid, f"unreached_analytics_{region.name}", "not configured")
            continue
        kind = f"analytics_{region.name}"
        pending = job.get(f"p_{kind}")
        if pending is not None:
            left = _count_events(region.analytics, tenant, forms)
            ports.jobs.settle_count(eid, kind, int(pending), max(0, int(pending) - left))
        found = _count_events(region.analytics, tenant, forms)
        if not found:
            ports.jobs.settle_count(eid, kind, None, 0)  # the region shows on the receipt, with 0
            continue
        ports.jobs.begin_count(eid, kind, found)
        ports.jobs.settle_count(eid, kind, found, region.analytics.erase_recipient(tenant, forms))
    return None


def _step_replica(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> str | None:
    """Confirm the other region holds the erasure: its table copy shows the pseudonymised messages
    and the hashed suppression (global tables carry them), its buckets hold every object the home
    region has (replication caught up) and no version that mentions the person (a late replica
    is erased now, and looked at again). Waits ``REPLICA_PATIENCE_SECONDS`` from when this step
    started, then records "not confirmed"."""
    home = ports.regions[0] if ports.regions else None
    for region in ports.regions:
        if region.table is None:
            continue
        key = f"replica_{region.name}"
        if job.get(key):
            continue
        state = _replica_state(ports, job, region.table)
        if state == "verified" and home is not None and region is not home:
            state = _objects_replica_state(ports, job, home, region, should_stop)
        if state == "behind":
            waited = _waited(ports, job, "replica_since")
            if waited < REPLICA_PATIENCE_SECONDS:
                return f"waiting for the {region.name} replica"
            ERASURE_WAITS_ABANDONED.labels("replica").inc()
            log.error("erasure stopped waiting for the replica", erasure_id=job["erasure_id"], region=region.name,
                      waited_seconds=int(waited))
            state = "not confirmed (replication behind)"
        ports.jobs.set_once(job["erasure_id"], key, state)
    return None


def _objects_replica_state(ports: ErasurePorts, job: dict[str, Any], home: Region, region: Region,
                           should_stop: Callable[[], bool]) -> str:
    prefix = f"{job['tenant_id']}/"
    for purpose in ("uploads", "batches"):
        src, dst = ports.settings.bucket(purpose, home.name), ports.settings.bucket(purpose, region.name)
        if not (home.blobs.exists(src) and region.blobs.exists(dst)):
            continue
        if home.blobs.latest_keys(src, prefix) - region.blobs.latest_keys(dst, prefix):
            return "behind"  # objects still to replicate: one could carry the person
    if _erase_objects(ports, job, region, should_stop):
        return "behind"  # a replica landed after the objects step: erased now, confirmed next time
    return "verified"


def _replica_state(ports: ErasurePorts, job: dict[str, Any], table: ItemReader) -> str:
    try:
        if table.get(schema.suppression_hash_key(job["tenant_id"], job["address_hash"]), consistent=False) is None:
            return "behind"
        forms = _forms(job)
        for mid in sorted(job.get("r_messages") or ()):
            item = table.get(schema.message_key(batch_of_message(mid), mid), consistent=False)
            if item and str(item.get("recipient_email", "")).lower() in forms:
                return "behind"
    except Exception as exc:  # no table there (single-region setup): nothing to confirm
        if "ResourceNotFound" in type(exc).__name__ or "ResourceNotFound" in str(exc):
            return "not present"
        raise
    return "verified"


def _step_finish(ports: ErasurePorts, job: dict[str, Any], should_stop: Callable[[], bool]) -> str | None:
    """Last look before the address goes from the job: a plain suppression written by a bounce or
    an unsubscribe that raced step 1 goes again (the hash stays), and a message-event batch the
    events handler wrote after the messages were erased loses the person's metadata."""
    for form in _forms(job):
        if ports.store.unsuppress(job["tenant_id"], form):
            log.warning("erasure removed a plain suppression written while it ran", erasure_id=job["erasure_id"])
    _redact_message_events(ports, job, should_stop)
    return None


STEP_FUNCTIONS: dict[str, Callable[[ErasurePorts, dict[str, Any], Callable[[], bool]], str | None]] = {
    "suppress": _step_suppress, "wait_ingest": _step_wait_ingest, "messages": _step_messages,
    "rejections": _step_rejections, "callbacks": _step_callbacks, "objects": _step_objects,
    "analytics": _step_analytics, "replica": _step_replica, "finish": _step_finish,
}


# --- subject access ----------------------------------------------------------------------------


def subject_access(ports: ErasurePorts, tenant_id: str, email: str) -> dict[str, Any]:
    """Everything held about an address for the tenant, as JSON: suppression (plain or hashed),
    messages with placeholder data and events, rejections, rows in stored CSVs, analytics events."""
    try:
        forms = address_forms(email)
        address = canonical_address(email)
    except ValueError as exc:
        raise InvalidInput(f"not a valid address: {exc}") from None
    suppressions = []
    for form in sorted(forms):
        plain = ports.store.get_suppression(tenant_id, form)
        if plain:
            suppressions.append({k: v for k, v in plain.items() if k != "tenant_id"})
        hashed = ports.hashes.get(tenant_id, ports.hasher(tenant_id, form))
        if hashed:
            suppressions.append({k: v for k, v in hashed.items() if k != "tenant_id"})
    messages, rejections, files, message_events = [], [], [], []
    for tx in _campaigns(ports, tenant_id):
        tx_id = tx["transaction_id"]
        mine: set[str] = set()
        for batch_id in ports.finder.batch_ids(tx_id):
            for m in ports.finder.messages(batch_id, forms, full=True):
                mine.add(m["message_id"])
                messages.append({k: m.get(k) for k in ("message_id", "transaction_id", "recipient_email",
                                                       "placeholder_data", "metadata", "attachments", "status", "ses_message_id",
                                                       "events")}
                                | {"timestamps": {k[3:]: v for k, v in m.items() if k.startswith("ts_")}})
        if mine:  # message events held for delivery to the campaign's callback URL (they name no address)
            for item in ports.finder.message_event_batches(tx_id):
                message_events += [{**e, "delivery_state": item.get("state")}
                                   for e in (item.get("payload") or {}).get("events") or []
                                   if e.get("message_id") in mine]
        for r in ports.finder.rejections(tx_id, forms):
            rejections.append({"transaction_id": tx_id, "line": r.get("line"), "reason": r.get("reason"),
                               "email": r.get("email")})
    home = ports.regions[0] if ports.regions else None
    if home is not None:
        for purpose in ("uploads", "batches"):
            bucket = ports.settings.bucket(purpose, home.name)
            if not home.blobs.exists(bucket):
                continue
            for v in home.blobs.versions(bucket, f"{tenant_id}/"):
                if not v.latest:
                    continue
                if not home.blobs.mentions(bucket, v, forms):
                    continue
                rows = _rows_mentioning(home.blobs.read(bucket, v), forms)
                if rows:
                    files.append({"store": purpose, "key": v.key, "rows": rows})
    events = home.analytics.recipient_events(tenant_id, forms) if home and home.analytics is not None else []
    if not (suppressions or messages or rejections or files or events or message_events):
        raise NotFound("nothing is held about this address for this tenant")
    return {"address": address, "tenant_id": tenant_id, "generated_at": iso(ports.clock.now()),
            "suppressions": suppressions, "messages": messages, "rejections": rejections,
            "stored_files": files, "analytics_events": events, "message_events": message_events,
            "retention_days": retention_for(ports.retention, tenant_id)}


def _rows_mentioning(data: bytes, forms: set[str]) -> list[dict[str, str]]:
    import csv
    import io

    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not lines:
        return []
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter(lines[0]))
    return [dict(row) for row in reader if row_mentions((str(v) for v in row.values()), forms)]
