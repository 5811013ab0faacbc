"""Queues (+ DLQs) and the SES configuration set, from core/schema.py; the SES identity with its
DKIM and custom MAIL FROM records when the hosted zone is ours (an identity verifies only once its
DKIM records are published; each region's SES has its own tokens). The configuration set's event
destination and the way its events reach the events queue are infra/components/events.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from core import schema
from infra.components.base import child


@dataclass
class MessagingArgs:
    prefix: str
    key_arn: pulumi.Input[str]
    configuration_set: str
    domain: str
    provider: Any
    region: str = ""
    zone_id: str | None = None  # the hosted zone of ``domain``: DKIM / MAIL FROM records are created in it
    dns_provider: Any = None  # Route 53 is global: the primary's provider


class Messaging(pulumi.ComponentResource):
    def __init__(self, name: str, args: MessagingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Messaging", name, None, opts)
        self.queues: dict[str, aws.sqs.Queue] = {}
        self.dlqs: dict[str, aws.sqs.Queue] = {}
        for q in schema.QUEUES:
            dlq = aws.sqs.Queue(f"{name}-{q.purpose}-dlq", name=q.dlq_name(args.prefix), fifo_queue=q.fifo or None,
                                kms_master_key_id=args.key_arn, message_retention_seconds=14 * 24 * 3600,
                                opts=child(self, args.provider))
            self.dlqs[q.purpose] = dlq
            self.queues[q.purpose] = aws.sqs.Queue(
                f"{name}-{q.purpose}", name=q.name(args.prefix), fifo_queue=q.fifo or None,
                visibility_timeout_seconds=q.visibility_timeout, kms_master_key_id=args.key_arn,
                redrive_policy=dlq.arn.apply(lambda arn, q=q: json.dumps({"deadLetterTargetArn": arn,
                                                                         "maxReceiveCount": q.max_receive_count})),
                opts=child(self, args.provider))
        self.configuration_set = aws.sesv2.ConfigurationSet(
            f"{name}-config-set", configuration_set_name=args.configuration_set,
            reputation_options={"reputation_metrics_enabled": True},
            sending_options={"sending_enabled": True},
            suppression_options={"suppressed_reasons": ["BOUNCE", "COMPLAINT"]},
            opts=child(self, args.provider))
        self.identity = aws.sesv2.EmailIdentity(f"{name}-identity", email_identity=args.domain,
                                                configuration_set_name=self.configuration_set.configuration_set_name,
                                                dkim_signing_attributes={"next_signing_key_length": "RSA_2048_BIT"},
                                                opts=child(self, args.provider))
        self.dkim_tokens: pulumi.Output[list[str]] = self.identity.dkim_signing_attributes.apply(
            lambda d: list((d.tokens if d else None) or []))
        self.mail_from_domain = f"bounce-{args.region}.{args.domain}"
        aws.sesv2.EmailIdentityMailFromAttributes(
            f"{name}-mail-from", email_identity=self.identity.email_identity, mail_from_domain=self.mail_from_domain,
            behavior_on_mx_failure="USE_DEFAULT_VALUE", opts=child(self.identity, args.provider))
        if args.zone_id:
            dns = child(self.identity, args.dns_provider or args.provider)
            for i in range(3):  # Easy DKIM always issues three tokens
                token = self.dkim_tokens.apply(lambda t, i=i: t[i])
                aws.route53.Record(f"{name}-dkim-{i}", zone_id=args.zone_id, type="CNAME", ttl=1800,
                                   name=token.apply(lambda t: f"{t}._domainkey.{args.domain}"),
                                   records=[token.apply(lambda t: f"{t}.dkim.amazonses.com")], opts=dns)
            aws.route53.Record(f"{name}-mail-from-mx", zone_id=args.zone_id, type="MX", ttl=300,
                               name=self.mail_from_domain,
                               records=[f"10 feedback-smtp.{args.region}.amazonses.com"], opts=dns)
            aws.route53.Record(f"{name}-mail-from-spf", zone_id=args.zone_id, type="TXT", ttl=300,
                               name=self.mail_from_domain, records=["v=spf1 include:amazonses.com ~all"], opts=dns)
        self.register_outputs({"send_queue": self.queues["send"].arn, "events_queue": self.queues["ses-events"].arn})
