"""`emailplatform` command: `up` runs the embedded stack; the rest is the admin CLI (ops/cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from config.settings import load_settings
from core.observability import configure_logging
from local.stack import Stack
from ops.cli import parser, run


def _local_defaults() -> dict[str, object]:
    """`make run` defaults for a developer's machine (loopback callbacks over plain HTTP), applied
    only where the environment says nothing: a strict local stack is one variable away."""
    wanted = {"environment": "local", "callback_allow_loopback": True, "callback_require_https": False}
    return {k: v for k, v in wanted.items() if f"EMAILPLATFORM_{k.upper()}" not in os.environ}


def _up(args: argparse.Namespace) -> int:
    settings = load_settings(**_local_defaults())
    configure_logging(settings.log_level)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    # EMAILPLATFORM_PROMETHEUS=1: a real Prometheus with ops/prometheus/rules.yml (not a Settings field:
    # only the embedded stack has it); its port is EMAILPLATFORM_PROMETHEUS_PORT (9090).
    stack = Stack.start(settings, prometheus=os.environ.get("EMAILPLATFORM_PROMETHEUS") == "1",
                        prometheus_port=int(os.environ.get("EMAILPLATFORM_PROMETHEUS_PORT", "9090")))
    print(json.dumps({
        "api": f"http://127.0.0.1:{settings.api_port}/api/v1/email",
        "health": f"http://127.0.0.1:{settings.api_port}/api/v1/health",
        "metrics": f"http://127.0.0.1:{settings.metrics_port}/metrics",
        "prometheus": f"{stack.prometheus.url}/alerts" if stack.prometheus else "off (EMAILPLATFORM_PROMETHEUS=1)",
        "aws_endpoint": stack.settings.aws_endpoint_url,
        "tenant_id": stack.tenant["tenant_id"],
        "api_key": stack.tenant["api_key"],
        "webhook_secret": stack.tenant["webhook_secret"],
        "note": "state is in memory and is gone when this process stops",
    }, indent=2), flush=True)
    done.wait()
    stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p, sub, commands = parser("emailplatform")
    sub.add_parser("up", help="start the embedded stack (moto server, API, controller, workers)")
    return run(p, {**commands, "up": _up}, argv)


if __name__ == "__main__":
    sys.exit(main())
