"""Fail over from the primary to the DR region. See failover.md."""

from __future__ import annotations

from config.settings import load_settings
from runbooks.common import Runbook, main_guard, parser, run
from runbooks.regions import switch_active_region


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("Failover: primary → DR")
    p.add_argument("--target-api", required=True, help="the DR API base URL (its /api/v1/health is checked)")
    p.add_argument("--health-check-id", help="Route 53 health check of the primary's API")
    p.add_argument("--canary-key", help="API key of a canary tenant: send one email through DR")
    p.add_argument("--source-down", action="store_true", help="the primary cannot be reached (disaster)")
    p.add_argument("--wait", type=float, default=60.0)
    args = p.parse_args(argv)
    s = settings or load_settings()
    book = Runbook("failover", args.execute, out)
    return run(book, lambda: switch_active_region(
        book, s, source=args.region or s.region, target=s.dr_region, target_api=args.target_api,
        health_check_id=args.health_check_id, canary_key=args.canary_key, wait_seconds=args.wait,
        source_reachable=not args.source_down), args.json)


if __name__ == "__main__":
    main_guard(main)
