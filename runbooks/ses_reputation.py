"""Bounce/complaint spike: find the tenant and campaigns, pause them, hold the tenant's sending.
Suppression of the bouncing/complaining addresses is automatic (SES events). See ses_reputation.md."""

from __future__ import annotations

from collections import defaultdict
from functools import partial

from core.domain.models import Summary, Transaction
from core.domain.statuses import TransactionStatus as T
from core.services.campaigns import pause_campaign, summarize
from runbooks.common import Runbook, main_guard, parser, region_deps, run


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("SES reputation incident")
    p.add_argument("--tenant", help="limit to one tenant")
    p.add_argument("--bounce", type=float, help="bounce-rate threshold (default: settings)")
    p.add_argument("--complaint", type=float, help="complaint-rate threshold (default: settings)")
    args = p.parse_args(argv)
    d = region_deps(args, settings)
    bounce_max = args.bounce if args.bounce is not None else d.settings.bounce_rate_threshold
    complaint_max = args.complaint if args.complaint is not None else d.settings.complaint_rate_threshold
    book = Runbook("ses-reputation", args.execute, out)

    def pause(tx: Transaction) -> str:
        return str(pause_campaign(d.store, d.clock, tx.tenant_id, tx.transaction_id, "ses-reputation runbook")["status"])

    def held(tenant: str) -> bool:
        return d.store.sending_paused(tenant) is not None

    def body() -> None:
        active = [t for t in d.store.active_transactions() if not args.tenant or t.tenant_id == args.tenant]
        book.check("active campaigns", lambda: len(active))
        per_tenant: dict[str, Summary] = defaultdict(Summary)
        per_campaign = {}
        for tx in active:
            s = summarize(d.store, tx)
            per_campaign[tx.transaction_id] = (tx, s)
            per_tenant[tx.tenant_id] = per_tenant[tx.tenant_id] + s
        offenders = []
        for tenant, s in sorted(per_tenant.items(), key=lambda kv: -(kv[1].bounced + kv[1].complained)):
            b = s.bounced / s.sent if s.sent else 0.0
            c = s.complained / s.sent if s.sent else 0.0
            over = b > bounce_max or c > complaint_max
            book.check(f"tenant {tenant}", partial(str, f"sent {s.sent} bounce {b:.2%} complaint {c:.3%}"),
                       required=False)
            if over:
                offenders.append(tenant)
        book.check("tenants over threshold", lambda: offenders or "none", required=False)
        for tenant in offenders:
            book.act(f"hold all sending for tenant {tenant}",
                     partial(d.store.set_sending_switch, tenant_id=tenant, tenant_paused=True,
                             reason="ses-reputation runbook"),
                     done=partial(held, tenant))
            for tx, _ in (v for v in per_campaign.values() if v[0].tenant_id == tenant):
                if tx.status in (T.READY_TO_SEND, T.SCHEDULED):
                    book.act(f"pause campaign {tx.transaction_id}",
                             partial(pause, tx))

    return run(book, body, args.json)


if __name__ == "__main__":
    main_guard(main)
