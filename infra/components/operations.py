"""OpenSearch per region, the webhook-signing secret namespace replicated to DR, alarms, dashboard."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.base import child


@dataclass
class SearchArgs:
    prefix: str
    key_arn: pulumi.Input[str]
    provider: Any
    account_id: pulumi.Input[str]
    instance_type: str = "t3.small.search"


class Search(pulumi.ComponentResource):
    """OpenSearch with fine-grained access control and no internal user database: the master user is
    an IAM role (``admin_role``, assumable by the account's administrators), which maps the writers'
    IAM roles to OpenSearch roles in the security plugin (a runbook step: Pulumi has no handle on it).
    The domain access policy (``allow``) admits the writers' roles over signed HTTP."""

    def __init__(self, name: str, args: SearchArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Search", name, None, opts)
        self._name, self._provider = name, args.provider
        self.admin_role = aws.iam.Role(
            f"{name}-admin", assume_role_policy=pulumi.Output.from_input(args.account_id).apply(lambda a: json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                        "Principal": {"AWS": f"arn:aws:iam::{a}:root"}}]})),
            opts=child(self, args.provider))
        self.domain = aws.opensearch.Domain(
            f"{name}-domain", domain_name=f"{args.prefix}-events"[:28], engine_version="OpenSearch_2.13",
            cluster_config={"instance_type": args.instance_type, "instance_count": 2, "zone_awareness_enabled": True},
            ebs_options={"ebs_enabled": True, "volume_size": 20, "volume_type": "gp3"},
            encrypt_at_rest={"enabled": True, "kms_key_id": args.key_arn},
            node_to_node_encryption={"enabled": True},
            domain_endpoint_options={"enforce_https": True, "tls_security_policy": "Policy-Min-TLS-1-2-2019-07"},
            advanced_security_options={"enabled": True, "internal_user_database_enabled": False,
                                       "anonymous_auth_enabled": False,
                                       "master_user_options": {"master_user_arn": self.admin_role.arn}},
            opts=child(self, args.provider, protect=True))
        self.endpoint: pulumi.Output[str] = self.domain.endpoint.apply(lambda e: f"https://{e}")
        self.register_outputs({"endpoint": self.endpoint})

    def allow(self, role_arns: list[pulumi.Input[str]]) -> aws.opensearch.DomainPolicy:
        """The domain access policy: the writers' roles and the master role, over signed HTTP only."""
        actions = ["es:ESHttpDelete", "es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut"]
        doc = pulumi.Output.all(self.domain.arn, self.admin_role.arn, *role_arns).apply(lambda v: json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": sorted(v[1:])},
                                                    "Action": actions, "Resource": f"{v[0]}/*"}]}))
        return aws.opensearch.DomainPolicy(f"{self._name}-access", domain_name=self.domain.domain_name,
                                           access_policies=doc, opts=child(self, self._provider))


@dataclass
class SecretsArgs:
    prefix: str
    key_arn: pulumi.Input[str]
    dr_region: str
    replica_key_arn: pulumi.Input[str]
    provider: Any


class Secrets(pulumi.ComponentResource):
    """Platform secrets (unsubscribe signing key); tenants' webhook secrets are created at runtime
    under ``<prefix>/webhook-signing/`` with the same replication settings."""

    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Secrets", name, None, opts)
        self.unsubscribe = aws.secretsmanager.Secret(
            f"{name}-unsubscribe", name=f"{args.prefix}/unsubscribe-signing", kms_key_id=args.key_arn,
            replicas=[{"region": args.dr_region, "kms_key_id": args.replica_key_arn}],
            opts=child(self, args.provider, protect=True))
        self.register_outputs({"unsubscribe": self.unsubscribe.arn})


@dataclass
class MonitoringArgs:
    prefix: str
    region: str
    table_name: pulumi.Input[str]
    dlq_names: list[pulumi.Input[str]]
    api_name: pulumi.Input[str]
    configuration_set: str
    dr_region: str
    bounce_alarm: float
    complaint_alarm: float
    provider: Any
    queue_names: list[pulumi.Input[str]] = field(default_factory=list)  # work queues: send, SES events
    alarm_email: str | None = None  # who hears the alarms (an email subscription to the topic)


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Monitoring", name, None, opts)
        o = child(self, args.provider)
        self.topic = aws.sns.Topic(f"{name}-alarms", name=f"{args.prefix}-alarms", opts=o)
        if args.alarm_email:  # AWS emails a confirmation link: the subscription is pending until clicked
            aws.sns.TopicSubscription(f"{name}-alarms-email", topic=self.topic.arn, protocol="email",
                                      endpoint=args.alarm_email, opts=child(self.topic, args.provider))
        alarms = [
            ("bounce-rate", "AWS/SES", "Reputation.BounceRate", args.bounce_alarm, {}),
            ("complaint-rate", "AWS/SES", "Reputation.ComplaintRate", args.complaint_alarm, {}),
            ("api-5xx", "AWS/ApiGateway", "5XXError", 5, {"ApiName": args.api_name}),
            ("replication-latency", "AWS/DynamoDB", "ReplicationLatency", 60_000,
             {"TableName": args.table_name, "ReceivingRegion": args.dr_region}),
            ("controller-lease-lost", "EmailPlatform", "controller_lease_lost_total", 0, {}),
        ]
        # A backed-up SES-events queue also holds back in-doubt chunks (core/services/sending.py):
        # their Send evidence is in it. Five minutes behind pages someone.
        for i, queue in enumerate(args.queue_names):
            alarms.append((f"queue-age-{i}", "AWS/SQS", "ApproximateAgeOfOldestMessage", 300, {"QueueName": queue}))
        for i, dlq in enumerate(args.dlq_names):
            alarms.append((f"dlq-depth-{i}", "AWS/SQS", "ApproximateNumberOfMessagesVisible", 0, {"QueueName": dlq}))
        self.alarms = []
        for alarm, ns, metric, threshold, dims in alarms:
            self.alarms.append(aws.cloudwatch.MetricAlarm(
                f"{name}-{alarm}", name=f"{args.prefix}-{args.region}-{alarm}", namespace=ns, metric_name=metric,
                statistic="Maximum" if "Rate" in metric or "Latency" in metric or "Age" in metric else "Sum", period=300,
                evaluation_periods=1, threshold=threshold, comparison_operator="GreaterThanThreshold",
                dimensions=dims or None, treat_missing_data="notBreaching", alarm_actions=[self.topic.arn], opts=o))
        aws.cloudwatch.Dashboard(f"{name}-dashboard", dashboard_name=f"{args.prefix}-{args.region}",
                                 dashboard_body=json.dumps({"widgets": [
                                     {"type": "metric", "properties": {"title": t, "region": args.region,
                                                                       "metrics": [[ns, m]], "period": 300}}
                                     for t, ns, m in [("Bounce rate", "AWS/SES", "Reputation.BounceRate"),
                                                      ("Complaint rate", "AWS/SES", "Reputation.ComplaintRate"),
                                                      ("Sends", "AWS/SES", "Send"),
                                                      ("API 5xx", "AWS/ApiGateway", "5XXError")]]}), opts=o)
        self.register_outputs({"alarm_topic": self.topic.arn})
