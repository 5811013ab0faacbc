"""Composition root: one ``Deps`` per process, built from settings with real adapters.

Lambdas build it once at module level (cold start); the controller and the embedded stack
build it at start; tests build it against the moto server and override what they fake.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from config.settings import Settings, get_settings
from core import schema
from core.adapters.aws import CallCounter, client
from core.adapters.dynamodb import DynamoTable
from core.adapters.ratelimit import SharedRateLimiter
from core.adapters.s3 import S3BlobStore
from core.adapters.secrets import SecretsManagerStore
from core.adapters.ses import SesMailer
from core.adapters.sqs import SqsQueue
from core.adapters.store import DynamoStore
from core.adapters.webhooks import GuardedHttpClient
from core.services.events import SendEvidenceMark
from core.services.ports import SystemClock


@dataclass
class Deps:
    settings: Settings
    store: DynamoStore
    blobs: S3BlobStore
    send_queue: SqsQueue
    events_queue: SqsQueue
    mailer: SesMailer
    secrets: SecretsManagerStore
    limiter: SharedRateLimiter
    http: GuardedHttpClient
    clock: Any
    evidence: SendEvidenceMark  # this region's Send-event progress (written by the events Lambda)
    counter: CallCounter | None = None
    analytics: Any = None
    clients: dict[str, Any] = field(default_factory=dict)
    # Objects an entrypoint builds once per dependency set (the sender, the authenticator, the
    # idempotent submit): they live and die with these dependencies, never in a global keyed by id().
    memo: dict[str, Any] = field(default_factory=dict)


def bootstrap(settings: Settings | None = None, *, clock: Any = None, counter: CallCounter | None = None,
              region: str | None = None) -> Deps:
    settings = settings or get_settings()
    clock = clock or SystemClock()
    clients = {name: client(settings, name, region) for name in ("dynamodb", "dynamodbstreams", "s3", "sqs", "sesv2", "secretsmanager")}
    if counter is not None:
        for c in clients.values():
            counter.attach(c)
    table = DynamoTable(clients["dynamodb"], settings.table_name)
    store = DynamoStore(table)
    prefix = settings.name_prefix
    from core.adapters.analytics import OpenSearchAnalytics, SqliteAnalytics

    analytics = (OpenSearchAnalytics(prefix=prefix, endpoint=settings.opensearch_endpoint, region=settings.region)
                 if settings.opensearch_endpoint else SqliteAnalytics(settings.analytics_db_path))
    return Deps(
        settings=settings,
        store=store,
        blobs=S3BlobStore(clients["s3"]),
        send_queue=SqsQueue(clients["sqs"], schema.SEND_QUEUE.name(prefix)),
        events_queue=SqsQueue(clients["sqs"], schema.EVENTS_QUEUE.name(prefix)),
        mailer=SesMailer(clients["sesv2"], settings.ses_configuration_set),
        secrets=SecretsManagerStore(clients["secretsmanager"], prefix),
        limiter=SharedRateLimiter(table, schema.rate_key("platform"), settings.ses_max_send_rate, clock),
        http=GuardedHttpClient(require_https=settings.callback_require_https,
                               allow_loopback=settings.callback_allow_loopback),
        clock=clock,
        evidence=SendEvidenceMark(store, clock, region or settings.region),
        counter=counter,
        analytics=analytics,
        clients=clients,
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
