"""Lambda functions (api, sender, ses_events) with one least-privilege role each.

Every function publishes a version on each deploy and a ``live`` alias points at it; the SQS event
source mappings and the API integration call the alias, so a rollback is moving the alias back
(``aws lambda update-alias --function-name <fn> --name live --function-version <previous>``)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from core import schema
from infra.components.base import child
from infra.policies import policy_document

# (entry point, timeout s, memory MB). The sender mostly waits on SES: below 1,769 MB Lambda gives
# CPU in proportion to memory, and 512 MB bills a mail about 40 % less than 1,024 MB would while
# leaving room for a 40 MB message and the attachments cached beside it (python -m bench.cost).
FUNCTIONS = {
    "api": ("handlers.api.handler", 30, 1024),
    "sender": ("handlers.sender.handler", 900, 512),
    "ses_events": ("handlers.ses_events.handler", 60, 512),
}

def _policy_json(fn: str, arns: dict[str, str]) -> str:
    return json.dumps(policy_document(fn, arns))


ASSUME_LAMBDA = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "lambda.amazonaws.com"}}]})


@dataclass
class FunctionsArgs:
    prefix: str
    region: str
    artifact: str  # an absolute path (infra/program.py resolves it from the repository root)
    environment: dict[str, pulumi.Input[str]]
    arns: dict[str, pulumi.Input[str]]  # resource kind → ARN (see infra/policies.py)
    send_queue_arn: pulumi.Input[str]
    events_queue_arn: pulumi.Input[str]
    ses_max_send_rate: float
    provider: Any
    log_retention_days: int = 30
    policies: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    function_environment: dict[str, dict[str, pulumi.Input[str]]] = field(default_factory=dict)  # per function
    # opt-in: a fresh account's concurrency quota is 10, and Lambda refuses a reservation that leaves
    # under 10 unreserved (raise the quota first; README "Running against real AWS")
    reserve_sender_concurrency: bool = False


class Functions(pulumi.ComponentResource):
    def __init__(self, name: str, args: FunctionsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Functions", name, None, opts)
        self.functions: dict[str, aws.lambda_.Function] = {}
        self.aliases: dict[str, aws.lambda_.Alias] = {}
        self.roles: dict[str, aws.iam.Role] = {}
        self.policies: dict[str, pulumi.Output[str]] = {}
        code = pulumi.FileArchive(args.artifact)
        kinds = sorted(args.arns)
        resolved = pulumi.Output.all(*[args.arns[k] for k in kinds]).apply(lambda vals: dict(zip(kinds, vals)))
        for fn, (entry, timeout, memory) in FUNCTIONS.items():
            role = aws.iam.Role(f"{name}-{fn}-role", assume_role_policy=ASSUME_LAMBDA, opts=child(self, args.provider))
            policy = resolved.apply(functools.partial(_policy_json, fn))
            self.policies[fn] = policy
            aws.iam.RolePolicy(f"{name}-{fn}-policy", role=role.id, policy=policy, opts=child(role, args.provider))
            logs = aws.cloudwatch.LogGroup(f"{name}-{fn}-logs", name=f"/aws/lambda/{args.prefix}-{fn}",
                                           retention_in_days=args.log_retention_days, kms_key_id=args.arns["key"],
                                           opts=child(self, args.provider))
            aws.iam.RolePolicy(f"{name}-{fn}-logs", role=role.id, policy=logs.arn.apply(lambda arn: json.dumps({
                "Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{arn}:*"},
                    {"Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
                     "Resource": "*"}]})), opts=child(role, args.provider))
            # SES allows ses_max_send_rate/s; each sender works through a batch sequentially at
            # about 10 sends/s of its own, so more concurrency than this only queues on the limiter.
            reserved = (max(1, int(args.ses_max_send_rate // 10))
                        if fn == "sender" and args.reserve_sender_concurrency else None)
            self.functions[fn] = aws.lambda_.Function(
                f"{name}-{fn}", name=f"{args.prefix}-{fn}", runtime="python3.11", handler=entry, code=code,
                role=role.arn, timeout=timeout, memory_size=memory, architectures=["arm64"],
                tracing_config={"mode": "Active"}, reserved_concurrent_executions=reserved,
                kms_key_arn=args.arns["key"],
                environment={"variables": {**args.environment, **args.function_environment.get(fn, {}),
                                           "POWERTOOLS_SERVICE_NAME": f"{args.prefix}-{fn}"}},
                logging_config={"log_format": "JSON", "log_group": logs.name}, publish=True,
                opts=child(self, args.provider))
            self.aliases[fn] = aws.lambda_.Alias(f"{name}-{fn}-live", name="live",
                                                 function_name=self.functions[fn].name,
                                                 function_version=self.functions[fn].version,
                                                 opts=child(self.functions[fn], args.provider))
            self.roles[fn] = role
        for fn, queue_arn, queue in (("sender", args.send_queue_arn, schema.SEND_QUEUE),
                                     ("ses_events", args.events_queue_arn, schema.EVENTS_QUEUE)):
            aws.lambda_.EventSourceMapping(f"{name}-{fn}-source", event_source_arn=queue_arn,
                                           function_name=self.aliases[fn].arn, batch_size=queue.batch_size,
                                           maximum_batching_window_in_seconds=queue.batching_window or None,
                                           function_response_types=["ReportBatchItemFailures"],
                                           opts=child(self.functions[fn], args.provider))
        self.register_outputs({fn: a.arn for fn, a in self.aliases.items()})
