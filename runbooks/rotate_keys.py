"""Rotate a tenant's API key and webhook signing secret with an overlap. See rotate_keys.md."""

from __future__ import annotations

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
    book = Runbook("rotate-keys", args.execute, out)

    def body() -> None:
        keys = d.store.api_keys(args.tenant)
        book.check("tenant has keys", lambda: [k.key_id for _, k in keys if not k.revoked] or False)
        secrets = d.secrets.signing_secrets(args.tenant)
        book.check("webhook signing secrets", lambda: f"{len(secrets)} live (current + previous during overlap)")
        if not args.finish:
            book.act("create a new API key (shown once)", lambda: {
                "api_key": (r := auth.create_key(d.store, args.tenant, keys[0][1].scopes if keys else None))[0],
                "key_id": r[1].key_id})
            book.act("rotate the webhook secret (old and new both sign until --finish)",
                     lambda: len(rotate_webhook_secret(d.secrets, args.tenant)["secrets"]))
        else:
            book.act(f"revoke API key {args.finish}", lambda: auth.revoke_key(d.store, args.tenant, args.finish),
                     done=lambda: any(k.key_id == args.finish and k.revoked for _, k in keys))
            book.act("drop the previous webhook secret", lambda: d.secrets.drop_previous(args.tenant),
                     done=lambda: len(secrets) <= 1)

    return run(book, body, args.json)


if __name__ == "__main__":
    main_guard(main)
