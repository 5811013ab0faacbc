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


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch alarm. ``alert`` names the rule in ops/prometheus/rules.yml it stands for on
    AWS (None: an AWS-side condition without a Prometheus twin). ``missing`` is the
    treat_missing_data: ``breaching`` where silence means the publisher is dead."""

    key: str
    alert: str | None
    runbook: str
    description: str
    threshold: float
    comparison: str
    missing: str
    period: int
    evaluations: int
    metric: tuple[str, str, str, dict[str, Any]] | None = None  # namespace, name, statistic, dimensions
    expression: str | None = None  # metric math over ``queries``
    queries: dict[str, tuple[str, str, str, dict[str, Any]]] = field(default_factory=dict)
    actions: bool = True  # actions_enabled


# A controller completes a lease call every lease_seconds/3 (5 s by default), a standby's takeover
# poll every second: a heartbeat this old means its lease calls fail or it is hung.
HEARTBEAT_STALE_SECONDS = 60
# The oldest record in a Firehose stream that buffers 60 s (core/schema.py SES_EVENTS_STREAM) is
# this old only while delivery to S3 fails. Firehose keeps retrying, but meanwhile SES events stop
# reaching the queue, and a pipeline that records nothing looks quiet to the send-evidence rule
# (core/services/sending.py), whose window is 900 s by default: the alarm fires within it (two
# 5-minute periods above the threshold: 10-15 minutes into a stall).
FIREHOSE_STALE_SECONDS = 300


@dataclass
class MonitoringArgs:
    prefix: str
    region: str
    table_name: pulumi.Input[str]
    dlq_names: dict[str, pulumi.Input[str]]  # queue purpose → its dead-letter queue's name
    api_name: pulumi.Input[str]
    configuration_set: str
    peer_region: str  # the other region: where this region's table writes replicate to
    bounce_alarm: float
    complaint_alarm: float
    provider: Any
    queue_names: dict[str, pulumi.Input[str]] = field(default_factory=dict)  # work queues by purpose
    delivery_streams: dict[str, pulumi.Input[str]] = field(default_factory=dict)  # Firehose streams by purpose
    alarm_email: str | None = None  # who hears the alarms (an email subscription to the topic)
    metrics_namespace: str = "EmailPlatform/emailplatform"  # core/observability.emf_namespace(prefix)
    ses_max_send_rate: float = 14.0
    # the region the active-region flag names at deploy time (the primary): its no-leader alarm
    # notifies; the other region's is created with its actions disabled (see alarm_specs)
    active: bool = True


def alarm_specs(a: MonitoringArgs) -> list[AlarmSpec]:
    """The alert rules of ops/prometheus/rules.yml as CloudWatch alarms, plus AWS-side conditions.

    The platform's metrics are in ``a.metrics_namespace``: the Lambdas write theirs as EMF (with
    their labels as dimensions), the controller's come from the ADOT collector (with the dimension
    sets in infra/components/controller.py CLOUDWATCH_METRICS). tests/infra checks each one against
    core/observability.py. Metrics only the leader publishes (stuck, lag, dead letters) are 0 or
    absent in the passive region and while no leader runs (a deposed leader clears them): there
    missing data is not breaching, and the heartbeat alarm (which every controller feeds, leader or
    standby) is the one that says a controller is dead.

    The heartbeat alarms read ``emailplatform_controller_heartbeat_age_seconds``, which the
    controller computes at every scrape from its last lease call that completed. Counting samples
    of the heartbeat timestamp (SampleCount) missed a controller whose lease calls fail: it is still
    scraped, so its stale ``role="leader"`` series kept arriving. CloudWatch metric math has no
    "now" to compare a timestamp value with, so the age is computed where the clock is. Minimum:
    the freshest controller of the region (or of its leaders) counts, so a deposed, stale leader
    beside a live one does not alarm; no data at all (no task, no collector) is breaching."""
    ns, r = a.metrics_namespace, {"region": a.region}
    floor = round(0.1 * a.ses_max_send_rate, 6)
    age = "emailplatform_controller_heartbeat_age_seconds"
    specs = [
        AlarmSpec("controller-heartbeat", "EmailPlatformNoLeader", "runbooks/failover.md",
                  f"No controller in this region completed a lease call within {HEARTBEAT_STALE_SECONDS} s, for 2 "
                  "minutes (no task, the collector down, DynamoDB unreachable or the controller hung): in the active "
                  "region nothing advances campaigns; in the passive one failover has no standby",
                  HEARTBEAT_STALE_SECONDS, "GreaterThanThreshold", "breaching", 60, 2, metric=(ns, age, "Minimum", r)),
        # Whether a region is active is a runtime flag; infra knows only which region starts active.
        # The passive region's no-leader alarm exists with its actions off: the failover runbook
        # turns them on there (and off in the old region), the failback runbook back.
        AlarmSpec("controller-no-leader", "EmailPlatformNoLeader", "runbooks/failover.md",
                  "No controller holds the lease in this region for 2 minutes although controllers run (or none "
                  f"runs, or the leader's lease calls have failed for {HEARTBEAT_STALE_SECONDS} s): nothing advances "
                  "campaigns. Notifies only in the active region"
                  + ("" if a.active else " (actions are off here until a failover turns them on)"),
                  HEARTBEAT_STALE_SECONDS, "GreaterThanThreshold", "breaching", 60, 2,
                  metric=(ns, age, "Minimum", {**r, "role": "leader"}), actions=a.active),
        AlarmSpec("controller-lease-lost", None, "runbooks/failover.md",
                  "A controller lost its lease (renewal refused, or the region turned passive); if no leader "
                  "follows, controller-heartbeat or the stuck-campaign alarm follows", 0, "GreaterThanThreshold",
                  "notBreaching", 300, 1, metric=(ns, "emailplatform_controller_lease_lost_total", "Sum", r)),
        # Automatic failover: published only where the decider runs (the DR controller), so missing
        # data is no news. A promotion also reaches the topic as the failover.promoted/failed event.
        AlarmSpec("failover-promoted", "EmailPlatformFailoverPromoted", "runbooks/failover.md",
                  "This region's controller promoted it (automatic failover), or tried and failed: check the "
                  "decision record PLATFORM/FAILOVER#<primary>#<epoch> and that this region serves", 0,
                  "GreaterThanThreshold", "notBreaching", 300, 1,
                  metric=(ns, "emailplatform_failover_promotions_total", "Sum", r)),
        # bad: the fewest signals bad during each 5 minutes (a signal bad throughout counts)
        AlarmSpec("failover-signals-bad", "EmailPlatformFailoverSignalsBad", "runbooks/failover.md",
                  "Failover signals have said the primary is down for 30 minutes, fewer than the quorum: a broken "
                  "probe or a partly failing primary; one more bad signal promotes this region", 0,
                  "GreaterThanThreshold", "notBreaching", 300, 6,
                  expression="IF(bad > 0 AND bad < quorum, 1, 0)",
                  queries={"bad": (ns, "emailplatform_failover_signals_bad", "Minimum", r),
                           "quorum": (ns, "emailplatform_failover_quorum", "Maximum", r)}),
        AlarmSpec("failover-held", "EmailPlatformFailoverHeld", "runbooks/failover.md",
                  "An operator's hold has stopped automatic failover for 6 hours: release it once the planned "
                  "work is over", 1, "GreaterThanOrEqualToThreshold", "notBreaching", 3600, 6,
                  metric=(ns, "emailplatform_failover_held", "Minimum", r)),
        # the gauge holds the decision's time while it is unfinished, 0 otherwise: > 0 for 3 × 5 minutes
        AlarmSpec("failover-unfinished", "EmailPlatformFailoverUnfinished", "runbooks/failover.md",
                  "An automatic failover decision has been in progress (or failed after the active-region flag "
                  "moved) for 15 minutes: read its steps on PLATFORM/FAILOVER#<primary>#<epoch> and finish it "
                  "with runbooks/failover.py", 0, "GreaterThanThreshold", "notBreaching", 300, 3,
                  metric=(ns, "emailplatform_failover_unfinished_since_timestamp_seconds", "Minimum", r)),
        AlarmSpec("failover-awaiting-quiet", "EmailPlatformFailoverAwaitingQuiet", "runbooks/failover.md",
                  "This region was promoted 30 minutes ago but its senders still wait for the old region's SES to "
                  "be quiet: check it, then runbooks/failover.py --confirm-source-stopped", 1,
                  "GreaterThanOrEqualToThreshold", "notBreaching", 300, 6,
                  metric=(ns, "emailplatform_failover_awaiting_quiet", "Minimum", r)),
        AlarmSpec("campaign-stuck", "EmailPlatformCampaignStuck", "runbooks/stuck_campaign.md",
                  "READY_TO_SEND campaigns made no progress for the controller's stuck_after and 10 more minutes",
                  0, "GreaterThanThreshold", "notBreaching", 300, 2,
                  metric=(ns, "emailplatform_campaigns_stuck", "Maximum", r)),
        AlarmSpec("send-rate-under-quota", "EmailPlatformSendRateUnderQuota", "runbooks/stuck_campaign.md",
                  f"Batches are queued but SES accepts under a tenth of the quota ({floor}/s) for 10 minutes: "
                  "senders down, throttled, held by the kill switch, or waiting on in-doubt chunks",
                  0, "GreaterThanThreshold", "notBreaching", 300, 2,
                  expression=f"IF(queued > 0 AND FILL(sent, 0) / 300 < {floor}, 1, 0)",
                  queries={"sent": (ns, "emailplatform_sends_total", "Sum", {"outcome": "sent"}),
                           "queued": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum",
                                      {"QueueName": a.queue_names.get("send")})}),
        AlarmSpec("event-pipeline-lag", "EmailPlatformEventPipelineLag", "runbooks/stuck_campaign.md",
                  "The newest recorded SES Send event is over 5 minutes old while events are queued",
                  300, "GreaterThanThreshold", "notBreaching", 60, 5,
                  metric=(ns, "emailplatform_ses_event_pipeline_lag_seconds", "Maximum", r)),
        AlarmSpec("callback-dead-letters", "EmailPlatformCallbackDeadLetters", "runbooks/webhook_backlog.md",
                  "Callbacks exhausted their retries in the last 15 minutes", 0, "GreaterThanThreshold",
                  "notBreaching", 900, 1, metric=(ns, "emailplatform_callback_dead_letters_total", "Sum", r)),
        # SES's own reputation metrics are what SES reviews the account on (5 % bounces, 0.1 %
        # complaints); SES publishes them only with enough volume, hence notBreaching.
        AlarmSpec("bounce-rate", "EmailPlatformBounceRateHigh", "runbooks/ses_reputation.md",
                  "The account's bounce rate is near SES's review threshold (5 %)", a.bounce_alarm,
                  "GreaterThanThreshold", "notBreaching", 900, 1,
                  metric=("AWS/SES", "Reputation.BounceRate", "Maximum", {})),
        AlarmSpec("complaint-rate", "EmailPlatformComplaintRateHigh", "runbooks/ses_reputation.md",
                  "The account's complaint rate is near SES's review threshold (0.1 %)", a.complaint_alarm,
                  "GreaterThanThreshold", "notBreaching", 900, 1,
                  metric=("AWS/SES", "Reputation.ComplaintRate", "Maximum", {})),
        # API Gateway counts what our handler never sees too (integration timeouts, throttling):
        # its 5XXError average is the 5xx ratio.
        AlarmSpec("api-5xx", "EmailPlatformApiErrors", "runbooks/failover.md",
                  "More than 1 % of API requests answered 5xx for 10 minutes", 0.01, "GreaterThanThreshold",
                  "notBreaching", 300, 2, metric=("AWS/ApiGateway", "5XXError", "Average", {"ApiName": a.api_name})),
        # Published in the region the writes come from, per receiving region; only while writes replicate.
        # DynamoDB's own figure; locally the rule reads the controller's emailplatform_replication_lag_seconds.
        AlarmSpec("replication-latency", "EmailPlatformReplicationLag", "runbooks/failover.md",
                  f"Table writes take over a minute to reach {a.peer_region}: a failover now loses more than "
                  "the RPO", 60_000, "GreaterThanThreshold", "notBreaching", 300, 1,
                  metric=("AWS/DynamoDB", "ReplicationLatency", "Maximum",
                          {"TableName": a.table_name, "ReceivingRegion": a.peer_region})),
    ]
    for purpose, dlq in sorted(a.dlq_names.items()):
        specs.append(AlarmSpec(f"dlq-{purpose}", "EmailPlatformDeadLetterQueueNotEmpty", "runbooks/stuck_campaign.md",
                               f"The {purpose} dead-letter queue holds messages that failed every attempt", 0,
                               "GreaterThanThreshold", "notBreaching", 60, 1,
                               metric=("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", {"QueueName": dlq})))
    # A backed-up SES-events queue also holds back in-doubt chunks (core/services/sending.py):
    # their Send evidence is in it. Five minutes behind pages someone.
    for purpose, queue in sorted(a.queue_names.items()):
        specs.append(AlarmSpec(f"queue-age-{purpose}", None, "runbooks/stuck_campaign.md",
                               f"The oldest message in the {purpose} queue is over 5 minutes old", 300,
                               "GreaterThanThreshold", "notBreaching", 300, 1,
                               metric=("AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum", {"QueueName": queue})))
    # A stalled Firehose stream leaves the events queue empty: the queue-age and pipeline-lag alarms
    # stay quiet (they need queued events), so the stream's own freshness is watched.
    for purpose, stream in sorted(a.delivery_streams.items()):
        specs.append(AlarmSpec(f"firehose-freshness-{purpose}", None, "runbooks/stuck_campaign.md",
                               f"The {purpose} Firehose stream has held an event for over {FIREHOSE_STALE_SECONDS} s, "
                               "for 10 minutes: delivery to S3 fails (the stream's role, the bucket or the key; "
                               "its CloudWatch log group says which), so SES events, statuses and in-doubt chunks "
                               "wait, and the send-evidence rule takes the silence for a quiet pipeline",
                               FIREHOSE_STALE_SECONDS, "GreaterThanThreshold", "notBreaching", 300, 2,
                               metric=("AWS/Firehose", "DeliveryToS3.DataFreshness", "Maximum",
                                       {"DeliveryStreamName": stream})))
    return specs


def _metric_query(qid: str, q: tuple[str, str, str, dict[str, Any]], period: int) -> dict[str, Any]:
    ns, name, stat, dims = q
    return {"id": qid, "return_data": False, "metric": {"namespace": ns, "metric_name": name, "stat": stat,
                                                         "period": period, "dimensions": dims or None}}


class Monitoring(pulumi.ComponentResource):
    """The alarms topic (an email subscription from config), the alarms and the dashboard of a region."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Monitoring", name, None, opts)
        o = child(self, args.provider)
        self.topic = aws.sns.Topic(f"{name}-alarms", name=f"{args.prefix}-alarms", opts=o)
        if args.alarm_email:  # AWS emails a confirmation link: the subscription is pending until clicked
            aws.sns.TopicSubscription(f"{name}-alarms-email", topic=self.topic.arn, protocol="email",
                                      endpoint=args.alarm_email, opts=child(self.topic, args.provider))
        else:
            pulumi.log.warn(f"{args.region}: no alarmEmail configured; nobody hears the alarms")
        self.alarms: list[aws.cloudwatch.MetricAlarm] = []
        self.alarms_by_key: dict[str, aws.cloudwatch.MetricAlarm] = {}  # AlarmSpec.key → alarm
        for spec in alarm_specs(args):
            single: dict[str, Any] = {}
            if spec.metric is not None:
                ns, metric, stat, dims = spec.metric
                single = {"namespace": ns, "metric_name": metric, "statistic": stat, "period": spec.period,
                          "dimensions": dims or None}
            else:
                single = {"metric_queries": [
                    *[_metric_query(qid, q, spec.period) for qid, q in spec.queries.items()],
                    {"id": "condition", "expression": spec.expression, "label": spec.key, "return_data": True}]}
            described = f"{spec.alert or spec.key}: {spec.description}. Runbook: {spec.runbook}"
            self.alarms.append(aws.cloudwatch.MetricAlarm(
                f"{name}-{spec.key}", name=f"{args.prefix}-{args.region}-{spec.key}", alarm_description=described,
                evaluation_periods=spec.evaluations, datapoints_to_alarm=spec.evaluations, threshold=spec.threshold,
                comparison_operator=spec.comparison, treat_missing_data=spec.missing,
                alarm_actions=[self.topic.arn], ok_actions=[self.topic.arn], actions_enabled=spec.actions, opts=o,
                **single))
            self.alarms_by_key[spec.key] = self.alarms[-1]
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard", dashboard_name=f"{args.prefix}-{args.region}",
            dashboard_body=pulumi.Output.all(args.api_name, args.queue_names.get("send", ""), *args.dlq_names.values())
            .apply(lambda v: json.dumps(dashboard(args, v[0], v[1], v[2:]))), opts=o)
        self.register_outputs({"alarm_topic": self.topic.arn})


# controller/failover.py's signals (core/observability.FAILOVER_SIGNAL_NAMES; tests/infra checks them)
FAILOVER_SIGNALS = ("heartbeat", "route53", "api", "ses")


def dashboard(a: MonitoringArgs, api_name: str, send_queue: str, dlqs: list[str]) -> dict[str, Any]:
    """The CloudWatch dashboard: every widget names the dimensions its metric is published with."""
    ns, r = a.metrics_namespace, a.region

    def widget(title: str, metrics: list[list[Any]], stat: str = "Sum") -> dict[str, Any]:
        return {"type": "metric", "properties": {"title": title, "region": r, "stat": stat, "period": 300,
                                                 "metrics": metrics}}

    return {"widgets": [
        widget("Sends by outcome", [[ns, "emailplatform_sends_total", "outcome", o]
                                    for o in ("sent", "refused", "held", "in_doubt", "suppressed")]),
        widget("Send queue (visible)", [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", send_queue]],
               "Maximum"),
        widget("SES event pipeline lag (s)", [[ns, "emailplatform_ses_event_pipeline_lag_seconds", "region", r]],
               "Maximum"),
        widget("Controller heartbeat age (s), freshest", [
            [ns, "emailplatform_controller_heartbeat_age_seconds", "region", r, "role", role]
            for role in ("leader", "standby")], "Minimum"),
        widget("Stuck campaigns", [[ns, "emailplatform_campaigns_stuck", "region", r]], "Maximum"),
        widget("Automatic failover: signals bad, quorum, hold", [
            [ns, "emailplatform_failover_signals_bad", "region", r], [ns, "emailplatform_failover_quorum", "region", r],
            [ns, "emailplatform_failover_held", "region", r],
            *[[ns, "emailplatform_failover_signal_bad", "region", r, "signal", s] for s in FAILOVER_SIGNALS]],
            "Maximum"),
        widget("Automatic failovers", [[ns, "emailplatform_failover_promotions_total", "region", r, "outcome", o]
                                       for o in ("promoted", "failed")]),
        widget("Callback dead letters", [[ns, "emailplatform_callback_dead_letters_total", "region", r]]),
        widget("Bounce and complaint rate", [["AWS/SES", "Reputation.BounceRate"],
                                             ["AWS/SES", "Reputation.ComplaintRate"]], "Maximum"),
        widget("API 5xx ratio", [["AWS/ApiGateway", "5XXError", "ApiName", api_name]], "Average"),
        widget("Dead-letter queues", [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q]
                                      for q in dlqs], "Maximum"),
    ]}
