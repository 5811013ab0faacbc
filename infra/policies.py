"""What each runtime component may do on AWS: the single source for its IAM policy.

``tests/e2e/test_least_privilege.py`` records the AWS operations each component really performs
during the end-to-end tests and checks them against this table both ways: nothing it does is
missing, and nothing granted is unused beyond ``NOT_EXERCISED_LOCALLY`` (documented below).
"""

from __future__ import annotations

# resource kinds: table, table_stream, bucket:<purpose>, queue:<purpose>, topic:<purpose>, secret, ses,
# ses_configuration_set, key (this region's), peer_key (the other region's replica of it),
# unsubscribe_secret, webhook_secrets (the runtime-created namespace), search (the OpenSearch domain)
COMPONENT_ACTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "api": {
        "dynamodb:GetItem": ("table",), "dynamodb:PutItem": ("table",), "dynamodb:UpdateItem": ("table",),
        "dynamodb:DeleteItem": ("table",), "dynamodb:Query": ("table",), "dynamodb:TransactWriteItems": ("table",),
        "s3:GetObject": ("bucket:templates", "bucket:uploads"), "s3:PutObject": ("bucket:templates", "bucket:uploads"),
        "secretsmanager:GetSecretValue": ("secret", "unsubscribe_secret"), "secretsmanager:PutSecretValue": ("secret",),
        # tenants' webhook secrets are created by the API at runtime, with a replica in the other region
        "secretsmanager:CreateSecret": ("webhook_secrets",),
        "secretsmanager:ReplicateSecretToRegions": ("webhook_secrets",),
        # a secret replicated to the other region is encrypted there with that region's key
        "kms:Decrypt": ("key", "peer_key"), "kms:GenerateDataKey": ("key", "peer_key"),
        "es:ESHttpGet": ("search",), "es:ESHttpPost": ("search",), "es:ESHttpPut": ("search",),
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
        "sqs:ReceiveMessage": ("queue:ses-events",), "sqs:DeleteMessage": ("queue:ses-events",),
        "sqs:GetQueueAttributes": ("queue:ses-events",),
        "kms:Decrypt": ("key",), "kms:GenerateDataKey": ("key",),
        "es:ESHttpGet": ("search",), "es:ESHttpPost": ("search",), "es:ESHttpPut": ("search",),
        # every process's bootstrap reads the unsubscribe signing key (core/bootstrap.py)
        "secretsmanager:GetSecretValue": ("unsubscribe_secret",),
    },
    "controller": {
        "dynamodb:GetItem": ("table",), "dynamodb:PutItem": ("table",), "dynamodb:UpdateItem": ("table",),
        "dynamodb:Query": ("table",), "dynamodb:BatchWriteItem": ("table",), "dynamodb:TransactWriteItems": ("table",),
        "dynamodb:DescribeTable": ("table",), "dynamodb:DescribeStream": ("table_stream",),
        "dynamodb:GetShardIterator": ("table_stream",), "dynamodb:GetRecords": ("table_stream",),
        "s3:GetObject": ("bucket:uploads",), "s3:PutObject": ("bucket:batches",),
        "sqs:SendMessage": ("queue:send",),
        # the metrics pass reads every queue's depth, the dead-letter queues' too (DLQ alert)
        "sqs:GetQueueUrl": ("queue:send", "queue:ses-events", "dlq:send", "dlq:ses-events"),
        "sqs:GetQueueAttributes": ("queue:send", "queue:ses-events", "dlq:send", "dlq:ses-events"),
        "secretsmanager:GetSecretValue": ("secret", "unsubscribe_secret"),
        "kms:Decrypt": ("key",), "kms:GenerateDataKey": ("key",),
    },
}

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
            "s3:PutObject", "dynamodb:DeleteItem"},
    # Lambda's SQS event source mapping polls with the function's role and needs GetQueueAttributes;
    # the embedded stack's worker threads play that mapping without it.
    # The unsubscribe signing key comes from the environment locally; on AWS it is read from Secrets
    # Manager (EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID).
    "sender": {"kms:Decrypt", "kms:GenerateDataKey", "sqs:GetQueueAttributes", "secretsmanager:GetSecretValue",
               # used when a batch fails and the mapping hands the message back; happy paths don't
               "sqs:ChangeMessageVisibility"},
    "ses_events": {"kms:Decrypt", "kms:GenerateDataKey", "sqs:GetQueueAttributes",
                   "es:ESHttpGet", "es:ESHttpPost", "es:ESHttpPut", "secretsmanager:GetSecretValue"},
    # the embedded stack resolves queue URLs once at start, before any component runs
    "controller": {"kms:Decrypt", "kms:GenerateDataKey", "sqs:GetQueueUrl"},
}

# botocore operation → IAM action, where they differ.
OPERATION_ACTIONS = {
    "s3.HeadObject": "s3:GetObject",
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
    by_resources: dict[tuple[str, ...], list[str]] = {}
    for action, kinds in sorted(COMPONENT_ACTIONS[component].items()):
        resources: list[str] = []
        for kind in kinds:
            arn = arns[kind]
            if kind.startswith("bucket:"):
                resources.append(f"{arn}/*")
            elif kind == "table":
                resources += [arn, f"{arn}/index/*"]
            elif kind == "search":  # the domain and every HTTP path under it
                resources += [arn, f"{arn}/*"]
            elif kind == "table_stream":
                resources.append(f"{arn}/stream/*")
            else:
                resources.append(arn)
        by_resources.setdefault(tuple(resources), []).append(action)
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": sorted(a), "Resource": list(r)} for r, a in by_resources.items()]}
