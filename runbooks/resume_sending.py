"""Lift the kill switch set by pause-sending. See resume_sending.md."""

from __future__ import annotations

from typing import Any

from runbooks.common import Runbook, main_guard, parser, region_deps, run


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("Resume sending")
    p.add_argument("--tenant", help="only this tenant (default: the platform-wide switch)")
    args = p.parse_args(argv)
    d = region_deps(args, settings)
    book = Runbook("resume-sending", args.execute, out, deps=d)

    def resume() -> dict[str, Any]:
        state = d.store.set_sending_switch(paused=None if args.tenant else False, tenant_id=args.tenant,
                                           tenant_paused=False if args.tenant else None)
        if args.tenant:  # the audit log is per tenant: a platform-wide resume has none
            book.audit(args.tenant, "resume sending")
        return state

    def lift(scopes: list[str]) -> None:
        d.store.lift_automatic_hold(args.tenant or "-", scopes)
        if args.tenant:
            book.audit(args.tenant, "lift automatic hold", {"scopes": ",".join(scopes)})

    def body() -> None:
        tenant = args.tenant or "-"  # "-" is no tenant: only platform-wide switches apply
        book.check("current state", lambda: d.store.sending_paused(tenant) or "sending is not paused")
        book.act(f"resume sending for {'tenant ' + args.tenant if args.tenant else 'platform'}", resume,
                 done=lambda: d.store.sending_holds(tenant)["operator"] is None)
        holds = d.store.sending_holds(tenant)
        if holds["automatic"]:
            # An automatic hold (an SES account/configuration error) lifts itself when a probe send
            # succeeds; lift it by hand only once the cause is fixed.
            book.act(f"lift the automatic hold ({', '.join(holds['automatic'])}: {holds['reason']})",
                     lambda: lift(holds["automatic"]),
                     done=lambda: not d.store.sending_holds(tenant)["automatic"])
        if args.execute:
            book.check("switch lifted", lambda: d.store.sending_paused(tenant) is None)

    return run(book, body, args.json)


if __name__ == "__main__":
    main_guard(main)
