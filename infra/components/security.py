"""KMS: one multi-region key in the primary, its replica in DR; everything is encrypted with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.base import child


@dataclass
class KeysArgs:
    prefix: str
    primary: Any
    dr: Any


class Keys(pulumi.ComponentResource):
    def __init__(self, name: str, args: KeysArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Keys", name, None, opts)
        self.primary = aws.kms.Key(f"{name}-primary", description=f"{args.prefix} data key", multi_region=True,
                                   enable_key_rotation=True, deletion_window_in_days=30,
                                   opts=child(self, args.primary))
        self.replica = aws.kms.ReplicaKey(f"{name}-replica", primary_key_arn=self.primary.arn,
                                          description=f"{args.prefix} data key (DR replica)",
                                          deletion_window_in_days=30, opts=child(self, args.dr))
        self.register_outputs({"primary_arn": self.primary.arn, "replica_arn": self.replica.arn})
