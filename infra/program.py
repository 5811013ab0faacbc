"""The Pulumi program: the same regional components in the primary and DR regions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from core import schema
from infra.components.compute import Functions, FunctionsArgs
from infra.components.controller import ControllerArgs, ControllerService
from infra.components.data import DataStore, DataStoreArgs
from infra.components.edge import Api, ApiArgs, FailoverDns, FailoverDnsArgs
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
from infra.components.storage import Buckets, BucketsArgs, Replication, ReplicationArgs


@dataclass
class StackConfig:
    prefix: str
    primary_region: str
    dr_region: str
    ses_domain: str
    controller_image: str
    artifact: str = "dist/lambda.zip"
    ses_max_send_rate: float = 14.0
    api_rate_limit: float = 50.0
    api_burst_limit: int = 100
    allowed_origins: list[str] = field(default_factory=lambda: ["https://messagecentre.example.com"])
    hosted_zone_id: str | None = None
    record_name: str | None = None
    api_domain: dict[str, Any] = field(default_factory=dict)  # region → {domain, certificate_arn, truststore_uri}
    network: dict[str, Any] = field(default_factory=dict)  # region → {subnet_ids, security_group_ids}

    @classmethod
    def from_pulumi(cls) -> StackConfig:
        c = pulumi.Config("emailplatform")
        return cls(
            prefix=c.require("prefix"), primary_region=c.require("primaryRegion"), dr_region=c.require("drRegion"),
            ses_domain=c.require("sesDomain"), controller_image=c.require("controllerImage"),
            artifact=c.get("artifact") or "dist/lambda.zip",
            ses_max_send_rate=float(c.get("sesMaxSendRate") or 14), api_rate_limit=float(c.get("apiRateLimit") or 50),
            api_burst_limit=int(c.get("apiBurstLimit") or 100),
            allowed_origins=c.get_object("allowedOrigins") or ["https://messagecentre.example.com"],
            hosted_zone_id=c.get("hostedZoneId"), record_name=c.get("recordName"),
            api_domain=c.get_object("apiDomain") or {}, network=c.get_object("network") or {},
        )


def regional(name: str, cfg: StackConfig, region: str, provider: Any, key_arn: Any, table: DataStore,
             active: bool) -> dict[str, Any]:
    buckets = Buckets(f"{name}-buckets", BucketsArgs(cfg.prefix, region, key_arn, provider, cfg.allowed_origins))
    messaging = Messaging(f"{name}-messaging", MessagingArgs(cfg.prefix, key_arn, cfg.prefix, cfg.ses_domain, provider))
    table_arn = table.table.arn if active else table.table.arn.apply(lambda a: a.replace(cfg.primary_region, region))
    stream_arn = table_arn
    secret_arn = pulumi.Output.concat("arn:aws:secretsmanager:", region, ":", aws.get_caller_identity_output(
        opts=pulumi.InvokeOutputOptions(provider=provider)).account_id, ":secret:", cfg.prefix, "/*")
    arns = {"table": table_arn, "table_stream": stream_arn, "key": key_arn, "secret": secret_arn,
            "ses": pulumi.Output.concat("arn:aws:ses:", region, ":*:identity/", cfg.ses_domain),
            **{f"bucket:{p}": b.arn for p, b in buckets.buckets.items()},
            **{f"queue:{p}": q.arn for p, q in messaging.queues.items()},
            **{f"topic:{p}": t.arn for p, t in messaging.topics.items()}}
    env = {"EMAILPLATFORM_ENVIRONMENT": "prod", "EMAILPLATFORM_REGION": region,
           "EMAILPLATFORM_DR_REGION": cfg.dr_region if active else cfg.primary_region,
           "EMAILPLATFORM_NAME_PREFIX": cfg.prefix, "EMAILPLATFORM_SES_MAX_SEND_RATE": str(cfg.ses_max_send_rate),
           "EMAILPLATFORM_SES_CONFIGURATION_SET": cfg.prefix}
    functions = Functions(f"{name}-functions", FunctionsArgs(
        cfg.prefix, region, cfg.artifact, env, arns, messaging.queues["send"].arn, messaging.queues["ses-events"].arn,
        cfg.ses_max_send_rate, provider))
    dom = cfg.api_domain.get(region, {})
    api = Api(f"{name}-api", ApiArgs(cfg.prefix, region, functions.functions["api"], key_arn, cfg.api_rate_limit,
                                     cfg.api_burst_limit, provider, dom.get("domain"), dom.get("certificate_arn"),
                                     dom.get("truststore_uri")))
    net = cfg.network.get(region, {})
    controller = ControllerService(f"{name}-controller", ControllerArgs(
        cfg.prefix, region, cfg.controller_image, net.get("subnet_ids", []), net.get("security_group_ids", []),
        env, arns, provider))
    search = Search(f"{name}-search", SearchArgs(cfg.prefix, key_arn, provider))
    Monitoring(f"{name}-monitoring", MonitoringArgs(
        cfg.prefix, region, table.table.name, [d.name for d in messaging.dlqs.values()], api.rest.name, cfg.prefix,
        cfg.dr_region, 0.04, 0.0008, provider, queue_names=[q.name for q in messaging.queues.values()]))
    return {"buckets": buckets, "messaging": messaging, "functions": functions, "api": api,
            "controller": controller, "search": search}


def build(cfg: StackConfig) -> dict[str, Any]:
    primary = aws.Provider("primary", region=cfg.primary_region)
    dr = aws.Provider("dr", region=cfg.dr_region)
    keys = Keys("keys", KeysArgs(cfg.prefix, primary, dr))
    data = DataStore("data", DataStoreArgs(f"{cfg.prefix}-main", cfg.dr_region, keys.primary.arn, keys.replica.arn,
                                           primary))
    p = regional("primary", cfg, cfg.primary_region, primary, keys.primary.arn, data, active=True)
    d = regional("dr", cfg, cfg.dr_region, dr, keys.replica.arn, data, active=False)
    Replication("replication", ReplicationArgs(p["buckets"], d["buckets"], keys.replica.arn, keys.primary.arn, primary))
    Secrets("secrets", SecretsArgs(cfg.prefix, keys.primary.arn, cfg.dr_region, keys.replica.arn, primary))
    if cfg.hosted_zone_id and cfg.record_name:
        FailoverDns("dns", FailoverDnsArgs(cfg.hosted_zone_id, cfg.record_name, p["api"], d["api"]))
    pulumi.export("table", data.table.name)
    pulumi.export("primary_api", p["api"].stage.invoke_url)
    pulumi.export("dr_api", d["api"].stage.invoke_url)
    pulumi.export("queues", [q.name(cfg.prefix) for q in schema.QUEUES])
    return {"keys": keys, "data": data, "primary": p, "dr": d}
