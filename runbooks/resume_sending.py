"""Lift the kill switch set by pause-sending. See resume_sending.md."""

from __future__ import annotations

from runbooks.common import Runbook, main_guard, parser, region_deps, run


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("Resume sending")
    p.add_argument("--tenant", help="only this tenant (default: the platform-wide switch)")
    args = p.parse_args(argv)
    d = region_deps(args, settings)
    book = Runbook("resume-sending", args.execute, out)

    def body() -> None:
        book.check("current state", lambda: d.store.sending_paused(args.tenant or "-") or "sending is not paused")
        book.act(f"resume sending for {'tenant ' + args.tenant if args.tenant else 'platform'}",
                 lambda: d.store.set_sending_switch(paused=None if args.tenant else False, tenant_id=args.tenant,
                                                    tenant_paused=False if args.tenant else None),
                 done=lambda: d.store.sending_paused(args.tenant or "-") is None)
        if args.execute:
            book.check("switch lifted", lambda: d.store.sending_paused(args.tenant or "-") is None)

    return run(book, body, args.json)


if __name__ == "__main__":
    main_guard(main)
