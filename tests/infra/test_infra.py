"""The Pulumi program under pulumi's mocks, with a prod-like config: policy, stated as tests.

A recording mock monitor keeps what the engine would see of every registered resource (type, name,
URN, inputs + mocked outputs, provider, dependencies, protect, parent) as ``infra.policy.rules``
records, so the policy pack's rules run here over the same shape as on a real stack.
"""

from __future__ import annotations

import copy
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.mocks import MockMonitor

from core import schema
from infra.policy import rules
from infra.policy.rules import Resource

REPO = Path(__file__).resolve().parents[2]


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        region = "eu-central-1" if "::dr::" in (args.provider or "") or args.name.startswith("dr-") else "eu-west-1"
        outputs = {**args.inputs, "arn": args.inputs.get(
            "arn", f"arn:aws:{args.typ.split(':')[1]}:{region}:123456789012:{args.name}"),
                   "name": args.inputs.get("name", args.name), "id": f"{args.name}-id"}
        if args.typ == "aws:iam/role:Role":  # IAM is global: no region, and the ARN carries the role name
            outputs["arn"] = f"arn:aws:iam::123456789012:role/{outputs['name']}"
        if args.typ == "aws:dynamodb/table:Table":
            outputs["streamArn"] = outputs["arn"] + "/stream/2026"
        if args.typ == "aws:apigateway/stage:Stage":
            outputs["invokeUrl"] = f"https://{args.inputs['restApi']}.execute-api.{region}.amazonaws.com/v1"
        if args.typ == "aws:apigateway/domainName:DomainName":
            outputs["regionalDomainName"] = f"d-{args.name}.execute-api.{region}.amazonaws.com"
            outputs["regionalZoneId"] = f"Z{region}"
        if args.typ == "aws:apigateway/restApi:RestApi":
            outputs["rootResourceId"] = "root"
            outputs["executionArn"] = f"arn:aws:execute-api:{region}:123456789012:{args.name}"
        if args.typ == "aws:lambda/function:Function":
            outputs["version"] = "7"
        if args.typ == "aws:lambda/alias:Alias":
            outputs["invokeArn"] = f"arn:aws:apigateway:{region}:lambda:path/functions/{outputs['arn']}/invocations"
        if args.typ == "aws:sesv2/emailIdentity:EmailIdentity":
            outputs["dkimSigningAttributes"] = {**args.inputs.get("dkimSigningAttributes", {}),
                                                "tokens": [f"{region}tok{i}" for i in range(3)]}
        if args.typ == "aws:amp/workspace:Workspace":
            outputs["prometheusEndpoint"] = f"https://aps-workspaces.{region}.amazonaws.com/workspaces/ws-{args.name}/"
        if args.typ == "aws:opensearch/domain:Domain":
            outputs["endpoint"] = f"search-{args.name}.{region}.es.amazonaws.com"
        if args.typ == "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream":
            outputs["arn"] = f"arn:aws:firehose:{region}:123456789012:deliverystream/{outputs['name']}"
        return [f"{args.name}-id", outputs]

    invokes: list[tuple[str, str]] = []  # (token, provider) of every invoke the program makes

    def call(self, args: pulumi.runtime.MockCallArgs):
        Mocks.invokes.append((args.token, args.provider or ""))
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": "123456789012", "arn": "arn:aws:iam::123456789012:root", "userId": "x"}
        return {}


# URN → the aliases (name, parent URN) a resource was registered with: what lets `pulumi up` move a
# resource instead of deleting and re-creating it (every run of the program records here)
ALIASES: dict[str, list[tuple[str, str]]] = {}


class RecordingMonitor(MockMonitor):
    """Records what MockResourceArgs leaves out (protect, dependencies, parent) from the request."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.records: list[Resource] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.aliases:
            ALIASES[response.urn] = [(a.spec.name, a.spec.parentUrn) for a in request.aliases]
        if request.type != "pulumi:pulumi:Stack":
            self.records.append(Resource(
                type=request.type, name=request.name, urn=response.urn,
                props=copy.deepcopy(self.resources[response.urn].state),
                provider=request.provider.rsplit("::", 1)[0] if request.provider else None,
                dependencies=list(request.dependencies), protect=bool(request.protect), parent=request.parent or None))
        return response


pulumi.runtime.set_mocks(Mocks(), preview=False)

from infra.policies import COMPONENT_ACTIONS  # noqa: E402
from infra.program import StackConfig, build  # noqa: E402

CFG = StackConfig(
    prefix="emailplatform", primary_region="eu-west-1", dr_region="eu-central-1", ses_domain="mail.example.com",
    controller_image={"eu-west-1": "1.dkr.ecr.eu-west-1.amazonaws.com/c:1",
                      "eu-central-1": "1.dkr.ecr.eu-central-1.amazonaws.com/c:1"},
    ses_max_send_rate=200, hosted_zone_id="Z1", record_name="api.example.com", alarm_email="oncall@example.com",
    public_record_name="links.example.com",
    api_domain={r: {"domain": f"api-{r}.example.com", "certificate_arn": f"arn:aws:acm:{r}:1:certificate/x",
                    "truststore_uri": "s3://trust/ca.pem",
                    "failover_certificate_arn": f"arn:aws:acm:{r}:1:certificate/failover",
                    "public_certificate_arn": f"arn:aws:acm:{r}:1:certificate/links"}
                for r in ("eu-west-1", "eu-central-1")},
    network={r: {"subnet_ids": ["subnet-1"], "security_group_ids": ["sg-1"]} for r in ("eu-west-1", "eu-central-1")},
)


def run_program(cfg: StackConfig) -> tuple[list[Resource], dict[str, Any]]:
    """Build the program under fresh recording mocks; the resources and the resolved stack outputs."""
    monitor = RecordingMonitor(Mocks())
    pulumi.runtime.set_mocks(Mocks(), preview=False, monitor=monitor)
    exports: dict[str, Any] = {}
    real_export = pulumi.export
    result: dict[str, Any] = {}

    @pulumi.runtime.test
    def run():
        build(cfg)
        return pulumi.Output.all(**exports).apply(result.update)

    pulumi.export = lambda name, value: exports.__setitem__(name, pulumi.Output.from_input(value))
    try:
        run()
    finally:
        pulumi.export = real_export
    return monitor.records, result


def stack_config(stack: str) -> StackConfig:
    raw = yaml.safe_load((REPO / "config" / f"Pulumi.{stack}.yaml").read_text())["config"]
    return StackConfig.from_mapping({k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("emailplatform:")})


@pytest.fixture(scope="module")
def program():
    return run_program(CFG)


@pytest.fixture(scope="module")
def resources(program):
    return program[0]


@pytest.fixture(scope="module")
def outputs(program):
    return program[1]


def of(resources, typ):
    return [r for r in resources if r.type == typ]


def named(resources, name):
    (r,) = [r for r in resources if r.name == name]
    return r


def region_of(r) -> str:
    return "dr" if r.name.startswith("dr-") else "primary" if r.name.startswith("primary-") else "global"
def test_every_bucket_is_encrypted_private_and_tls_only_and_versioned_where_replicated(resources):
    buckets = {r.name for r in of(resources, "aws:s3/bucket:Bucket")}
    assert len(buckets) == 2 * len(schema.BUCKETS)
    sse = {r.name.removesuffix("-sse"): r.props for r in of(resources, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")}
    ver = {r.name.removesuffix("-versioning"): r.props for r in of(resources, "aws:s3/bucketVersioning:BucketVersioning")}
    pab = {r.name.removesuffix("-private"): r.props for r in of(resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")}
    pol = {r.name.removesuffix("-tls-only"): json.loads(r.props["policy"]) for r in of(resources, "aws:s3/bucketPolicy:BucketPolicy")}
    for b in buckets:
        rule = sse[b]["rules"][0]["applyServerSideEncryptionByDefault"]
        assert rule["sseAlgorithm"] == "aws:kms" and rule["kmsMasterKeyId"].startswith("arn:aws:kms"), b
        replicated = {x.purpose: x.replicated for x in schema.BUCKETS}[b.split("-buckets-", 1)[1]]
        # replication needs versions; the SES events bucket keeps none (a delete removes an object)
        assert (ver[b]["versioningConfiguration"]["status"] == "Enabled") if replicated else b not in ver, b
        assert all(pab[b][k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")), b
        deny = pol[b]["Statement"][0]
        assert deny["Effect"] == "Deny" and deny["Condition"]["Bool"]["aws:SecureTransport"] == "false", b


def test_table_is_a_global_table_with_pitr_streams_ttl_and_kms(resources):
    (table,) = of(resources, "aws:dynamodb/table:Table")
    i = table.props
    assert i["pointInTimeRecovery"]["enabled"] and i["streamEnabled"] and i["deletionProtectionEnabled"]
    assert i["serverSideEncryption"]["enabled"] and i["serverSideEncryption"]["kmsKeyArn"]
    assert i["ttl"] == {"attributeName": schema.TTL_ATTRIBUTE, "enabled": True}
    (replica,) = i["replicas"]
    assert replica["regionName"] == "eu-central-1" and replica["kmsKeyArn"] and replica["pointInTimeRecovery"]
    assert {g["name"] for g in i["globalSecondaryIndexes"]} == {ix.name for ix in schema.INDEXES}


def test_queues_are_encrypted_and_the_only_topics_are_the_alarms(resources):
    queues = of(resources, "aws:sqs/queue:Queue")
    assert len(queues) == 2 * 2 * len(schema.QUEUES)  # queue + DLQ, two regions
    for r in queues:
        assert r.props.get("kmsMasterKeyId"), r.name
    # SES events go through Firehose and S3: no SNS topic, topic policy or SQS subscription for them
    assert {t.name for t in of(resources, "aws:sns/topic:Topic")} == {"primary-monitoring-alarms", "dr-monitoring-alarms"}
    assert not of(resources, "aws:sns/topicPolicy:TopicPolicy")
    assert {s.props["protocol"] for s in of(resources, "aws:sns/topicSubscription:TopicSubscription")} == {"email"}


def test_dr_mirrors_the_primary(resources):
    by_region: dict[str, Counter] = defaultdict(Counter)
    for r in resources:
        by_region[region_of(r)][r.type] += 1
    assert by_region["primary"] == by_region["dr"]
    assert by_region["primary"]["aws:lambda/function:Function"] == 3


def test_replication_goes_both_ways_with_rtc_and_each_direction_its_own_role(resources):
    """What DR writes after a failover must flow back to the primary."""
    configs = of(resources, "aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert len(configs) == 2 * len(schema.REPLICATED_BUCKETS)
    to_dr = [c for c in configs if c.props["bucket"].startswith("primary-")]
    to_primary = [c for c in configs if c.props["bucket"].startswith("dr-")]
    assert len(to_dr) == len(to_primary) == len(schema.REPLICATED_BUCKETS)
    for c in configs:
        dest = c.props["rules"][0]["destination"]
        other = ":eu-central-1:" if c in to_dr else ":eu-west-1:"
        assert other in dest["bucket"] and dest["replicationTime"]["status"] == "Enabled"
        assert other in dest["encryptionConfiguration"]["replicaKmsKeyId"]
    assert len({c.props["role"] for c in configs}) == 2


def test_failover_records_point_at_each_region(resources):
    records = {r.props["failoverRoutingPolicies"][0]["type"]: r for r in of(resources, "aws:route53/record:Record")
               if r.props.get("failoverRoutingPolicies")}
    assert set(records) == {"PRIMARY", "SECONDARY"}
    assert all(r.props["healthCheckId"] for r in records.values())
    assert "primary" in records["PRIMARY"].props["aliases"][0]["name"]
    assert "dr" in records["SECONDARY"].props["aliases"][0]["name"]


def test_role_policies_grant_exactly_the_component_tables_and_no_wildcard_actions(resources):
    policies = {r.name: json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}
    for component in COMPONENT_ACTIONS:
        key = "controller-task-policy" if component == "controller" else f"functions-{component}-policy"
        for region in ("primary", "dr"):
            doc = policies[f"{region}-{key}"]
            actions = {a for s in doc["Statement"] for a in s["Action"]}
            assert actions == set(COMPONENT_ACTIONS[component]), (region, component)
    for name, doc in policies.items():
        for s in doc["Statement"]:
            acts = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert not any(a == "*" or a.endswith(":*") for a in acts), name


def test_sender_concurrency_is_reserved_only_when_the_stack_opts_in(resources):
    """A fresh account's Lambda concurrency quota is 10 and Lambda keeps 10 unreserved: a
    reservation fails `pulumi up` there. Opt-in (senderReservedConcurrency), sized from the SES quota."""
    senders = [r for r in of(resources, "aws:lambda/function:Function") if r.name.endswith("-sender")]
    assert len(senders) == 2 and not any(r.props.get("reservedConcurrentExecutions") for r in senders)
    base = {**{k: "x" for k in ("prefix", "primaryRegion", "drRegion", "sesDomain")}, "controllerImage": "x:1"}
    assert StackConfig.from_mapping(base).sender_reserved_concurrency is False
    opted = StackConfig.from_mapping({**base, "senderReservedConcurrency": "true"})
    assert opted.sender_reserved_concurrency is True
    import dataclasses
    reserved, _ = run_program(dataclasses.replace(CFG, sender_reserved_concurrency=True))
    senders = [r for r in of(reserved, "aws:lambda/function:Function") if r.name.endswith("-sender")]
    assert {r.props["reservedConcurrentExecutions"] for r in senders} == {20}  # 200/s ÷ 10 sends/s each
    for r in of(resources, "aws:lambda/function:Function"):
        assert r.props["tracingConfig"]["mode"] == "Active"
    for m in of(resources, "aws:lambda/eventSourceMapping:EventSourceMapping"):
        assert m.props["functionResponseTypes"] == ["ReportBatchItemFailures"]


def test_api_has_waf_usage_plan_and_mtls_domain(resources):
    assert len(of(resources, "aws:wafv2/webAclAssociation:WebAclAssociation")) == 4  # main + public API, per region
    plans = of(resources, "aws:apigateway/usagePlan:UsagePlan")
    assert all(p.props["throttleSettings"]["rateLimit"] == 50 for p in plans)
    domains = of(resources, "aws:apigateway/domainName:DomainName")
    public = [d for d in domains if d.props["domainName"] == "links.example.com"]
    assert len(public) == 2 and not any(d.props.get("mutualTlsAuthentication") for d in public)
    assert all(d.props["mutualTlsAuthentication"]["truststoreUri"] == "s3://trust/ca.pem"
               for d in domains if d not in public)


def test_opensearch_is_encrypted_and_https_only(resources):
    for d in of(resources, "aws:opensearch/domain:Domain"):
        i = d.props
        assert i["encryptAtRest"]["enabled"] and i["nodeToNodeEncryption"]["enabled"]
        assert i["domainEndpointOptions"]["enforceHttps"] and i["advancedSecurityOptions"]["enabled"]


def test_every_work_queue_alarms_when_its_oldest_message_ages(resources):
    """The SES-events queue backing up also holds back in-doubt chunks: someone must hear of it."""
    ages = [r for r in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
            if r.props.get("metricName") == "ApproximateAgeOfOldestMessage"]
    assert len(ages) == 2 * len(schema.QUEUES)  # every work queue, both regions
    assert all(a.props["statistic"] == "Maximum" and a.props["threshold"] == 300 for a in ages)


# --- the review of cec7fed: one test per defect --------------------------------------------------

def test_lambda_artifact_resolves_from_the_repository_root(resources):
    """Pulumi runs `main: infra/` with infra/ as cwd: a relative path would look under infra/."""
    for fn in of(resources, "aws:lambda/function:Function"):
        assert Path(fn.props["code"].path) == REPO / "dist" / "lambda.zip", fn.name


def key_policy(resources, name):
    return json.loads(named(resources, name).props["policy"])


@pytest.mark.parametrize("key,region", [("keys-primary", "eu-west-1"), ("keys-replica", "eu-central-1")])
def test_each_key_policy_grants_the_services_that_encrypt_with_it(resources, key, region):
    by_sid = {s["Sid"]: s for s in key_policy(resources, key)["Statement"]}
    logs = by_sid["CloudWatchLogsEncryptsLogGroups"]
    assert logs["Principal"] == {"Service": f"logs.{region}.amazonaws.com"}
    assert logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"] == \
        f"arn:aws:logs:{region}:123456789012:log-group:*"
    # S3 notifies the encrypted SES events queue: S3 encrypts the message with the queue's key
    s3 = by_sid["S3NotifiesEncryptedQueues"]
    assert s3["Principal"] == {"Service": "s3.amazonaws.com"} and {"kms:GenerateDataKey", "kms:Decrypt"} <= set(s3["Action"])
    assert "Condition" not in s3  # as AWS documents it; the queue policy names the bucket
    # no SNS topic any more: neither SES publishing to one nor SNS delivering from one
    assert not [s for s in by_sid.values() if {"ses.amazonaws.com", "sns.amazonaws.com"} & set(
        (s["Principal"] or {}).get("Service", []) if isinstance(s["Principal"], dict) else [])]
    assert by_sid["AccountAdministersAndDelegatesToIam"]["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    assert by_sid["S3ReplicationReEncrypts"]["Condition"]["StringEquals"]["kms:ViaService"] == f"s3.{region}.amazonaws.com"
    assert rules.key_policies_grant_writers(resources) == []


def test_api_stage_logging_waits_for_the_account_cloudwatch_role(resources):
    accounts = of(resources, "aws:apigateway/account:Account")
    assert {region_of(a) for a in accounts} == {"primary", "dr"}
    attachments = of(resources, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert {a.props["policyArn"] for a in attachments} == {
        "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"}
    for stage in [s for s in of(resources, "aws:apigateway/stage:Stage") if s.props.get("accessLogSettings")]:
        assert any(a.urn in stage.dependencies for a in accounts), stage.name
    assert rules.stage_logging_has_account_role(resources) == []


def test_api_access_logs_record_the_route_template_never_the_raw_path(resources):
    """``/suppressions/{email}`` and ``/privacy/subjects/{email}`` carry an address in the path: the
    access log (CloudWatch, 90 days, no erasure reaches it) records the resource template instead."""
    stages = [s for s in of(resources, "aws:apigateway/stage:Stage") if s.props.get("accessLogSettings")]
    assert {region_of(s) for s in stages} == {"primary", "dr"}
    for stage in stages:
        fmt = stage.props["accessLogSettings"]["format"]
        fields = json.loads(fmt)
        assert "$context.resourcePath" in fields.values(), fmt
        assert not any(v in fmt for v in ("$context.path", "$input.params", "$context.requestOverride")), fmt


def function_env(resources, fn):
    return {r.name.split("-")[0]: r.props["environment"]["variables"]
            for r in of(resources, "aws:lambda/function:Function") if r.name.endswith(f"-functions-{fn}")}


def test_opensearch_has_a_master_role_an_access_policy_and_its_writers_know_the_endpoint(resources):
    for d in of(resources, "aws:opensearch/domain:Domain"):
        assert d.props["advancedSecurityOptions"]["masterUserOptions"]["masterUserArn"].startswith("arn:aws:iam")
    policies = of(resources, "aws:opensearch/domainPolicy:DomainPolicy")
    assert {region_of(p) for p in policies} == {"primary", "dr"}
    for p in policies:
        (stmt,) = json.loads(p.props["accessPolicies"])["Statement"]
        here, there = ("primary", "dr") if region_of(p) == "primary" else ("dr", "primary")
        # master role, api, ses_events, the controller, and the other region's controller (its erasures)
        assert sorted(stmt["Principal"]["AWS"]) == sorted(
            f"arn:aws:iam::123456789012:role/{n}" for n in (
                f"{here}-search-admin", f"{here}-functions-api-role", f"{here}-functions-ses_events-role",
                f"{here}-controller-task-role", f"{there}-controller-task-role"))
    for fn in ("api", "ses_events"):
        for region, env in function_env(resources, fn).items():
            assert env["EMAILPLATFORM_OPENSEARCH_ENDPOINT"] == \
                f"https://search-{region}-search-domain.{'eu-west-1' if region == 'primary' else 'eu-central-1'}.es.amazonaws.com"
        assert {"es:ESHttpPost", "es:ESHttpPut", "es:ESHttpGet"} <= set(COMPONENT_ACTIONS[fn])
    docs = {r.name: json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}
    es = [s for s in docs["primary-functions-api-policy"]["Statement"] if "es:ESHttpPost" in s["Action"]]
    assert es and es[0]["Resource"] == ["arn:aws:opensearch/domain:eu-west-1:123456789012:primary-search-domain",
                                        "arn:aws:opensearch/domain:eu-west-1:123456789012:primary-search-domain/*"]


def test_replication_waits_for_versioning_on_both_buckets(resources):
    versioning = {v.props["bucket"]: v.urn for v in of(resources, "aws:s3/bucketVersioning:BucketVersioning")}
    for c in of(resources, "aws:s3/bucketReplicationConfig:BucketReplicationConfig"):
        dst_bucket = c.props["rules"][0]["destination"]["bucket"].rsplit(":", 1)[1] + "-id"
        assert versioning[c.props["bucket"]] in c.dependencies and versioning[dst_bucket] in c.dependencies
    assert rules.replication_waits_for_versioning(resources) == []


def test_every_resource_has_an_explicit_provider(resources):
    """No default provider: its region would come from whoever runs `pulumi up`."""
    custom = [r for r in resources if rules.is_custom(r)]
    assert custom and all(r.provider for r in custom)
    route53 = [r for r in resources if r.type.startswith("aws:route53/")]
    assert route53 and all(r.provider.endswith("::primary") for r in route53)
    assert rules.no_default_provider(resources) == []


def test_sender_may_send_with_the_configuration_set(resources):
    docs = {r.name: json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}
    for region, r in (("primary", "eu-west-1"), ("dr", "eu-central-1")):
        (stmt,) = [s for s in docs[f"{region}-functions-sender-policy"]["Statement"] if "ses:SendEmail" in s["Action"]]
        # tenants send from their own domains (`senders allow @domain`): every identity of the region
        assert set(stmt["Resource"]) == {f"arn:aws:ses:{r}:123456789012:identity/*",
                                         f"arn:aws:ses:{r}:123456789012:configuration-set/emailplatform"}
    assert rules.ses_senders_reach_tenant_identities(resources) == []


def test_rule_catches_a_sender_granted_only_the_platform_domain(resources):
    narrow = mutated(resources, "primary-functions-sender-policy", lambda r: r.props.update(
        policy=r.props["policy"].replace("identity/*", "identity/mail.example.com")))
    assert violations(rules.ses_senders_reach_tenant_identities, narrow) == [
        "primary-functions-sender-policy: ses:SendEmail only on ['arn:aws:ses:eu-west-1:123456789012:configuration-set/"
        "emailplatform', 'arn:aws:ses:eu-west-1:123456789012:identity/mail.example.com'], not on every identity of "
        "the region (tenants' sender domains)"]


def test_functions_and_controller_get_the_production_environment(resources):
    containers = {r.name.split("-")[0]: {e["name"]: e["value"] for e in json.loads(r.props["containerDefinitions"])[0]["environment"]}
                  for r in of(resources, "aws:ecs/taskDefinition:TaskDefinition")}
    for fn in ("api", "sender", "ses_events"):
        for region, env in [*function_env(resources, fn).items(), *containers.items()]:
            assert env["EMAILPLATFORM_REGION"] == ("eu-west-1" if region == "primary" else "eu-central-1")
            assert env["EMAILPLATFORM_PUBLIC_BASE_URL"] == "https://links.example.com"  # no mTLS
            assert env["EMAILPLATFORM_DEFAULT_FROM"] == "noreply@mail.example.com"
            assert env["EMAILPLATFORM_ACCOUNT_ID"] == "123456789012"
            assert env["EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID"] == "emailplatform/unsubscribe-signing"
            assert env["EMAILPLATFORM_OPENSEARCH_ENDPOINT"].startswith("https://search-")
            here, there = ("eu-west-1", "eu-central-1") if region == "primary" else ("eu-central-1", "eu-west-1")
            assert f":{here}:" in env["EMAILPLATFORM_KMS_KEY_ARN"] and f":{there}:" in env["EMAILPLATFORM_PEER_KMS_KEY_ARN"]
    docs = {r.name: json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}
    for fn in ("api", "sender"):
        for region, r in (("primary", "eu-west-1"), ("dr", "eu-central-1")):
            get = [s for s in docs[f"{region}-functions-{fn}-policy"]["Statement"]
                   if "secretsmanager:GetSecretValue" in s["Action"]]
            assert any(f"arn:aws:secretsmanager/secret:{r}:123456789012:secrets-unsubscribe" in s["Resource"]
                       for s in get), (fn, region)


def test_bucket_names_carry_the_account_id_like_settings(resources):
    from config.settings import Settings
    names = {r.props["bucket"] for r in of(resources, "aws:s3/bucket:Bucket")}
    s = Settings(account_id="123456789012", region="eu-west-1", dr_region="eu-central-1")
    expected = {s.bucket(b.purpose, region) for b in schema.BUCKETS for region in ("eu-west-1", "eu-central-1")}
    assert names == expected
    assert Settings().bucket("uploads") == "emailplatform-uploads-eu-west-1"  # unchanged when unset


def test_api_may_create_webhook_secrets_with_a_dr_replica(resources):
    docs = {r.name: json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}
    stmts = docs["primary-functions-api-policy"]["Statement"]
    (create,) = [s for s in stmts if "secretsmanager:CreateSecret" in s["Action"]]
    assert "secretsmanager:ReplicateSecretToRegions" in create["Action"]
    assert create["Resource"] == ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:emailplatform/webhook-signing/*"]
    (kms,) = [s for s in stmts if "kms:GenerateDataKey" in s["Action"]]
    assert any(":eu-central-1:" in k for k in kms["Resource"])  # the replica's key in DR


def test_stateful_resources_are_protected_and_everything_is_tagged(resources):
    for typ in rules.STATEFUL_TYPES:
        for r in of(resources, typ):
            assert r.protect, r.name
    providers = {r.name: json.loads(r.props["defaultTags"]) for r in resources if r.type == "pulumi:providers:aws"}
    assert providers == {role: {"tags": {"project": "emailplatform", "stack": "prod", "region-role": role}}
                         for role in ("primary", "dr")}
    assert rules.stateful_resources_protected(resources) == rules.resources_tagged_by_provider(resources) == []


def test_each_region_pulls_the_controller_image_from_its_own_registry(resources):
    for r in of(resources, "aws:ecs/taskDefinition:TaskDefinition"):
        region = "eu-central-1" if r.name.startswith("dr-") else "eu-west-1"
        assert json.loads(r.props["containerDefinitions"])[0]["image"].startswith(f"1.dkr.ecr.{region}.")
    assert stack_config("prod").image_for("eu-central-1") != stack_config("prod").image_for("eu-west-1")


def test_ses_identity_publishes_dkim_and_mail_from_records(resources, outputs):
    records = of(resources, "aws:route53/record:Record")
    for region in ("eu-west-1", "eu-central-1"):
        dkim = [r for r in records if r.props["type"] == "CNAME" and region in r.props["name"]]
        assert sorted(r.props["name"] for r in dkim) == [f"{region}tok{i}._domainkey.mail.example.com" for i in range(3)]
        assert all(r.props["records"] == [r.props["name"].split(".")[0] + ".dkim.amazonses.com"] for r in dkim)
        mail_from = f"bounce-{region}.mail.example.com"
        assert {(r.props["type"], tuple(r.props["records"])) for r in records if r.props["name"] == mail_from} == {
            ("MX", (f"10 feedback-smtp.{region}.amazonses.com",)), ("TXT", ("v=spf1 include:amazonses.com ~all",))}
    assert {m.props["mailFromDomain"] for m in of(
        resources, "aws:sesv2/emailIdentityMailFromAttributes:EmailIdentityMailFromAttributes")} == {
        "bounce-eu-west-1.mail.example.com", "bounce-eu-central-1.mail.example.com"}
    assert outputs["primary_dkim_tokens"] == ["eu-west-1tok0", "eu-west-1tok1", "eu-west-1tok2"]


def openapi_public_routes() -> set[tuple[str, str]]:
    from handlers import api
    doc = json.loads(api.openapi_document())
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m, op in ops.items() if op.get("security") == []}


def test_every_resource_name_is_unique(resources):
    """The engine refuses two resources with one URN (the mocks do not)."""
    urns = Counter(r.urn for r in resources)
    assert [u for u, n in urns.items() if n > 1] == []


def test_public_routes_file_is_what_the_openapi_marks_public():
    """infra/policy/public_routes.json feeds the edge and the policy rule; the app's OpenAPI is the truth."""
    from infra.components.edge import PUBLIC_ROUTES
    assert set(PUBLIC_ROUTES) == set(rules.PUBLIC_ROUTES) == openapi_public_routes()
    assert ("POST", "/api/v1/email/unsubscribe/{token}") in PUBLIC_ROUTES


def api_paths(resources, rest_name):
    """method → full path for every method of the REST API named ``rest_name``."""
    rest = next(r for r in of(resources, "aws:apigateway/restApi:RestApi") if r.props["name"] == rest_name)
    res = {r.props["id"]: r.props for r in of(resources, "aws:apigateway/resource:Resource")
           if r.props["restApi"] == rest.props["id"]}

    def path(rid):
        return "" if rid == rest.props["rootResourceId"] else path(res[rid]["parentId"]) + "/" + res[rid]["pathPart"]
    return {(m.props["httpMethod"], path(m.props["resourceId"])): m.props
            for m in of(resources, "aws:apigateway/method:Method")
            if m.props["restApi"] == rest.props["id"]}


def test_usage_plan_applies_because_the_api_requires_a_key_and_waf_allows_polling(resources):
    methods = {m.name: m.props for m in of(resources, "aws:apigateway/method:Method")}
    assert methods["primary-api-any"]["apiKeyRequired"] is True
    main = api_paths([r for r in resources if region_of(r) == "primary"], "emailplatform-api")
    open_ = {k for k, m in main.items() if not m["apiKeyRequired"]}
    assert open_ == openapi_public_routes()  # unsubscribe (GET page, POST one-click) and health: nothing else
    # every static resource on those paths has its own keyed proxy: no reliance on falling back to /{proxy+}
    keyed = {p for (verb, p), m in main.items() if verb == "ANY" and m["apiKeyRequired"]}
    assert keyed == {"/{proxy+}", "/api/{proxy+}", "/api/v1/{proxy+}", "/api/v1/email/{proxy+}"}
    public = api_paths([r for r in resources if region_of(r) == "primary"], "emailplatform-public")
    assert set(public) == openapi_public_routes() and not any(m["apiKeyRequired"] for m in public.values())
    for waf in of(resources, "aws:wafv2/webAcl:WebAcl"):
        (rate,) = [r for r in waf.props["rules"] if r["name"] == "rate-per-ip"]
        assert rate["statement"]["rateBasedStatement"]["limit"] == 20_000


def test_every_method_is_in_its_deployment_triggers(resources):
    """A route added or changed after the first deploy must reach the stage (a new Deployment)."""
    deployments = {d.props["restApi"]: d.props["triggers"]["redeploy"]
                   for d in of(resources, "aws:apigateway/deployment:Deployment")}
    methods = of(resources, "aws:apigateway/method:Method")
    assert methods
    for m in methods:
        assert m.props["id"] in deployments[m.props["restApi"]], m.name
    for i in of(resources, "aws:apigateway/integration:Integration"):
        assert i.props["id"] in deployments[i.props["restApi"]], i.name


def test_unsubscribe_links_reach_a_keyless_host_without_mtls(resources, outputs):
    records = {(r.props["name"], r.props["failoverRoutingPolicies"][0]["type"]): r
               for r in of(resources, "aws:route53/record:Record") if r.props.get("failoverRoutingPolicies")}
    public_domains = {d.props["regionalDomainName"]: d for d in of(resources, "aws:apigateway/domainName:DomainName")
                      if d.props["domainName"] == "links.example.com"}
    for role in ("PRIMARY", "SECONDARY"):
        (alias,) = records[("links.example.com", role)].props["aliases"]
        assert alias["name"] in public_domains
    assert outputs["primary_public_url"] == "https://links.example.com"
    assert rules.public_routes_open_at_the_edge(resources) == []


def test_rule_catches_unsubscribe_behind_the_api_key_or_mtls(resources):
    unsub = [m.name for m in of(resources, "aws:apigateway/method:Method") if "unsubscribe" in m.name]
    assert len(unsub) == 8  # GET + POST, main and public API, two regions
    bad = [r for r in resources if r.name not in unsub]  # only the keyed {proxy+} is left for them
    found = violations(rules.public_routes_open_at_the_edge, bad)
    assert found == [f"{verb} /api/v1/email/unsubscribe/{{token}} is public in the app but no REST API serves it "
                     "without an API key and without a client certificate" for verb in ("GET", "POST")]
    # the public API's only way in, its public domain, with a truststore: mTLS again
    with_mtls = copy.deepcopy(resources)
    for r in with_mtls:
        if r.type == "aws:apigateway/restApi:RestApi":
            r.props["disableExecuteApiEndpoint"] = True
        if r.type == "aws:apigateway/domainName:DomainName":
            r.props["mutualTlsAuthentication"] = {"truststoreUri": "s3://trust/ca.pem"}
    assert len(violations(rules.public_routes_open_at_the_edge, with_mtls)) > len(rules.PUBLIC_ROUTES)
    # links pointing at the mTLS failover name (the defect as found)
    def mtls_links(r):
        r.props["environment"]["variables"]["EMAILPLATFORM_PUBLIC_BASE_URL"] = "https://api.example.com"
    bad_env = mutated(resources, "primary-functions-sender", mtls_links)
    assert violations(rules.public_routes_open_at_the_edge, bad_env) == [
        "primary-functions-sender: unsubscribe links point at api.example.com, which requires a client certificate"]


def test_waf_counts_instead_of_blocking_bodies_over_8_kb(resources):
    """AWSManagedRulesCommonRuleSet's SizeRestrictions_BODY blocks bodies over 8 KB; campaign submits are larger."""
    for waf in of(resources, "aws:wafv2/webAcl:WebAcl"):
        (common,) = [r for r in waf.props["rules"] if r["name"] == "AWSManagedRulesCommonRuleSet"]
        overrides = common["statement"]["managedRuleGroupStatement"]["ruleActionOverrides"]
        assert overrides == [{"name": "SizeRestrictions_BODY", "actionToUse": {"count": {}}}]


def test_health_checks_reach_a_certificate_free_endpoint_and_failover_names_have_domains(resources, outputs):
    checks = of(resources, "aws:route53/healthCheck:HealthCheck")
    rests = {r.props["id"]: r.props for r in of(resources, "aws:apigateway/restApi:RestApi")}
    assert len(checks) == 2
    for c in checks:
        rest = rests[c.props["fqdn"].split(".")[0]]
        assert rest["name"] == "emailplatform-public" and not rest.get("disableExecuteApiEndpoint")
        assert c.props["resourcePath"] == "/v1/api/v1/health"
    assert all(r["disableExecuteApiEndpoint"] for r in rests.values() if r["name"] == "emailplatform-api")
    failover = [d for d in of(resources, "aws:apigateway/domainName:DomainName") if d.props["domainName"] == "api.example.com"]
    assert sorted(d.props["regionalCertificateArn"] for d in failover) == [
        "arn:aws:acm:eu-central-1:1:certificate/failover", "arn:aws:acm:eu-west-1:1:certificate/failover"]
    assert rules.health_checks_avoid_mtls(resources) == []
    assert outputs["primary_api"] == "https://api-eu-west-1.example.com"  # never execute-api with a custom domain
    assert outputs["api_url"] == "https://api.example.com"


def test_outputs_for_runbooks(outputs):
    for role in ("primary", "dr"):
        assert outputs[f"{role}_health_check"] == f"dns-{role if role == 'primary' else 'secondary'}-health-id"
        assert outputs[f"{role}_api_domain"].startswith("api-eu-")
        assert len(outputs[f"{role}_dkim_tokens"]) == 3
        assert outputs[f"{role}_alarm_topic"].endswith(f"{role}-monitoring-alarms")
        assert outputs[f"{role}_ecs_cluster"] == "emailplatform-controller"
        assert outputs[f"{role}_ecs_service"] == f"{role}-controller-service"
        assert outputs[f"{role}_api_health"].endswith(".amazonaws.com/v1/api/v1/health")
    assert outputs["table"] == "emailplatform-main"


def test_functions_are_invoked_through_the_live_alias_and_the_controller_rolls_back(resources):
    aliases = {a.props["arn"]: a for a in of(resources, "aws:lambda/alias:Alias")}
    assert len(aliases) == 6 and all(a.props["name"] == "live" for a in aliases.values())
    assert all(f.props["publish"] for f in of(resources, "aws:lambda/function:Function"))
    for m in of(resources, "aws:lambda/eventSourceMapping:EventSourceMapping"):
        assert m.props["functionName"] in aliases
    for i in of(resources, "aws:apigateway/integration:Integration"):
        assert "/functions/arn:aws:lambda/alias:" in i.props["uri"]
    for p in of(resources, "aws:lambda/permission:Permission"):
        assert p.props["qualifier"] == "live"
    for s in of(resources, "aws:ecs/service:Service"):
        assert s.props["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_alarm_topics_email_someone(resources):
    subs = [s for s in of(resources, "aws:sns/topicSubscription:TopicSubscription") if s.props["protocol"] == "email"]
    assert {s.props["endpoint"] for s in subs} == {"oncall@example.com"} and len(subs) == 2
    assert rules.alarm_topics_have_subscribers(resources) == []


# --- the policy pack's rules over the stacks' own config files -----------------------------------

@pytest.fixture(scope="module", params=["prod", "staging"])
def stack(request):
    return request.param, run_program(stack_config(request.param))[0]


def test_every_policy_rule_holds_for_the_stack_configs(stack):
    name, resources = stack
    assert [r for r in resources if rules.is_custom(r)]
    assert rules.check(resources) == [], name


def test_dns_records_only_where_the_stack_has_a_hosted_zone(stack):
    """Staging: one region pair, no hosted zone, so no DKIM / MAIL FROM / failover records."""
    name, resources = stack
    cfg = stack_config(name)
    assert cfg.environment == name and (cfg.primary_region, cfg.dr_region) == ("eu-west-1", "eu-central-1")
    records = of(resources, "aws:route53/record:Record")
    if name == "staging":
        assert cfg.hosted_zone_id is None and not records and not of(resources, "aws:route53/healthCheck:HealthCheck")
    else:
        assert len(records) == 2 * (3 + 2) + 2 + 2  # per region: DKIM x3, MX, SPF; the API and public failover pairs


def test_the_rules_pass_on_the_test_config(resources):
    assert rules.check(resources) == []


# --- each rule, shown to catch the defect it exists for (a mutated copy of the recorded stack) ------

def mutated(resources, name, change):
    out = copy.deepcopy(resources)
    change(named(out, name))
    return out


def drop_statement(sid):
    def change(r):
        doc = json.loads(r.props["policy"])
        doc["Statement"] = [s for s in doc["Statement"] if s.get("Sid") != sid]
        r.props["policy"] = json.dumps(doc)
    return change


def violations(rule, resources):
    return [v.message for v in rule(resources)]


def test_rule_catches_a_key_without_the_logs_grant(resources):
    bad = mutated(resources, "keys-replica", drop_statement("CloudWatchLogsEncryptsLogGroups"))
    found = violations(rules.key_policies_grant_writers, bad)
    assert found and all("keys-replica" in m and "logs.eu-central-1" in m for m in found)


def test_rule_catches_a_key_s3_cannot_encrypt_the_events_queue_with(resources):
    """S3 drops the notifications of an encrypted queue whose key it may not use."""
    bad = mutated(resources, "keys-primary", drop_statement("S3NotifiesEncryptedQueues"))
    assert violations(rules.key_policies_grant_writers, bad) == [
        "key keys-primary has no key-policy statement for primary-messaging-ses-events: s3.amazonaws.com writes to it"]


def test_rule_catches_a_key_without_the_replication_grant(resources):
    bad = mutated(resources, "keys-primary", drop_statement("S3ReplicationReEncrypts"))
    assert any("replication role" in m for m in violations(rules.key_policies_grant_writers, bad))


def test_rule_catches_replication_that_does_not_wait_for_versioning(resources):
    config = of(resources, "aws:s3/bucketReplicationConfig:BucketReplicationConfig")[0]
    destination = config.props["rules"][0]["destination"]["bucket"].rsplit(":", 1)[1] + "-versioning"
    bad = mutated(resources, config.name, lambda r: r.dependencies.remove(named(resources, destination).urn))
    assert violations(rules.replication_waits_for_versioning, bad) == [
        f"{config.name}: does not depend on the destination bucket's versioning"]


def test_rule_catches_an_alarm_topic_nobody_hears(resources):
    bad = [r for r in resources if r.name != "dr-monitoring-alarms-email"]
    assert len(violations(rules.alarm_topics_have_subscribers, bad)) == 1


def test_rule_catches_a_health_check_on_the_mtls_domain(resources):
    bad = mutated(resources, "dns-primary-health", lambda r: r.props.update(fqdn="api.example.com"))
    assert violations(rules.health_checks_avoid_mtls, bad) == [
        "dns-primary-health targets api.example.com, which requires a client certificate"]
    bad = mutated(resources, "dns-primary-health",
                  lambda r: r.props.update(fqdn="primary-api-rest-id.execute-api.eu-west-1.amazonaws.com"))
    assert "execute-api endpoint is disabled" in violations(rules.health_checks_avoid_mtls, bad)[0]


def test_rule_catches_the_default_provider(resources):
    bad = mutated(resources, "dns-primary-health", lambda r: setattr(r, "provider", None))
    assert violations(rules.no_default_provider, bad) == ["aws:route53/healthCheck:HealthCheck dns-primary-health "
                                                         "uses the default provider"]


def test_rule_catches_an_unprotected_table(resources):
    bad = mutated(resources, "data-table", lambda r: setattr(r, "protect", False))
    assert violations(rules.stateful_resources_protected, bad) == ["aws:dynamodb/table:Table data-table is not protected"]


def test_rule_catches_a_provider_without_default_tags(resources):
    bad = mutated(resources, "dr", lambda r: r.props.update(defaultTags=json.dumps({"tags": {"project": "x"}})))
    found = violations(rules.resources_tagged_by_provider, bad)
    assert found and all("['stack', 'region-role']" in m for m in found)
    assert len(found) == sum(1 for r in resources if rules.is_custom(r) and r.provider.endswith("::dr"))


def test_rule_catches_a_wildcard_action(resources):
    def widen(r):
        doc = json.loads(r.props["policy"])
        doc["Statement"][0]["Action"] = ["s3:*"]
        r.props["policy"] = json.dumps(doc)
    bad = mutated(resources, "primary-functions-sender-policy", widen)
    assert violations(rules.no_wildcard_actions, bad) == ["primary-functions-sender-policy allows wildcard actions ['s3:*']"]
    widened_key = mutated(resources, "keys-primary", lambda r: r.props.update(policy=r.props["policy"].replace(
        '"kms:GenerateDataKey"]', '"kms:GenerateDataKey*"]')))
    assert violations(rules.no_wildcard_actions, widened_key)


def test_rule_catches_a_stage_that_logs_before_the_account_role(resources):
    account = named(resources, "dr-api-account").urn
    bad = mutated(resources, "dr-api-stage", lambda r: r.dependencies.remove(account))
    assert len(violations(rules.stage_logging_has_account_role, bad)) == 1


# --- the policy pack's CrossGuard adapter over the same stack -----------------------------------

def as_policy_resources(resources):
    """The recorded stack as pulumi_policy hands it to a StackValidationPolicy."""
    from pulumi_policy.policy import (
        PolicyCustomTimeouts,
        PolicyProviderResource,
        PolicyResource,
        PolicyResourceOptions,
    )
    providers = {r.urn: r for r in resources if r.type.startswith("pulumi:providers:")}
    out = {}
    for r in resources:
        p = providers.get(r.provider) if r.provider else None
        out[r.urn] = PolicyResource(
            r.type, r.props, r.urn, r.name,
            PolicyResourceOptions(r.protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], r.parent),
            PolicyProviderResource(p.type, p.props, p.urn, p.name) if p else None, None, [], {})
    for r in resources:
        out[r.urn].dependencies = [out[d] for d in r.dependencies if d in out]
    return list(out.values())


def test_policy_pack_reports_through_crossguard(resources):
    from pulumi_policy import StackValidationArgs

    from infra.policy.pack import policies

    def run(stack):
        reported = []
        for p in policies():
            def report(msg, urn=None, name=p.name):
                reported.append((name, urn))
            p.validate(StackValidationArgs(as_policy_resources(stack)), report)
        return reported

    assert [p.name for p in policies()] == list(rules.RULES)
    assert run(resources) == []
    bad = mutated(resources, "data-table", lambda r: setattr(r, "protect", False))
    assert run(bad) == [("stateful-resources-protected", named(resources, "data-table").urn)]


def test_retention_is_enforced_by_ttl_and_lifecycle_rules_by_retention_class(resources):
    (table,) = of(resources, "aws:dynamodb/table:Table")
    assert table.props["ttl"] == {"attributeName": schema.TTL_ATTRIBUTE, "enabled": True}
    lifecycles = {r.name: r.props["rules"] for r in of(resources, "aws:s3/bucketLifecycleConfiguration:"
                                                                   "BucketLifecycleConfiguration")}
    for region in ("primary", "dr"):
        for spec in schema.BUCKETS:
            rules = {r["id"]: r for r in lifecycles[f"{region}-buckets-{spec.purpose}-lifecycle"]}
            assert rules["old-versions"]["noncurrentVersionExpiration"] == {
                "noncurrentDays": schema.NONCURRENT_VERSION_DAYS}
            if not spec.expire_days:
                continue
            assert rules["expire"]["expiration"] == {"days": spec.expire_days}
            for days in (c for c in schema.RETENTION_CLASSES if c < spec.expire_days):
                rule = rules[f"retention-{days}d"]
                assert rule["filter"] == {"tag": {"key": schema.RETENTION_TAG, "value": str(days)}}
                assert rule["expiration"] == {"days": days}


def test_the_controller_may_erase_in_both_regions_and_nothing_more(resources):
    docs = {r.name: json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}
    for region, _here, there in (("primary", "eu-west-1", "eu-central-1"), ("dr", "eu-central-1", "eu-west-1")):
        stmts = docs[f"{region}-controller-task-policy"]["Statement"]
        deletes = [s for s in stmts if "s3:DeleteObjectVersion" in s["Action"]]
        resources_ = {r for s in deletes for r in s["Resource"]}
        assert len(resources_) == 4 and {f"arn:aws:s3:::emailplatform-{p}-123456789012-{there}/*"
                                         for p in ("uploads", "batches")} <= resources_
        assert {r for r in resources_ if there not in r} == {
            r for r in resources_ if r.endswith(("buckets-uploads/*", "buckets-batches/*"))}
        reads = {r for s in stmts if "dynamodb:GetItem" in s["Action"] for r in s["Resource"]}
        assert any(f":{there}:" in r for r in reads)  # the replica check reads the other region's table
        assert not any("templates" in r for s in deletes for r in s["Resource"])


def test_rule_catches_an_event_source_mapping_lambda_would_refuse(resources):
    mappings = of(resources, "aws:lambda/eventSourceMapping:EventSourceMapping")
    assert mappings and not violations(rules.queue_mappings_fit_their_queues, resources)
    events = next(m for m in mappings if "ses_events" in m.name)
    assert events.props["batchSize"] == schema.EVENTS_QUEUE.batch_size  # two Firehose objects at most
    no_window = mutated(resources, events.name, lambda r: (r.props.update(batchSize=20),
                                                           r.props.pop("maximumBatchingWindowInSeconds", None)))
    assert violations(rules.queue_mappings_fit_their_queues, no_window) == [
        f"{events.name}: a batch of 20 needs a batching window"]
    sender = next(m for m in mappings if "sender" in m.name)
    big_fifo = mutated(resources, sender.name, lambda r: r.props.update(batchSize=20))
    assert any("FIFO" in m for m in violations(rules.queue_mappings_fit_their_queues, big_fifo))


def test_controller_task_runs_on_the_architecture_the_image_is_built_for(resources):
    """README builds the image for linux/arm64; Fargate defaults to X86_64 (exec format error)."""
    import re

    from infra.components.controller import IMAGE_PLATFORM
    for doc in ("README.md", "Dockerfile"):
        text = (REPO / doc).read_text()
        builds = re.findall(r"docker build[^\n]*--platform[ =](\S+)", text)
        assert builds and set(builds) == {IMAGE_PLATFORM}, doc
        assert not re.search(r"^FROM --platform", text, re.M), doc  # the build flag decides
    tasks = of(resources, "aws:ecs/taskDefinition:TaskDefinition")
    assert len(tasks) == 2
    for t in tasks:
        assert t.props["runtimePlatform"] == {"operatingSystemFamily": "LINUX", "cpuArchitecture": "ARM64"}, t.name
    assert rules.fargate_tasks_name_their_architecture(resources) == []


def test_rule_catches_a_fargate_task_without_its_architecture(resources):
    bad = mutated(resources, "dr-controller-task", lambda r: r.props.pop("runtimePlatform"))
    assert violations(rules.fargate_tasks_name_their_architecture, bad) == [
        "dr-controller-task runs on Fargate without a runtimePlatform (X86_64 by default)"]


def test_the_controller_may_set_up_the_analytics_index(resources):
    """ensure_index (run at controller start) PUTs the template, policy and index and HEADs the
    alias: OpenSearch authorises a HEAD as es:ESHttpHead, a PUT as es:ESHttpPut."""
    source = (REPO / "core" / "adapters" / "analytics.py").read_text()
    assert "exists_alias" in source and "put_index_template" in source
    docs = {r.name: json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}
    for region in ("primary", "dr"):
        stmts = docs[f"{region}-controller-task-policy"]["Statement"]
        (es,) = [s for s in stmts if "es:ESHttpHead" in s["Action"]]
        assert "es:ESHttpPut" in es["Action"] and all("search-domain" in r for r in es["Resource"])
    assert "ensure_index" in (REPO / "controller" / "__main__.py").read_text()


def test_a_prefix_too_long_for_s3_bucket_names_is_refused_before_preview():
    """<prefix>-ses-events-<account>-<region> must stay within S3's 63 characters."""
    import dataclasses

    from pydantic import ValidationError

    from config.settings import Settings
    fits = "p" * 24  # the longest bucket purpose is ses-events
    longest = Settings(name_prefix=fits, account_id="123456789012", region="ap-southeast-1")
    assert max(len(longest.bucket(b.purpose)) for b in schema.BUCKETS) == 63
    dataclasses.replace(CFG, prefix=fits, primary_region="ap-southeast-1")
    with pytest.raises(ValueError, match="too long for the bucket names"):
        dataclasses.replace(CFG, prefix=fits + "p", primary_region="ap-southeast-1")
    with pytest.raises(ValidationError):
        Settings(name_prefix=fits + "p")


def test_default_providers_are_disabled_and_every_invoke_names_its_provider(resources):
    """Pulumi.yaml disables every default provider, so an invoke or resource without one fails at preview."""
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["config"]["pulumi:disable-default-providers"] == {"value": ["*"]}
    assert Mocks.invokes and all(provider and "::default" not in provider for _, provider in Mocks.invokes)


def test_the_runbooks_name_the_no_leader_alarm_as_infra_does(resources):
    """runbooks/alarms.py turns the no-leader alarm's actions on in the new active region and off in
    the old one; it finds the alarm by name. Infra starts with the primary's on, DR's off."""
    from runbooks.alarms import no_leader_alarm
    alarms_ = {a.props["name"]: a.props for a in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert alarms_[no_leader_alarm("emailplatform", "eu-west-1")]["actionsEnabled"] is True
    assert alarms_[no_leader_alarm("emailplatform", "eu-central-1")]["actionsEnabled"] is False


def test_mtls_without_a_public_name_for_links_is_refused_at_preview():
    import dataclasses
    with pytest.raises(Exception, match="unsubscribe links need a public name"):
        run_program(dataclasses.replace(CFG, public_record_name=None))


@pytest.mark.parametrize("image", ["1.dkr.ecr.eu-west-1.amazonaws.com/c:latest", "1.dkr.ecr.eu-west-1.amazonaws.com/c",
                                   "registry.local:5000/c"])
def test_a_floating_controller_image_is_refused_before_preview(image):
    """ECS never redeploys a moved `latest`, and DR could run another build than the primary."""
    import dataclasses

    with pytest.raises(ValueError, match="pin a version tag or a digest"):
        dataclasses.replace(CFG, controller_image={"eu-west-1": image, "eu-central-1": image})
    pinned = "1.dkr.ecr.eu-west-1.amazonaws.com/c@sha256:" + "a" * 64
    dataclasses.replace(CFG, controller_image=pinned)


# --- automatic failover (#19) and the peer region's analytics (#17) on AWS -----------------------

def task_env(resources, region):
    (task,) = [r for r in of(resources, "aws:ecs/taskDefinition:TaskDefinition") if r.name == f"{region}-controller-task"]
    return {e["name"]: e["value"] for e in json.loads(task.props["containerDefinitions"])[0]["environment"]}


def policy_docs(resources):
    return {r.name: json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}


@pytest.fixture(scope="module")
def failover_stack():
    import dataclasses
    return run_program(dataclasses.replace(CFG, failover_automation=True, failover_grace_seconds=180,
                                           failover_quorum=3))


def settings_of(env, monkeypatch):
    """Settings as the controller process loads them from exactly this environment."""
    from config.settings import load_settings
    with monkeypatch.context() as m:
        for k in [k for k in __import__("os").environ if k.startswith("EMAILPLATFORM_")]:
            m.delenv(k)
        for k, v in env.items():  # the mocks' key ARNs (arn:aws:kms/key:…) in AWS's shape
            for token in ("arn:aws:kms/key:", "arn:aws:kms/replicaKey:"):
                if v.startswith(token):
                    region, account, name = v.removeprefix(token).split(":", 2)
                    v = f"arn:aws:kms:{region}:{account}:key/{name}"
            m.setenv(k, v)
        return load_settings()


def test_the_dr_controller_watches_the_primary_with_the_stacks_failover_settings(failover_stack, monkeypatch):
    resources, outputs = failover_stack
    dr, primary = task_env(resources, "dr"), task_env(resources, "primary")
    s = settings_of(dr, monkeypatch)  # the names are the ones config/settings.py reads (extra names are ignored)
    assert s.environment == "prod" and s.failover_automation is True
    assert (s.failover_grace_seconds, s.failover_quorum, s.failover_ses_window_seconds,
            s.failover_check_interval_seconds) == (180, 3, 300, 5)
    assert s.failover_peer_health_url == outputs["primary_api_health"]  # what Route 53 checks, no key, no mTLS
    assert s.failover_api_url + "/api/v1/health" == outputs["dr_api_health"]  # runbooks/regions.py appends it
    assert s.failover_health_check_id == outputs["primary_health_check"] == "dns-primary-health-id"
    assert s.failover_event_topic_arn == outputs["dr_alarm_topic"]  # DR's own topic: the primary may be down
    # failback stays manual: the primary's controller never watches DR
    assert not any(k.startswith("EMAILPLATFORM_FAILOVER_") for k in primary)
    assert settings_of(primary, monkeypatch).failover_automation is False


def test_the_dr_controller_may_do_what_the_failover_calls_on_the_resources_it_names(failover_stack):
    from infra.policies import FAILOVER_ACTIONS
    resources, outputs = failover_stack
    docs = policy_docs(resources)
    assert "primary-controller-failover-policy" not in docs
    stmts = docs["dr-controller-failover-policy"]["Statement"]
    granted = {a: s for s in stmts for a in s["Action"]}
    assert set(granted) == set(FAILOVER_ACTIONS)
    hc = "arn:aws:route53:::healthcheck/dns-primary-health-id"
    for action in ("route53:GetHealthCheckStatus", "route53:GetHealthCheck", "route53:UpdateHealthCheck"):
        assert granted[action]["Resource"] == [hc], action
    assert granted["sns:Publish"]["Resource"] == [outputs["dr_alarm_topic"]]
    (alarm,) = [a for a in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
                if a.props["name"] == "emailplatform-eu-central-1-controller-no-leader"]
    for action in ("cloudwatch:DescribeAlarms", "cloudwatch:EnableAlarmActions"):
        assert granted[action]["Resource"] == [alarm.props["arn"]], action
    # no resource-level permission exists for GetMetricStatistics: "*", held to the watched region
    metrics = granted["cloudwatch:GetMetricStatistics"]
    assert metrics["Resource"] == "*" and metrics["Action"] == ["cloudwatch:GetMetricStatistics"]
    assert metrics["Condition"] == {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}
    # the controller's own table stays what it was (the failover's DynamoDB calls are in it)
    assert {a for s in docs["dr-controller-task-policy"]["Statement"] for a in s["Action"]} == \
        set(COMPONENT_ACTIONS["controller"])


def test_automatic_failover_is_off_unless_the_stack_turns_it_on(resources):
    assert task_env(resources, "dr")["EMAILPLATFORM_FAILOVER_AUTOMATION"] == "false"
    assert not [r for r in of(resources, "aws:iam/rolePolicy:RolePolicy") if r.name.endswith("-failover-policy")]
    assert not any(k.startswith("EMAILPLATFORM_FAILOVER_") for k in task_env(resources, "primary"))


def test_failover_without_a_hosted_zone_has_no_route53_signal_or_grant(monkeypatch):
    import dataclasses
    cfg = dataclasses.replace(CFG, hosted_zone_id=None, record_name=None, public_record_name=None,
                              api_domain={r: {k: v for k, v in d.items() if k != "truststore_uri"}
                                          for r, d in CFG.api_domain.items()}, failover_automation=True)
    resources, _ = run_program(cfg)
    env = task_env(resources, "dr")
    assert env["EMAILPLATFORM_FAILOVER_AUTOMATION"] == "true" and "EMAILPLATFORM_FAILOVER_HEALTH_CHECK_ID" not in env
    actions = {a for s in policy_docs(resources)["dr-controller-failover-policy"]["Statement"] for a in s["Action"]}
    assert not any(a.startswith("route53:") for a in actions) and "sns:Publish" in actions
    assert rules.controller_roles_grant_what_the_code_calls(resources) == []


@pytest.mark.parametrize("change", [dict(failover_quorum=1), dict(failover_quorum=5),
                                    dict(failover_quorum=4, hosted_zone_id=None), dict(failover_grace_seconds=0)])
def test_a_failover_setting_the_controller_would_refuse_is_refused_before_preview(change):
    """FailoverWatch refuses a quorum above its signals at start: on ECS that is a crash loop."""
    import dataclasses
    with pytest.raises(ValueError, match="emailplatform:failover"):
        dataclasses.replace(CFG, failover_automation=True, **change)
    assert CFG.failover_signals() == ["heartbeat", "route53", "api", "ses"]


def test_stack_config_reads_the_failover_keys():
    cfg = StackConfig.from_mapping({**{k.split(":", 1)[1]: v for k, v in yaml.safe_load(
        (REPO / "config" / "Pulumi.prod.yaml").read_text())["config"].items()},
        "failoverGraceSeconds": "240", "failoverQuorum": "2", "requireComplianceFooter": "false"})
    assert (cfg.failover_automation, cfg.failover_grace_seconds, cfg.failover_quorum) == (True, 240, 2)
    assert cfg.require_compliance_footer is False
    assert stack_config("staging").failover_automation is False and stack_config("staging").require_compliance_footer is None


def test_each_controller_erases_in_the_other_regions_opensearch(failover_stack, monkeypatch):
    resources, outputs = failover_stack
    docs = policy_docs(resources)
    for here, there in (("primary", "dr"), ("dr", "primary")):
        s = settings_of(task_env(resources, here), monkeypatch)
        assert s.peer_opensearch_endpoint == outputs[f"{there}_opensearch_endpoint"]
        assert s.opensearch_endpoint == outputs[f"{here}_opensearch_endpoint"]
        peer_domain = next(d for d in of(resources, "aws:opensearch/domain:Domain") if d.name == f"{there}-search-domain")
        on_peer = {a for st in docs[f"{here}-controller-task-policy"]["Statement"]
                   if f"{peer_domain.props['arn']}/*" in st["Resource"] for a in st["Action"]}
        assert on_peer == {"es:ESHttpPost"}  # delete_by_query; nothing else on the other region's domain
    # only the controller runs erasures (core/services/privacy.py via the privacy pass): the Lambdas
    # never get the peer domain
    for fn in ("api", "sender", "ses_events"):
        for env in function_env(resources, fn).values():
            assert "EMAILPLATFORM_PEER_OPENSEARCH_ENDPOINT" not in env


def test_production_requires_the_compliance_footer_unless_the_stack_says_otherwise(resources, monkeypatch):
    """Settings requires it in staging and prod; infra sets it only to override (the deploy
    contract runs the same environment as `test`, where it stays off)."""
    import dataclasses
    env = task_env(resources, "primary")
    assert "EMAILPLATFORM_REQUIRE_COMPLIANCE_FOOTER" not in env
    assert settings_of(env, monkeypatch).require_compliance_footer is True
    assert settings_of({**env, "EMAILPLATFORM_ENVIRONMENT": "test"}, monkeypatch).require_compliance_footer is False
    off, _ = run_program(dataclasses.replace(CFG, require_compliance_footer=False))
    assert task_env(off, "primary")["EMAILPLATFORM_REQUIRE_COMPLIANCE_FOOTER"] == "false"
    assert function_env(off, "api")["primary"]["EMAILPLATFORM_REQUIRE_COMPLIANCE_FOOTER"] == "false"


def test_controller_redeploys_start_the_new_task_before_stopping_the_old(resources):
    """The old task releases the lease on SIGTERM; the new one, already running as a standby, takes
    it at once (controller/jobs.py). With minimum healthy 0 % ECS may stop the old task first and the
    senders stay fenced for the new task's whole start-up."""
    from infra.components.controller import STOP_TIMEOUT_SECONDS
    for s in of(resources, "aws:ecs/service:Service"):
        assert (s.props["deploymentMinimumHealthyPercent"], s.props["deploymentMaximumPercent"]) == (100, 200)
    for t in of(resources, "aws:ecs/taskDefinition:TaskDefinition"):
        (controller,) = [c for c in json.loads(t.props["containerDefinitions"]) if c["name"] == "controller"]
        assert controller["stopTimeout"] == STOP_TIMEOUT_SECONDS and 0 < STOP_TIMEOUT_SECONDS <= 120  # Fargate's max


def test_the_policy_pack_checks_controller_roles_against_the_generated_action_list():
    from infra.policies import pack_actions
    assert rules.CONTROLLER_ACTIONS == pack_actions(), \
        "regenerate: python -m infra.policies > infra/policy/controller_actions.json"


def drop_action(action):
    def change(r):
        doc = json.loads(r.props["policy"])
        for s in doc["Statement"]:
            s["Action"] = [a for a in s["Action"] if a != action]
        doc["Statement"] = [s for s in doc["Statement"] if s["Action"]]
        r.props["policy"] = json.dumps(doc)
    return change


def test_rule_holds_for_the_failover_stack(failover_stack):
    assert rules.check(failover_stack[0]) == []


@pytest.mark.parametrize("policy,action,expected", [
    ("dr-controller-failover-policy", "route53:UpdateHealthCheck",
     "dr-controller-task: its role dr-controller-task-role is not granted route53:UpdateHealthCheck on a named "
     "resource, which the controller calls (automatic failover)"),
    ("dr-controller-failover-policy", "sns:Publish",
     "dr-controller-task: its role dr-controller-task-role is not granted sns:Publish on a named resource, which "
     "the controller calls (automatic failover)"),
    ("primary-controller-task-policy", "dynamodb:TransactWriteItems",
     "primary-controller-task: its role primary-controller-task-role is not granted dynamodb:TransactWriteItems on "
     "a named resource, which the controller calls"),
])
def test_rule_catches_a_controller_role_missing_an_action_the_code_calls(failover_stack, policy, action, expected):
    resources = failover_stack[0]
    found = violations(rules.controller_roles_grant_what_the_code_calls, mutated(resources, policy, drop_action(action)))
    assert expected in found


def test_rule_catches_a_failover_grant_on_the_wrong_resource_or_on_star(failover_stack):
    resources = failover_stack[0]
    elsewhere = mutated(resources, "dr-controller-failover-policy", lambda r: r.props.update(
        policy=r.props["policy"].replace("healthcheck/dns-primary-health-id", "healthcheck/another")))
    assert sum("EMAILPLATFORM_FAILOVER_HEALTH_CHECK_ID names arn:aws:route53:::healthcheck/dns-primary-health-id"
               in m for m in violations(rules.controller_roles_grant_what_the_code_calls, elsewhere)) == 3

    def widen(r):
        doc = json.loads(r.props["policy"])
        for s in doc["Statement"]:
            if "sns:Publish" in s["Action"]:
                s["Resource"] = [*s["Resource"], "*"]
        r.props["policy"] = json.dumps(doc)
    star = violations(rules.controller_roles_grant_what_the_code_calls,
                      mutated(resources, "dr-controller-failover-policy", widen))
    assert "dr-controller-task: its role dr-controller-task-role is granted sns:Publish on *" in star


def test_rule_catches_a_controller_that_cannot_reach_the_other_regions_opensearch(failover_stack):
    resources = failover_stack[0]
    peer_arn = next(d for d in of(resources, "aws:opensearch/domain:Domain") if d.name == "dr-search-domain").props["arn"]

    def no_peer_grant(r):
        doc = json.loads(r.props["policy"])
        for s in doc["Statement"]:
            s["Resource"] = [x for x in s["Resource"] if not x.startswith(peer_arn)]
        r.props["policy"] = json.dumps(doc)
    found = violations(rules.controller_roles_grant_what_the_code_calls,
                       mutated(resources, "primary-controller-task-policy", no_peer_grant))
    assert found == [f"primary-controller-task: EMAILPLATFORM_PEER_OPENSEARCH_ENDPOINT names {peer_arn}/*, but its "
                     "role primary-controller-task-role is not granted es:ESHttpPost on it"]

    def not_admitted(r):
        doc = json.loads(r.props["accessPolicies"])
        doc["Statement"][0]["Principal"]["AWS"] = [p for p in doc["Statement"][0]["Principal"]["AWS"]
                                                   if not p.endswith("role/primary-controller-task-role")]
        r.props["accessPolicies"] = json.dumps(doc)
    found = violations(rules.controller_roles_grant_what_the_code_calls,
                       mutated(resources, "dr-search-access", not_admitted))
    assert found == ["primary-controller-task: the access policy of dr-search-domain "
                     "(EMAILPLATFORM_PEER_OPENSEARCH_ENDPOINT) does not admit its role primary-controller-task-role"]


# --- SES events: configuration set → Firehose → the events bucket → the events queue (#15) ----------

REGION_KEYS = {"primary": ("eu-west-1", "keys-primary"), "dr": ("eu-central-1", "keys-replica")}


def ses_events_path(resources, region):
    """The resources of one region's SES events path, by role."""
    return {k: named(resources, f"{region}-{n}") for k, n in (
        ("bucket", f"buckets-{schema.SES_EVENTS_STREAM.bucket}"), ("queue", f"messaging-{schema.SES_EVENTS_STREAM.queue}"),
        ("stream", "ses-events-stream"), ("notification", "ses-events-notification"),
        ("queue_policy", "ses-events-queue-policy"), ("destination", "ses-events-destination"),
        ("ses_role", "ses-events-ses-role"), ("ses_policy", "ses-events-ses-policy"),
        ("firehose_role", "ses-events-firehose-role"), ("firehose_policy", "ses-events-firehose-policy"),
        ("config_set", "messaging-config-set"), ("logs", "ses-events-logs"))}


@pytest.mark.parametrize("region", ["primary", "dr"])
def test_ses_events_flow_through_firehose_and_s3_to_the_events_queue(resources, region):
    """The shape local/bootstrap.py gives the embedded stack, from the same schema."""
    spec = schema.SES_EVENTS_STREAM
    p = ses_events_path(resources, region)
    key = named(resources, REGION_KEYS[region][1]).props["arn"]
    assert f":{REGION_KEYS[region][0]}:" in key
    # the stream writes plain JSON lines (core/services/event_sources.py) under events/ of the events bucket
    stream = p["stream"].props
    dest = stream["extendedS3Configuration"]
    assert stream["name"] == spec.name(CFG.prefix) and stream["destination"] == "extended_s3"
    assert dest["bucketArn"] == p["bucket"].props["arn"] and dest["roleArn"] == p["firehose_role"].props["arn"]
    assert (dest["prefix"], dest["errorOutputPrefix"]) == (spec.prefix, spec.error_prefix)
    assert not dest["errorOutputPrefix"].startswith(spec.prefix)  # errors are not notified as events
    assert (dest["bufferingInterval"], dest["bufferingSize"]) == (spec.buffer_seconds, spec.buffer_mb)
    assert dest["compressionFormat"] == "UNCOMPRESSED" and dest["kmsKeyArn"] == key
    assert stream["serverSideEncryption"] == {"enabled": True, "keyType": "CUSTOMER_MANAGED_CMK", "keyArn": key}
    assert dest["cloudwatchLoggingOptions"]["logGroupName"] == p["logs"].props["name"]
    assert p["firehose_policy"].urn in p["stream"].dependencies  # the role may write before the stream starts
    # the bucket's ObjectCreated notifications under events/ go to the events queue, once S3 may send
    (queue,) = p["notification"].props["queues"]
    assert p["notification"].props["bucket"] == p["bucket"].props["id"]
    assert queue["queueArn"] == p["queue"].props["arn"]
    assert (queue["events"], queue["filterPrefix"]) == (["s3:ObjectCreated:*"], spec.prefix)
    assert p["queue_policy"].urn in p["notification"].dependencies
    assert p["queue_policy"].props["queueUrl"] == p["queue"].props["id"]
    # the configuration set's one event destination puts every event type to the stream as the SES role
    (destination,) = [d for d in of(resources, "aws:sesv2/configurationSetEventDestination:"
                                               "ConfigurationSetEventDestination") if region_of(d) == region]
    assert destination is p["destination"]
    d = destination.props
    assert d["eventDestinationName"] == "to-firehose"
    assert d["configurationSetName"] == p["config_set"].props["configurationSetName"] == CFG.prefix
    assert d["eventDestination"]["enabled"] and d["eventDestination"]["matchingEventTypes"] == list(schema.SES_EVENT_TYPES)
    assert d["eventDestination"]["kinesisFirehoseDestination"] == {
        "deliveryStreamArn": stream["arn"], "iamRoleArn": p["ses_role"].props["arn"]}
    assert "snsDestination" not in d["eventDestination"]
    assert p["ses_policy"].urn in destination.dependencies


@pytest.mark.parametrize("region", ["primary", "dr"])
def test_the_ses_role_is_assumable_by_ses_for_this_configuration_set_only_and_puts_to_this_stream_only(
        resources, region):
    p = ses_events_path(resources, region)
    (trust,) = json.loads(p["ses_role"].props["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "ses.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"StringEquals": {
        "aws:SourceAccount": "123456789012",
        "aws:SourceArn": f"arn:aws:ses:{REGION_KEYS[region][0]}:123456789012:configuration-set/{CFG.prefix}"}}
    (grant,) = json.loads(p["ses_policy"].props["policy"])["Statement"]
    assert grant["Action"] == ["firehose:PutRecord", "firehose:PutRecordBatch"]
    assert grant["Resource"] == p["stream"].props["arn"]


@pytest.mark.parametrize("region", ["primary", "dr"])
def test_the_firehose_role_writes_the_events_bucket_only_with_the_key_through_s3_only(resources, region):
    p = ses_events_path(resources, region)
    region_name, key_name = REGION_KEYS[region]
    (trust,) = json.loads(p["firehose_role"].props["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "firehose.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": "123456789012"}}  # as Firehose documents
    bucket, key = p["bucket"].props["arn"], named(resources, key_name).props["arn"]
    granted = {(a, r): st.get("Condition") for st in json.loads(p["firehose_policy"].props["policy"])["Statement"]
               for a in st["Action"] for r in st["Resource"]}
    expected = {(a, f"{bucket}/*") for a in ("s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject")} | {
        (a, bucket) for a in ("s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads")} | {
        (a, key) for a in ("kms:Decrypt", "kms:GenerateDataKey")} | {
        ("logs:PutLogEvents", p["logs"].props["arn"] + ":*")}
    assert set(granted) == expected
    assert granted[("kms:GenerateDataKey", key)] == {"StringEquals": {"kms:ViaService": f"s3.{region_name}.amazonaws.com"}}


@pytest.mark.parametrize("region", ["primary", "dr"])
def test_the_events_queue_accepts_s3_notifications_of_the_events_bucket_only(resources, region):
    p = ses_events_path(resources, region)
    (stmt,) = json.loads(p["queue_policy"].props["policy"])["Statement"]
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"} and stmt["Action"] == "sqs:SendMessage"
    assert stmt["Resource"] == p["queue"].props["arn"]
    assert stmt["Condition"] == {"ArnLike": {"aws:SourceArn": p["bucket"].props["arn"]},
                                 "StringEquals": {"aws:SourceAccount": "123456789012"}}
    # A queue has one policy. The one SNS had (a child of the queue) is this one, rewritten in place:
    # as a new resource, the old one's deletion (after the new one's creation) would remove it.
    assert ALIASES[p["queue_policy"].urn] == [(f"{region}-messaging-ses-events-from-ses-events", p["queue"].urn)]
    assert [q for q in of(resources, "aws:sqs/queuePolicy:QueuePolicy") if q.props["queueUrl"] == p["queue"].props["id"]] \
        == [p["queue_policy"]]


def test_the_events_bucket_keeps_no_versions_is_not_replicated_and_expires(resources):
    spec = next(b for b in schema.BUCKETS if b.purpose == schema.SES_EVENTS_STREAM.bucket)
    assert not spec.replicated and spec.expire_days == 14
    for region in ("primary", "dr"):
        bucket = f"{region}-buckets-{spec.purpose}"
        assert not [v for v in of(resources, "aws:s3/bucketVersioning:BucketVersioning")
                    if v.props["bucket"] == f"{bucket}-id"]
        assert not [c for c in of(resources, "aws:s3/bucketReplicationConfig:BucketReplicationConfig")
                    if c.props["bucket"] == f"{bucket}-id"]
        rules_ = {r["id"]: r for r in named(resources, f"{bucket}-lifecycle").props["rules"]}
        assert rules_["expire"]["expiration"] == {"days": spec.expire_days}
        assert named(resources, f"{bucket}-sse").props["rules"][0]["applyServerSideEncryptionByDefault"][
            "kmsMasterKeyId"] == named(resources, REGION_KEYS[region][1]).props["arn"]
        assert named(resources, f"{bucket}-private").props["restrictPublicBuckets"]


def test_the_events_lambda_may_read_and_delete_the_events_objects_and_nothing_else_there(resources):
    docs = policy_docs(resources)
    for region in ("primary", "dr"):
        bucket = named(resources, f"{region}-buckets-ses-events").props["arn"]
        key = named(resources, REGION_KEYS[region][1]).props["arn"]
        stmts = docs[f"{region}-functions-ses_events-policy"]["Statement"]
        on_objects = {a for s in stmts if f"{bucket}/*" in s["Resource"] for a in s["Action"]}
        assert on_objects == {"s3:GetObject", "s3:DeleteObject"}
        # on the bucket itself: without it S3 answers 403, not 404, for an object already deleted
        assert {a for s in stmts if bucket in s["Resource"] for a in s["Action"]} == {"s3:ListBucket"}
        assert "kms:Decrypt" in {a for s in stmts if key in s["Resource"] for a in s["Action"]}
        # no other component touches the events objects
        for fn in ("api", "sender"):
            assert not [s for s in docs[f"{region}-functions-{fn}-policy"]["Statement"]
                        if any(r.startswith(bucket) for r in s["Resource"])]


def test_a_stalled_firehose_stream_alarms_in_each_region(resources):
    """A stalled stream leaves the events queue empty: the queue-age and lag alarms stay quiet."""
    from infra.components.operations import FIREHOSE_STALE_SECONDS
    for region in ("primary", "dr"):
        alarm = named(resources, f"{region}-monitoring-firehose-freshness-ses-events").props
        assert (alarm["namespace"], alarm["metricName"], alarm["statistic"]) == (
            "AWS/Firehose", "DeliveryToS3.DataFreshness", "Maximum")
        assert alarm["dimensions"] == {"DeliveryStreamName": named(resources, f"{region}-ses-events-stream").props["name"]}
        assert alarm["threshold"] == FIREHOSE_STALE_SECONDS and alarm["treatMissingData"] == "notBreaching"
        topic = named(resources, f"{region}-monitoring-alarms").props["arn"]
        assert alarm["alarmActions"] == alarm["okActions"] == [topic] and alarm["actionsEnabled"]
        # before the shortest send-evidence window allowed where deployed runs out
        assert alarm["threshold"] + alarm["period"] * alarm["evaluationPeriods"] <= 900
        assert FIREHOSE_STALE_SECONDS >= 4 * schema.SES_EVENTS_STREAM.buffer_seconds


# --- the rules that state what AWS checks on that path -------------------------------------------

def rewrite(prop, change):
    """A mutation of the JSON document in ``prop``."""
    def apply(r):
        doc = json.loads(r.props[prop])
        change(doc)
        r.props[prop] = json.dumps(doc)
    return apply


def test_rule_catches_a_notification_to_a_queue_s3_may_not_send_to(resources):
    """S3 refuses PutBucketNotificationConfiguration: "Unable to validate the following destination
    configurations"."""
    queue = named(resources, "primary-messaging-ses-events").props["arn"]
    bucket = named(resources, "primary-buckets-ses-events").props["id"]
    message = (f"primary-ses-events-notification: queue {queue} has no policy letting S3 send notifications of bucket "
               f"{bucket} (s3.amazonaws.com, sqs:SendMessage, aws:SourceArn the bucket)")
    missing = [r for r in resources if r.name != "primary-ses-events-queue-policy"]
    assert violations(rules.destinations_accept_their_producers, missing) == [message]
    other_bucket = mutated(resources, "primary-ses-events-queue-policy", rewrite("policy", lambda d: d["Statement"][0][
        "Condition"]["ArnLike"].update({"aws:SourceArn": "arn:aws:s3:::someone-elses-bucket"})))
    assert violations(rules.destinations_accept_their_producers, other_bucket) == [message]
    policy = named(resources, "primary-ses-events-queue-policy").urn
    racing = mutated(resources, "primary-ses-events-notification", lambda r: r.dependencies.remove(policy))
    assert violations(rules.destinations_accept_their_producers, racing) == [
        "primary-ses-events-notification: does not depend on primary-ses-events-queue-policy, the queue policy S3 "
        "checks when the notification is put"]


def test_rule_catches_an_ses_destination_whose_role_ses_cannot_assume_or_use(resources):
    stream = named(resources, "dr-ses-events-stream").props["arn"]
    not_ses = mutated(resources, "dr-ses-events-ses-role", rewrite("assumeRolePolicy", lambda d: d["Statement"][0].update(
        Principal={"Service": "firehose.amazonaws.com"})))
    assert violations(rules.destinations_accept_their_producers, not_ses) == [
        "dr-ses-events-destination: its role dr-ses-events-ses-role does not trust ses.amazonaws.com"]
    other_set = mutated(resources, "dr-ses-events-ses-role", rewrite("assumeRolePolicy", lambda d: d["Statement"][0][
        "Condition"]["StringEquals"].update({"aws:SourceArn": "arn:aws:ses:eu-central-1:123456789012:configuration-set/x"})))
    assert violations(rules.destinations_accept_their_producers, other_set) == [
        "dr-ses-events-destination: its role dr-ses-events-ses-role trusts SES for ['arn:aws:ses:eu-central-1:"
        "123456789012:configuration-set/x'], not for arn:aws:ses:eu-central-1:123456789012:configuration-set/emailplatform"]
    no_batch = mutated(resources, "dr-ses-events-ses-policy", rewrite("policy", lambda d: d["Statement"][0].update(
        Action=["firehose:PutRecord"])))
    assert violations(rules.destinations_accept_their_producers, no_batch) == [
        f"dr-ses-events-destination: its role dr-ses-events-ses-role may not put records to {stream}"]


def test_rule_catches_a_firehose_stream_whose_role_cannot_write_its_bucket(resources):
    bucket = named(resources, "primary-buckets-ses-events").props["arn"]
    not_firehose = mutated(resources, "primary-ses-events-firehose-role", rewrite(
        "assumeRolePolicy", lambda d: d["Statement"][0].update(Principal={"Service": "ses.amazonaws.com"})))
    assert violations(rules.destinations_accept_their_producers, not_firehose) == [
        "primary-ses-events-stream: its role primary-ses-events-firehose-role does not trust firehose.amazonaws.com"]

    def objects_only_in_another_bucket(d):
        d["Statement"][0]["Resource"] = ["arn:aws:s3:::another/*"]
    elsewhere = mutated(resources, "primary-ses-events-firehose-policy", rewrite("policy", objects_only_in_another_bucket))
    assert violations(rules.destinations_accept_their_producers, elsewhere) == [
        f"primary-ses-events-stream: its role primary-ses-events-firehose-role is not granted {a} on {bucket}/*"
        for a in ("s3:PutObject", "s3:AbortMultipartUpload")]


@pytest.mark.parametrize("change,expected", [
    ({"bufferingInterval": 901}, "bufferingInterval 901 s is outside Firehose's 0-900 s"),
    ({"bufferingSize": 129}, "bufferingSize 129 MiB is outside Firehose's 1-128 MiB"),
    ({"bufferingSize": 0}, "bufferingSize 0 MiB is outside Firehose's 1-128 MiB"),
])
def test_rule_catches_firehose_buffering_aws_refuses(resources, change, expected):
    assert rules.firehose_streams_within_aws_limits(resources) == []
    bad = mutated(resources, "primary-ses-events-stream", lambda r: r.props["extendedS3Configuration"].update(change))
    assert violations(rules.firehose_streams_within_aws_limits, bad) == [f"primary-ses-events-stream: {expected}"]


def test_rule_catches_a_stream_encrypted_with_a_customer_key_it_does_not_name(resources):
    bad = mutated(resources, "dr-ses-events-stream", lambda r: r.props["serverSideEncryption"].pop("keyArn"))
    assert violations(rules.firehose_streams_within_aws_limits, bad) == [
        "dr-ses-events-stream: encrypted with a customer managed key but names no key"]


def test_rule_catches_a_service_trusted_without_naming_whose_resource_it_acts_for(resources):
    """The confused deputy: another account's configuration set or stream could use our role."""
    assert rules.service_principals_name_their_source(resources) == []
    for role in ("primary-ses-events-ses-role", "dr-ses-events-firehose-role"):
        bad = mutated(resources, role, rewrite("assumeRolePolicy", lambda d: d["Statement"][0].pop("Condition")))
        service = "ses" if role.endswith("-ses-role") else "firehose"
        assert violations(rules.service_principals_name_their_source, bad) == [
            f"{role}: trusts ['{service}.amazonaws.com'] without aws:SourceAccount, aws:SourceArn or sts:ExternalId"]
    open_queue = mutated(resources, "dr-ses-events-queue-policy", rewrite("policy", lambda d: d["Statement"][0].pop(
        "Condition")))
    assert violations(rules.service_principals_name_their_source, open_queue) == [
        "dr-ses-events-queue-policy: allows ['s3.amazonaws.com'] without aws:SourceAccount or aws:SourceArn"]
