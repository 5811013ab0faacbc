"""Composition root: one ``Deps`` per process, built from settings with real adapters.

Lambdas build it once at module level (cold start); the controller and the embedded stack
build it at start; tests build it against the moto server and override what they fake.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from config.settings import Settings, SettingsError, get_settings
from core import log_privacy, schema
from core.adapters.analytics import OpenSearchAnalytics, SqliteAnalytics
from core.adapters.apigateway import UsagePlanKeys
from core.adapters.aws import CallCounter, client
from core.adapters.dynamodb import DynamoTable
from core.adapters.privacy import (
    ErasureRepository,
    RetentionRepository,
    SubjectFinder,
    SuppressionHashes,
    VersionedBlobs,
)
from core.adapters.ratelimit import SharedRateLimiter
from core.adapters.s3 import S3BlobStore
from core.adapters.secrets import SecretsManagerStore
from core.adapters.ses import SesMailer
from core.adapters.sqs import SqsQueue
from core.adapters.store import DynamoStore
from core.adapters.webhooks import GuardedHttpClient
from core.domain.privacy import AddressHasher
from core.services.events import SendEvidenceMark
from core.services.ports import CampaignStore, Clock, SystemClock
from core.services.privacy import ErasurePorts, Region

if TYPE_CHECKING:  # mypy checks here that the store implements every aggregate's port (core/services/ports.py)
    from core.adapters import repositories as repos
    from core.services import ports

    _the_store_is_the_services_port: type[CampaignStore] = DynamoStore
    # and that each aggregate's repository (core/adapters/repositories/) implements its own port
    _transactions: type[ports.TransactionRepository] = repos.DynamoTransactions
    _batches: type[ports.BatchRepository] = repos.DynamoBatches
    _messages: type[ports.MessageRepository] = repos.DynamoMessages
    _send_log: type[ports.SendLogRepository] = repos.DynamoSendLog
    _callbacks: type[ports.CallbackRepository] = repos.DynamoCallbacks
    _templates: type[ports.TemplateRepository] = repos.DynamoTemplates
    _uploads: type[ports.UploadRepository] = repos.DynamoUploads
    _suppressions: type[ports.SuppressionRepository] = repos.DynamoSuppressions
    _tenants: type[ports.TenantRepository] = repos.DynamoTenants
    _switches: type[ports.SwitchRepository] = repos.DynamoSwitches


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
    clock: Clock
    evidence: SendEvidenceMark  # this region's Send-event progress (written by the events Lambda)
    counter: CallCounter | None = None
    analytics: Any = None
    clients: dict[str, Any] = field(default_factory=dict)
    # analytics stores of other regions by region (an erasure reaches them too): built from
    # PEER_OPENSEARCH_ENDPOINT on AWS, wired to the DR stack's store in the embedded stack
    peer_analytics: dict[str, Any] = field(default_factory=dict)
    # Objects an entrypoint builds once per dependency set (the sender, the authenticator, the
    # idempotent submit): they live and die with these dependencies, never in a global keyed by id().
    memo: dict[str, Any] = field(default_factory=dict)


def bootstrap(settings: Settings | None = None, *, clock: Clock | None = None, counter: CallCounter | None = None,
              region: str | None = None) -> Deps:
    settings = settings or get_settings()
    clock = clock or SystemClock()
    clients = {name: client(settings, name, region) for name in ("dynamodb", "dynamodbstreams", "s3", "sqs", "sesv2", "secretsmanager")}
    if settings.unsubscribe_secret_id:
        settings = settings.model_copy(update={"unsubscribe_secret": read_unsubscribe_secret(
            clients["secretsmanager"], settings.unsubscribe_secret_id)})
    if counter is not None:
        for c in clients.values():
            counter.attach(c)
    table = DynamoTable(clients["dynamodb"], settings.table_name)
    log_privacy.set_key(hmac.new(settings.unsubscribe_secret.encode(), b"log-address-mask", hashlib.sha256).digest())
    store = DynamoStore(table, AddressHasher.from_secret(settings.unsubscribe_secret))
    prefix = settings.name_prefix
    analytics = (OpenSearchAnalytics(prefix=prefix, endpoint=settings.opensearch_endpoint, region=settings.region)
                 if settings.opensearch_endpoint else SqliteAnalytics(settings.analytics_db_path))
    return Deps(
        settings=settings,
        store=store,
        blobs=S3BlobStore(clients["s3"]),
        send_queue=SqsQueue(clients["sqs"], schema.SEND_QUEUE.name(prefix)),
        events_queue=SqsQueue(clients["sqs"], schema.EVENTS_QUEUE.name(prefix)),
        mailer=SesMailer(clients["sesv2"], settings.ses_configuration_set),
        secrets=_webhook_secrets(settings, clients["secretsmanager"], region),
        limiter=SharedRateLimiter(table, schema.rate_key("platform"), settings.ses_max_send_rate, clock),
        http=GuardedHttpClient(require_https=settings.callback_require_https,
                               allow_loopback=settings.callback_allow_loopback),
        clock=clock,
        evidence=SendEvidenceMark(store, clock, region or settings.region),
        counter=counter,
        analytics=analytics,
        clients=clients,
        peer_analytics=_peer_analytics(settings, region),
    )


def _peer_analytics(settings: Settings, region: str | None) -> dict[str, Any]:
    """The other region's OpenSearch domain, when configured (erasures and the retention purge reach it too)."""
    endpoint = getattr(settings, "peer_opensearch_endpoint", None)
    if not endpoint:
        return {}
    here = region or settings.region
    peer = settings.dr_region if here == settings.region else settings.region
    return {peer: OpenSearchAnalytics(prefix=settings.name_prefix, endpoint=endpoint, region=peer)}


def read_unsubscribe_secret(secretsmanager: Any, secret_id: str) -> str:
    """The unsubscribe signing key (the secret's current value, surrounding whitespace removed).

    Raises ``SettingsError`` (one line naming EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID) when the secret
    is missing, has no value yet or holds a key too short to sign with; other AWS errors (access
    denied, throttling) propagate as they are."""
    name = "EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID"
    try:
        value = secretsmanager.get_secret_value(SecretId=secret_id).get("SecretString") or ""
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            raise SettingsError(f"invalid setting {name}: secret {secret_id!r} does not exist or has no value yet "
                                f"(aws secretsmanager put-secret-value --secret-id {secret_id} …)") from None
        raise
    value = value.strip()
    if len(value) < 16:
        raise SettingsError(f"invalid setting {name}: secret {secret_id!r} holds {len(value)} characters; "
                            f"the unsubscribe signing key needs at least 16")
    return value


def _webhook_secrets(settings: Settings, secretsmanager: Any, region: str | None) -> SecretsManagerStore:
    """Tenants' webhook secrets, created under this region's key with a replica in the other region.

    The keys name settings.region's key and its peer; a process bootstrapped for another region
    (runbooks, the embedded DR stack) creates secrets without them rather than with a foreign key."""
    home = region is None or region == settings.region
    return SecretsManagerStore(secretsmanager, settings.name_prefix,
                               kms_key_id=settings.kms_key_arn if home else None,
                               replica_region=settings.dr_region if home else None,
                               replica_kms_key_id=settings.peer_kms_key_arn if home else None)


def api_key_gateway(settings: Settings) -> UsagePlanKeys | None:
    """Every region's API Gateway usage plan (``usage_plan_ids``), or None where the edge requires
    no gateway keys. Wherever it is configured, every tool that creates or revokes a tenant key (the
    admin CLI, the rotate_keys runbook) must pass it to ``auth.create_key``/``revoke_key``: API
    Gateway answers 403 to a key that is not in the plan, and keeps accepting one left enabled."""
    if not settings.usage_plan_ids:
        return None
    return UsagePlanKeys({region: (client(settings, "apigateway", region), plan)
                          for region, plan in settings.usage_plan_ids.items()})


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def privacy_ports(deps: Deps, store: DynamoStore | None = None, *, peer_table: bool = True) -> ErasurePorts:
    """What the privacy services need (core/services/privacy.py): the home region first, then the
    other region's buckets, analytics store and table copy. ``store`` is the controller's fenced
    store when it runs erasures."""
    store = store or deps.store
    settings = deps.settings
    home = deps.evidence.region if deps.evidence is not None else settings.region
    peer = settings.dr_region if home == settings.region else settings.region
    regions = [Region(home, VersionedBlobs(deps.clients["s3"], home), deps.analytics)]
    if peer_table:
        peer_clients = _peer_clients(deps, peer)
        regions.append(Region(peer, VersionedBlobs(peer_clients["s3"], peer), deps.peer_analytics.get(peer),
                              DynamoTable(peer_clients["dynamodb"], settings.table_name)))
    return ErasurePorts(jobs=ErasureRepository(store.table), finder=SubjectFinder(store.table),
                        hashes=SuppressionHashes(store.table), store=store, hasher=store.address_hasher,
                        settings=settings, clock=deps.clock, regions=regions,
                        retention=RetentionRepository(store.table))


def _peer_clients(deps: Deps, peer: str) -> dict[str, Any]:
    """The other region's S3 and DynamoDB clients, built once per dependency set."""
    if "peer_clients" not in deps.memo:
        built = {name: client(deps.settings, name, peer) for name in ("s3", "dynamodb")}
        if deps.counter is not None:
            for c in built.values():
                deps.counter.attach(c)
        deps.memo["peer_clients"] = built
    return dict(deps.memo["peer_clients"])


def peer_table(deps: Deps, peer: str) -> DynamoTable:
    """The other region's replica of the table (read only: GetItem on ``peer_table``, infra/policies.py)."""
    return DynamoTable(_peer_clients(deps, peer)["dynamodb"], deps.settings.table_name)
