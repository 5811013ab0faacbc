"""Fail over from the primary to the DR region, or hold/release the automatic failover. See failover.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from config.settings import Settings, load_settings
from runbooks.alarms import move_no_leader_alarm
from runbooks.common import Runbook, main_guard, parser, run
from runbooks.regions import automation_hold, set_automation_hold, switch_active_region


def fail_over(book: Runbook, settings: Settings, *, source: str, target: str, target_api: str,
              health_check_id: str | None = None, canary_key: str | None = None, wait_seconds: float = 60.0,
              source_reachable: bool = True, after_switch: Callable[[], Any] | None = None) -> None:
    """The failover steps, the same for an operator (``main``) and the DR controller's automatic
    failover (controller/failover.py): checks, the active-region flag, Route 53, the new leader.
    Raises ``RunbookFailed`` when a required check fails."""
    switch_active_region(book, settings, source=source, target=target, target_api=target_api,
                         health_check_id=health_check_id, canary_key=canary_key, wait_seconds=wait_seconds,
                         source_reachable=source_reachable, after_switch=after_switch)
    move_no_leader_alarm(book, settings, source=source, target=target, source_reachable=source_reachable)


def hold_automation(book: Runbook, settings: Settings, reason: str | None) -> None:
    """Hold (``reason``) or release (None) automatic failover. Written in the DR region, where the
    decider reads it, and in the primary when it answers (the global table replicates it anyway)."""
    want = "held" if reason else "released"

    def write() -> list[str]:
        done = []
        for region in (settings.dr_region, settings.region):
            try:
                set_automation_hold(settings, region, reason)
                done.append(region)
            except Exception as exc:  # the primary may be the region that is down
                if region == settings.dr_region:
                    raise
                book.out(f"[warn ] {region} unreachable ({type(exc).__name__}); replication carries the hold")
        return done

    book.act(f"automatic failover {want}" + (f": {reason}" if reason else ""), write,
             done=lambda: (automation_hold(settings, settings.dr_region) or {}).get("reason") == reason)
    book.check("automatic failover hold as read by the DR controller",
               lambda: (automation_hold(settings, settings.dr_region) or {}).get("reason", "none (armed)"),
               required=False)


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("Failover: primary → DR (or hold/release the automatic failover)")
    p.add_argument("--target-api", help="the DR API base URL (its /api/v1/health is checked)")
    p.add_argument("--health-check-id", help="Route 53 health check of the primary's API")
    p.add_argument("--canary-key", help="API key of a canary tenant: send one email through DR")
    p.add_argument("--source-down", action="store_true", help="the primary cannot be reached (disaster)")
    p.add_argument("--wait", type=float, default=60.0)
    hold = p.add_mutually_exclusive_group()
    hold.add_argument("--hold-automation", metavar="REASON",
                      help="stop the DR controller from failing over by itself (planned maintenance)")
    hold.add_argument("--release-automation", action="store_true", help="let automatic failover act again")
    args = p.parse_args(argv)
    s = settings or load_settings()
    if args.hold_automation is not None or args.release_automation:
        book = Runbook("failover-automation", args.execute, out)
        reason = args.hold_automation.strip() or "held" if args.hold_automation is not None else None
        return run(book, lambda: hold_automation(book, s, reason), args.json)
    if not args.target_api:
        p.error("--target-api is required for a failover")
    book = Runbook("failover", args.execute, out)
    return run(book, lambda: fail_over(
        book, s, source=args.region or s.region, target=s.dr_region, target_api=args.target_api,
        health_check_id=args.health_check_id, canary_key=args.canary_key, wait_seconds=args.wait,
        source_reachable=not args.source_down), args.json)


if __name__ == "__main__":
    main_guard(main)
