"""Fail over from the primary to the DR region, or hold/release the automatic failover. See failover.md."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from config.settings import Settings, load_settings
from core import schema
from core.adapters.dynamodb import Update
from core.services.campaigns import submit_campaign
from core.services.failover_doubt import NOT_RESENT_REASON
from runbooks.alarms import move_no_leader_alarm
from runbooks.common import Runbook, main_guard, parser, region_deps, run
from runbooks.regions import (
    automation_hold,
    confirm_source_stopped,
    set_automation_hold,
    switch_active_region,
)


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


def resend_in_doubt(book: Runbook, deps: Any, transaction_id: str, accept_risk: bool) -> None:
    """Re-send, as a new campaign of the same template version, the messages a failover left
    FAILED with ``NOT_RESENT_REASON`` (SES may have accepted them in the old region: a recipient may
    get the mail twice). Once per campaign: a marker item is claimed before submitting, so a re-run
    (or a run killed half-way) never submits a second re-send."""
    store, settings = deps.store, deps.settings
    tx = book.check("campaign exists", lambda: store.get_transaction(transaction_id))
    left = [m for b in store.batches(transaction_id) for m in store.batch_partition(b.batch_id)[0]
            if m.status.value == "FAILED" and m.failure_reason == NOT_RESENT_REASON]
    book.check(f"messages left in doubt after a failover ({NOT_RESENT_REASON!r})", lambda: len(left))
    marker = schema.resent_in_doubt_key(transaction_id)
    if not left:
        return
    book.check("no recipient has attachments of its own (re-send those by hand)",
               lambda: not any(m.attachments for m in left))
    book.check("--accept-duplicate-risk given (SES may have accepted these in the old region)", lambda: accept_risk)

    def resend() -> str:
        if not store.table.put_new({**marker, "state": "submitting", "messages": len(left),
                                    "at": deps.clock.now().isoformat()}):
            raise RuntimeError("a re-send of this campaign was already started: see its marker item")
        columns = sorted({k for m in left for k in m.placeholder_data} | {k for m in left for k in m.metadata})
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["email", *columns])
        for m in left:
            w.writerow([m.recipient_email, *({**m.metadata, **m.placeholder_data}.get(c, "") for c in columns)])
        key = f"{tx.tenant_id}/resend-in-doubt/{transaction_id}.csv"
        deps.blobs.put(settings.bucket("uploads"), key, buf.getvalue().encode())
        view = submit_campaign(store, deps.blobs, settings, deps.clock, tx.tenant_id, {
            "template_id": tx.template_id, "template_version": tx.template_version,
            "csv_file_url": f"s3://{settings.bucket('uploads')}/{key}", "callback_url": tx.callback_url,
            "callback_message_events": tx.message_events, "from": tx.from_address, "reply_to": tx.reply_to,
            "subject": tx.subject, "headers": tx.headers or None, "metadata_columns": tx.metadata_columns or None,
            "attachments": tx.attachments or None, "tags": {**tx.tags, "resent_from": transaction_id}})
        store.table.update(Update(marker, set={"state": "submitted", "resent_as": view["transaction_id"]},
                                  condition="#s = :s", values={":s": "submitting"}, names={"#s": "state"}))
        return f"{len(left)} message(s) re-sent as campaign {view['transaction_id']}"

    book.act(f"re-send {len(left)} message(s) as a new campaign (duplicates possible)", resend,
             done=lambda: store.table.get(marker) is not None)


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
    hold.add_argument("--confirm-source-stopped", action="store_true",
                      help="after a --source-down failover: let DR's senders start once the primary's SES is quiet")
    hold.add_argument("--resend-in-doubt", metavar="CAMPAIGN",
                      help="re-send the messages a failover left FAILED in doubt, as a new campaign")
    p.add_argument("--accept-risk", action="store_true",
                   help="with --confirm-source-stopped: lift the wait without SES evidence (both may send)")
    p.add_argument("--accept-duplicate-risk", action="store_true",
                   help="with --resend-in-doubt: some recipients may get the mail twice")
    p.add_argument("--window", type=float, default=None, help="SES quiet window in seconds (default: the setting)")
    args = p.parse_args(argv)
    s = settings or load_settings()
    if args.confirm_source_stopped:
        book = Runbook("failover-confirm-source-stopped", args.execute, out)
        return run(book, lambda: confirm_source_stopped(
            book, s, source=args.region or s.region, target=s.dr_region,
            window_seconds=args.window or s.failover_ses_window_seconds, accept_risk=args.accept_risk), args.json)
    if args.resend_in_doubt:
        book = Runbook("failover-resend-in-doubt", args.execute, out)
        d = region_deps(args, s, args.region or s.dr_region)  # the active region (DR after a failover)
        return run(book, lambda: resend_in_doubt(book, d, args.resend_in_doubt, args.accept_duplicate_risk), args.json)
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
