"""The Pulumi program: the same regional components in the primary and DR regions.

Every resource gets an explicit provider (one per region; Route 53 and other global services use
the primary's), and the providers carry the default tags. Default providers are never used:
``tests/infra`` and the policy pack (``infra/policy``) both check it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from core import schema
from infra.components.compute import Functions, FunctionsArgs
from infra.components.controller import ControllerArgs, ControllerService
from infra.components.data import DataStore, DataStoreArgs
from infra.components.edge import Api, ApiArgs, FailoverDns, FailoverDnsArgs
from infra.components.events import SesEventStream, SesEventStreamArgs
from infra.components.messaging import Messaging, MessagingArgs
from infra.components.operations import (
    Monitoring,
    MonitoringArgs,
    Search,
    SearchArgs,
    Secrets,
    SecretsArgs,
)
from infra.components.security import Keys, KeysArgs
from infra.components.storage import (
    Buckets,
    BucketsArgs,
    Replication,
    ReplicationArgs,
    bucket_name,
    bucket_name_problems,
    replication_role_name,
)

# Pulumi runs `main: infra/` with infra/ as the working directory; paths in config are relative to
# the repository root, so resolve them from this file, never from the cwd.
REPO_ROOT = Path(__file__).resolve().parent.parent


def floating_image(ref: str) -> bool:
    """An image reference without a tag, or tagged ``latest``: not one build."""
    if "@sha256:" in ref:
        return False
    name = ref.rsplit("/", 1)[-1]
    return ":" not in name or name.rsplit(":", 1)[1] == "latest"


@dataclass
class StackConfig:
    prefix: str
    primary_region: str
    dr_region: str
    ses_domain: str
    controller_image: str | dict[str, str]  # one image, or region → image (each region pulls its own registry)
    artifact: str = "dist/lambda.zip"
    environment: str = "prod"  # EMAILPLATFORM_ENVIRONMENT and the `stack` tag
    ses_max_send_rate: float = 14.0
    api_rate_limit: float = 50.0
    api_burst_limit: int = 100
    waf_rate_limit: int = 20_000  # per IP per 5 minutes
    allowed_origins: list[str] = field(default_factory=lambda: ["https://messagecentre.example.com"])
    hosted_zone_id: str | None = None
    record_name: str | None = None
    # region → {domain, certificate_arn, truststore_uri, failover_certificate_arn, public_certificate_arn}
    api_domain: dict[str, Any] = field(default_factory=dict)
    # with mTLS: the name unsubscribe links use, a failover record to each region's public (no-mTLS)
    # API, whose certificate is apiDomain.<region>.public_certificate_arn
    public_record_name: str | None = None
    network: dict[str, Any] = field(default_factory=dict)  # region → {subnet_ids, security_group_ids}
    alarm_email: str | None = None
    # the ADOT collector sidecar's image (one, or region → image); default: public ECR (needs egress)
    collector_image: str | dict[str, str] | None = None
    # reserve the sender's concurrency (ses_max_send_rate / 10): only once the account's Lambda
    # concurrency quota is above 10 + that (a fresh account has 10, all of it unreservable)
    sender_reserved_concurrency: bool = False
    # automatic failover in the DR region's controller (controller/failover.py; README "Automatic
    # failover on AWS"): off unless the stack turns it on; the rest are Settings' defaults
    failover_automation: bool = False
    failover_grace_seconds: float = 120.0
    failover_quorum: int = 3
    failover_ses_window_seconds: float = 300.0
    failover_check_interval_seconds: float = 5.0
    # CAN-SPAM footer: None leaves it to Settings (required in staging and prod); set only to override
    require_compliance_footer: bool | None = None

    def failover_signals(self) -> list[str]:
        """The signals the DR controller's decider will have (controller/failover.py build_watch)."""
        return ["heartbeat", *(["route53"] if self.hosted_zone_id and self.record_name else []), "api", "ses"]

    def __post_init__(self) -> None:
        """Refuse at preview what S3 would refuse at create time (bucket names ≤ 63 characters)."""
        problems = bucket_name_problems(self.prefix, [b.purpose for b in schema.BUCKETS],
                                        [self.primary_region, self.dr_region])
        if problems:
            raise ValueError(f"emailplatform:prefix {self.prefix!r} is too long for the bucket names: "
                             + "; ".join(problems))
        images = self.controller_image.values() if isinstance(self.controller_image, dict) else [self.controller_image]
        floating = [i for i in images if floating_image(i)]
        if floating:
            raise ValueError(f"emailplatform:controllerImage {floating[0]!r}: pin a version tag or a digest "
                             "(ECS never redeploys a moved `latest`, and DR could run another build)")
        # what the controller would refuse at start (a crash loop on ECS): refuse it at preview
        signals = self.failover_signals()
        if not 2 <= self.failover_quorum <= len(signals):
            raise ValueError(f"emailplatform:failoverQuorum {self.failover_quorum}: must be at least 2 and at most "
                             f"the {len(signals)} signals this stack gives the decider ({', '.join(signals)})")
        if self.failover_grace_seconds <= 0 or self.failover_ses_window_seconds <= 0 \
                or self.failover_check_interval_seconds <= 0:
            raise ValueError("emailplatform:failoverGraceSeconds, failoverSesWindowSeconds and "
                             "failoverCheckIntervalSeconds must be positive")

    @classmethod
    def from_mapping(cls, c: dict[str, Any]) -> StackConfig:
        """From the stack's config keys without the ``emailplatform:`` namespace (as in config/Pulumi.*.yaml)."""
        image = c["controllerImage"]
        if isinstance(image, str) and image.lstrip().startswith("{"):
            image = json.loads(image)

        def obj(key: str, default: Any) -> Any:
            v = c.get(key)
            return json.loads(v) if isinstance(v, str) else (v if v is not None else default)

        def flag(key: str) -> bool | None:
            v = c.get(key)
            return None if v is None or v == "" else str(v).strip().lower() == "true"

        return cls(
            prefix=c["prefix"], primary_region=c["primaryRegion"], dr_region=c["drRegion"], ses_domain=c["sesDomain"],
            controller_image=image, artifact=c.get("artifact") or "dist/lambda.zip",
            environment=c.get("environment") or "prod",
            ses_max_send_rate=float(c.get("sesMaxSendRate") or 14), api_rate_limit=float(c.get("apiRateLimit") or 50),
            api_burst_limit=int(c.get("apiBurstLimit") or 100), waf_rate_limit=int(c.get("wafRateLimit") or 20_000),
            allowed_origins=obj("allowedOrigins", ["https://messagecentre.example.com"]),
            hosted_zone_id=c.get("hostedZoneId"), record_name=c.get("recordName"),
            public_record_name=c.get("publicRecordName"),
            sender_reserved_concurrency=str(c.get("senderReservedConcurrency") or "false").lower() == "true",
            api_domain=obj("apiDomain", {}), network=obj("network", {}), alarm_email=c.get("alarmEmail"),
            collector_image=obj("collectorImage", None) if str(c.get("collectorImage") or "").lstrip().startswith("{")
            else c.get("collectorImage"),
            failover_automation=bool(flag("failoverAutomation")),
            failover_grace_seconds=float(c.get("failoverGraceSeconds") or 120),
            failover_quorum=int(c.get("failoverQuorum") or 3),
            failover_ses_window_seconds=float(c.get("failoverSesWindowSeconds") or 300),
            failover_check_interval_seconds=float(c.get("failoverCheckIntervalSeconds") or 5),
            require_compliance_footer=flag("requireComplianceFooter"),
        )

    @classmethod
    def from_pulumi(cls) -> StackConfig:
        c = pulumi.Config("emailplatform")
        keys = ["prefix", "primaryRegion", "drRegion", "sesDomain", "controllerImage", "artifact", "environment",
                "sesMaxSendRate", "apiRateLimit", "apiBurstLimit", "wafRateLimit", "allowedOrigins", "hostedZoneId",
                "recordName", "publicRecordName", "apiDomain", "network", "alarmEmail", "collectorImage",
                "senderReservedConcurrency", "failoverAutomation", "failoverGraceSeconds", "failoverQuorum",
                "failoverSesWindowSeconds", "failoverCheckIntervalSeconds", "requireComplianceFooter"]
        return cls.from_mapping({k: c.get(k) for k in keys})

    def image_for(self, region: str) -> str:
        if isinstance(self.controller_image, dict):
            return self.controller_image[region]
        return self.controller_image

    def collector_image_for(self, region: str) -> str | None:
        if isinstance(self.collector_image, dict):
            return self.collector_image[region]
        return self.collector_image

    def artifact_path(self) -> str:
        p = Path(self.artifact)
        return str(p if p.is_absolute() else REPO_ROOT / p)


def metrics_namespace(prefix: str) -> str:
    """The CloudWatch namespace of the platform's metrics: core/observability.emf_namespace (infra
    imports no runtime code; tests/infra checks the two agree)."""
    return f"EmailPlatform/{prefix}"


def provider(name: str, cfg: StackConfig, region: str, role: str) -> aws.Provider:
    return aws.Provider(name, region=region, default_tags={"tags": {
        "project": cfg.prefix, "stack": cfg.environment, "region-role": role}})


def public_base_url(cfg: StackConfig, region: str) -> str | None:
    """What links in emails (unsubscribe) point at: a name a recipient's browser (no API key, no
    client certificate) reaches in whichever region is active. With mTLS that is the public
    failover name (``publicRecordName``), else the failover name, else the regional domain; None
    when there is none (mTLS without a public name: the links would need a client certificate)."""
    if cfg.api_domain.get(region, {}).get("truststore_uri"):
        return f"https://{cfg.public_record_name}" if cfg.hosted_zone_id and cfg.public_record_name else None
    if cfg.hosted_zone_id and cfg.record_name:
        return f"https://{cfg.record_name}"
    domain = cfg.api_domain.get(region, {}).get("domain")
    return f"https://{domain}" if domain else None


def regional(name: str, cfg: StackConfig, region: str, prov: Any, key_arn: Any, peer_key_arn: Any,
             table: DataStore, secrets: Secrets, account_id: pulumi.Output[str], dns_provider: Any,
             active: bool) -> dict[str, Any]:
    buckets = Buckets(f"{name}-buckets", BucketsArgs(cfg.prefix, region, key_arn, prov, cfg.allowed_origins,
                                                     account_id))
    messaging = Messaging(f"{name}-messaging", MessagingArgs(cfg.prefix, key_arn, cfg.prefix, cfg.ses_domain, prov,
                                                             region, cfg.hosted_zone_id, dns_provider))
    spec = schema.SES_EVENTS_STREAM  # SES → Firehose → the events bucket → the events queue
    events = SesEventStream(f"{name}-ses-events", SesEventStreamArgs(
        cfg.prefix, region, account_id, key_arn, buckets.buckets[spec.bucket], messaging.queues[spec.queue],
        messaging.configuration_set, prov, spec, queue_policy_was=f"{name}-messaging-{spec.queue}-from-ses-events"))
    search = Search(f"{name}-search", SearchArgs(cfg.prefix, key_arn, prov, account_id))
    table_arn = table.table.arn if active else table.table.arn.apply(lambda a: a.replace(cfg.primary_region, region))
    stream_arn = table_arn
    peer_region = cfg.dr_region if active else cfg.primary_region
    in_region = pulumi.Output.concat("arn:aws:secretsmanager:", region, ":", account_id, ":secret:", cfg.prefix)
    arns = {"table": table_arn, "table_stream": stream_arn, "key": key_arn, "peer_key": peer_key_arn,
            "secret": pulumi.Output.concat(in_region, "/*"),
            "webhook_secrets": pulumi.Output.concat(in_region, "/webhook-signing/*"),
            # the replica has the primary's ARN with its own region
            "unsubscribe_secret": secrets.unsubscribe.arn.apply(lambda a: a.replace(cfg.primary_region, region)),
            # every identity in this account and region: tenants send from their own domains
            # (`emailplatform senders allow @domain`), which are runtime data, not stack config
            "ses": pulumi.Output.concat("arn:aws:ses:", region, ":", account_id, ":identity/*"),
            "ses_configuration_set": pulumi.Output.concat("arn:aws:ses:", region, ":", account_id,
                                                          ":configuration-set/", cfg.prefix),
            "search": search.domain.arn,
            **{f"bucket:{p}": b.arn for p, b in buckets.buckets.items()},
            **{f"bucketarn:{p}": b.arn for p, b in buckets.buckets.items()},
            # the other region's copies, which an erasure reaches too (names are deterministic)
            "peer_table": table_arn.apply(lambda a: a.replace(f":{region}:", f":{peer_region}:")),
            **{f"peer_bucket:{p.purpose}": account_id.apply(
                lambda acct, p=p: f"arn:aws:s3:::{bucket_name(cfg.prefix, p.purpose, acct, peer_region)}")
               for p in schema.BUCKETS},
            **{f"peer_bucketarn:{p.purpose}": account_id.apply(
                lambda acct, p=p: f"arn:aws:s3:::{bucket_name(cfg.prefix, p.purpose, acct, peer_region)}")
               for p in schema.BUCKETS},
            **{f"queue:{p}": q.arn for p, q in messaging.queues.items()},
            **{f"dlq:{p}": q.arn for p, q in messaging.dlqs.items()}}
    env: dict[str, pulumi.Input[str]] = {
        "EMAILPLATFORM_ENVIRONMENT": cfg.environment, "EMAILPLATFORM_REGION": region,
        "EMAILPLATFORM_DR_REGION": cfg.dr_region if active else cfg.primary_region,
        "EMAILPLATFORM_NAME_PREFIX": cfg.prefix, "EMAILPLATFORM_SES_MAX_SEND_RATE": str(cfg.ses_max_send_rate),
        "EMAILPLATFORM_SES_CONFIGURATION_SET": cfg.prefix,
        "EMAILPLATFORM_DEFAULT_FROM": f"noreply@{cfg.ses_domain}",
        "EMAILPLATFORM_ACCOUNT_ID": account_id,
        "EMAILPLATFORM_OPENSEARCH_ENDPOINT": search.endpoint,
        # the Lambdas' EMF metrics (core/observability.py) land in this namespace, the alarms' one
        "POWERTOOLS_METRICS_NAMESPACE": metrics_namespace(cfg.prefix),
        # the runtime reads the signing key from Secrets Manager by this id (a name works in both regions)
        "EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID": secrets.unsubscribe.name,
        # for secrets the runtime creates (tenant webhook secrets): this region's key and the
        # other region's, for CreateSecret(KmsKeyId=…, AddReplicaRegions=[{Region, KmsKeyId}])
        "EMAILPLATFORM_KMS_KEY_ARN": key_arn, "EMAILPLATFORM_PEER_KMS_KEY_ARN": peer_key_arn,
    }
    if cfg.require_compliance_footer is not None:  # unset: Settings requires it in staging and prod
        env["EMAILPLATFORM_REQUIRE_COMPLIANCE_FOOTER"] = str(cfg.require_compliance_footer).lower()
    base_url = public_base_url(cfg, region)
    if base_url is None and cfg.api_domain.get(region, {}).get("truststore_uri"):
        # every mail carries an unsubscribe link; behind mTLS no recipient could follow it
        raise ValueError(f"{region}: apiDomain has a truststore (mTLS), so unsubscribe links need a public name: "
                         "set publicRecordName (with hostedZoneId) and apiDomain.<region>.public_certificate_arn")
    if base_url:
        env["EMAILPLATFORM_PUBLIC_BASE_URL"] = base_url
    else:
        pulumi.log.warn(f"{region}: no public name for unsubscribe links (apiDomain, or publicRecordName with "
                        "mTLS); EMAILPLATFORM_PUBLIC_BASE_URL is left unset")
    functions = Functions(f"{name}-functions", FunctionsArgs(
        cfg.prefix, region, cfg.artifact_path(), env, arns, messaging.queues["send"].arn,
        messaging.queues["ses-events"].arn, cfg.ses_max_send_rate, prov,
        reserve_sender_concurrency=cfg.sender_reserved_concurrency))
    dom = cfg.api_domain.get(region, {})
    failover = cfg.record_name if cfg.hosted_zone_id else None
    api = Api(f"{name}-api", ApiArgs(cfg.prefix, region, functions.functions["api"], functions.aliases["api"], key_arn,
                                     cfg.api_rate_limit, cfg.api_burst_limit, prov, dom.get("domain"),
                                     dom.get("certificate_arn"), dom.get("truststore_uri"), failover,
                                     dom.get("failover_certificate_arn"), cfg.waf_rate_limit,
                                     cfg.public_record_name if cfg.hosted_zone_id else None,
                                     dom.get("public_certificate_arn")))
    peer = cfg.dr_region if active else cfg.primary_region
    monitoring = Monitoring(f"{name}-monitoring", MonitoringArgs(
        cfg.prefix, region, table.table.name, {p: d.name for p, d in messaging.dlqs.items()}, api.rest.name,
        cfg.prefix, peer, 0.04, 0.0008, prov, queue_names={p: q.name for p, q in messaging.queues.items()},
        delivery_streams={spec.purpose: events.stream.name},
        alarm_email=cfg.alarm_email, metrics_namespace=metrics_namespace(cfg.prefix),
        ses_max_send_rate=cfg.ses_max_send_rate, active=active))
    return {"name": name, "region": region, "provider": prov, "env": env, "arns": arns, "active": active,
            "buckets": buckets, "messaging": messaging, "events": events, "functions": functions, "api": api,
            "search": search, "monitoring": monitoring}


HEALTH_SUFFIX = "/api/v1/health"  # what runbooks/regions.py appends to a region's API base URL


def health_url(api: Api) -> pulumi.Output[str]:
    """A region's health endpoint without a key or a client certificate (what Route 53 checks)."""
    return pulumi.Output.concat("https://", api.health_host, api.health_path)


def failover_environment(cfg: StackConfig, here: dict[str, Any], watched: dict[str, Any],
                         dns: FailoverDns | None) -> dict[str, pulumi.Input[str]]:
    """The DR controller's automatic-failover settings (config/settings.py ``failover_*``)."""
    if not cfg.failover_automation:
        return {"EMAILPLATFORM_FAILOVER_AUTOMATION": "false"}
    api: Api = here["api"]
    env: dict[str, pulumi.Input[str]] = {
        "EMAILPLATFORM_FAILOVER_AUTOMATION": "true",
        "EMAILPLATFORM_FAILOVER_GRACE_SECONDS": str(cfg.failover_grace_seconds),
        "EMAILPLATFORM_FAILOVER_QUORUM": str(cfg.failover_quorum),
        "EMAILPLATFORM_FAILOVER_SES_WINDOW_SECONDS": str(cfg.failover_ses_window_seconds),
        "EMAILPLATFORM_FAILOVER_CHECK_INTERVAL_SECONDS": str(cfg.failover_check_interval_seconds),
        # this region's API, checked healthy before promoting (the runbook appends /api/v1/health)
        "EMAILPLATFORM_FAILOVER_API_URL": pulumi.Output.concat("https://", api.health_host,
                                                               api.health_path.removesuffix(HEALTH_SUFFIX)),
        # the watched region's health endpoint: the api signal
        "EMAILPLATFORM_FAILOVER_PEER_HEALTH_URL": health_url(watched["api"]),
        # the decision goes to this region's alarms topic (the watched one may be down)
        "EMAILPLATFORM_FAILOVER_EVENT_TOPIC_ARN": here["monitoring"].topic.arn,
    }
    if dns is not None:  # the route53 signal, and DNS moved to DR by forcing this check unhealthy
        env["EMAILPLATFORM_FAILOVER_HEALTH_CHECK_ID"] = dns.health_checks["PRIMARY"].id
    return env


def controller_service(cfg: StackConfig, here: dict[str, Any], peer: dict[str, Any],
                       dns: FailoverDns | None) -> ControllerService:
    """A region's controller, once both regions and DNS exist: it reaches the other region's
    OpenSearch domain (erasures), and DR's watches the primary (automatic failover)."""
    name, region = here["name"], here["region"]
    env = {**here["env"],
           # erasures purge the person's events in the other region's domain too (core/bootstrap.py)
           "EMAILPLATFORM_PEER_OPENSEARCH_ENDPOINT": peer["search"].endpoint}
    arns = {**here["arns"], "peer_search": peer["search"].domain.arn}
    failover: dict[str, Any] = {}
    if not here["active"]:  # automatic failover runs in the DR region's controller only
        env.update(failover_environment(cfg, here, peer, dns))
        if cfg.failover_automation:
            failover_arns: dict[str, pulumi.Input[str]] = {
                "alarm_topic": here["monitoring"].topic.arn,
                # runbooks/alarms.py move_no_leader_alarm turns its actions on in the promoted region
                "no_leader_alarm": here["monitoring"].alarms_by_key["controller-no-leader"].arn,
            }
            if dns is not None:
                failover_arns["health_check"] = pulumi.Output.concat(
                    "arn:aws:route53:::healthcheck/", dns.health_checks["PRIMARY"].id)
            failover = {"watched_region": peer["region"], "failover_arns": failover_arns}
    net = cfg.network.get(region, {})
    controller = ControllerService(f"{name}-controller", ControllerArgs(
        cfg.prefix, region, cfg.image_for(region), net.get("subnet_ids", []), net.get("security_group_ids", []),
        env, arns, here["provider"], metrics_namespace=metrics_namespace(cfg.prefix),
        **({"collector_image": cfg.collector_image_for(region)} if cfg.collector_image else {}), **failover))
    return controller


def build(cfg: StackConfig) -> dict[str, Any]:
    primary = provider("primary", cfg, cfg.primary_region, "primary")
    dr = provider("dr", cfg, cfg.dr_region, "dr")
    account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=primary)).account_id
    directions = [(cfg.primary_region, cfg.dr_region), (cfg.dr_region, cfg.primary_region)]
    role_arns = [pulumi.Output.concat("arn:aws:iam::", account_id, ":role/", replication_role_name(cfg.prefix, s, d))
                 for s, d in directions]
    keys = Keys("keys", KeysArgs(cfg.prefix, primary, dr, account_id, cfg.primary_region, cfg.dr_region, role_arns))
    data = DataStore("data", DataStoreArgs(f"{cfg.prefix}-main", cfg.dr_region, keys.primary.arn, keys.replica.arn,
                                           primary))
    secrets = Secrets("secrets", SecretsArgs(cfg.prefix, keys.primary.arn, cfg.dr_region, keys.replica.arn, primary))
    p = regional("primary", cfg, cfg.primary_region, primary, keys.primary.arn, keys.replica.arn, data, secrets,
                 account_id, primary, active=True)
    d = regional("dr", cfg, cfg.dr_region, dr, keys.replica.arn, keys.primary.arn, data, secrets, account_id,
                 primary, active=False)
    Replication("replication", ReplicationArgs(
        p["buckets"], d["buckets"], keys.replica.arn, keys.primary.arn, primary,
        replication_role_name(cfg.prefix, cfg.primary_region, cfg.dr_region), "to-dr"))
    Replication("replication-back", ReplicationArgs(
        d["buckets"], p["buckets"], keys.primary.arn, keys.replica.arn, dr,
        replication_role_name(cfg.prefix, cfg.dr_region, cfg.primary_region), "to-primary"))
    dns = None
    if cfg.hosted_zone_id and cfg.record_name:
        dns = FailoverDns("dns", FailoverDnsArgs(cfg.hosted_zone_id, cfg.record_name, p["api"], d["api"], primary,
                                                 cfg.public_record_name))
    p["controller"] = controller_service(cfg, p, d, dns)
    d["controller"] = controller_service(cfg, d, p, dns)
    for here, peer in ((p, d), (d, p)):
        # the controller deletes an erased person's events and purges events past a tenant's
        # retention; an erasure run by the other region's controller deletes them here too
        here["search"].allow([here["functions"].roles["api"].arn, here["functions"].roles["ses_events"].arn,
                              here["controller"].task_role.arn, peer["controller"].task_role.arn])

    # outputs runbooks take as inputs
    pulumi.export("table", data.table.name)
    pulumi.export("account_id", account_id)
    pulumi.export("api_url", f"https://{cfg.record_name}" if dns else p["api"].url)
    pulumi.export("queues", [q.name(cfg.prefix) for q in schema.QUEUES])
    pulumi.export("unsubscribe_secret", secrets.unsubscribe.arn)
    # `EMAILPLATFORM_USAGE_PLAN_IDS="$(pulumi stack output usage_plan_ids --json)" emailplatform keys create …`
    pulumi.export("usage_plan_ids", {cfg.primary_region: p["api"].plan.id, cfg.dr_region: d["api"].plan.id})
    for role, r in (("primary", p), ("dr", d)):
        pulumi.export(f"{role}_api", r["api"].url)  # the custom domain when there is one, never execute-api then
        pulumi.export(f"{role}_public_url", r["api"].public_url)  # unsubscribe links, no key, no mTLS
        pulumi.export(f"{role}_api_domain", r["api"].domain.domain_name if r["api"].domain else None)
        pulumi.export(f"{role}_api_health", pulumi.Output.concat("https://", r["api"].health_host,
                                                                 r["api"].health_path))
        pulumi.export(f"{role}_dkim_tokens", r["messaging"].dkim_tokens)
        pulumi.export(f"{role}_alarm_topic", r["monitoring"].topic.arn)
        pulumi.export(f"{role}_ecs_cluster", r["controller"].cluster.name)
        pulumi.export(f"{role}_ecs_service", r["controller"].service.name)
        pulumi.export(f"{role}_opensearch_endpoint", r["search"].endpoint)
        pulumi.export(f"{role}_health_check", dns.health_checks["PRIMARY" if role == "primary" else "SECONDARY"].id
                      if dns else None)
    return {"keys": keys, "data": data, "primary": p, "dr": d, "secrets": secrets, "dns": dns}
