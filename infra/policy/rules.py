"""Rules that span resources, as plain functions over a list of ``Resource`` records.

The same functions run in two places:

* ``infra/policy/__main__.py``: a CrossGuard policy pack, ``pulumi preview --policy-pack infra/policy``
  against a real stack (each rule is a ``StackValidationPolicy``);
* ``tests/infra``: over the resources the program registers under Pulumi's mocks.

Each rule takes every resource of the stack and returns the violations it finds; an empty list
means the rule holds. Properties use Pulumi's schema names (camelCase), as both the engine and the
mocks report them. This module imports nothing from the project or from pulumi, so the policy pack
runs on its own.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Resource:
    type: str
    name: str
    urn: str
    props: Mapping[str, Any]  # outputs in a real stack; inputs + mocked outputs under the mocks
    provider: str | None = None  # the provider's URN; None = the default provider
    dependencies: list[str] = field(default_factory=list)  # URNs
    protect: bool = False
    parent: str | None = None


@dataclass(frozen=True)
class Violation:
    rule: str
    urn: str
    message: str


KEY_TYPES = ("aws:kms/key:Key", "aws:kms/replicaKey:ReplicaKey")
STATEFUL_TYPES = ("aws:dynamodb/table:Table", "aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2", *KEY_TYPES,
                  "aws:secretsmanager/secret:Secret", "aws:opensearch/domain:Domain")
REQUIRED_TAGS = ("project", "stack", "region-role")
COMPONENT_PACKAGES = ("emailPlatform",)
# resource → the property holding a policy document we write
POLICY_PROPS = {
    "aws:iam/rolePolicy:RolePolicy": "policy", "aws:iam/policy:Policy": "policy",
    "aws:iam/role:Role": "assumeRolePolicy", "aws:sqs/queuePolicy:QueuePolicy": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy", "aws:opensearch/domainPolicy:DomainPolicy": "accessPolicies",
    "aws:s3/bucketPolicy:BucketPolicy": "policy", "aws:kms/key:Key": "policy", "aws:kms/replicaKey:ReplicaKey": "policy",
}


# --- helpers -----------------------------------------------------------------------------------

def is_custom(r: Resource) -> bool:
    """A cloud resource (not a component, provider or the stack)."""
    return not (r.type.startswith("pulumi:") or r.type.split(":")[0] in COMPONENT_PACKAGES)


def of(resources: Iterable[Resource], *types: str) -> list[Resource]:
    return [r for r in resources if r.type in types]


def _list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, list | tuple) else [v]


def _doc(v: Any) -> dict[str, Any]:
    if v is None or v == "":
        return {}
    return json.loads(v) if isinstance(v, str) else dict(v)


def statements(v: Any) -> list[dict[str, Any]]:
    return [dict(s) for s in _list(_doc(v).get("Statement"))]


def _actions_cover(stmt: Mapping[str, Any], actions: Iterable[str]) -> bool:
    granted = _list(stmt.get("Action"))
    service = lambda a: a.split(":")[0]  # noqa: E731
    return all(a in granted or f"{service(a)}:*" in granted or "*" in granted for a in actions)


def _principals(stmt: Mapping[str, Any], kind: str) -> list[str]:
    p = stmt.get("Principal")
    if p == "*":
        return ["*"]
    return [str(x) for x in _list((p or {}).get(kind))]


def _condition_values(stmt: Mapping[str, Any], key: str) -> list[str]:
    return [str(v) for op in (stmt.get("Condition") or {}).values() for k, vals in dict(op).items() if k == key
            for v in _list(vals)]


def _region_of(arn: Any) -> str:
    parts = str(arn).split(":")
    return parts[3] if len(parts) > 3 else ""


def _by(resources: Iterable[Resource], prop: str) -> dict[Any, Resource]:
    return {r.props.get(prop): r for r in resources if r.props.get(prop) is not None}


def _arn_like(arn: Any, patterns: Iterable[str]) -> bool:
    """Whether ``arn`` matches one of ``patterns`` as ArnLike does (``*`` and ``?``; ArnEquals and
    StringEquals values without wildcards match themselves only)."""
    return arn is not None and any(fnmatch.fnmatchcase(str(arn), p) for p in patterns)


def _allows(stmt: Mapping[str, Any], service: str, actions: list[str]) -> bool:
    return stmt.get("Effect") == "Allow" and service in _principals(stmt, "Service") and _actions_cover(stmt, actions)


def producers(resources: list[Resource]) -> dict[str, set[str]]:
    """Destination ARN → the AWS service principals that write to it."""
    out: dict[str, set[str]] = {}
    for n in of(resources, "aws:s3/bucketNotification:BucketNotification"):
        for q in _list(n.props.get("queues")):
            out.setdefault(q.get("queueArn"), set()).add("s3.amazonaws.com")
    for a in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm"):
        for topic in _list(a.props.get("alarmActions")):
            out.setdefault(topic, set()).add("cloudwatch.amazonaws.com")
    return out


Grant = Callable[[dict[str, Any]], bool]


def _service_grant(principal: str, actions: list[str], condition: str | None = None) -> Grant:
    """A key-policy statement for an AWS service principal (with a condition key, when given)."""
    def ok(s: dict[str, Any]) -> bool:
        return (principal in _principals(s, "Service") and _actions_cover(s, actions)
                and (condition is None or bool(_condition_values(s, condition))))
    return ok


def _via_grant(service: str, region: str, actions: list[str], role: str | None = None) -> Grant:
    """A key-policy statement for use through ``service`` in ``region`` (by ``role``, when given)."""
    def ok(s: dict[str, Any]) -> bool:
        return (f"{service}.{region}.amazonaws.com" in _condition_values(s, "kms:ViaService")
                and _actions_cover(s, actions)
                and (role is None or role in _principals(s, "AWS") or role in _condition_values(s, "aws:PrincipalArn")))
    return ok


# (method, path) of the routes the app's OpenAPI marks `security: []` (tests/infra keeps them in step)
PUBLIC_ROUTES: list[tuple[str, str]] = [
    (m, p) for m, p in json.loads((Path(__file__).resolve().parent / "public_routes.json").read_text())]


# What the controller's code calls, for the controller-roles-grant-what-the-code-calls rule: generated
# from infra/policies.py (`python -m infra.policies > infra/policy/controller_actions.json`; tests/infra
# keeps them equal), where the role policies come from and which the e2e least-privilege test and
# tests/integration/test_failover_permissions.py check against the calls the code makes.
CONTROLLER_ACTIONS: dict[str, list[str]] = json.loads(
    (Path(__file__).resolve().parent / "controller_actions.json").read_text())


def _mtls_names(resources: list[Resource]) -> set[str]:
    """Host names that ask for a client certificate: mTLS custom domains and records aliasing them."""
    domains = of(resources, "aws:apigateway/domainName:DomainName")
    mtls = {d.props.get("domainName") for d in domains
            if (d.props.get("mutualTlsAuthentication") or {}).get("truststoreUri")}
    mtls_targets = {d.props.get("regionalDomainName") for d in domains if d.props.get("domainName") in mtls}
    for rec in of(resources, "aws:route53/record:Record"):
        if any(a.get("name") in mtls_targets for a in _list(rec.props.get("aliases"))):
            mtls.add(rec.props.get("name"))
    return mtls


# --- rules -------------------------------------------------------------------------------------

def key_policies_grant_writers(resources: list[Resource]) -> list[Violation]:
    """Every KMS key used by log groups, SNS topics, SQS queues (S3 notifications to an encrypted
    queue), S3 replication or secrets has a key-policy statement for the service (or role) that
    encrypts with it in that region."""
    rule, out = "key-policies-grant-writers", []
    writers = producers(resources)
    sse_by_bucket = {c.props.get("bucket"): c for c in of(
        resources, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")}
    for key in of(resources, *KEY_TYPES):
        arn, region = key.props.get("arn"), _region_of(key.props.get("arn"))
        stmts = [s for s in statements(key.props.get("policy")) if s.get("Effect") == "Allow"]
        needs: list[tuple[str, Grant]] = []

        for lg in of(resources, "aws:cloudwatch/logGroup:LogGroup"):
            if lg.props.get("kmsKeyId") == arn:
                needs.append((f"log group {lg.name}: logs.{region}.amazonaws.com with the aws:logs:arn context",
                              _service_grant(f"logs.{region}.amazonaws.com", ["kms:Encrypt", "kms:GenerateDataKey"],
                                      "kms:EncryptionContext:aws:logs:arn")))
        for t in of(resources, "aws:sns/topic:Topic", "aws:sqs/queue:Queue"):
            if t.props.get("kmsMasterKeyId") == arn:
                for principal in sorted(writers.get(t.props.get("arn"), ())):
                    needs.append((f"{t.name}: {principal} writes to it",
                                  _service_grant(principal, ["kms:Decrypt", "kms:GenerateDataKey"])))
        for c in of(resources, "aws:s3/bucketReplicationConfig:BucketReplicationConfig"):
            role = c.props.get("role")
            sse = sse_by_bucket.get(c.props.get("bucket"))
            source_keys = [((r.get("applyServerSideEncryptionByDefault") or {}).get("kmsMasterKeyId"))
                           for r in _list((sse.props if sse else {}).get("rules"))]
            if arn in source_keys:
                needs.append((f"{c.name}: the replication role decrypts the source", _via_grant("s3", region, ["kms:Decrypt"], role)))
            for rr in _list(c.props.get("rules")):
                dest = (rr.get("destination") or {})
                if (dest.get("encryptionConfiguration") or {}).get("replicaKmsKeyId") == arn:
                    needs.append((f"{c.name}: the replication role re-encrypts into the destination",
                                  _via_grant("s3", region, ["kms:Encrypt", "kms:GenerateDataKey"], role)))
        for sec in of(resources, "aws:secretsmanager/secret:Secret"):
            keys = [sec.props.get("kmsKeyId"), *[r.get("kmsKeyId") for r in _list(sec.props.get("replicas"))]]
            if arn in keys:
                needs.append((f"secret {sec.name}: Secrets Manager encrypts it",
                              _via_grant("secretsmanager", region, ["kms:Decrypt", "kms:GenerateDataKey"])))
        for why, ok in needs:
            if not any(ok(s) for s in stmts):
                out.append(Violation(rule, key.urn, f"key {key.name} has no key-policy statement for {why}"))
    return out


def destinations_accept_their_producers(resources: list[Resource]) -> list[Violation]:
    """Each hop of a pipeline lets the service before it write, as AWS checks it.

    AWS refuses the resource at create time, or silently drops the data later, unless:

    * an SES event destination's Firehose role trusts ses.amazonaws.com (for that configuration set,
      when it names one) and may put records to the stream;
    * a Firehose stream's role trusts firehose.amazonaws.com and may write the bucket (objects and
      bucket-level calls), with the destination's key and into its log stream;
    * a queue a bucket notifies has a queue policy letting s3.amazonaws.com send for that bucket,
      which the notification waits for (S3 refuses the notification configuration otherwise:
      "Unable to validate the following destination configurations");
    * every function's role can write the function's log group."""
    return [*_ses_to_firehose(resources), *_firehose_to_s3(resources), *_s3_to_sqs(resources),
            *_functions_to_logs(resources)]


def _role_statements(resources: list[Resource], role: Resource) -> list[dict[str, Any]]:
    """The Allow statements of a role's inline and standalone policies."""
    ids = {role.props.get("id"), role.props.get("name")} - {None}
    return [st for p in of(resources, "aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy")
            if p.props.get("role") in ids for st in statements(p.props.get("policy")) if st.get("Effect") == "Allow"]


def _grants(stmts: list[dict[str, Any]], action: str, resource: Any) -> bool:
    return resource is not None and any(_actions_cover(st, [action]) and _arn_like(resource, _list(st.get("Resource")))
                                        for st in stmts)


def _ses_to_firehose(resources: list[Resource]) -> list[Violation]:
    rule, out = "destinations-accept-their-producers", []
    roles = _by(of(resources, "aws:iam/role:Role"), "arn")
    for d in of(resources, "aws:sesv2/configurationSetEventDestination:ConfigurationSetEventDestination"):
        fh = (d.props.get("eventDestination") or {}).get("kinesisFirehoseDestination") or {}
        if not fh:
            continue
        stream, role = fh.get("deliveryStreamArn"), roles.get(fh.get("iamRoleArn"))
        if role is None:
            out.append(Violation(rule, d.urn, f"{d.name}: its role {fh.get('iamRoleArn')} is no role of this stack"))
            continue
        trusts = [st for st in statements(role.props.get("assumeRolePolicy"))
                  if _allows(st, "ses.amazonaws.com", ["sts:AssumeRole"])]
        parts = str(stream).split(":")
        config_set = (f"arn:aws:ses:{parts[3]}:{parts[4]}:configuration-set/{d.props.get('configurationSetName')}"
                      if len(parts) > 4 else None)
        if not trusts:
            out.append(Violation(rule, d.urn, f"{d.name}: its role {role.name} does not trust ses.amazonaws.com"))
        elif not any(not _condition_values(st, "aws:SourceArn") or _arn_like(
                config_set, _condition_values(st, "aws:SourceArn")) for st in trusts):
            out.append(Violation(rule, d.urn, f"{d.name}: its role {role.name} trusts SES for "
                                              f"{sorted({v for st in trusts for v in _condition_values(st, 'aws:SourceArn')})}"
                                              f", not for {config_set}"))
        if not _grants(_role_statements(resources, role), "firehose:PutRecordBatch", stream):
            out.append(Violation(rule, d.urn, f"{d.name}: its role {role.name} may not put records to {stream}"))
    return out


def _firehose_to_s3(resources: list[Resource]) -> list[Violation]:
    rule, out = "destinations-accept-their-producers", []
    roles = _by(of(resources, "aws:iam/role:Role"), "arn")
    for f in of(resources, "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream"):
        dest = f.props.get("extendedS3Configuration") or {}
        if not dest:
            continue
        role, bucket = roles.get(dest.get("roleArn")), dest.get("bucketArn")
        if role is None:
            out.append(Violation(rule, f.urn, f"{f.name}: its role {dest.get('roleArn')} is no role of this stack"))
            continue
        if not any(_allows(st, "firehose.amazonaws.com", ["sts:AssumeRole"])
                   for st in statements(role.props.get("assumeRolePolicy"))):
            out.append(Violation(rule, f.urn, f"{f.name}: its role {role.name} does not trust firehose.amazonaws.com"))
        stmts = _role_statements(resources, role)
        needs = [("s3:PutObject", f"{bucket}/*"), ("s3:AbortMultipartUpload", f"{bucket}/*"),
                 ("s3:GetBucketLocation", bucket), ("s3:ListBucket", bucket)]
        if dest.get("kmsKeyArn"):
            needs.append(("kms:GenerateDataKey", dest["kmsKeyArn"]))
        logging = dest.get("cloudwatchLoggingOptions") or {}
        if logging.get("enabled"):
            group = next((g for g in of(resources, "aws:cloudwatch/logGroup:LogGroup") if g.provider == f.provider
                          and g.props.get("name") == logging.get("logGroupName")), None)
            needs.append(("logs:PutLogEvents", f"{group.props.get('arn') if group else logging.get('logGroupName')}"
                                               f":log-stream:{logging.get('logStreamName')}"))
        for action, arn in needs:
            if not _grants(stmts, action, arn):
                out.append(Violation(rule, f.urn, f"{f.name}: its role {role.name} is not granted {action} on {arn}"))
    return out


def _s3_to_sqs(resources: list[Resource]) -> list[Violation]:
    rule, out = "destinations-accept-their-producers", []
    buckets = of(resources, "aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
    queues = _by(of(resources, "aws:sqs/queue:Queue"), "arn")
    queue_policies = of(resources, "aws:sqs/queuePolicy:QueuePolicy")
    for n in of(resources, "aws:s3/bucketNotification:BucketNotification"):
        bucket = next((b for b in buckets if n.props.get("bucket") in (b.props.get("id"), b.props.get("bucket"))), None)
        bucket_arn = bucket.props.get("arn") if bucket else None
        for qc in _list(n.props.get("queues")):
            q = queues.get(qc.get("queueArn"))
            urls = {q.props.get("url"), q.props.get("id")} - {None} if q else set()
            allowing = [p for p in queue_policies if p.props.get("queueUrl") in urls and any(
                _allows(st, "s3.amazonaws.com", ["sqs:SendMessage"])
                and _arn_like(bucket_arn, _condition_values(st, "aws:SourceArn"))
                for st in statements(p.props.get("policy")))]
            if not allowing:
                out.append(Violation(rule, n.urn, f"{n.name}: queue {qc.get('queueArn')} has no policy letting S3 "
                                                  f"send notifications of bucket {n.props.get('bucket')} "
                                                  "(s3.amazonaws.com, sqs:SendMessage, aws:SourceArn the bucket)"))
            elif not any(p.urn in n.dependencies for p in allowing):
                out.append(Violation(rule, n.urn, f"{n.name}: does not depend on {allowing[0].name}, the queue policy "
                                                  "S3 checks when the notification is put"))
    return out


def _functions_to_logs(resources: list[Resource]) -> list[Violation]:
    rule, out = "destinations-accept-their-producers", []
    roles_by_arn = _by(of(resources, "aws:iam/role:Role"), "arn")
    # log group names repeat per region: the function's group is the one under the same provider
    groups = {(g.props.get("name"), g.provider): g for g in of(resources, "aws:cloudwatch/logGroup:LogGroup")}
    role_policies = of(resources, "aws:iam/rolePolicy:RolePolicy")
    for fn in of(resources, "aws:lambda/function:Function"):
        group = groups.get(((fn.props.get("loggingConfig") or {}).get("logGroup"), fn.provider))
        role = roles_by_arn.get(fn.props.get("role"))
        if group is None or role is None:
            continue
        role_ids = {role.props.get("id"), role.props.get("name")} - {None}
        target = f"{group.props.get('arn')}:*"
        if not any(p.props.get("role") in role_ids and any(
                _actions_cover(s, ["logs:PutLogEvents"]) and target in _list(s.get("Resource"))
                for s in statements(p.props.get("policy")) if s.get("Effect") == "Allow") for p in role_policies):
            out.append(Violation(rule, fn.urn, f"{fn.name}: its role cannot write its log group {group.name}"))
    return out


# Firehose's limits for an S3 destination (CreateDeliveryStream's BufferingHints):
# IntervalInSeconds 0-900, SizeInMBs 1-128.
FIREHOSE_BUFFER_SECONDS = (0, 900)
FIREHOSE_BUFFER_MIB = (1, 128)


def firehose_streams_within_aws_limits(resources: list[Resource]) -> list[Violation]:
    """Firehose refuses an S3 destination buffering outside 0-900 s or 1-128 MiB, and encryption
    with a customer managed key that names no key."""
    rule, out = "firehose-streams-within-aws-limits", []
    for f in of(resources, "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream"):
        dest = f.props.get("extendedS3Configuration") or {}
        for prop, (low, high), unit in (("bufferingInterval", FIREHOSE_BUFFER_SECONDS, "s"),
                                        ("bufferingSize", FIREHOSE_BUFFER_MIB, "MiB")):
            value = dest.get(prop)
            if value is not None and not low <= int(value) <= high:
                out.append(Violation(rule, f.urn, f"{f.name}: {prop} {value} {unit} is outside Firehose's "
                                                  f"{low}-{high} {unit}"))
        sse = f.props.get("serverSideEncryption") or {}
        if sse.get("enabled") and sse.get("keyType") == "CUSTOMER_MANAGED_CMK" and not sse.get("keyArn"):
            out.append(Violation(rule, f.urn, f"{f.name}: encrypted with a customer managed key but names no key"))
    return out


# The service principals that assume a role of ours, or write to a resource of ours, on behalf of a
# resource of their own (an SES configuration set, a Firehose stream, an S3 bucket) and say whose in
# aws:SourceAccount / aws:SourceArn (Firehose documents sts:ExternalId, the account id, for the role a
# stream assumes). Without a condition any account's configuration set or stream
# could have the service act with our role (the confused deputy). Not listed: the execution roles
# of Lambda functions, ECS tasks and API Gateway (the role is ours, named in our resource).
CONFUSED_DEPUTY_SERVICES = ("ses.amazonaws.com", "firehose.amazonaws.com")
SOURCE_KEYS = ("aws:SourceAccount", "aws:SourceArn", "sts:ExternalId")


def service_principals_name_their_source(resources: list[Resource]) -> list[Violation]:
    """A role trusted by an AWS service for cross-service use (CONFUSED_DEPUTY_SERVICES), and every
    queue or topic policy allowing an AWS service, carries aws:SourceAccount or aws:SourceArn: the
    service acts for this account's resources only (confused-deputy prevention)."""
    rule, out = "service-principals-name-their-source", []
    for role in of(resources, "aws:iam/role:Role"):
        for st in statements(role.props.get("assumeRolePolicy")):
            services = sorted(set(_principals(st, "Service")) & set(CONFUSED_DEPUTY_SERVICES))
            if st.get("Effect") == "Allow" and services and not any(_condition_values(st, k) for k in SOURCE_KEYS):
                out.append(Violation(rule, role.urn, f"{role.name}: trusts {services} without aws:SourceAccount, "
                                                      "aws:SourceArn or sts:ExternalId"))
    for p in of(resources, "aws:sqs/queuePolicy:QueuePolicy", "aws:sns/topicPolicy:TopicPolicy"):
        for st in statements(p.props.get("policy")):
            services = sorted(_principals(st, "Service"))
            if st.get("Effect") == "Allow" and services and not any(_condition_values(st, k) for k in SOURCE_KEYS):
                out.append(Violation(rule, p.urn, f"{p.name}: allows {services} without aws:SourceAccount or "
                                                  "aws:SourceArn"))
    return out


def replication_waits_for_versioning(resources: list[Resource]) -> list[Violation]:
    """S3 refuses a replication configuration until versioning is enabled on both buckets."""
    rule, out = "replication-waits-for-versioning", []
    buckets_by_arn = _by(of(resources, "aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"), "arn")
    versioning = of(resources, "aws:s3/bucketVersioning:BucketVersioning")
    for c in of(resources, "aws:s3/bucketReplicationConfig:BucketReplicationConfig"):
        ends = {"source": c.props.get("bucket")}
        for rr in _list(c.props.get("rules")):
            b = buckets_by_arn.get((rr.get("destination") or {}).get("bucket"))
            ends["destination"] = (b.props.get("id") or b.props.get("bucket")) if b else None
        for end, bucket in ends.items():
            v = [x for x in versioning if x.props.get("bucket") == bucket
                 and (x.props.get("versioningConfiguration") or {}).get("status") == "Enabled"]
            if not v:
                out.append(Violation(rule, c.urn, f"{c.name}: the {end} bucket has no enabled versioning"))
            elif not any(x.urn in c.dependencies for x in v):
                out.append(Violation(rule, c.urn, f"{c.name}: does not depend on the {end} bucket's versioning"))
    return out


def alarm_topics_have_subscribers(resources: list[Resource]) -> list[Violation]:
    """An alarm nobody hears is no alarm: every topic an alarm notifies has a subscription."""
    rule = "alarm-topics-have-subscribers"
    subscribed = {s.props.get("topic") for s in of(resources, "aws:sns/topicSubscription:TopicSubscription")}
    topics = {t for a in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm") for t in _list(a.props.get("alarmActions"))}
    by_arn = _by(of(resources, "aws:sns/topic:Topic"), "arn")
    return [Violation(rule, by_arn[t].urn if t in by_arn else "", f"alarm topic {t} has no subscription")
            for t in sorted(topics - subscribed)]


def alarms_notify(resources: list[Resource]) -> list[Violation]:
    """Every alarm notifies someone when it fires (an alarm without actions only colours a console)."""
    rule = "alarms-notify"
    return [Violation(rule, a.urn, f"{a.name} has no alarm actions")
            for a in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm") if not _list(a.props.get("alarmActions"))]


def health_checks_avoid_mtls(resources: list[Resource]) -> list[Violation]:
    """A Route 53 health checker has no client certificate: it must not target an mTLS domain (or a
    name served by one), nor an execute-api endpoint that is disabled."""
    rule, out = "health-checks-avoid-mtls", []
    mtls = _mtls_names(resources)
    disabled = {r.props.get("id") for r in of(resources, "aws:apigateway/restApi:RestApi")
                if r.props.get("disableExecuteApiEndpoint")}
    for hc in of(resources, "aws:route53/healthCheck:HealthCheck"):
        fqdn = str(hc.props.get("fqdn") or "")
        if fqdn in mtls:
            out.append(Violation(rule, hc.urn, f"{hc.name} targets {fqdn}, which requires a client certificate"))
        elif ".execute-api." in fqdn and fqdn.split(".")[0] in disabled:
            out.append(Violation(rule, hc.urn, f"{hc.name} targets {fqdn}, whose execute-api endpoint is disabled"))
    return out


def no_default_provider(resources: list[Resource]) -> list[Violation]:
    """Every cloud resource names an explicit provider (the region is never implicit)."""
    rule, out = "no-default-provider", []
    for r in resources:
        if not is_custom(r):
            continue
        name = (r.provider or "").split("::")[-1]
        if not r.provider or name.startswith("default"):
            out.append(Violation(rule, r.urn, f"{r.type} {r.name} uses the default provider"))
    return out


def stateful_resources_protected(resources: list[Resource]) -> list[Violation]:
    """Tables, buckets, keys, secrets and search domains cannot be deleted by a stray `pulumi up`."""
    rule = "stateful-resources-protected"
    return [Violation(rule, r.urn, f"{r.type} {r.name} is not protected") for r in of(resources, *STATEFUL_TYPES)
            if not r.protect]


def resources_tagged_by_provider(resources: list[Resource]) -> list[Violation]:
    """Every cloud resource's provider sets default tags: project, stack and region role."""
    rule, out = "resources-tagged-by-provider", []
    providers = {r.urn: r for r in resources if r.type.startswith("pulumi:providers:")}
    for r in resources:
        if not is_custom(r) or not r.provider:
            continue  # no-default-provider reports it
        p = providers.get(r.provider.rsplit("::", 1)[0]) or providers.get(r.provider)
        tags = dict((_doc(p.props.get("defaultTags")) if p else {}).get("tags") or {})
        missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
        if missing:
            out.append(Violation(rule, r.urn, f"{r.type} {r.name}: its provider's default tags lack {missing}"))
    return out


def no_wildcard_actions(resources: list[Resource]) -> list[Violation]:
    """No Allow statement we write uses a wildcard action. The one exception is the key policy's
    account-root statement (``kms:*`` to the account root is how a key delegates to IAM). A resource
    of ``*`` stays allowed where AWS requires it (xray:PutTraceSegments, ecr:GetAuthorizationToken)."""
    rule, out = "no-wildcard-actions", []
    for r in resources:
        prop = POLICY_PROPS.get(r.type)
        if prop is None:
            continue
        for s in statements(r.props.get(prop)):
            if s.get("Effect") != "Allow":
                continue
            wild = [a for a in _list(s.get("Action")) if "*" in str(a)]
            root_admin = (r.type in KEY_TYPES and wild == ["kms:*"]
                          and all(p.startswith("arn:aws:iam::") and p.endswith(":root") for p in _principals(s, "AWS"))
                          and not _principals(s, "Service"))
            if wild and not root_admin:
                out.append(Violation(rule, r.urn, f"{r.name} allows wildcard actions {wild}"))
    return out


def stage_logging_has_account_role(resources: list[Resource]) -> list[Violation]:
    """API Gateway writes access logs only once the account's CloudWatch role is set in that region."""
    rule = "stage-logging-has-account-role"
    accounts = {a.urn: a for a in of(resources, "aws:apigateway/account:Account") if a.props.get("cloudwatchRoleArn")}
    return [Violation(rule, s.urn, f"{s.name} logs access but does not depend on the region's apigateway.Account")
            for s in of(resources, "aws:apigateway/stage:Stage") if s.props.get("accessLogSettings")
            and not any(u in accounts and accounts[u].provider == s.provider for u in s.dependencies)]


def queue_mappings_fit_their_queues(resources: list[Resource]) -> list[Violation]:
    """Lambda refuses an SQS event source mapping whose queue's visibility timeout is shorter than
    the function's timeout, a FIFO batch over 10, and a standard-queue batch over 10 without a
    batching window."""
    rule, out = "queue-mappings-fit-their-queues", []
    queues = _by(of(resources, "aws:sqs/queue:Queue"), "arn")
    functions = {f.props.get("arn"): f for f in of(resources, "aws:lambda/function:Function")}
    aliases = {a.props.get("arn"): functions.get(a.props.get("functionName")) or next(
        (f for f in functions.values() if f.props.get("name") == a.props.get("functionName")), None)
        for a in of(resources, "aws:lambda/alias:Alias")}
    for m in of(resources, "aws:lambda/eventSourceMapping:EventSourceMapping"):
        q = queues.get(m.props.get("eventSourceArn"))
        if q is None:
            continue
        size, window = int(m.props.get("batchSize") or 10), int(m.props.get("maximumBatchingWindowInSeconds") or 0)
        if q.props.get("fifoQueue") and size > 10:
            out.append(Violation(rule, m.urn, f"{m.name}: a FIFO queue's batch is at most 10, not {size}"))
        if not q.props.get("fifoQueue") and size > 10 and window < 1:
            out.append(Violation(rule, m.urn, f"{m.name}: a batch of {size} needs a batching window"))
        fn = aliases.get(m.props.get("functionName")) or functions.get(m.props.get("functionName"))
        if fn is not None and int(q.props.get("visibilityTimeoutSeconds") or 30) < int(fn.props.get("timeout") or 3):
            out.append(Violation(rule, m.urn, f"{m.name}: the queue's visibility timeout is shorter than "
                                              f"the function's timeout"))
    return out


def public_routes_open_at_the_edge(resources: list[Resource],
                                   routes: list[tuple[str, str]] | None = None) -> list[Violation]:
    """Every route the app's OpenAPI marks ``security: []`` (unsubscribe, health) has an explicit
    method without API key or authorizer in a REST API reachable without a client certificate (its
    execute-api endpoint enabled, or mapped to a domain without mTLS); a greedy ``{proxy+}`` that
    requires a key answers 403 to a recipient. And the unsubscribe base URL every function and task
    is given (EMAILPLATFORM_PUBLIC_BASE_URL) is not a name that asks for a client certificate."""
    rule, out = "public-routes-open-at-the-edge", []
    rests = of(resources, "aws:apigateway/restApi:RestApi")
    if not rests:
        return out
    mtls = _mtls_names(resources)
    no_mtls_domains = {d.props.get("domainName") for d in of(resources, "aws:apigateway/domainName:DomainName")
                       if d.props.get("domainName") not in mtls}
    mapped = {m.props.get("restApi") for m in of(resources, "aws:apigateway/basePathMapping:BasePathMapping")
              if m.props.get("domainName") in no_mtls_domains}
    children: dict[tuple[Any, Any], list[Resource]] = {}
    for r in of(resources, "aws:apigateway/resource:Resource"):
        children.setdefault((r.props.get("restApi"), r.props.get("parentId")), []).append(r)
    methods = {(m.props.get("restApi"), m.props.get("resourceId"), m.props.get("httpMethod")): m
               for m in of(resources, "aws:apigateway/method:Method")}

    def resolve(rest_id: Any, root: Any, path: str) -> Any:
        node = root
        for part in path.strip("/").split("/"):
            kids = children.get((rest_id, node), [])
            match = next((k for k in kids if k.props.get("pathPart") == part), None) or next(
                (k for k in kids if str(k.props.get("pathPart", "")).startswith("{")
                 and not str(k.props.get("pathPart")).endswith("+}")), None)
            if match is None:
                return None
            node = match.props.get("id")
        return node

    for method, path in (PUBLIC_ROUTES if routes is None else routes):
        open_in: list[str] = []
        for rest in rests:
            rid = rest.props.get("id")
            reachable = not rest.props.get("disableExecuteApiEndpoint") or rid in mapped
            node = resolve(rid, rest.props.get("rootResourceId"), path)
            m = methods.get((rid, node, method)) or methods.get((rid, node, "ANY")) if node is not None else None
            if reachable and m is not None and not m.props.get("apiKeyRequired") \
                    and (m.props.get("authorization") or "NONE") == "NONE":
                open_in.append(rest.name)
        if not open_in:
            out.append(Violation(rule, rests[0].urn, f"{method} {path} is public in the app but no REST API serves it "
                                                    "without an API key and without a client certificate"))
    for r in of(resources, "aws:lambda/function:Function", "aws:ecs/taskDefinition:TaskDefinition"):
        if r.type == "aws:lambda/function:Function":
            env = dict(((r.props.get("environment") or {}).get("variables")) or {})
        else:
            env = {e.get("name"): e.get("value") for c in json.loads(r.props.get("containerDefinitions") or "[]")
                   for e in _list(c.get("environment"))}
        host = urlsplit(str(env.get("EMAILPLATFORM_PUBLIC_BASE_URL") or "")).hostname
        if host and host in mtls:
            out.append(Violation(rule, r.urn, f"{r.name}: unsubscribe links point at {host}, which requires a "
                                              "client certificate"))
    return out


def fargate_tasks_name_their_architecture(resources: list[Resource]) -> list[Violation]:
    """A Fargate task without ``runtimePlatform`` runs on X86_64; an image built for linux/arm64
    (as the README builds it) then dies with ``exec format error``. State it."""
    rule = "fargate-tasks-name-their-architecture"
    return [Violation(rule, t.urn, f"{t.name} runs on Fargate without a runtimePlatform (X86_64 by default)")
            for t in of(resources, "aws:ecs/taskDefinition:TaskDefinition")
            if "FARGATE" in _list(t.props.get("requiresCompatibilities"))
            and not (t.props.get("runtimePlatform") or {}).get("cpuArchitecture")]


def ses_senders_reach_tenant_identities(resources: list[Resource]) -> list[Violation]:
    """SES authorises ``ses:SendEmail`` against the From identity *and* the configuration set.
    Tenants send from their own domains (runtime data), so a grant on the platform's domain alone
    is AccessDenied for every tenant sender: each grant names ``identity/*`` of its region and a
    configuration set."""
    rule, out = "ses-senders-reach-tenant-identities", []
    for r in of(resources, "aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy"):
        for s in statements(r.props.get("policy")):
            if s.get("Effect") != "Allow" or not _actions_cover(s, ["ses:SendEmail"]):
                continue
            res = [str(x) for x in _list(s.get("Resource"))]
            if not any(x.startswith("arn:aws:ses:") and x.endswith(":identity/*") for x in res):
                out.append(Violation(rule, r.urn, f"{r.name}: ses:SendEmail only on {sorted(res)}, not on every "
                                                  "identity of the region (tenants' sender domains)"))
            if not any(":configuration-set/" in x for x in res):
                out.append(Violation(rule, r.urn, f"{r.name}: ses:SendEmail without the configuration set"))
    return out


def _containers(task: Resource) -> list[dict[str, Any]]:
    v = task.props.get("containerDefinitions")
    return [dict(c) for c in _list(json.loads(v) if isinstance(v, str) else v)]


def controller_roles_grant_what_the_code_calls(resources: list[Resource],
                                               actions: Mapping[str, list[str]] | None = None) -> list[Violation]:
    """Every task that runs the controller has a role granted each action the controller's code
    calls (``controller_actions.json``) on named resources (``*`` only for the actions AWS authorises
    on ``*`` alone); with EMAILPLATFORM_FAILOVER_AUTOMATION=true every action the failover calls too.
    What its environment names it can reach: the Route 53 health check and the event topic of the
    failover, and each OpenSearch domain (its own, the other region's for erasures), whose access
    policy admits the role."""
    rule, out = "controller-roles-grant-what-the-code-calls", []
    table = CONTROLLER_ACTIONS if actions is None else actions
    on_star = set(table.get("resource_wildcard", []))
    roles = _by(of(resources, "aws:iam/role:Role"), "arn")
    role_policies = of(resources, "aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy")
    domains = {f"https://{d.props.get('endpoint')}": d for d in of(resources, "aws:opensearch/domain:Domain")}
    domain_policies = of(resources, "aws:opensearch/domainPolicy:DomainPolicy")
    for task in of(resources, "aws:ecs/taskDefinition:TaskDefinition"):
        controller = next((c for c in _containers(task) if "controller" in _list(c.get("command"))), None)
        if controller is None:
            continue
        env = {str(e.get("name")): str(e.get("value")) for e in _list(controller.get("environment"))}
        role = roles.get(task.props.get("taskRoleArn"))
        if role is None:
            out.append(Violation(rule, task.urn, f"{task.name} runs the controller without a task role of this stack"))
            continue
        ids = {role.props.get("id"), role.props.get("name")} - {None}
        stmts = [st for p in role_policies if p.props.get("role") in ids
                 for st in statements(p.props.get("policy")) if st.get("Effect") == "Allow"]
        failover = env.get("EMAILPLATFORM_FAILOVER_AUTOMATION", "").lower() == "true"
        health_check = failover and bool(env.get("EMAILPLATFORM_FAILOVER_HEALTH_CHECK_ID"))
        needed = [*table["controller"], *(table["failover"] if failover else []),
                  *(table["failover_health_check"] if health_check else [])]
        for action in needed:
            granting = [st for st in stmts if _actions_cover(st, [action])]
            named = [r for st in granting for r in _list(st.get("Resource")) if r != "*"]
            if not granting or (action not in on_star and not named):
                out.append(Violation(rule, task.urn, f"{task.name}: its role {role.name} is not granted {action} "
                                                     "on a named resource, which the controller calls"
                                     + ("" if action in table["controller"] else " (automatic failover)")))
            elif action not in on_star and any("*" == r for st in granting for r in _list(st.get("Resource"))):
                out.append(Violation(rule, task.urn, f"{task.name}: its role {role.name} is granted {action} on *"))
        # what its environment points it at
        reach: list[tuple[str, list[str], str]] = []
        if health_check:
            hc = f"arn:aws:route53:::healthcheck/{env['EMAILPLATFORM_FAILOVER_HEALTH_CHECK_ID']}"
            reach.append(("EMAILPLATFORM_FAILOVER_HEALTH_CHECK_ID", list(table["failover_health_check"]), hc))
        if failover and env.get("EMAILPLATFORM_FAILOVER_EVENT_TOPIC_ARN"):
            reach.append(("EMAILPLATFORM_FAILOVER_EVENT_TOPIC_ARN", ["sns:Publish"],
                          env["EMAILPLATFORM_FAILOVER_EVENT_TOPIC_ARN"]))
        for var in ("EMAILPLATFORM_OPENSEARCH_ENDPOINT", "EMAILPLATFORM_PEER_OPENSEARCH_ENDPOINT"):
            domain = domains.get(env.get(var, ""))
            if env.get(var) and domain is None:
                out.append(Violation(rule, task.urn, f"{task.name}: {var} {env[var]} is no OpenSearch domain of "
                                                     "this stack"))
                continue
            if domain is None:
                continue
            reach.append((var, ["es:ESHttpPost"], f"{domain.props.get('arn')}/*"))
            # domain names repeat per region: the domain's policy is the one under the same provider
            admits = [p for p in domain_policies if p.provider == domain.provider and p.props.get("domainName") in (
                domain.props.get("domainName"), domain.props.get("id"))
                and any(role.props.get("arn") in _principals(st, "AWS") for st in statements(
                    p.props.get("accessPolicies")) if st.get("Effect") == "Allow")]
            if not admits:
                out.append(Violation(rule, task.urn, f"{task.name}: the access policy of {domain.name} ({var}) "
                                                     f"does not admit its role {role.name}"))
        for var, acts, arn in reach:
            for action in acts:
                if not any(_actions_cover(st, [action]) and arn in _list(st.get("Resource")) for st in stmts):
                    out.append(Violation(rule, task.urn, f"{task.name}: {var} names {arn}, but its role "
                                                         f"{role.name} is not granted {action} on it"))
    return out


RULES: dict[str, Callable[[list[Resource]], list[Violation]]] = {
    "key-policies-grant-writers": key_policies_grant_writers,
    "destinations-accept-their-producers": destinations_accept_their_producers,
    "firehose-streams-within-aws-limits": firehose_streams_within_aws_limits,
    "service-principals-name-their-source": service_principals_name_their_source,
    "replication-waits-for-versioning": replication_waits_for_versioning,
    "alarm-topics-have-subscribers": alarm_topics_have_subscribers,
    "alarms-notify": alarms_notify,
    "health-checks-avoid-mtls": health_checks_avoid_mtls,
    "no-default-provider": no_default_provider,
    "stateful-resources-protected": stateful_resources_protected,
    "resources-tagged-by-provider": resources_tagged_by_provider,
    "no-wildcard-actions": no_wildcard_actions,
    "stage-logging-has-account-role": stage_logging_has_account_role,
    "queue-mappings-fit-their-queues": queue_mappings_fit_their_queues,
    "public-routes-open-at-the-edge": public_routes_open_at_the_edge,
    "fargate-tasks-name-their-architecture": fargate_tasks_name_their_architecture,
    "ses-senders-reach-tenant-identities": ses_senders_reach_tenant_identities,
    "controller-roles-grant-what-the-code-calls": controller_roles_grant_what_the_code_calls,
}


def check(resources: list[Resource]) -> list[Violation]:
    return [v for rule in RULES.values() for v in rule(resources)]
