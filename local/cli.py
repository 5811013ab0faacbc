"""`emailplatform` command: run the embedded stack, manage API keys and webhook secrets."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from botocore.exceptions import BotoCoreError, ClientError

from config.settings import SettingsError, load_settings
from core.domain.errors import DomainError
from core.domain.ids import check_tenant_id
from core.services.auth import SCOPES


def _local_defaults() -> dict[str, object]:
    """`make run` defaults for a developer's machine (loopback callbacks over plain HTTP), applied
    only where the environment says nothing: a strict local stack is one variable away."""
    wanted = {"environment": "local", "callback_allow_loopback": True, "callback_require_https": False}
    return {k: v for k, v in wanted.items() if f"EMAILPLATFORM_{k.upper()}" not in os.environ}


def _up(args: argparse.Namespace) -> int:
    from core.observability import configure_logging
    from local.stack import Stack

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


def _deps():  # noqa: ANN202
    from core.bootstrap import bootstrap

    return bootstrap(load_settings())


def _gateway(settings):  # noqa: ANN001, ANN202
    """The API Gateway usage plans of every region, when the deployment requires gateway keys."""
    if not settings.usage_plan_ids:
        return None
    from core.adapters.apigateway import UsagePlanKeys
    from core.adapters.aws import client

    return UsagePlanKeys({region: (client(settings, "apigateway", region), plan)
                          for region, plan in settings.usage_plan_ids.items()})


def _audit(d, tenant: str, action: str, target: dict[str, str]) -> None:  # noqa: ANN001
    """Operator actions go to the tenant's audit log like API writes (core/services/audit.py)."""
    import getpass
    import uuid

    from core.adapters.privacy import AuditRepository
    from core.services import audit

    now = d.clock.now()
    e = audit.entry(tenant_id=tenant, actor=f"operator:{getpass.getuser()}", method="CLI", route=action,
                    params=target, status=200, source_ip=None, request_id=f"cli-{uuid.uuid4().hex[:12]}", at=now,
                    hasher=d.store.address_hasher)
    audit.record(AuditRepository(d.store.table), d.store, e, now)


def _keys(args: argparse.Namespace) -> int:
    from core.services import auth
    from core.services.tenants import create_tenant

    if args.action == "create":
        scopes = auth.check_scopes(args.scope) if args.scope else None
        d = _deps()
        create_tenant(d.store, d.secrets, args.tenant)  # a new tenant gets its webhook signing secret too
        raw, key = auth.create_key(d.store, args.tenant, scopes, gateway=_gateway(d.settings))
        _audit(d, args.tenant, "keys create", {"key_id": key.key_id})
        print(json.dumps({"api_key": raw, "key_id": key.key_id, "tenant_id": key.tenant_id, "scopes": key.scopes}))
        return 0
    d = _deps()
    if args.action == "revoke":
        if not auth.revoke_key(d.store, args.tenant, args.key_id, gateway=_gateway(d.settings)):
            print("no such key", file=sys.stderr)
            return 1
        _audit(d, args.tenant, "keys revoke", {"key_id": args.key_id})
        print(json.dumps({"revoked": args.key_id}))
    else:
        print(json.dumps([{"key_id": k.key_id, "scopes": k.scopes, "revoked": k.revoked}
                          for _, k in d.store.api_keys(args.tenant)]))
    return 0


def _secret(args: argparse.Namespace) -> int:
    from core.services.tenants import rotate_webhook_secret

    d = _deps()
    if args.action == "rotate":
        print(json.dumps(rotate_webhook_secret(d.secrets, args.tenant)))
        _audit(d, args.tenant, "webhook-secret rotate", {})
    elif args.action == "finish-rotation":
        d.secrets.drop_previous(args.tenant)
        _audit(d, args.tenant, "webhook-secret finish-rotation", {})
        print(json.dumps({"secrets": d.secrets.signing_secrets(args.tenant)}))
    else:
        print(json.dumps({"secrets": d.secrets.signing_secrets(args.tenant)}))
    return 0


def _senders(args: argparse.Namespace) -> int:
    from core.services import tenants

    d = _deps()
    if args.action == "allow":
        out = tenants.allow_sender(d.store, args.tenant, args.sender)
        _audit(d, args.tenant, "senders allow", {"sender": args.sender})
    elif args.action == "revoke":
        out = tenants.revoke_sender(d.store, args.tenant, args.sender)
        _audit(d, args.tenant, "senders revoke", {"sender": args.sender})
    else:
        out = sorted((d.store.get_tenant(args.tenant) or {}).get("senders", []))
    print(json.dumps({"tenant_id": args.tenant, "senders": out}))
    return 0


def _report(args: argparse.Namespace) -> int:
    """Write a campaign's HTML report (from a running stack or a deployed API) to a file."""
    import requests

    r = requests.get(f"{args.api.rstrip('/')}/campaigns/{args.campaign}/report", headers={"X-API-Key": args.api_key},
                     timeout=30)
    if r.status_code != 200:
        print(r.text, file=sys.stderr)
        return 1
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(r.text)
    print(args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emailplatform")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start the embedded stack (moto server, API, controller, workers)")
    k = sub.add_parser("keys", help="API keys (hashed at rest)")
    k.add_argument("action", choices=["create", "revoke", "list"])
    k.add_argument("--tenant", required=True, type=_tenant_id)
    k.add_argument("--key-id")
    k.add_argument("--scope", action="append", help="repeatable; one of: " + ", ".join(SCOPES))
    s = sub.add_parser("webhook-secret", help="webhook signing secrets")
    s.add_argument("action", choices=["show", "rotate", "finish-rotation"])
    s.add_argument("--tenant", required=True, type=_tenant_id)
    sd = sub.add_parser("senders", help="From addresses (or @domain) a tenant may send as")
    sd.add_argument("action", choices=["allow", "revoke", "list"])
    sd.add_argument("sender", nargs="?", default="", help="an address, or @domain for a domain the tenant owns")
    sd.add_argument("--tenant", required=True, type=_tenant_id)
    r = sub.add_parser("report", help="write a campaign's HTML report to a file")
    r.add_argument("campaign")
    r.add_argument("--api-key", required=True)
    r.add_argument("--api", default="http://127.0.0.1:8080/api/v1/email")
    r.add_argument("--out", default="report.html")
    args = p.parse_args(argv)
    try:
        return {"up": _up, "keys": _keys, "webhook-secret": _secret, "senders": _senders,
                "report": _report}[args.cmd](args)
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(f"error: AWS call failed ({exc}). Against the embedded stack, set EMAILPLATFORM_AWS_ENDPOINT_URL "
              "to its moto endpoint (printed by `make run` as aws_endpoint); against AWS, check your "
              "credentials and EMAILPLATFORM_REGION.", file=sys.stderr)
        return 2


def _tenant_id(value: str) -> str:
    try:
        return check_tenant_id(value)
    except DomainError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


if __name__ == "__main__":
    sys.exit(main())
