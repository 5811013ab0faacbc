"""The one description of the platform's storage and messaging resources.

The embedded stack (``local.bootstrap``) creates exactly these on the moto server and the Pulumi
program (``infra/``) builds exactly these on AWS, so the two cannot drift. Names come from
``config.settings.Settings`` helpers; this module only says what exists and its shape.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- DynamoDB: one table, keys as the owner gave them --------------------------------------

PK, SK = "PK", "SK"
TTL_ATTRIBUTE = "expiration"  # shared with powertools idempotency records


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: str
    range_key: str
    why: str
    # the attributes besides the keys the index copies (None: all). Every write of an item in the
    # index is also written to it, so a sparse work index copies only what its readers use.
    include: tuple[str, ...] | None = None

    @property
    def keys(self) -> tuple[str, str]:
        """The attributes an item carries to be in the index (removing them takes it out)."""
        return self.hash_key, self.range_key

    def entry(self, partition: str, sort: str) -> dict[str, str]:
        """The attributes that put an item in the index at ``partition`` / ``sort``."""
        return {self.hash_key: partition, self.range_key: sort}


ACTIVE_INDEX, DUE_INDEX, TENANT_INDEX = INDEXES = (
    Index(
        "active",
        "active_pk",
        "active_sk",
        "Sparse: transactions that still need controller attention, by when the controller next "
        "looks at each (``look_at#id``). A pass reads only those due, so its cost grows with "
        "campaigns that changed or have work due, never with history or with campaigns waiting.",
    ),
    Index(
        "due",
        "due_pk",
        "due_at",
        "Sparse: work due at a time (scheduled batches, callback retries, message-event batches, "
        "erasures), read with due_at <= now. Projects only the ids its readers need (they read "
        "the item itself before acting): a message-event batch of up to 256 KB is not copied.",
        include=("transaction_id", "batch_id", "ref", "url", "erasure_id"),
    ),
    Index(
        "tenant",
        "tenant_pk",
        "tenant_sk",
        "Tenant listings (campaigns, templates, suppressions) newest first.",
    ),
)


@dataclass(frozen=True)
class Table:
    logical_name: str
    hash_key: str = PK
    range_key: str = SK
    indexes: tuple[Index, ...] = INDEXES
    stream_view: str = "NEW_AND_OLD_IMAGES"
    ttl_attribute: str = TTL_ATTRIBUTE

    @property
    def string_attributes(self) -> list[str]:
        names = [self.hash_key, self.range_key]
        for ix in self.indexes:
            names += [ix.hash_key, ix.range_key]
        return list(dict.fromkeys(names))


MAIN_TABLE = Table("main")

# Key builders: the only place key strings are spelled. A partition (``*_partition``) and a
# sort-key prefix (``*_PREFIX``) are what a query of one aggregate's items reads.

METADATA = "METADATA"
BATCH_PREFIX = "BATCH#"
MESSAGE_PREFIX = "MESSAGE#"
SEND_LOG_PREFIX = "SENDLOG#"
REJECTION_PREFIX = "REJECTION#"
CALLBACK_PREFIX = "CALLBACK#"
MESSAGE_EVENTS_PREFIX = "MSGEVENTS#"
TEMPLATE_VERSION_PREFIX = "VERSION#"
SUPPRESSED_EMAIL_PREFIX = "EMAIL#"
SUPPRESSED_HASH_PREFIX = "HASH#"


def transaction_partition(tx_id: str) -> str:
    """A campaign's items: the transaction, its batches, rejections, callbacks and message-event batches."""
    return f"TRANSACTION#{tx_id}"


def batch_partition(batch_id: str) -> str:
    """A batch's messages and send-log entries."""
    return f"BATCH#{batch_id}"


def template_partition(template_id: str) -> str:
    """A template's head item and its versions."""
    return f"TEMPLATE#{template_id}"


def suppression_partition(tenant_id: str) -> str:
    """A tenant's suppressions: by address, and by keyed hash for erased people."""
    return f"SUPPRESSION#{tenant_id}"


def audit_partition(tenant_id: str) -> str:
    """A tenant's audit log (``audit_key``), newest last."""
    return f"AUDIT#{tenant_id}"


# what a transaction item's partition starts with (a stream record names a campaign's item)
TRANSACTION_PARTITION_PREFIX = transaction_partition("")


def transaction_key(tx_id: str) -> dict[str, str]:
    return {PK: transaction_partition(tx_id), SK: METADATA}


def batch_key(tx_id: str, batch_id: str) -> dict[str, str]:
    return {PK: transaction_partition(tx_id), SK: f"{BATCH_PREFIX}{batch_id}"}


def message_key(batch_id: str, message_id: str) -> dict[str, str]:
    return {PK: batch_partition(batch_id), SK: f"{MESSAGE_PREFIX}{message_id}"}


def send_log_key(batch_id: str, chunk: int, attempt: int) -> dict[str, str]:
    return {PK: batch_partition(batch_id), SK: f"{SEND_LOG_PREFIX}{chunk:05d}#{attempt:03d}"}


def rejection_key(tx_id: str, line: int) -> dict[str, str]:
    return {PK: transaction_partition(tx_id), SK: f"{REJECTION_PREFIX}{line:010d}"}


def ingest_watermark_key(tx_id: str) -> dict[str, str]:
    """The last CSV line whose rows an ingest attempt decided before writing a batch (core/services/ingest.py)."""
    return {PK: transaction_partition(tx_id), SK: "INGEST#WATERMARK"}


def callback_key(tx_id: str, seq: int) -> dict[str, str]:
    return {PK: transaction_partition(tx_id), SK: f"{CALLBACK_PREFIX}{seq:06d}"}


def resent_in_doubt_key(tx_id: str) -> dict[str, str]:
    """The marker a re-send of a campaign's in-doubt messages claims first (runbooks/failover.py): once per campaign."""
    return {PK: transaction_partition(tx_id), SK: "RESENT_IN_DOUBT"}


def message_events_key(tx_id: str, ref: str) -> dict[str, str]:
    """One batch of a campaign's message events (outbox; core/services/message_events.py). Apart from
    ``CALLBACK#`` so that reading a campaign's ordered callbacks never reads these."""
    return {PK: transaction_partition(tx_id), SK: f"{MESSAGE_EVENTS_PREFIX}{ref}"}


def template_key(template_id: str, version: int) -> dict[str, str]:
    return {PK: template_partition(template_id), SK: f"{TEMPLATE_VERSION_PREFIX}{version:06d}"}


def template_head_key(template_id: str) -> dict[str, str]:
    return {PK: template_partition(template_id), SK: METADATA}


def upload_key(upload_id: str) -> dict[str, str]:
    return {PK: f"UPLOAD#{upload_id}", SK: METADATA}


def attachment_key(attachment_id: str) -> dict[str, str]:
    return {PK: f"ATTACHMENT#{attachment_id}", SK: METADATA}


def suppression_key(tenant_id: str, email: str) -> dict[str, str]:
    return {PK: suppression_partition(tenant_id), SK: f"{SUPPRESSED_EMAIL_PREFIX}{email}"}


def api_key_key(key_hash: str) -> dict[str, str]:
    return {PK: f"APIKEY#{key_hash}", SK: METADATA}


def api_key_hash(key: dict[str, str]) -> str:
    """The key hash an API key item's key names (the inverse of ``api_key_key``)."""
    return str(key[PK]).split("#", 1)[1]


def tenant_key(tenant_id: str) -> dict[str, str]:
    return {PK: f"TENANT#{tenant_id}", SK: METADATA}


# Index entries: where an item sits in a sparse index (``Index.entry``), and the partitions read.

ACTIVE_CAMPAIGNS = "ACTIVE"  # the ``active`` index's one partition


def active_entry(look_at: str, tx_id: str) -> dict[str, str]:
    """A transaction's place in the ``active`` index: due for the controller at ``look_at`` (ISO time)."""
    return ACTIVE_INDEX.entry(ACTIVE_CAMPAIGNS, f"{look_at}#{tx_id}")


LOOK_NOW = "0"  # an ``active_entry`` time that sorts before every ISO time: due at once, whatever the clock


def active_due_upto(now: str) -> str:
    """The ``active`` sort key bound that takes every campaign due at ``now`` (ids sort below "~")."""
    return f"{now}#~"


# ``due`` index partitions: what is due, read with due_at <= now.
DUE_BATCHES = "BATCH"  # scheduled (and released, not yet dispatched) batches by send time
DUE_CALLBACKS = "CALLBACK"  # campaign callbacks by next attempt
DUE_MESSAGE_EVENTS = "MSGEVENTS"  # message-event batches by next attempt: the callbacks' pass never reads them
DUE_ERASURES = "ERASURE"  # erasure jobs by next step (core/adapters/privacy.py)


def due_entry(kind: str, at: str) -> dict[str, str]:
    """An item's place in the ``due`` index: partition ``kind`` (``DUE_*``), due at ``at`` (ISO time)."""
    return DUE_INDEX.entry(kind, at)


def tenant_campaigns(tenant_id: str) -> str:
    """The ``tenant`` index partition listing a tenant's campaigns (newest first)."""
    return f"TENANT#{tenant_id}#CAMPAIGNS"


def tenant_templates(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}#TEMPLATES"


def tenant_api_keys(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}#KEYS"


def campaign_listing(tenant_id: str, created: str, tx_id: str) -> dict[str, str]:
    return TENANT_INDEX.entry(tenant_campaigns(tenant_id), f"{created}#{tx_id}")


def template_listing(tenant_id: str, template_id: str) -> dict[str, str]:
    return TENANT_INDEX.entry(tenant_templates(tenant_id), template_id)


def api_key_listing(tenant_id: str, key_id: str) -> dict[str, str]:
    return TENANT_INDEX.entry(tenant_api_keys(tenant_id), key_id)


def tenant_erasures(tenant_id: str) -> str:
    """The ``tenant`` index partition listing a tenant's erasure jobs (newest first)."""
    return f"TENANT#{tenant_id}#ERASURES"


def erasure_listing(tenant_id: str, requested_at: str, erasure_id: str) -> dict[str, str]:
    return TENANT_INDEX.entry(tenant_erasures(tenant_id), f"{requested_at}#{erasure_id}")


RETENTION_SETTINGS = "RETENTION"  # the ``tenant`` index partition listing tenants with their own retention


def retention_listing(tenant_id: str) -> dict[str, str]:
    return TENANT_INDEX.entry(RETENTION_SETTINGS, tenant_id)


# the powertools idempotency records of campaign submission (handlers/routes/campaigns.py): one partition
SUBMIT_IDEMPOTENCY_PARTITION = "IDEMPOTENCY#campaigns"


def lease_key(region: str) -> dict[str, str]:
    return {PK: f"LEASE#{region}", SK: "CONTROLLER"}


def send_evidence_key(region: str) -> dict[str, str]:
    """How far a region's event pipeline has recorded SES Send events (see core/services/sending.py)."""
    return {PK: f"EVIDENCE#{region}", SK: "SEND"}


def rate_key(tenant_or_platform: str) -> dict[str, str]:
    return {PK: f"RATE#{tenant_or_platform}", SK: "SES"}


# --- privacy: retention, erasure, audit (core/services/privacy.py, core/services/audit.py) ----


def suppression_hash_key(tenant_id: str, digest: str) -> dict[str, str]:
    """A suppression kept as a keyed hash (HMAC) of the address: an erased person stays unmailable."""
    return {PK: suppression_partition(tenant_id), SK: f"{SUPPRESSED_HASH_PREFIX}{digest}"}


def retention_key(tenant_id: str) -> dict[str, str]:
    return {PK: f"TENANT#{tenant_id}", SK: "RETENTION"}


def compliance_key(tenant_id: str) -> dict[str, str]:
    """The tenant's sender identity for the CAN-SPAM footer (postal address, sender name)."""
    return {PK: f"TENANT#{tenant_id}", SK: "COMPLIANCE"}


def erasure_key(erasure_id: str) -> dict[str, str]:
    return {PK: f"ERASURE#{erasure_id}", SK: "METADATA"}


def audit_key(tenant_id: str, at: str, entry_id: str) -> dict[str, str]:
    """One audit entry; the partition is the tenant's log, newest last (ISO time sorts)."""
    return {PK: f"AUDIT#{tenant_id}", SK: f"{at}#{entry_id}"}


@dataclass(frozen=True)
class Retention:
    """How long each kind of data lives, in days (``expiration`` TTL, S3 lifecycle, analytics).

    ``None`` defaults are the platform's; a tenant may shorten each within its bounds. Campaign
    summaries (transaction items) and suppressions are not listed: they outlive message detail.
    """

    kind: str
    default_days: int
    min_days: int
    max_days: int
    why: str


RETENTION: tuple[Retention, ...] = (
    Retention("messages", 90, 7, 400, "message items: address, placeholder data, status and SES events (TTL)"),
    Retention("rejections", 30, 1, 400, "refused CSV rows with their address (TTL)"),
    Retention("uploads", 30, 1, 30, "recipient CSVs as uploaded (S3 lifecycle, by object tag)"),
    Retention("batches", 90, 1, 90, "per-batch CSV files (S3 lifecycle, by object tag)"),
    Retention("analytics", 400, 7, 400, "engagement events in the analytics index (ISM + a daily purge)"),
    Retention("audit", 400, 90, 2555, "the tenant's audit log (TTL)"),
)
RETENTION_BY_KIND = {r.kind: r for r in RETENTION}
# S3 lifecycle rules expire objects by this tag; the value is one of RETENTION_CLASSES (days).
RETENTION_TAG = "retention-days"
RETENTION_CLASSES: tuple[int, ...] = (1, 7, 14, 30, 60, 90)
ANALYTICS_RETENTION_DAYS = 400  # the ISM policy's ceiling; tenants purge sooner (privacy pass)
NONCURRENT_VERSION_DAYS = 7  # an overwritten or deleted object version (an erasure's rewrite) lives this long


@dataclass(frozen=True)
class LifecycleRule:
    """One S3 lifecycle rule, in neutral form: infra and the embedded stack render it."""

    id: str
    expire_days: int | None = None  # current versions
    tag: tuple[str, str] | None = None  # only objects carrying this tag
    noncurrent_days: int | None = None
    abort_multipart_days: int | None = None


def lifecycle_rules(bucket: Bucket) -> tuple[LifecycleRule, ...]:
    """A bucket's retention: the platform ceiling (``expire_days``) for every object, and one rule
    per retention class shorter than it, for objects tagged ``retention-days=<class>`` (a
    tenant's shorter setting; S3 applies the earliest expiration that matches)."""
    rules = [LifecycleRule("abort-multipart", abort_multipart_days=2),
             LifecycleRule("old-versions", noncurrent_days=NONCURRENT_VERSION_DAYS)]
    if bucket.expire_days:
        rules.append(LifecycleRule("expire", expire_days=bucket.expire_days))
        rules += [LifecycleRule(f"retention-{days}d", expire_days=days, tag=(RETENTION_TAG, str(days)))
                  for days in RETENTION_CLASSES if days < bucket.expire_days]
    return tuple(rules)


ACTIVE_REGION_KEY = {PK: "PLATFORM", SK: "ACTIVE_REGION"}
# an SRE's hold on automatic failover (runbooks/failover.py --hold-automation; controller/failover.py reads it)
FAILOVER_HOLD_KEY = {PK: "PLATFORM", SK: "FAILOVER_HOLD"}
SENDING_SWITCH_KEY = {PK: "PLATFORM", SK: "SENDING"}


def sending_probe_key(scope: str) -> dict[str, str]:
    """When the next probe send may lift an automatic hold of ``scope`` (platform, tenant)."""
    return {PK: SENDING_SWITCH_KEY[PK], SK: f"SENDING_PROBE#{scope}"}


PLATFORM_PARTITION = ACTIVE_REGION_KEY[PK]  # the platform-wide items' partition
FAILOVER_DECISION_PREFIX = "FAILOVER#"


def failover_decision_key(watched: str, epoch: int) -> dict[str, str]:
    """A failover decider's durable decision record for ``watched`` at lease ``epoch`` (controller/failover.py)."""
    return {PK: PLATFORM_PARTITION, SK: f"{FAILOVER_DECISION_PREFIX}{watched}#{epoch:012d}"}


def replication_probe_key(source: str) -> dict[str, str]:
    """A probe written in ``source`` and timed arriving in another region (runbooks/regions.py)."""
    return {PK: PLATFORM_PARTITION, SK: f"REPLICATION_PROBE#{source}"}


# --- S3 --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    purpose: str
    why: str
    expire_days: int | None = None
    cors_upload: bool = False
    replicated: bool = True  # to the other region's bucket of the same purpose


BUCKETS: tuple[Bucket, ...] = (
    Bucket("templates", "Jinja2 template sources, one object per version", cors_upload=True),
    Bucket("uploads", "Recipient CSVs uploaded by Message Centre", expire_days=30, cors_upload=True),
    Bucket("batches", "Per-batch CSV files split from an upload", expire_days=90),
    # each region's own SES events: a replica would be recorded again by the other region. The events
    # Lambda deletes an object once recorded; what is left is kept as long as the events queue's DLQ
    # keeps its notification (14 days), so a redriven notification still finds its object.
    Bucket("ses-events", "SES events as Firehose delivers them, one object per buffering interval",
           expire_days=14, replicated=False),
)

REPLICATED_BUCKETS: tuple[Bucket, ...] = tuple(b for b in BUCKETS if b.replicated)


@dataclass(frozen=True)
class EventStream:
    """SES's configuration-set event destination: an Amazon Data Firehose stream that writes the
    events of each buffering interval as one object to ``bucket`` (under ``prefix``), whose
    ObjectCreated notifications go to ``queue``. Per event: Firehose ingestion ($0.029 per GB in
    5 KB steps) instead of an SNS notification ($0.50 per million) and an SQS request; per object:
    one S3 PUT, one notification, one Lambda invocation (core/services/event_sources.py)."""

    purpose: str
    bucket: str
    queue: str
    prefix: str = "events/"
    # where Firehose puts what it could not deliver as asked (outside ``prefix``: not notified)
    error_prefix: str = "errors/"
    buffer_seconds: int = 60  # how late an event can be, at most, before its object lands
    buffer_mb: int = 5

    def name(self, prefix: str) -> str:
        return f"{prefix}-{self.purpose}"


SES_EVENTS_STREAM = EventStream("ses-events", bucket="ses-events", queue="ses-events")

# --- SQS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    purpose: str
    why: str
    fifo: bool = False
    visibility_timeout: int = 60
    max_receive_count: int = 5
    dlq: bool = True
    # how its Lambda consumes it (the event source mapping, and local/workers.py the same way):
    # up to ``batch_size`` records per invocation, gathered for up to ``batching_window`` seconds.
    # Per-invocation writes (count additions, the send-evidence mark) are shared by the batch.
    batch_size: int = 10
    batching_window: int = 0

    @property
    def longest_hold_seconds(self) -> int:
        """How long one delivery attempt can keep a record out of sight: gathered for the
        batching window, then held until the visibility timeout gives it back (a consumer that
        failed it or crashed)."""
        return self.visibility_timeout + self.batching_window

    def name(self, prefix: str) -> str:
        return f"{prefix}-{self.purpose}" + (".fifo" if self.fifo else "")

    def dlq_name(self, prefix: str) -> str:
        return f"{prefix}-{self.purpose}-dlq" + (".fifo" if self.fifo else "")


SEND_QUEUE = Queue(
    "send",
    "One message per batch to send; FIFO deduplication makes a re-dispatch within 5 min a no-op",
    fifo=True,
    visibility_timeout=900,
    batch_size=1,
)
# A record names one Firehose object: up to SES_EVENTS_STREAM.buffer_mb of events (about 4,500 at
# 5 MB). Two a batch, so a backlog of full objects still fits the function's timeout and memory
# twice over (tests/unit/test_settings.py checks the worst case against the measured cost per event).
EVENTS_QUEUE = Queue("ses-events", "S3 notifications of the SES events objects Firehose writes", visibility_timeout=60,
                     batch_size=2)
QUEUES: tuple[Queue, ...] = (SEND_QUEUE, EVENTS_QUEUE)
# The Send-evidence window must outlast the longest an SES Send event can stay out of sight while
# newer events are recorded (they move the pipeline's mark past an in-doubt chunk): a record whose
# write fails (throttling) or whose consumer crashed comes back after the visibility timeout, up
# to ``max_receive_count`` times before the dead-letter queue (whose alarm is the guard beyond
# that). Each attempt's processing ends within the visibility timeout (the function timeout may
# not exceed it); before that, Firehose holds an event up to its buffering interval, and the
# margin covers S3's notification. config/settings.py refuses a shorter window where deployed.
SEND_EVIDENCE_WINDOW_FLOOR = (EVENTS_QUEUE.max_receive_count * EVENTS_QUEUE.longest_hold_seconds
                              + SES_EVENTS_STREAM.buffer_seconds + 10)


# SES event types the configuration set publishes. SEND is required: it is the evidence that
# resolves a crash between the SES call and the send log (see core.services.sending).
SES_EVENT_TYPES = (
    "SEND",
    "REJECT",
    "BOUNCE",
    "COMPLAINT",
    "DELIVERY",
    "OPEN",
    "CLICK",
    "RENDERING_FAILURE",
    "DELIVERY_DELAY",
)

SECRETS = ("webhook-signing",)  # per-tenant secrets live under <prefix>/webhook-signing/<tenant>
