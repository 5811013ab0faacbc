"""The DynamoDB table from core/schema.py as a global table replicated to DR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from core import schema
from infra.components.base import child


@dataclass
class DataStoreArgs:
    table_name: str
    dr_region: str
    key_arn: pulumi.Input[str]
    replica_key_arn: pulumi.Input[str]
    provider: Any


class DataStore(pulumi.ComponentResource):
    def __init__(self, name: str, args: DataStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:DataStore", name, None, opts)
        t = schema.MAIN_TABLE
        self.table = aws.dynamodb.Table(
            f"{name}-table",
            name=args.table_name,
            billing_mode="PAY_PER_REQUEST",
            hash_key=t.hash_key,
            range_key=t.range_key,
            attributes=[aws.dynamodb.TableAttributeArgs(name=a, type="S") for a in t.string_attributes],
            global_secondary_indexes=[
                aws.dynamodb.TableGlobalSecondaryIndexArgs(name=ix.name, hash_key=ix.hash_key, range_key=ix.range_key,
                                                           projection_type="ALL" if ix.include is None else "INCLUDE",
                                                           non_key_attributes=list(ix.include) if ix.include else None)
                for ix in t.indexes
            ],
            stream_enabled=True,
            stream_view_type=t.stream_view,
            ttl=aws.dynamodb.TableTtlArgs(attribute_name=t.ttl_attribute, enabled=True),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True, kms_key_arn=args.key_arn),
            replicas=[aws.dynamodb.TableReplicaArgs(region_name=args.dr_region, kms_key_arn=args.replica_key_arn,
                                                    point_in_time_recovery=True, propagate_tags=True)],
            deletion_protection_enabled=True,
            opts=child(self, args.provider, protect=True),
        )
        self.register_outputs({"table_arn": self.table.arn, "stream_arn": self.table.stream_arn})
