"""Fail back from DR to the primary once it is healthy and caught up. See failback.md."""

from __future__ import annotations

from config.settings import load_settings
from core.adapters.aws import client
from runbooks.alarms import move_no_leader_alarm
from runbooks.common import Runbook, main_guard, parser, run
from runbooks.regions import force_unhealthy, overridden, switch_active_region


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("Failback: DR → primary")
    p.add_argument("--target-api", required=True, help="the primary API base URL")
    p.add_argument("--health-check-id", help="Route 53 health check of the primary's API (un-inverted)")
    p.add_argument("--canary-key")
    p.add_argument("--wait", type=float, default=60.0)
    args = p.parse_args(argv)
    s = settings or load_settings()
    book = Runbook("failback", args.execute, out)

    def body() -> None:
        # back to the primary: the DR region is the source now, the primary the target
        # readiness: the primary must have caught up (a probe written in DR reaches it), and its
        # API and table must answer; automatic failover re-arms once the primary is active again
        switch_active_region(book, s, source=s.dr_region, target=s.region, target_api=args.target_api,
                             health_check_id=None, canary_key=args.canary_key, wait_seconds=args.wait,
                             require_caught_up=True)
        move_no_leader_alarm(book, s, source=s.dr_region, target=s.region)
        if args.health_check_id:
            r53 = client(s, "route53")
            book.act("Route 53: restore the primary's health check (enabled, not inverted)",
                     lambda: force_unhealthy(r53, args.health_check_id, forced=False),
                     done=lambda: not overridden(r53, args.health_check_id))

    return run(book, body, args.json)


if __name__ == "__main__":
    main_guard(main)
