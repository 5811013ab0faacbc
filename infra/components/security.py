"""KMS: one multi-region key in the primary, its replica in DR; everything is encrypted with it.

A customer managed key is usable only by principals its key policy allows, and a replica key has a
policy of its own. Each key therefore gets an explicit policy (``key_policy``): the account root as
administrator (so IAM policies can grant use) plus one statement per AWS service that writes data
encrypted with it in that region: CloudWatch Logs (scoped to this account's log groups by the
``kms:EncryptionContext:aws:logs:arn`` condition), S3 sending event notifications to the encrypted
SES events queue, S3 replication re-encrypting into the bucket, and Secrets Manager. Missing grants
fail at create time (log groups) or silently drop data (S3 notifications to SQS).

Firehose needs no statement of its own: its role writes the SES events objects with the key through
IAM (the account-root statement delegates to it), and the stream's own encryption at rest uses a
grant Firehose creates with the deployer's permissions. SES puts records to the stream through the
role it is given and never touches the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.base import child

ENCRYPT_DECRYPT = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey",
                   "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"]


def key_policy(account_id: str, region: str, replication_role_arns: list[str]) -> dict[str, Any]:
    """The key policy for the key (or replica) in ``region``. Principals that do not exist yet are
    named in conditions, not as principals: KMS rejects a policy naming an unknown principal."""
    root = f"arn:aws:iam::{account_id}:root"
    return {"Version": "2012-10-17", "Id": "emailplatform-data-key", "Statement": [
        # account-root administration; the one statement where kms:* is how AWS delegates to IAM
        {"Sid": "AccountAdministersAndDelegatesToIam", "Effect": "Allow", "Principal": {"AWS": root},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "CloudWatchLogsEncryptsLogGroups", "Effect": "Allow",
         "Principal": {"Service": f"logs.{region}.amazonaws.com"}, "Action": ENCRYPT_DECRYPT, "Resource": "*",
         "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                                   f"arn:aws:logs:{region}:{account_id}:log-group:*"}}},
        # S3 event notifications (the SES events bucket's ObjectCreated) to the encrypted events queue.
        # No condition: AWS documents this statement without one, and does not say S3 names its
        # source account on these KMS calls (a condition it does not meet fails the notification's
        # validation at deploy). Who may send is the queue policy's say: this bucket only.
        {"Sid": "S3NotifiesEncryptedQueues", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*"},
        {"Sid": "S3ReplicationReEncrypts", "Effect": "Allow", "Principal": {"AWS": root},
         "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"], "Resource": "*",
         "Condition": {"ArnEquals": {"aws:PrincipalArn": sorted(replication_role_arns)},
                       "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}},
        {"Sid": "SecretsManagerEncryptsSecrets", "Effect": "Allow", "Principal": {"AWS": root},
         "Action": ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey",
                    "kms:ReEncryptFrom", "kms:ReEncryptTo"], "Resource": "*",
         "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com",
                                        "kms:CallerAccount": account_id}}},
    ]}


@dataclass
class KeysArgs:
    prefix: str
    primary: Any
    dr: Any
    account_id: pulumi.Input[str]
    primary_region: str
    dr_region: str
    replication_role_arns: list[pulumi.Input[str]] = field(default_factory=list)


class Keys(pulumi.ComponentResource):
    def __init__(self, name: str, args: KeysArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Keys", name, None, opts)

        def policy(region: str) -> pulumi.Output[str]:
            return pulumi.Output.all(args.account_id, *args.replication_role_arns).apply(
                lambda v: json.dumps(key_policy(v[0], region, list(v[1:]))))

        self.primary = aws.kms.Key(f"{name}-primary", description=f"{args.prefix} data key", multi_region=True,
                                   enable_key_rotation=True, deletion_window_in_days=30,
                                   policy=policy(args.primary_region), opts=child(self, args.primary, protect=True))
        self.replica = aws.kms.ReplicaKey(f"{name}-replica", primary_key_arn=self.primary.arn,
                                          description=f"{args.prefix} data key (DR replica)",
                                          deletion_window_in_days=30, policy=policy(args.dr_region),
                                          opts=child(self, args.dr, protect=True))
        self.register_outputs({"primary_arn": self.primary.arn, "replica_arn": self.replica.arn})
