"""Rotate a tenant's API key and webhook signing secret with an overlap. See rotate_keys.md."""

from __future__ import annotations

from core.bootstrap import api_key_gateway
from core.services import auth
from core.services.tenants import rotate_webhook_secret
from runbooks.common import Runbook, main_guard, parser, region_deps, run


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("Rotate keys")
    p.add_argument("--tenant", required=True)
    p.add_argument("--finish", metavar="OLD_KEY_ID",
                   help="second phase: revoke this API key id and drop the previous webhook secret")
    args = p.parse_args(argv)
    d = region_deps(args, settings)
    book = Runbook("rotate-keys", args.execute, out, deps=d)
    gateway = api_key_gateway(d.settings)  # where the edge requires keys: every region's usage plan

    def body() -> None:
        keys = d.store.api_keys(args.tenant)
        book.check("tenant has keys", lambda: [k.key_id for _, k in keys if not k.revoked] or False)
        secrets = d.secrets.signing_secrets(args.tenant)
        book.check("webhook signing secrets", lambda: f"{len(secrets)} live (current + previous during overlap)")

        def create_key() -> dict[str, str]:
            raw, key = auth.create_key(d.store, args.tenant, keys[0][1].scopes if keys else None,
                                       gateway=gateway)
            book.reveal("new API key", {"api_key": raw, "key_id": key.key_id})  # the operator's, not the logs'
            book.audit(args.tenant, "create key", {"key_id": key.key_id})
            return {"key_id": key.key_id}

        def rotate_secret() -> int:
            live = len(rotate_webhook_secret(d.secrets, args.tenant)["secrets"])
            book.audit(args.tenant, "rotate webhook secret")
            return live

        def revoke_key() -> bool:
            revoked = auth.revoke_key(d.store, args.tenant, args.finish, gateway=gateway)
            if revoked:
                book.audit(args.tenant, "revoke key", {"key_id": args.finish})
            return revoked

        def drop_previous_secret() -> None:
            d.secrets.drop_previous(args.tenant)
            book.audit(args.tenant, "drop previous webhook secret")

        if not args.finish:
            book.act("create a new API key (shown once)", create_key)
            book.act("rotate the webhook secret (old and new both sign until --finish)", rotate_secret)
        else:
            book.act(f"revoke API key {args.finish}", revoke_key,
                     done=lambda: any(k.key_id == args.finish and k.revoked for _, k in keys))
            book.act("drop the previous webhook secret", drop_previous_secret, done=lambda: len(secrets) <= 1)

    return run(book, body, args.json)


if __name__ == "__main__":
    main_guard(main)
