"""The one description of the platform's storage and messaging resources.

The embedded stack (``local.bootstrap``) creates exactly these on the moto server and the Pulumi
program (``infra/``) builds exactly these on AWS, so the two cannot drift. Names come from
``config.settings.Settings`` helpers; this module only says what exists and its shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- DynamoDB: one table, keys as the owner gave them --------------------------------------

PK, SK = "PK", "SK"
TTL_ATTRIBUTE = "expiration"  # shared with powertools idempotency records


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: str
    range_key: str
    why: str


INDEXES: tuple[Index, ...] = (
    Index(
        "active",
        "active_pk",
        "active_sk",
        "Sparse: transactions that still need controller attention. A pass reads only these, "
        "so its cost grows with active campaigns, never with history.",
    ),
    Index(
        "due",
        "due_pk",
        "due_at",
        "Sparse: work due at a time (scheduled batches, callback retries), read with due_at <= now.",
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

# Key builders: the only place key strings are spelled.


def transaction_key(tx_id: str) -> dict[str, str]:
    return {PK: f"TRANSACTION#{tx_id}", SK: "METADATA"}


def batch_key(tx_id: str, batch_id: str) -> dict[str, str]:
    return {PK: f"TRANSACTION#{tx_id}", SK: f"BATCH#{batch_id}"}


def message_key(batch_id: str, message_id: str) -> dict[str, str]:
    return {PK: f"BATCH#{batch_id}", SK: f"MESSAGE#{message_id}"}


def send_log_key(batch_id: str, chunk: int, attempt: int) -> dict[str, str]:
    return {PK: f"BATCH#{batch_id}", SK: f"SENDLOG#{chunk:05d}#{attempt:03d}"}


def rejection_key(tx_id: str, line: int) -> dict[str, str]:
    return {PK: f"TRANSACTION#{tx_id}", SK: f"REJECTION#{line:010d}"}


def callback_key(tx_id: str, seq: int) -> dict[str, str]:
    return {PK: f"TRANSACTION#{tx_id}", SK: f"CALLBACK#{seq:06d}"}


def template_key(template_id: str, version: int) -> dict[str, str]:
    return {PK: f"TEMPLATE#{template_id}", SK: f"VERSION#{version:06d}"}


def template_head_key(template_id: str) -> dict[str, str]:
    return {PK: f"TEMPLATE#{template_id}", SK: "METADATA"}


def upload_key(upload_id: str) -> dict[str, str]:
    return {PK: f"UPLOAD#{upload_id}", SK: "METADATA"}


def suppression_key(tenant_id: str, email: str) -> dict[str, str]:
    return {PK: f"SUPPRESSION#{tenant_id}", SK: f"EMAIL#{email}"}


def api_key_key(key_hash: str) -> dict[str, str]:
    return {PK: f"APIKEY#{key_hash}", SK: "METADATA"}


def tenant_key(tenant_id: str) -> dict[str, str]:
    return {PK: f"TENANT#{tenant_id}", SK: "METADATA"}


def lease_key(region: str) -> dict[str, str]:
    return {PK: f"LEASE#{region}", SK: "CONTROLLER"}


def send_evidence_key(region: str) -> dict[str, str]:
    """How far a region's event pipeline has recorded SES Send events (see core/services/sending.py)."""
    return {PK: f"EVIDENCE#{region}", SK: "SEND"}


def rate_key(tenant_or_platform: str) -> dict[str, str]:
    return {PK: f"RATE#{tenant_or_platform}", SK: "SES"}


ACTIVE_REGION_KEY = {PK: "PLATFORM", SK: "ACTIVE_REGION"}
SENDING_SWITCH_KEY = {PK: "PLATFORM", SK: "SENDING"}

# --- S3 --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    purpose: str
    why: str
    expire_days: int | None = None
    cors_upload: bool = False


BUCKETS: tuple[Bucket, ...] = (
    Bucket("templates", "Jinja2 template sources, one object per version", cors_upload=True),
    Bucket("uploads", "Recipient CSVs uploaded by Message Centre", expire_days=30, cors_upload=True),
    Bucket("batches", "Per-batch CSV files split from an upload", expire_days=90),
)

# --- SQS and SNS -----------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    purpose: str
    why: str
    fifo: bool = False
    visibility_timeout: int = 60
    max_receive_count: int = 5
    dlq: bool = True

    def name(self, prefix: str) -> str:
        return f"{prefix}-{self.purpose}" + (".fifo" if self.fifo else "")

    def dlq_name(self, prefix: str) -> str:
        return f"{prefix}-{self.purpose}-dlq" + (".fifo" if self.fifo else "")


SEND_QUEUE = Queue(
    "send",
    "One message per batch to send; FIFO deduplication makes a re-dispatch within 5 min a no-op",
    fifo=True,
    visibility_timeout=900,
)
EVENTS_QUEUE = Queue("ses-events", "SES notifications delivered by the SNS topic", visibility_timeout=60)
QUEUES: tuple[Queue, ...] = (SEND_QUEUE, EVENTS_QUEUE)


@dataclass(frozen=True)
class Topic:
    purpose: str
    why: str
    subscribers: tuple[str, ...] = field(default_factory=tuple)  # queue purposes


SES_EVENTS_TOPIC = Topic("ses-events", "SES configuration-set event destination", ("ses-events",))
TOPICS: tuple[Topic, ...] = (SES_EVENTS_TOPIC,)

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
