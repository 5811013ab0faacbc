"""`emailplatform-admin`: the operator's commands against a deployment (AWS, or the embedded stack
with EMAILPLATFORM_AWS_ENDPOINT_URL): tenants, API keys, webhook signing secrets, senders, reports.

Every action is written to the tenant's audit log like an API write. `emailplatform` (local/cli.py)
is the same command set plus `up`, which starts the embedded stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from config.settings import SettingsError, load_settings
from core.adapters.privacy import AuditRepository
from core.bootstrap import Deps, api_key_gateway, bootstrap
from core.domain.errors import DomainError
from core.domain.ids import check_tenant_id
from core.services import audit, auth, tenants

Command = Callable[[argparse.Namespace], int]


def _deps() -> Deps:
    return bootstrap(load_settings())


def record_operator_action(d: Deps, tenant: str, action: str, target: dict[str, str]) -> None:
    """Every action of this CLI goes to the tenant's audit log (source ``cli``)."""
    audit.record_operator_action(AuditRepository(d.store.table), d.store, d.clock, tenant, action, target,
                                 source="cli")


def _tenant(args: argparse.Namespace) -> int:
    d = _deps()
    if args.action == "create":
        tenants.create_tenant(d.store, d.secrets, args.tenant)  # with its webhook signing secret
        for sender in args.sender or ():
            tenants.allow_sender(d.store, args.tenant, sender)
        record_operator_action(d, args.tenant, "tenant create", {"senders": ",".join(args.sender or ())})
    record = d.store.get_tenant(args.tenant)
    if record is None:
        print(f"error: no tenant {args.tenant}", file=sys.stderr)
        return 1
    if args.action == "show":  # discloses the webhook signing secrets: audited like a sensitive API read
        record_operator_action(d, args.tenant, "tenant show", {})
    print(json.dumps({"tenant_id": args.tenant, "senders": sorted(record.get("senders", [])),
                      "webhook_secrets": d.secrets.signing_secrets(args.tenant)}))
    return 0


def _keys(args: argparse.Namespace) -> int:
    d = _deps()
    if args.action == "create":
        scopes = auth.check_scopes(args.scope) if args.scope else None
        tenants.create_tenant(d.store, d.secrets, args.tenant)  # a new tenant gets its signing secret too
        raw, key = auth.create_key(d.store, args.tenant, scopes, gateway=api_key_gateway(d.settings))
        record_operator_action(d, args.tenant, "keys create", {"key_id": key.key_id})
        print(json.dumps({"api_key": raw, "key_id": key.key_id, "tenant_id": key.tenant_id, "scopes": key.scopes}))
    elif args.action == "revoke":
        if not auth.revoke_key(d.store, args.tenant, args.key_id, gateway=api_key_gateway(d.settings)):
            print("no such key", file=sys.stderr)
            return 1
        record_operator_action(d, args.tenant, "keys revoke", {"key_id": args.key_id})
        print(json.dumps({"revoked": args.key_id}))
    else:
        print(json.dumps([{"key_id": k.key_id, "scopes": k.scopes, "revoked": k.revoked}
                          for _, k in d.store.api_keys(args.tenant)]))
    return 0


def _secret(args: argparse.Namespace) -> int:
    d = _deps()
    if args.action == "rotate":
        print(json.dumps(tenants.rotate_webhook_secret(d.secrets, args.tenant)))
        record_operator_action(d, args.tenant, "webhook-secret rotate", {})
    elif args.action == "finish-rotation":
        d.secrets.drop_previous(args.tenant)
        record_operator_action(d, args.tenant, "webhook-secret finish-rotation", {})
        print(json.dumps({"secrets": d.secrets.signing_secrets(args.tenant)}))
    else:
        record_operator_action(d, args.tenant, "webhook-secret show", {})  # discloses the signing secrets
        print(json.dumps({"secrets": d.secrets.signing_secrets(args.tenant)}))
    return 0


def _senders(args: argparse.Namespace) -> int:
    d = _deps()
    if args.action == "allow":
        out = tenants.allow_sender(d.store, args.tenant, args.sender)
        record_operator_action(d, args.tenant, "senders allow", {"sender": args.sender})
    elif args.action == "revoke":
        out = tenants.revoke_sender(d.store, args.tenant, args.sender)
        record_operator_action(d, args.tenant, "senders revoke", {"sender": args.sender})
    else:
        out = sorted((d.store.get_tenant(args.tenant) or {}).get("senders", []))
    print(json.dumps({"tenant_id": args.tenant, "senders": out}))
    return 0


def _report(args: argparse.Namespace) -> int:
    """Write a campaign's HTML report (from a running stack or a deployed API) to a file."""
    r = requests.get(f"{args.api.rstrip('/')}/campaigns/{args.campaign}/report", headers={"X-API-Key": args.api_key},
                     timeout=30)
    if r.status_code != 200:
        print(r.text, file=sys.stderr)
        return 1
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(r.text)
    print(args.out)
    return 0


def _tenant_id(value: str) -> str:
    try:
        return check_tenant_id(value)
    except DomainError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def parser(prog: str = "emailplatform-admin") -> tuple[argparse.ArgumentParser, Any, dict[str, Command]]:
    """The admin commands: the parser, its sub-parsers (a caller may add its own) and the handlers."""
    p = argparse.ArgumentParser(prog=prog)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tenant", help="tenants (each with its webhook signing secret)")
    t.add_argument("action", choices=["create", "show"])
    t.add_argument("--tenant", required=True, type=_tenant_id)
    t.add_argument("--sender", action="append", help="repeatable: a From address or @domain the tenant may use")
    k = sub.add_parser("keys", help="API keys (hashed at rest)")
    k.add_argument("action", choices=["create", "revoke", "list"])
    k.add_argument("--tenant", required=True, type=_tenant_id)
    k.add_argument("--key-id")
    k.add_argument("--scope", action="append", help="repeatable; one of: " + ", ".join(auth.SCOPES))
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
    return p, sub, {"tenant": _tenant, "keys": _keys, "webhook-secret": _secret, "senders": _senders,
                    "report": _report}


def run(p: argparse.ArgumentParser, commands: dict[str, Command], argv: list[str] | None) -> int:
    """Parse and dispatch; configuration, domain and AWS errors become one line and exit code 2."""
    args = p.parse_args(argv)
    try:
        return commands[args.cmd](args)
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


def main(argv: list[str] | None = None) -> int:
    p, _, commands = parser()
    return run(p, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
