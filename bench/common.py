"""Shared benchmark plumbing: a moto server in its own process and fresh resources per run."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from config.settings import Settings, load_settings
from local.bootstrap import create_resources


def bench_settings(moto_url: str, **kw: Any) -> Settings:
    s = load_settings(environment="test", aws_endpoint_url=moto_url, name_prefix=f"b{uuid.uuid4().hex[:10]}",
                      callback_allow_loopback=True, callback_require_https=False, **kw)
    create_resources(s)
    return s


def table(rows: Sequence[Sequence[object]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])
