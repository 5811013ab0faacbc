"""Shared helpers for components: naming and the provider-scoped child options."""

from __future__ import annotations

import json
from typing import Any

import pulumi


def child(parent: pulumi.Resource, provider: Any = None, **kw: Any) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, provider=provider, **kw)


def to_json(value: Any) -> pulumi.Output[str]:
    return pulumi.Output.from_input(value).apply(lambda v: json.dumps(v))
