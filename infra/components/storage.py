"""S3 buckets from core/schema.py in one region: SSE-KMS, private, TLS-only, lifecycle, CORS for
presigned uploads; each region's replicated buckets (``schema.REPLICATED_BUCKETS``) are versioned
and replicate to the other's with RTC (both directions, so after a failover what DR wrote flows
back to the primary). A bucket that is not replicated (the SES events objects, in flight for
minutes) keeps no versions: a delete removes the object."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from core import schema
from infra.components.base import child


def bucket_name(prefix: str, purpose: str, account_id: str, region: str) -> str:
    """Bucket names are global across accounts: the same shape as ``Settings.bucket`` with an account id."""
    return f"{prefix}-{purpose}-{account_id}-{region}"


MAX_BUCKET_NAME = 63  # S3: 3-63 characters, global across accounts
LONGEST_REGION = "ap-southeast-1"  # 14 characters, the longest region names (ap-northeast-1, ...)


def bucket_name_problems(prefix: str, purposes: list[str], regions: list[str]) -> list[str]:
    """Why ``prefix`` would make an invalid bucket name in these regions (empty: none)."""
    out = []
    for region in regions:
        for purpose in purposes:
            name = bucket_name(prefix, purpose, "0" * 12, region)
            if len(name) > MAX_BUCKET_NAME:
                out.append(f"{name} is {len(name)} characters; S3 allows {MAX_BUCKET_NAME}")
    if prefix.startswith(("xn--", "sthree-")):
        out.append(f"S3 refuses bucket names starting with {prefix.split('-')[0]}-")
    return out


def replication_role_name(prefix: str, source_region: str, destination_region: str) -> str:
    """Named so the key policies can name the role before it exists (in a condition)."""
    return f"{prefix}-s3-repl-{source_region}-to-{destination_region}"[:64]


@dataclass
class BucketsArgs:
    prefix: str
    region: str
    key_arn: pulumi.Input[str]
    provider: Any
    allowed_origins: list[str]
    account_id: pulumi.Input[str]


def lifecycle_rule(r: schema.LifecycleRule) -> dict[str, Any]:
    """A ``core.schema`` lifecycle rule as BucketLifecycleConfiguration takes it."""
    rule: dict[str, Any] = {"id": r.id, "status": "Enabled",
                            "filter": {"tag": {"key": r.tag[0], "value": r.tag[1]}} if r.tag else {}}
    if r.expire_days:
        rule["expiration"] = {"days": r.expire_days}
    if r.noncurrent_days:
        rule["noncurrent_version_expiration"] = {"noncurrent_days": r.noncurrent_days}
    if r.abort_multipart_days:
        rule["abort_incomplete_multipart_upload"] = {"days_after_initiation": r.abort_multipart_days}
    return rule


class Buckets(pulumi.ComponentResource):
    def __init__(self, name: str, args: BucketsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Buckets", name, None, opts)
        self.buckets: dict[str, aws.s3.Bucket] = {}
        self.versioning: dict[str, aws.s3.BucketVersioning] = {}
        for spec in schema.BUCKETS:
            bname = pulumi.Output.from_input(args.account_id).apply(
                lambda acct, p=spec.purpose: bucket_name(args.prefix, p, acct, args.region))
            b = aws.s3.Bucket(f"{name}-{spec.purpose}", bucket=bname, force_destroy=False,
                              opts=child(self, args.provider, protect=True))
            o = child(b, args.provider)
            if spec.replicated:  # replication needs versioning on both buckets
                self.versioning[spec.purpose] = aws.s3.BucketVersioning(
                    f"{name}-{spec.purpose}-versioning", bucket=b.id, versioning_configuration={"status": "Enabled"},
                    opts=o)
            aws.s3.BucketServerSideEncryptionConfiguration(
                f"{name}-{spec.purpose}-sse", bucket=b.id,
                rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms",
                                                                    "kms_master_key_id": args.key_arn},
                        "bucket_key_enabled": True}], opts=o)
            aws.s3.BucketPublicAccessBlock(f"{name}-{spec.purpose}-private", bucket=b.id, block_public_acls=True,
                                           block_public_policy=True, ignore_public_acls=True,
                                           restrict_public_buckets=True, opts=o)
            aws.s3.BucketPolicy(f"{name}-{spec.purpose}-tls-only", bucket=b.id, policy=b.arn.apply(lambda arn: json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                               "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}],
            })), opts=o)
            rules = [lifecycle_rule(r) for r in schema.lifecycle_rules(spec)]
            aws.s3.BucketLifecycleConfiguration(f"{name}-{spec.purpose}-lifecycle", bucket=b.id, rules=rules, opts=o)
            if spec.cors_upload:
                aws.s3.BucketCorsConfiguration(f"{name}-{spec.purpose}-cors", bucket=b.id, cors_rules=[{
                    "allowed_methods": ["POST", "PUT"], "allowed_origins": args.allowed_origins,
                    "allowed_headers": ["*"], "max_age_seconds": 3000}], opts=o)
            self.buckets[spec.purpose] = b
        self.register_outputs({p: b.arn for p, b in self.buckets.items()})


@dataclass
class ReplicationArgs:
    source: Buckets
    destination: Buckets
    destination_key_arn: pulumi.Input[str]
    source_key_arn: pulumi.Input[str]
    provider: Any  # the source region's
    role_name: str
    rule_id: str = "to-dr"


class Replication(pulumi.ComponentResource):
    """One direction of bucket replication with Replication Time Control (15 min SLA, metrics on).

    S3 refuses a replication configuration unless versioning is already enabled on both buckets,
    so every configuration depends on both versioning resources."""

    def __init__(self, name: str, args: ReplicationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Replication", name, None, opts)
        role = aws.iam.Role(f"{name}-role", name=args.role_name, assume_role_policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "s3.amazonaws.com"}}]}),
            opts=child(self, args.provider))
        pairs = [(b.purpose, args.source.buckets[b.purpose], args.destination.buckets[b.purpose])
                 for b in schema.REPLICATED_BUCKETS]
        arns = pulumi.Output.all(*[x for _, s, d in pairs for x in (s.arn, d.arn)], args.source_key_arn,
                                 args.destination_key_arn)

        def doc(values: list[str]) -> str:
            *bucket_arns, src_key, dst_key = values
            src, dst = bucket_arns[0::2], bucket_arns[1::2]
            return json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"], "Resource": src},
                {"Effect": "Allow", "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl",
                                               "s3:GetObjectVersionTagging"], "Resource": [f"{a}/*" for a in src]},
                {"Effect": "Allow", "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                 "Resource": [f"{a}/*" for a in dst]},
                {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": [src_key]},
                {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": [dst_key]},
            ]})

        aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=arns.apply(doc), opts=child(role, args.provider))
        self.configs = []
        for purpose, src, dst in pairs:
            self.configs.append(aws.s3.BucketReplicationConfig(
                f"{name}-{purpose}", bucket=src.id, role=role.arn,
                rules=[{"id": args.rule_id, "status": "Enabled", "filter": {},
                        "delete_marker_replication": {"status": "Enabled"},
                        "source_selection_criteria": {"sse_kms_encrypted_objects": {"status": "Enabled"}},
                        "destination": {"bucket": dst.arn, "storage_class": "STANDARD",
                                        "encryption_configuration": {"replica_kms_key_id": args.destination_key_arn},
                                        "replication_time": {"status": "Enabled", "time": {"minutes": 15}},
                                        "metrics": {"status": "Enabled", "event_threshold": {"minutes": 15}}}}],
                opts=child(self, args.provider, depends_on=[args.source.versioning[purpose],
                                                            args.destination.versioning[purpose]])))
        self.register_outputs({"role_arn": role.arn})
