"""The Pulumi program under pulumi's mocks, with a prod-like config: policy, stated as tests."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pulumi
import pytest

from core import schema

RESOURCES: list[pulumi.runtime.MockResourceArgs] = []


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        RESOURCES.append(args)
        region = "eu-central-1" if "::dr::" in (args.provider or "") or args.name.startswith("dr-") else "eu-west-1"
        outputs = {**args.inputs, "arn": f"arn:aws:{args.typ.split(':')[1]}:{region}:123456789012:{args.name}",
                   "name": args.inputs.get("name", args.name), "id": f"{args.name}-id"}
        if args.typ == "aws:dynamodb/table:Table":
            outputs["streamArn"] = outputs["arn"] + "/stream/2026"
        if args.typ == "aws:apigateway/stage:Stage":
            outputs["invokeUrl"] = f"https://{args.name}.execute-api.{region}.amazonaws.com/v1"
        if args.typ == "aws:apigateway/domainName:DomainName":
            outputs["regionalDomainName"] = f"d-{args.name}.execute-api.{region}.amazonaws.com"
            outputs["regionalZoneId"] = f"Z{region}"
        if args.typ == "aws:apigateway/restApi:RestApi":
            outputs["rootResourceId"] = "root"
            outputs["executionArn"] = f"arn:aws:execute-api:{region}:123456789012:{args.name}"
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": "123456789012", "arn": "arn:aws:iam::123456789012:root", "userId": "x"}
        return {}


pulumi.runtime.set_mocks(Mocks(), preview=False)

from infra.policies import COMPONENT_ACTIONS  # noqa: E402
from infra.program import StackConfig, build  # noqa: E402

CFG = StackConfig(
    prefix="emailplatform", primary_region="eu-west-1", dr_region="eu-central-1", ses_domain="mail.example.com",
    controller_image="example/controller:1", ses_max_send_rate=200, hosted_zone_id="Z1", record_name="api.example.com",
    api_domain={r: {"domain": f"api-{r}.example.com", "certificate_arn": f"arn:aws:acm:{r}:1:certificate/x",
                    "truststore_uri": "s3://trust/ca.pem"} for r in ("eu-west-1", "eu-central-1")},
    network={r: {"subnet_ids": ["subnet-1"], "security_group_ids": ["sg-1"]} for r in ("eu-west-1", "eu-central-1")},
)


@pytest.fixture(scope="module")
def resources():
    RESOURCES.clear()

    @pulumi.runtime.test
    def run():
        out = build(CFG)
        return pulumi.Output.all(out["data"].table.arn, out["primary"]["api"].stage.invoke_url)

    run()
    return list(RESOURCES)


def of(resources, typ):
    return [r for r in resources if r.typ == typ]


def region_of(r) -> str:
    return "dr" if r.name.startswith("dr-") else "primary" if r.name.startswith("primary-") else "global"


def test_every_bucket_is_encrypted_versioned_private_and_tls_only(resources):
    buckets = {r.name for r in of(resources, "aws:s3/bucket:Bucket")}
    assert len(buckets) == 2 * len(schema.BUCKETS)
    sse = {r.name.removesuffix("-sse"): r.inputs for r in of(resources, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")}
    ver = {r.name.removesuffix("-versioning"): r.inputs for r in of(resources, "aws:s3/bucketVersioning:BucketVersioning")}
    pab = {r.name.removesuffix("-private"): r.inputs for r in of(resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")}
    pol = {r.name.removesuffix("-tls-only"): json.loads(r.inputs["policy"]) for r in of(resources, "aws:s3/bucketPolicy:BucketPolicy")}
    for b in buckets:
        rule = sse[b]["rules"][0]["applyServerSideEncryptionByDefault"]
        assert rule["sseAlgorithm"] == "aws:kms" and rule["kmsMasterKeyId"].startswith("arn:aws:kms"), b
        assert ver[b]["versioningConfiguration"]["status"] == "Enabled", b
        assert all(pab[b][k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")), b
        deny = pol[b]["Statement"][0]
        assert deny["Effect"] == "Deny" and deny["Condition"]["Bool"]["aws:SecureTransport"] == "false", b


def test_table_is_a_global_table_with_pitr_streams_ttl_and_kms(resources):
    (table,) = of(resources, "aws:dynamodb/table:Table")
    i = table.inputs
    assert i["pointInTimeRecovery"]["enabled"] and i["streamEnabled"] and i["deletionProtectionEnabled"]
    assert i["serverSideEncryption"]["enabled"] and i["serverSideEncryption"]["kmsKeyArn"]
    assert i["ttl"] == {"attributeName": schema.TTL_ATTRIBUTE, "enabled": True}
    (replica,) = i["replicas"]
    assert replica["regionName"] == "eu-central-1" and replica["kmsKeyArn"] and replica["pointInTimeRecovery"]
    assert {g["name"] for g in i["globalSecondaryIndexes"]} == {ix.name for ix in schema.INDEXES}


def test_queues_and_topics_are_encrypted(resources):
    queues = of(resources, "aws:sqs/queue:Queue")
    assert len(queues) == 2 * 2 * len(schema.QUEUES)  # queue + DLQ, two regions
    for r in queues + of(resources, "aws:sns/topic:Topic"):
        if r.name.endswith("-alarms"):
            continue
        assert r.inputs.get("kmsMasterKeyId"), r.name


def test_dr_mirrors_the_primary(resources):
    by_region: dict[str, Counter] = defaultdict(Counter)
    for r in resources:
        by_region[region_of(r)][r.typ] += 1
    assert by_region["primary"] == by_region["dr"]
    assert by_region["primary"]["aws:lambda/function:Function"] == 3


def test_replication_goes_primary_to_dr_with_rtc(resources):
    configs = of(resources, "aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert len(configs) == len(schema.BUCKETS)
    for c in configs:
        dest = c.inputs["rules"][0]["destination"]
        assert ":eu-central-1:" in dest["bucket"] and dest["replicationTime"]["status"] == "Enabled"
        assert dest["encryptionConfiguration"]["replicaKmsKeyId"]
        assert c.inputs["bucket"].startswith("primary-")


def test_failover_records_point_at_each_region(resources):
    records = {r.inputs["failoverRoutingPolicies"][0]["type"]: r for r in of(resources, "aws:route53/record:Record")}
    assert set(records) == {"PRIMARY", "SECONDARY"}
    assert all(r.inputs["healthCheckId"] for r in records.values())
    assert "primary" in records["PRIMARY"].inputs["aliases"][0]["name"]
    assert "dr" in records["SECONDARY"].inputs["aliases"][0]["name"]


def test_role_policies_grant_exactly_the_component_tables_and_no_wildcard_actions(resources):
    policies = {r.name: json.loads(r.inputs["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}
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


def test_sender_concurrency_derives_from_the_ses_quota(resources):
    senders = [r for r in of(resources, "aws:lambda/function:Function") if r.name.endswith("-sender")]
    assert {r.inputs["reservedConcurrentExecutions"] for r in senders} == {20}
    for r in of(resources, "aws:lambda/function:Function"):
        assert r.inputs["tracingConfig"]["mode"] == "Active"
    for m in of(resources, "aws:lambda/eventSourceMapping:EventSourceMapping"):
        assert m.inputs["functionResponseTypes"] == ["ReportBatchItemFailures"]


def test_api_has_waf_usage_plan_and_mtls_domain(resources):
    assert len(of(resources, "aws:wafv2/webAclAssociation:WebAclAssociation")) == 2
    plans = of(resources, "aws:apigateway/usagePlan:UsagePlan")
    assert all(p.inputs["throttleSettings"]["rateLimit"] == 50 for p in plans)
    domains = of(resources, "aws:apigateway/domainName:DomainName")
    assert all(d.inputs["mutualTlsAuthentication"]["truststoreUri"] == "s3://trust/ca.pem" for d in domains)


def test_opensearch_is_encrypted_and_https_only(resources):
    for d in of(resources, "aws:opensearch/domain:Domain"):
        i = d.inputs
        assert i["encryptAtRest"]["enabled"] and i["nodeToNodeEncryption"]["enabled"]
        assert i["domainEndpointOptions"]["enforceHttps"] and i["advancedSecurityOptions"]["enabled"]


def test_every_work_queue_alarms_when_its_oldest_message_ages(resources):
    """The SES-events queue backing up also holds back in-doubt chunks: someone must hear of it."""
    ages = [r for r in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
            if r.inputs.get("metricName") == "ApproximateAgeOfOldestMessage"]
    assert len(ages) == 2 * len(schema.QUEUES)  # every work queue, both regions
    assert all(a.inputs["statistic"] == "Maximum" and a.inputs["threshold"] == 300 for a in ages)
