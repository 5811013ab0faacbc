"""The controller as an ECS Fargate service (one task; DR runs passive behind the lease)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.base import child
from infra.policies import policy_document


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
        container = pulumi.Output.all(logs.name, pulumi.Output.from_input(args.environment)).apply(lambda v: json.dumps([{
            "name": "controller", "image": args.image, "essential": True, "command": ["python", "-m", "controller"],
            "environment": [{"name": k, "value": str(val)} for k, val in sorted(v[1].items())],
            "portMappings": [{"containerPort": args.metrics_port, "protocol": "tcp"}],
            "dockerLabels": {"PROMETHEUS_EXPORTER_PORT": str(args.metrics_port), "PROMETHEUS_EXPORTER_PATH": "/metrics"},
            "stopTimeout": 60,  # SIGTERM → finish or abandon the current item, release the lease
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": v[0], "awslogs-region": args.region, "awslogs-stream-prefix": "controller"}}}]))
        task = aws.ecs.TaskDefinition(f"{name}-task", family=f"{args.prefix}-controller", cpu="512", memory="1024",
                                      network_mode="awsvpc", requires_compatibilities=["FARGATE"],
                                      execution_role_arn=execution.arn, task_role_arn=self.task_role.arn,
                                      container_definitions=container, opts=o)
        self.service = aws.ecs.Service(f"{name}-service", cluster=cluster.arn, task_definition=task.arn,
                                       desired_count=1, launch_type="FARGATE",
                                       deployment_minimum_healthy_percent=0, deployment_maximum_percent=200,
                                       # a task that never becomes healthy rolls back to the last good one
                                       deployment_circuit_breaker={"enable": True, "rollback": True},
                                       network_configuration={"subnets": args.subnet_ids,
                                                              "security_groups": args.security_group_ids,
                                                              "assign_public_ip": False}, opts=o)
        self.prometheus = aws.amp.Workspace(f"{name}-prometheus", alias=f"{args.prefix}-{args.region}", opts=o)
        self.register_outputs({"cluster": self.cluster.name, "service": self.service.name, "prometheus": self.prometheus.prometheus_endpoint})
