"""Data protection: retention settings, erasure (right to be forgotten), subject access.

**Retention.** Each tenant has days per kind of data (``core.schema.RETENTION``: defaults and
bounds). Message, rejection, send-log, callback and audit items carry the ``expiration`` TTL set
when they are written; batch files and uploads carry a ``retention-days`` tag that the buckets'
lifecycle rules expire by; analytics events are purged by the controller's privacy pass (and by
the index's ISM policy at the platform ceiling). Campaign summaries (transaction items) and
suppressions have no TTL: they outlive message detail.

**Erasure.** ``request_erasure`` writes a durable job; the controller's privacy pass drives it
through ``STEPS``, one conditional write per step, so it survives a crash at any point and is
idempotent (every action finds only what is still there; the receipt's sets are unions). The
person's suppression is written first, as a keyed hash only, so nothing can mail them while the
rest runs and nothing ever mails them afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from core import schema
from core.domain.errors import InvalidInput, NotFound, StaleWrite
from core.domain.models import batch_of_message, iso
from core.domain.privacy import (
    ERASED_ADDRESS,
    address_forms,
    canonical_address,
    delimiter,
    scrub_event,
    without_rows_mentioning,
)
from core.domain.statuses import MessageStatus, TransactionStatus
from core.observability import log

# --- retention -------------------------------------------------------------------------------


def retention_for(repo: Any, tenant_id: str) -> dict[str, int]:
    """Days per kind for a tenant: its own settings over the platform defaults."""
    own = repo.get(tenant_id) if repo is not None else {}
    return {r.kind: int(own.get(r.kind, r.default_days)) for r in schema.RETENTION}


def store_retention(store: Any, tenant_id: str) -> dict[str, int]:
    """The same from the campaign store (what ingest and the sender hold)."""
    own = store.retention_overrides(tenant_id) if hasattr(store, "retention_overrides") else {}
    return {r.kind: int(own.get(r.kind, r.default_days)) for r in schema.RETENTION}


def describe_retention(repo: Any, tenant_id: str) -> dict[str, Any]:
    days = retention_for(repo, tenant_id)
    return {"retention_days": days,
            "bounds": {r.kind: {"default": r.default_days, "min": r.min_days, "max": r.max_days, "what": r.why}
                       for r in schema.RETENTION},
            "kept_until_erased": ["campaign summaries", "suppressions (a keyed hash once the address is erased)"]}


def set_retention(repo: Any, tenant_id: str, changes: dict[str, int], now: datetime) -> dict[str, Any]:
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


def purge_analytics(repo: Any, analytics: Any, now: datetime) -> int:
    """The privacy pass's retention part: each tenant with its own analytics setting loses events
    older than it (the platform ceiling is the index's own ISM policy)."""
    purged = 0
    if analytics is None or not hasattr(analytics, "purge_before"):
        return 0
    for tenant_id, own in repo.tenants():
        if "analytics" in own:
            purged += analytics.purge_before(tenant_id, iso(now - timedelta(days=int(own["analytics"]))))
    return purged


# --- erasure -----------------------------------------------------------------------------------

STEPS = ("suppress", "wait_ingest", "messages", "rejections", "callbacks", "objects", "analytics", "replica",
         "finish", "done")
PENDING, RUNNING, COMPLETED = "PENDING", "RUNNING", "COMPLETED"
WAIT_SECONDS = 5.0  # a step that must wait (an ingest running, the replica behind) looks again after this
REPLICA_PATIENCE_SECONDS = 3600.0  # how long the replica check waits before recording "not confirmed"


class AnalyticsErasure(Protocol):
    """What an erasure and a subject access need of a region's analytics store."""

    def erase_recipient(self, tenant_id: str, addresses: set[str]) -> int: ...
    def recipient_events(self, tenant_id: str, addresses: set[str]) -> list[dict[str, Any]]: ...


@dataclass
class Region:
    """What an erasure reaches in one region: its buckets (every version), its analytics store,
    and (for the other region) its copy of the table to confirm replication took the changes."""

    name: str
    blobs: Any  # core.adapters.privacy.VersionedBlobs
    analytics: AnalyticsErasure | None = None
    table: Any = None  # the region's DynamoTable; None for the home region


@dataclass
class ErasurePorts:
    jobs: Any  # ErasureRepository
    finder: Any  # SubjectFinder
    hashes: Any  # SuppressionHashes
    store: Any  # DynamoStore (campaigns, callbacks, suppressions)
    hasher: Callable[[str, str], str]
    settings: Any
    clock: Any
    regions: list[Region] = field(default_factory=list)  # the home region first
    retention: Any = None  # RetentionRepository


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
    receipt = {
        "suppression": {"kept_as": "HMAC-SHA256 keyed hash", "address_hash": job.get("address_hash")},
        "messages_pseudonymised": len(job.get("r_messages") or ()),
        "messages_stopped_before_sending": len(job.get("r_stopped") or ()),
        "rejections_redacted": len(job.get("r_rejections") or ()),
        "callbacks_redacted": len(job.get("r_callbacks") or ()),
        "send_log_entries_redacted": len(job.get("r_sendlogs") or ()),
        "objects_rewritten": sorted(job.get("r_objects") or ()),
        "object_versions_deleted": {r: int(job.get(f"n_versions_{r}", 0)) for r in _regions_of(job, "n_versions_")},
        "csv_rows_removed": {r: int(job.get(f"n_rows_{r}", 0)) for r in _regions_of(job, "n_rows_")},
        "analytics_events_deleted": {r: int(job.get(f"n_analytics_{r}", 0)) for r in _regions_of(job, "n_analytics_")},
        "replica": {r: job[f"replica_{r}"] for r in _regions_of(job, "replica_")},
        "analytics_not_reached": _regions_of(job, "unreached_analytics_"),
    }
    return {"erasure_id": job["erasure_id"], "status": job.get("status"), "step": step,
            "steps": [{"name": s, "state": "done" if i < at or step == "done" else ("running" if i == at else "pending")}
                      for i, s in enumerate(STEPS[:-1])],
            "requested_at": job.get("requested_at"), "completed_at": job.get("completed_at"),
            "waiting": job.get("waiting"), "receipt": receipt}


def _regions_of(job: dict[str, Any], prefix: str) -> list[str]:
    return sorted(k.removeprefix(prefix) for k in job if k.startswith(prefix))


def get_erasure(jobs: Any, tenant_id: str, erasure_id: str) -> dict[str, Any]:
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


def _step_suppress(ports: ErasurePorts, job: dict[str, Any], should_stop: Any) -> str | None:
    tenant = job["tenant_id"]
    now = iso(ports.clock.now())
    for form in _forms(job):  # every form the address may come back in stays unmailable
        ports.hashes.put(tenant, ports.hasher(tenant, form), "erasure", job["erasure_id"], now)
    for form in _forms(job):  # then the plain-text suppression goes (the hash replaces it)
        ports.store.unsuppress(tenant, form)
    return None


def _campaigns(ports: ErasurePorts, tenant_id: str) -> list[dict[str, Any]]:
    return list(ports.finder.campaigns(tenant_id))


def _step_wait_ingest(ports: ErasurePorts, job: dict[str, Any], should_stop: Any) -> str | None:
    """An ingest that started before the suppression was written may still write this person's
    message; wait until none of the tenant's campaigns is being ingested."""
    busy = [c["transaction_id"] for c in _campaigns(ports, job["tenant_id"])
            if c.get("status") in (TransactionStatus.ACCEPT.value, TransactionStatus.PROCESSING.value)]
    return f"waiting for ingest of {len(busy)} campaign(s)" if busy else None


SENDABLE = (MessageStatus.CREATED, MessageStatus.SCHEDULED, MessageStatus.READY_TO_SEND, MessageStatus.SENDING)


def _step_messages(ports: ErasurePorts, job: dict[str, Any], should_stop: Any) -> str | None:
    forms, tenant = _forms(job), job["tenant_id"]
    for tx in _campaigns(ports, tenant):
        for batch_id in ports.finder.batch_ids(tx["transaction_id"]):
            for m in ports.finder.messages(batch_id, forms, full=True):
                if should_stop():
                    raise Interrupted("stopped in messages")
                ports.jobs.note(job["erasure_id"], "messages", {m["message_id"]})
                if m.get("status") in {s.value for s in SENDABLE}:
                    # never sent: it never will be (the sender also finds the hashed suppression)
                    if ports.store.fail_message(batch_id, m["message_id"], MessageStatus.SUPPRESSED,
                                                "address erased"):
                        ports.jobs.note(job["erasure_id"], "stopped", {m["message_id"]})
                ports.finder.pseudonymise_message(batch_id, m["message_id"], tenant, ERASED_ADDRESS,
                                                  [scrub_event(e) for e in m.get("events") or []])
                if any(f in str(m.get("failure_reason") or "").lower() for f in forms):
                    ports.finder.redact({"PK": f"BATCH#{batch_id}", "SK": f"MESSAGE#{m['message_id']}"},
                                        {"failure_reason": "[erased]"})
            for entry in ports.finder.send_logs(batch_id, forms):  # SES error texts can name the recipient
                ports.jobs.note(job["erasure_id"], "sendlogs", {f"{batch_id}:{entry['SK']}"})
                ports.finder.redact({"PK": entry["PK"], "SK": entry["SK"]},
                                    {"results": _redacted(entry.get("results"), forms)})
    return None


def _step_rejections(ports: ErasurePorts, job: dict[str, Any], should_stop: Any) -> str | None:
    forms = _forms(job)
    for tx in _campaigns(ports, job["tenant_id"]):
        for r in ports.finder.rejections(tx["transaction_id"], forms):
            if should_stop():
                raise Interrupted("stopped in rejections")
            ports.jobs.note(job["erasure_id"], "rejections", {f"{tx['transaction_id']}:{r['line']}"})
            reason = str(r.get("reason") or "")
            if any(f in reason.lower() for f in forms):
                reason = reason.split(":")[0]
            ports.finder.redact({"PK": r["PK"], "SK": r["SK"]}, {"reason": reason}, remove=("email",))
    return None


def _step_callbacks(ports: ErasurePorts, job: dict[str, Any], should_stop: Any) -> str | None:
    """Callbacks not yet delivered: payloads carry campaign summaries, not addresses, but any
    that mentions the person (an error text, a future per-message callback) is redacted."""
    forms = _forms(job)
    for tx in _campaigns(ports, job["tenant_id"]):
        for cb in ports.finder.callbacks(tx["transaction_id"], forms):
            ports.jobs.note(job["erasure_id"], "callbacks", {f"{tx['transaction_id']}:{cb['seq']}"})
            ports.finder.redact({"PK": cb["PK"], "SK": cb["SK"]},
                                {"payload": _redacted(cb.get("payload"), forms),
                                 "attempts": _redacted(cb.get("attempts"), forms)})
    return None


def _redacted(value: Any, forms: set[str]) -> Any:
    if isinstance(value, str):
        low = value.lower()
        return "[erased]" if any(f in low for f in forms) else value
    if isinstance(value, dict):
        return {k: _redacted(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, forms) for v in value]
    return value


def _step_objects(ports: ErasurePorts, job: dict[str, Any], should_stop: Any) -> str | None:
    """Uploads and batch files of the tenant, in every region, every version: the current
    version is rewritten without the person's rows (same tags), then every version that still
    mentions them is deleted (the buckets are versioned, and replicas keep their own versions)."""
    forms, tenant = _forms(job), job["tenant_id"]
    for region in ports.regions:
        versions_deleted = rows = 0
        for purpose in ("uploads", "batches"):
            bucket = ports.settings.bucket(purpose, region.name)
            if not region.blobs.exists(bucket):
                ports.jobs.note_count(job["erasure_id"], f"versions_{region.name}", 0)
                continue
            for v in list(region.blobs.versions(bucket, f"{tenant}/")):
                if should_stop():
                    raise Interrupted("stopped in objects")
                if not region.blobs.mentions(bucket, v, forms):
                    continue
                if v.latest:  # rewritten in memory: only objects that hold the person get here
                    clean, removed = without_rows_mentioning(region.blobs.read(bucket, v), forms)
                    ports.jobs.note(job["erasure_id"], "objects", {f"{region.name}:{bucket}/{v.key}"})
                    region.blobs.put(bucket, v.key, clean, region.blobs.tags(bucket, v))
                    rows += removed
                region.blobs.delete(bucket, v)
                versions_deleted += 1
        ports.jobs.note_count(job["erasure_id"], f"versions_{region.name}", versions_deleted)
        ports.jobs.note_count(job["erasure_id"], f"rows_{region.name}", rows)
    return None


def _step_analytics(ports: ErasurePorts, job: dict[str, Any], should_stop: Any) -> str | None:
    forms = _forms(job)
    for region in ports.regions:
        if region.analytics is None:  # no store configured for that region (PEER_OPENSEARCH_ENDPOINT unset)
            ports.jobs.set_once(job["erasure_id"], f"unreached_analytics_{region.name}", "not configured")
            continue
        n = region.analytics.erase_recipient(job["tenant_id"], forms)
        ports.jobs.note_count(job["erasure_id"], f"analytics_{region.name}", n)
    return None


def _step_replica(ports: ErasurePorts, job: dict[str, Any], should_stop: Any) -> str | None:
    """Global tables carry every change to the other region; confirm the replica holds the
    pseudonymised messages and the hashed suppression before calling the job complete."""
    for region in ports.regions:
        if region.table is None:
            continue
        key = f"replica_{region.name}"
        if job.get(key):
            continue
        state = _replica_state(ports, job, region.table)
        if state == "behind":
            waited = (ports.clock.now() - datetime.fromisoformat(job["requested_at"].replace("Z", "+00:00")))
            if waited.total_seconds() < REPLICA_PATIENCE_SECONDS:
                return f"waiting for the {region.name} replica"
            state = "not confirmed (replication behind)"
        ports.jobs.set_once(job["erasure_id"], key, state)
    return None


def _replica_state(ports: ErasurePorts, job: dict[str, Any], table: Any) -> str:
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


def _step_finish(ports: ErasurePorts, job: dict[str, Any], should_stop: Any) -> str | None:
    return None


STEP_FUNCTIONS: dict[str, Callable[[ErasurePorts, dict[str, Any], Any], str | None]] = {
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
    messages, rejections, files = [], [], []
    for tx in _campaigns(ports, tenant_id):
        tx_id = tx["transaction_id"]
        for batch_id in ports.finder.batch_ids(tx_id):
            for m in ports.finder.messages(batch_id, forms, full=True):
                messages.append({k: m.get(k) for k in ("message_id", "transaction_id", "recipient_email",
                                                       "placeholder_data", "metadata", "attachments", "status", "ses_message_id",
                                                       "events")}
                                | {"timestamps": {k[3:]: v for k, v in m.items() if k.startswith("ts_")}})
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
    if not (suppressions or messages or rejections or files or events):
        raise NotFound("nothing is held about this address for this tenant")
    return {"address": address, "tenant_id": tenant_id, "generated_at": iso(ports.clock.now()),
            "suppressions": suppressions, "messages": messages, "rejections": rejections,
            "stored_files": files, "analytics_events": events,
            "retention_days": retention_for(ports.retention, tenant_id)}


def _rows_mentioning(data: bytes, forms: set[str]) -> list[dict[str, str]]:
    import csv
    import io

    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not lines:
        return []
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter(lines[0]))
    return [dict(row) for row in reader if any(f in ",".join(str(v) for v in row.values()).lower() for f in forms)]
