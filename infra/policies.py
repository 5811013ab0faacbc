"""What each runtime component may do on AWS: the single source for its IAM policy.

``tests/e2e/test_least_privilege.py`` records the AWS operations each component really performs
during the end-to-end tests and checks them against this table both ways: nothing it does is
missing, and nothing granted is unused beyond ``NOT_EXERCISED_LOCALLY`` (documented below).
"""

from __future__ import annotations

# resource kinds: table, table_stream, bucket:<purpose> (its objects), bucketarn:<purpose> (the bucket),
# peer_table, peer_bucket:<purpose>, peer_bucketarn:<purpose> (the other region's, for erasures),
# queue:<purpose>, dlq:<purpose>, secret, ses (identity/* of the region: tenants' own sender domains),
# ses_configuration_set, key (this region's), peer_key (the other region's replica of it),
# unsubscribe_secret, webhook_secrets (the runtime-created namespace), search (the OpenSearch domain),
# peer_search (the other region's domain, for erasures)
COMPONENT_ACTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "api": {
        "dynamodb:GetItem": ("table",), "dynamodb:PutItem": ("table",), "dynamodb:UpdateItem": ("table",),
        "dynamodb:DeleteItem": ("table",), "dynamodb:Query": ("table",), "dynamodb:TransactWriteItems": ("table",),
        "s3:GetObject": ("bucket:templates", "bucket:uploads", "bucket:batches"),
        "s3:PutObject": ("bucket:templates", "bucket:uploads"),
        "secretsmanager:GetSecretValue": ("secret", "unsubscribe_secret"), "secretsmanager:PutSecretValue": ("secret",),
        # tenants' webhook secrets are created by the API at runtime, with a replica in the other region
        "secretsmanager:CreateSecret": ("webhook_secrets",),
        "secretsmanager:ReplicateSecretToRegions": ("webhook_secrets",),
        # a secret replicated to the other region is encrypted there with that region's key
        "kms:Decrypt": ("key", "peer_key"), "kms:GenerateDataKey": ("key", "peer_key"),
        "es:ESHttpGet": ("search",), "es:ESHttpPost": ("search",), "es:ESHttpPut": ("search",),
        # POST /campaigns/{id}/test-send: one mail to one address, with the configuration set
        "ses:SendEmail": ("ses", "ses_configuration_set"),
        # GET /privacy/subjects/{email}: the tenant's stored CSVs (every version is listed, the current read)
        "s3:ListBucket": ("bucketarn:uploads", "bucketarn:batches"),
        "s3:ListBucketVersions": ("bucketarn:uploads", "bucketarn:batches"),
        "s3:GetObjectVersion": ("bucket:uploads", "bucket:batches"),
    },
    "sender": {
        "dynamodb:GetItem": ("table",), "dynamodb:PutItem": ("table",), "dynamodb:UpdateItem": ("table",),
        "dynamodb:Query": ("table",), "dynamodb:BatchGetItem": ("table",),
        "s3:GetObject": ("bucket:templates",),
        # a send naming a configuration set is authorised against the identity and the set
        "ses:SendEmail": ("ses", "ses_configuration_set"),
        "secretsmanager:GetSecretValue": ("unsubscribe_secret",),
        "sqs:ReceiveMessage": ("queue:send",), "sqs:DeleteMessage": ("queue:send",),
        "sqs:ChangeMessageVisibility": ("queue:send",), "sqs:GetQueueAttributes": ("queue:send",),
        "kms:Decrypt": ("key",), "kms:GenerateDataKey": ("key",),
    },
    "ses_events": {
        "dynamodb:UpdateItem": ("table",), "dynamodb:PutItem": ("table",),
        # one read of an SQS batch's messages (core/services/events.py record_ses_events); a
        # suppression (hard bounce, complaint) is written only while the address is not suppressed
        # as a hash: a condition check on the hash item in the same transaction (store.suppress)
        "dynamodb:BatchGetItem": ("table",), "dynamodb:TransactWriteItems": ("table",),
        # the batch's message writes: conditional PartiQL UPDATEs, 25 per BatchExecuteStatement
        # (core/adapters/dynamodb.py update_each; the CallCounter names each call by its statements)
        "dynamodb:PartiQLUpdate": ("table",),
        "sqs:ReceiveMessage": ("queue:ses-events",), "sqs:DeleteMessage": ("queue:ses-events",),
        "sqs:GetQueueAttributes": ("queue:ses-events",),
        # the Firehose objects of SES events the queue's notifications name: read, then deleted
        # once every event in them is recorded (core/services/event_sources.py)
        "s3:GetObject": ("bucket:ses-events",), "s3:DeleteObject": ("bucket:ses-events",),
        # without it S3 answers 403, not 404, for an object already deleted: a notification
        # delivered again (SQS is at least once) could not tell "done" from "denied"
        "s3:ListBucket": ("bucketarn:ses-events",),
        "kms:Decrypt": ("key",), "kms:GenerateDataKey": ("key",),
        "es:ESHttpGet": ("search",), "es:ESHttpPost": ("search",), "es:ESHttpPut": ("search",),
        # every process's bootstrap reads the unsubscribe signing key (core/bootstrap.py)
        "secretsmanager:GetSecretValue": ("unsubscribe_secret",),
    },
    "controller": {
        "dynamodb:GetItem": ("table", "peer_table"), "dynamodb:PutItem": ("table",), "dynamodb:UpdateItem": ("table",),
        "dynamodb:Query": ("table",), "dynamodb:TransactWriteItems": ("table",),  # a status move + its callback
        # fenced bulk puts (ingest): create-only PartiQL INSERTs, 25 per BatchExecuteStatement
        "dynamodb:PartiQLInsert": ("table",),
        "dynamodb:DescribeTable": ("table",), "dynamodb:DescribeStream": ("table_stream",),
        "dynamodb:GetShardIterator": ("table_stream",), "dynamodb:GetRecords": ("table_stream",),
        "s3:GetObject": ("bucket:uploads", "bucket:batches", "peer_bucket:uploads", "peer_bucket:batches"),
        "s3:PutObject": ("bucket:batches", "bucket:uploads", "peer_bucket:uploads", "peer_bucket:batches"),
        # retention: batch files are written with, and uploads given, their retention-days tag
        "s3:PutObjectTagging": ("bucket:uploads", "bucket:batches", "peer_bucket:uploads", "peer_bucket:batches"),
        # erasure (core/services/privacy.py): every version of the tenant's CSVs in both regions is
        # read, the current one rewritten without the person's rows, the old ones deleted; the
        # plain suppression is replaced by its hash; the other region's table copy is checked
        "dynamodb:DeleteItem": ("table",),
        "s3:ListBucket": ("bucketarn:uploads", "bucketarn:batches", "peer_bucketarn:uploads", "peer_bucketarn:batches"),
        "s3:ListBucketVersions": ("bucketarn:uploads", "bucketarn:batches", "peer_bucketarn:uploads",
                                  "peer_bucketarn:batches"),
        "s3:GetObjectVersion": ("bucket:uploads", "bucket:batches", "peer_bucket:uploads", "peer_bucket:batches"),
        "s3:GetObjectVersionTagging": ("bucket:uploads", "bucket:batches", "peer_bucket:uploads",
                                       "peer_bucket:batches"),
        "s3:DeleteObjectVersion": ("bucket:uploads", "bucket:batches", "peer_bucket:uploads", "peer_bucket:batches"),
        # analytics: an erasure deletes the person's events, retention purges old ones (delete_by_query);
        # at start ensure_index PUTs the template, ISM policy and write index, HEADs the alias. An
        # erasure and the hourly retention purge also delete them in the other region's domain
        # (EMAILPLATFORM_PEER_OPENSEARCH_ENDPOINT; its controller is a standby): POSTs only there
        "es:ESHttpPost": ("search", "peer_search"), "es:ESHttpGet": ("search",), "es:ESHttpPut": ("search",),
        "es:ESHttpHead": ("search",),
        "sqs:SendMessage": ("queue:send",),
        # the metrics pass reads every queue's depth, the dead-letter queues' too (DLQ alert)
        "sqs:GetQueueUrl": ("queue:send", "queue:ses-events", "dlq:send", "dlq:ses-events"),
        "sqs:GetQueueAttributes": ("queue:send", "queue:ses-events", "dlq:send", "dlq:ses-events"),
        "secretsmanager:GetSecretValue": ("secret", "unsubscribe_secret"),
        # the other region's buckets are encrypted with its key: an erasure reads and rewrites them
        "kms:Decrypt": ("key", "peer_key"), "kms:GenerateDataKey": ("key", "peer_key"),
    },
}

# The DR controller's automatic failover (controller/failover.py, on with
# EMAILPLATFORM_FAILOVER_AUTOMATION=true): what its signals and the failover runbook steps it runs
# (runbooks/failover.py fail_over → runbooks/regions.py switch_active_region with the primary
# unreachable, runbooks/alarms.py move_no_leader_alarm) call beyond the controller's own table above
# (DescribeTable, GetItem, PutItem, UpdateItem on this region's table). Granted to that role only,
# in a policy of its own (infra/components/controller.py). Resource kinds: health_check (the watched
# region's Route 53 health check), no_leader_alarm (this region's), alarm_topic (this region's
# alarms topic: the primary may be the region that is down), watched_region_metrics (below).
# tests/integration/test_failover_permissions.py runs the promotion against moto and checks these
# against the calls it makes, both ways.
FAILOVER_ACTIONS: dict[str, tuple[str, ...]] = {
    "route53:GetHealthCheckStatus": ("health_check",),  # the route53 signal (Route53Health)
    "route53:GetHealthCheck": ("health_check",),  # switch_active_region: already forced unhealthy?
    "route53:UpdateHealthCheck": ("health_check",),  # force_unhealthy: disabled + inverted, DNS fails over
    "cloudwatch:GetMetricStatistics": ("watched_region_metrics",),  # the ses signal: AWS/SES Send (CloudWatchSends)
    "cloudwatch:DescribeAlarms": ("no_leader_alarm",),  # move_no_leader_alarm: this region's alarm notifies
    "cloudwatch:EnableAlarmActions": ("no_leader_alarm",),
    "sns:Publish": ("alarm_topic",),  # sns_notifier: the decision, as a platform event
}

# Actions AWS authorises only on Resource "*" (no resource-level permissions in the Service
# Authorization Reference). Each such grant is narrowed by a condition instead: GetMetricStatistics
# to the watched region (aws:RequestedRegion).
RESOURCE_WILDCARD_ACTIONS = frozenset({"cloudwatch:GetMetricStatistics", "cloudwatch:GetMetricData"})

# the embedded stack's SES (moto) has no CloudWatch metrics: there the ses signal reads
# GetSendStatistics instead (controller/failover.py SendStatisticsCounter), never on AWS
FAILOVER_EMULATOR_ONLY = frozenset({"ses:GetSendStatistics"})
# granted, not called by the automatic promotion on moto: CloudWatchSends runs on AWS only
FAILOVER_NOT_EXERCISED_LOCALLY = frozenset({"cloudwatch:GetMetricStatistics"})


# Granted but not seen in the embedded e2e run, with the reason:
NOT_EXERCISED_LOCALLY: dict[str, set[str]] = {
    # moto does not encrypt with KMS, so no KMS call is made locally; on AWS every SSE-KMS read/write needs these.
    # The embedded stack keeps analytics in SQLite (no opensearch_endpoint), so no es: call is made locally.
    # ReplicateSecretToRegions is the permission CreateSecret needs when it names replica regions (not an
    # operation of its own); CreateSecret happens only for a tenant's first webhook secret.
    "api": {"kms:Decrypt", "kms:GenerateDataKey", "es:ESHttpGet", "es:ESHttpPost", "es:ESHttpPut",
            "secretsmanager:CreateSecret", "secretsmanager:ReplicateSecretToRegions",
            # the presigned POST is signed with the API role's credentials; the client's upload to S3
            # exercises s3:PutObject under that role on AWS, not a call the API makes itself.
            "s3:PutObject", "dynamodb:DeleteItem",
            # subject access reads the current version of a CSV by its VersionId; recorded as GetObject
            "s3:GetObjectVersion"},
    # Lambda's SQS event source mapping polls with the function's role and needs GetQueueAttributes;
    # the embedded stack's worker threads play that mapping without it.
    # The unsubscribe signing key comes from the environment locally; on AWS it is read from Secrets
    # Manager (EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID).
    "sender": {"kms:Decrypt", "kms:GenerateDataKey", "sqs:GetQueueAttributes", "secretsmanager:GetSecretValue",
               # used when a batch fails and the mapping hands the message back; happy paths don't
               "sqs:ChangeMessageVisibility"},
    # s3:ListBucket is what makes S3 answer 404 for a deleted object (moto checks no IAM, and
    # answers 404 anyway): used only when a notification comes again after its object was deleted.
    "ses_events": {"kms:Decrypt", "kms:GenerateDataKey", "sqs:GetQueueAttributes", "s3:ListBucket",
                   "es:ESHttpGet", "es:ESHttpPost", "es:ESHttpPut", "secretsmanager:GetSecretValue",
                   # the message-events outbox item of an opted-in campaign (create-only PutItem):
                   # one e2e campaign opts in, and whether its events reach this component's
                   # recorder before the tier ends varies from run to run
                   "dynamodb:PutItem"},
    # the embedded stack resolves queue URLs once at start, before any component runs
    # The recorder sees GetObject/GetObjectTagging/DeleteObject; naming a VersionId (what an erasure
    # does) is authorised as the *Version actions on AWS, so those are what is granted.
    # The embedded analytics store is SQLite: no es: call.
    "controller": {"kms:Decrypt", "kms:GenerateDataKey", "sqs:GetQueueUrl", "es:ESHttpPost", "es:ESHttpGet",
                   "es:ESHttpPut", "es:ESHttpHead", "s3:GetObjectVersion"},
}

# botocore operation → IAM action, where they differ.
OPERATION_ACTIONS = {
    "s3.HeadObject": "s3:GetObject",
    "s3.HeadBucket": "s3:ListBucket",
    "s3.ListObjectsV2": "s3:ListBucket",
    "s3.ListObjectVersions": "s3:ListBucketVersions",
    "s3.GetObjectTagging": "s3:GetObjectVersionTagging",
    "s3.DeleteObjectVersion": "s3:DeleteObjectVersion",  # the call counter's name for a delete naming a version
    "sqs.DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs.SendMessageBatch": "sqs:SendMessage",
    "sesv2.SendEmail": "ses:SendEmail",
    "dynamodbstreams.DescribeStream": "dynamodb:DescribeStream",
    "dynamodbstreams.GetShardIterator": "dynamodb:GetShardIterator",
    "dynamodbstreams.GetRecords": "dynamodb:GetRecords",
}


def action_for(operation: str) -> str:
    """``dynamodb.UpdateItem`` → ``dynamodb:UpdateItem`` (with the exceptions above)."""
    if operation in OPERATION_ACTIONS:
        return OPERATION_ACTIONS[operation]
    service, op = operation.split(".", 1)
    return f"{service}:{op}"


def policy_document(component: str, arns: dict[str, str]) -> dict:
    """The IAM policy for ``component`` given resolved ARNs by resource kind (no wildcard actions)."""
    return _document(COMPONENT_ACTIONS[component], arns)


def failover_policy_document(arns: dict[str, str], watched_region: str) -> dict:
    """The DR controller's automatic-failover policy (``FAILOVER_ACTIONS``). ``arns`` by kind:
    health_check (optional: without a hosted zone there is no Route 53 signal or override, and no
    route53 grant), no_leader_alarm, alarm_topic."""
    table = {a: k for a, k in FAILOVER_ACTIONS.items() if "health_check" not in k or arns.get("health_check")}
    doc = _document({a: k for a, k in table.items() if k != ("watched_region_metrics",)}, arns)
    wildcard = sorted(a for a, k in table.items() if k == ("watched_region_metrics",))
    doc["Statement"].append({"Effect": "Allow", "Action": wildcard, "Resource": "*",
                             "Condition": {"StringEquals": {"aws:RequestedRegion": watched_region}}})
    return doc


def pack_actions() -> dict[str, list[str]]:
    """What the policy pack checks a controller task role against (infra/policy/controller_actions.json,
    which tests/infra keeps equal to this): every task role runs the controller; a task with
    EMAILPLATFORM_FAILOVER_AUTOMATION=true also the failover, and with a health check id its Route 53 part."""
    return {"controller": sorted(COMPONENT_ACTIONS["controller"]),
            "failover": sorted(a for a, k in FAILOVER_ACTIONS.items() if "health_check" not in k),
            # only with a Route 53 health check to watch and override (EMAILPLATFORM_FAILOVER_HEALTH_CHECK_ID)
            "failover_health_check": sorted(a for a, k in FAILOVER_ACTIONS.items() if "health_check" in k),
            "resource_wildcard": sorted(RESOURCE_WILDCARD_ACTIONS)}


def _document(actions: dict[str, tuple[str, ...]], arns: dict[str, str]) -> dict:
    by_resources: dict[tuple[str, ...], list[str]] = {}
    for action, kinds in sorted(actions.items()):
        resources: list[str] = []
        for kind in kinds:
            arn = arns[kind]
            if kind.startswith(("bucket:", "peer_bucket:")):
                resources.append(f"{arn}/*")
            elif kind == "table":
                resources += [arn, f"{arn}/index/*"]
            elif kind in ("search", "peer_search"):  # the domain and every HTTP path under it
                resources += [arn, f"{arn}/*"]
            elif kind == "table_stream":
                resources.append(f"{arn}/stream/*")
            else:
                resources.append(arn)
        by_resources.setdefault(tuple(resources), []).append(action)
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": sorted(a), "Resource": list(r)} for r, a in by_resources.items()]}


if __name__ == "__main__":  # regenerate the policy pack's copy: python -m infra.policies > infra/policy/controller_actions.json
    import json

    print(json.dumps(pack_actions(), indent=2))
