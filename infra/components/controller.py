"""The controller as an ECS Fargate service (one task; DR runs passive behind the lease), with an
ADOT collector sidecar that ships its Prometheus metrics to Amazon Managed Prometheus and the ones
the CloudWatch alarms watch to CloudWatch.

Why ADOT and not the CloudWatch agent: one scrape of ``/metrics`` feeds both destinations. The
collector remote-writes every series to the region's AMP workspace (SigV4, ``aps:RemoteWrite`` on
that workspace only), where the Grafana dashboard (ops/grafana) reads them with the same PromQL as
locally; and its ``awsemf`` exporter writes the few series the alarms need as EMF, so alarms and
AMP see the same samples. The CloudWatch agent's Prometheus scraping writes to CloudWatch only: AMP
would need a second scraper (AMP's managed scraper works for EKS clusters, not ECS tasks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.base import child
from infra.policies import failover_policy_document, policy_document


@dataclass
class ControllerArgs:
    prefix: str
    region: str
    image: str  # pulled from this region's registry: replicate the ECR repository to DR
    subnet_ids: list[str]
    security_group_ids: list[str]
    environment: dict[str, pulumi.Input[str]]
    arns: dict[str, pulumi.Input[str]]
    provider: Any
    metrics_port: int = 9102
    metrics_namespace: str = "EmailPlatform/emailplatform"  # core/observability.emf_namespace(prefix)
    # pulled from public ECR: the subnets need a NAT gateway (or mirror it into this region's ECR
    # and set collectorImage); pinned, move it on with ADOT's releases
    collector_image: str = "public.ecr.aws/aws-observability/aws-otel-collector:v0.47.0"
    scrape_seconds: int = 30
    # the DR controller with automatic failover on: the region it watches and the ARNs of what the
    # failover calls (infra/policies.py FAILOVER_ACTIONS: health_check, no_leader_alarm, alarm_topic)
    watched_region: str | None = None
    failover_arns: dict[str, pulumi.Input[str]] | None = None


# Redeploys hand the lease over without a gap in sending (core/services/regions.py fences the
# senders while no lease is live): ECS starts the new task first and stops the old one only once
# the new one runs (minimum healthy 100 %, maximum 200 %); the new task waits as a standby and takes
# the lease within LEASE_TAKEOVER_POLL_SECONDS (controller/jobs.py) of the old task releasing it on
# SIGTERM. The old task has STOP_TIMEOUT_SECONDS to finish or abandon its current item first
# (Fargate allows 120); past it ECS kills it, the lease is not released and runs out instead
# (≤ EMAILPLATFORM_LEASE_SECONDS after its last renewal). README "Redeploying the controller".
DEPLOYMENT_MINIMUM_HEALTHY_PERCENT = 100
DEPLOYMENT_MAXIMUM_PERCENT = 200
STOP_TIMEOUT_SECONDS = 60


# What the image is built for (README: `docker build --platform linux/arm64`): the task must run on
# the same architecture, or Fargate (X86_64 by default) fails with `exec format error`.
IMAGE_PLATFORM = "linux/arm64"
RUNTIME_PLATFORM = {"operating_system_family": IMAGE_PLATFORM.split("/")[0].upper(),
                    "cpu_architecture": IMAGE_PLATFORM.split("/")[1].upper()}


# The controller metrics the CloudWatch alarms and dashboard read (infra/components/operations.py),
# with the dimension sets the collector publishes them under. The scrape adds ``region`` to every
# series (a target label; a series' own ``region`` label wins), so each has a per-region dimension.
CLOUDWATCH_METRICS: dict[str, list[list[str]]] = {
    "emailplatform_controller_heartbeat_age_seconds": [["region", "role"], ["region"]],
    "emailplatform_controller_is_leader": [["region"]],
    "emailplatform_controller_lease_lost_total": [["region"]],
    "emailplatform_campaigns_stuck": [["region"]],
    "emailplatform_ses_event_pipeline_lag_seconds": [["region"]],
    "emailplatform_callback_dead_letters_total": [["region"]],
    "emailplatform_ses_max_send_rate": [["region"]],
    # automatic failover (the DR controller's decider): the failover-* alarms and dashboard widgets
    "emailplatform_failover_promotions_total": [["region", "outcome"], ["region"]],
    "emailplatform_failover_signal_bad": [["region", "signal"]],
    "emailplatform_failover_signals_bad": [["region"]],
    "emailplatform_failover_quorum": [["region"]],
    "emailplatform_failover_held": [["region"]],
    "emailplatform_failover_unfinished_since_timestamp_seconds": [["region"]],
    "emailplatform_failover_awaiting_quiet": [["region"]],
}
SCRAPE_LABELS = ("region",)


def collector_config(region: str, remote_write_url: str, namespace: str, log_group: str, port: int,
                     scrape_seconds: int) -> dict[str, Any]:
    """The ADOT collector's configuration (passed in AOT_CONFIG_CONTENT)."""
    return {
        "extensions": {"sigv4auth": {"region": region, "service": "aps"}, "health_check": {}},
        # The receiver keeps counters' _total (its default since collector 0.80; never set
        # trim_metric_suffixes), so CloudWatch gets the names of core/observability.py.
        "receivers": {"prometheus": {
            "config": {"global": {"scrape_interval": f"{scrape_seconds}s", "scrape_timeout": "10s"},
                       "scrape_configs": [{"job_name": "emailplatform-controller", "honor_labels": True,
                                           "metrics_path": "/metrics",
                                           "static_configs": [{"targets": [f"localhost:{port}"],
                                                               "labels": {"region": region}}]}]}}},
        # CloudWatch gets only what the alarms and the dashboard read (OTTL: drop every other metric)
        "processors": {"batch": {}, "filter/alarms": {"error_mode": "ignore", "metrics": {"metric": [
            "not (" + " or ".join(f'name == "{m}"' for m in sorted(CLOUDWATCH_METRICS)) + ")"]}}},
        "exporters": {
            "prometheusremotewrite": {"endpoint": remote_write_url, "auth": {"authenticator": "sigv4auth"}},
            "awsemf": {"region": region, "namespace": namespace, "log_group_name": log_group,
                       "log_stream_name": "{TaskId}", "dimension_rollup_option": "NoDimensionRollup",
                       "metric_declarations": [{"dimensions": dims, "metric_name_selectors": [f"^{metric}"]}
                                               for metric, dims in sorted(CLOUDWATCH_METRICS.items())]},
        },
        "service": {"extensions": ["sigv4auth", "health_check"], "pipelines": {
            "metrics/amp": {"receivers": ["prometheus"], "processors": ["batch"],
                            "exporters": ["prometheusremotewrite"]},
            "metrics/cloudwatch": {"receivers": ["prometheus"], "processors": ["filter/alarms", "batch"],
                                   "exporters": ["awsemf"]}}},
    }


class ControllerService(pulumi.ComponentResource):
    def __init__(self, name: str, args: ControllerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:ControllerService", name, None, opts)
        o = child(self, args.provider)
        assume = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]})
        self.task_role = aws.iam.Role(f"{name}-task-role", assume_role_policy=assume, opts=o)
        kinds = sorted(args.arns)
        self.policy = pulumi.Output.all(*[args.arns[k] for k in kinds]).apply(
            lambda vals: json.dumps(policy_document("controller", dict(zip(kinds, vals)))))
        aws.iam.RolePolicy(f"{name}-task-policy", role=self.task_role.id, policy=self.policy, opts=o)
        self.failover_policy: pulumi.Output[str] | None = None
        if args.failover_arns is not None and args.watched_region:
            fkinds = sorted(args.failover_arns)
            watched = args.watched_region
            self.failover_policy = pulumi.Output.all(*[args.failover_arns[k] for k in fkinds]).apply(
                lambda vals: json.dumps(failover_policy_document(dict(zip(fkinds, vals)), watched)))
            aws.iam.RolePolicy(f"{name}-failover-policy", role=self.task_role.id, policy=self.failover_policy, opts=o)
        execution = aws.iam.Role(f"{name}-execution-role", assume_role_policy=assume, opts=o)
        logs = aws.cloudwatch.LogGroup(f"{name}-logs", name=f"/ecs/{args.prefix}-controller", retention_in_days=30,
                                       kms_key_id=args.arns["key"], opts=o)
        aws.iam.RolePolicy(f"{name}-execution-policy", role=execution.id, policy=logs.arn.apply(lambda arn: json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{arn}:*"},
                {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage",
                                               "ecr:GetDownloadUrlForLayer"], "Resource": "*"}]})), opts=o)
        self.cluster = cluster = aws.ecs.Cluster(f"{name}-cluster", name=f"{args.prefix}-controller",
                                  settings=[{"name": "containerInsights", "value": "enabled"}], opts=o)
        self.prometheus = aws.amp.Workspace(f"{name}-prometheus", alias=f"{args.prefix}-{args.region}", opts=o)
        # what the collector writes as EMF; CloudWatch turns it into the alarms' metrics
        metrics_logs = aws.cloudwatch.LogGroup(f"{name}-metrics-logs", name=f"/ecs/{args.prefix}-controller-metrics",
                                               retention_in_days=7, kms_key_id=args.arns["key"], opts=o)
        # the collector's permissions: this workspace only, this log group only (not in the
        # controller's table in infra/policies.py, which lists what the controller process calls)
        self.telemetry_policy = pulumi.Output.all(self.prometheus.arn, metrics_logs.arn).apply(lambda v: json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["aps:RemoteWrite"], "Resource": v[0]},
                {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
                 "Resource": [v[1], f"{v[1]}:*"]}]}))
        aws.iam.RolePolicy(f"{name}-telemetry-policy", role=self.task_role.id, policy=self.telemetry_policy, opts=o)
        container = pulumi.Output.all(logs.name, pulumi.Output.from_input(args.environment),
                                      self.prometheus.prometheus_endpoint, metrics_logs.name).apply(lambda v: json.dumps([{
            "name": "controller", "image": args.image, "essential": True, "command": ["python", "-m", "controller"],
            "environment": [{"name": k, "value": str(val)} for k, val in sorted(v[1].items())],
            "portMappings": [{"containerPort": args.metrics_port, "protocol": "tcp"}],
            "stopTimeout": STOP_TIMEOUT_SECONDS,  # SIGTERM → finish or abandon the current item, release the lease
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": v[0], "awslogs-region": args.region, "awslogs-stream-prefix": "controller"}}}, {
            # not essential: a crashed collector leaves the controller running, and its silence
            # fires the heartbeat alarm (treat_missing_data=breaching)
            "name": "adot-collector", "image": args.collector_image, "essential": False,
            "command": ["--config=env:AOT_CONFIG_CONTENT"],
            "environment": [{"name": "AOT_CONFIG_CONTENT", "value": json.dumps(collector_config(
                args.region, f"{v[2].rstrip('/')}/api/v1/remote_write", args.metrics_namespace, v[3],
                args.metrics_port, args.scrape_seconds))}],
            "memoryReservation": 128,
            "healthCheck": {"command": ["/healthcheck"], "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 15},
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": v[0], "awslogs-region": args.region, "awslogs-stream-prefix": "adot"}}}]))
        task = aws.ecs.TaskDefinition(f"{name}-task", family=f"{args.prefix}-controller", cpu="512", memory="1024",
                                      network_mode="awsvpc", requires_compatibilities=["FARGATE"],
                                      execution_role_arn=execution.arn, task_role_arn=self.task_role.arn,
                                      runtime_platform=RUNTIME_PLATFORM, container_definitions=container, opts=o)
        self.service = aws.ecs.Service(f"{name}-service", cluster=cluster.arn, task_definition=task.arn,
                                       desired_count=1, launch_type="FARGATE",
                                       deployment_minimum_healthy_percent=DEPLOYMENT_MINIMUM_HEALTHY_PERCENT,
                                       deployment_maximum_percent=DEPLOYMENT_MAXIMUM_PERCENT,
                                       # a task that never becomes healthy rolls back to the last good one
                                       deployment_circuit_breaker={"enable": True, "rollback": True},
                                       network_configuration={"subnets": args.subnet_ids,
                                                              "security_groups": args.security_group_ids,
                                                              "assign_public_ip": False}, opts=o)
        self.register_outputs({"cluster": self.cluster.name, "service": self.service.name, "prometheus": self.prometheus.prometheus_endpoint})
