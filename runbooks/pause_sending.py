"""Stop all sending at once, platform-wide or for one tenant (kill switch). See pause_sending.md."""

from __future__ import annotations

from typing import Any

from core import schema
from runbooks.common import Runbook, main_guard, parser, region_deps, run


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("Pause sending (kill switch)")
    p.add_argument("--tenant", help="only this tenant (default: the whole platform)")
    p.add_argument("--reason", default="runbook pause-sending")
    args = p.parse_args(argv)
    d = region_deps(args, settings)
    book = Runbook("pause-sending", args.execute, out, deps=d)

    def pause() -> dict[str, Any]:
        state = d.store.set_sending_switch(paused=None if args.tenant else True, tenant_id=args.tenant,
                                           tenant_paused=True if args.tenant else None, reason=args.reason)
        if args.tenant:  # the audit log is per tenant: a platform-wide pause has none
            book.audit(args.tenant, "pause sending", {"reason": args.reason})
        return state

    def body() -> None:
        book.check("table reachable", lambda: d.store.get_flag(dict(schema.SENDING_SWITCH_KEY)) or True)
        scope = f"tenant {args.tenant}" if args.tenant else "platform"
        book.act(f"pause sending for {scope}", pause,
                 done=lambda: d.store.sending_paused(args.tenant or "-") is not None)  # "-" is no tenant
        if args.execute:
            book.check("senders now see the switch", lambda: d.store.sending_paused(args.tenant or "-") or False)

    return run(book, body, args.json)


if __name__ == "__main__":
    main_guard(main)
