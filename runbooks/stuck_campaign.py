"""Diagnose why a campaign does not advance, and apply the safe nudges. See stuck_campaign.md."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from functools import partial

from core import schema
from core.domain.models import Batch, iso
from core.domain.statuses import TERMINAL_TRANSACTION, BatchStatus
from runbooks.common import Runbook, main_guard, parser, region_deps, run


def _ts(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("Stuck campaign: diagnose and nudge")
    p.add_argument("--campaign", required=True)
    args = p.parse_args(argv)
    d = region_deps(args, settings)
    store, now = d.store, d.clock.now()
    book = Runbook("stuck-campaign", args.execute, out)

    def body() -> None:
        tx = book.check("campaign exists", lambda: store.get_transaction(args.campaign))
        book.check("status", lambda: f"{tx.status.value} since {tx.updated_at.isoformat()} (version {tx.version})")
        item = store.table.get(schema.transaction_key(tx.transaction_id)) or {}
        in_index = schema.ACTIVE_INDEX.hash_key in item
        book.check("in the controller's active index", lambda: in_index or tx.status in TERMINAL_TRANSACTION,
                   required=False)
        # when the controller looks at it next (``LOOK_NOW``: at its next pass)
        look_at = str(item.get(schema.ACTIVE_INDEX.range_key, "")).split("#")[0]
        later = in_index and look_at > iso(now)
        if in_index:
            book.check("the controller looks at it", lambda: f"at {look_at}" if later else "at its next pass",
                       required=False)
        lease = store.table.get(schema.lease_key(d.settings.region)) or {}
        alive = bool(lease) and (_ts(lease.get("expires_at")) or now) > now
        book.check("a controller holds the lease in this region",
                   lambda: f"{lease.get('holder')} epoch {lease.get('epoch')}" if alive else False, required=False)
        flag = store.get_flag(schema.ACTIVE_REGION_KEY) or {}
        book.check("this region is the active region", lambda: flag.get("region", d.settings.region) == d.settings.region,
                   required=False)
        batches = store.batches(tx.transaction_id)
        book.check("batches by status", lambda: dict(Counter(b.status.value for b in batches)) or "no batches yet")
        orphaned = []
        for b in batches:
            raw = store.table.get(schema.batch_key(tx.transaction_id, b.batch_id)) or {}
            lease_until = _ts(raw.get("lease_until"))
            if b.status == BatchStatus.QUEUED and (lease_until is None or lease_until < now):
                orphaned.append(b)
            _, logs = store.batch_partition(b.batch_id)
            latest: dict[int, dict] = {}
            for lg in logs:  # only a chunk's latest attempt counts
                if int(lg["chunk"]) not in latest or int(lg["attempt"]) > int(latest[int(lg["chunk"])]["attempt"]):
                    latest[int(lg["chunk"])] = lg
            # unfinished chunks, and finished ones with a call whose outcome SES never told us
            doubt = [lg for lg in latest.values() if lg["state"] == "INTENT" or lg.get("in_doubt_at")
                     or any((r or {}).get("outcome") == "IN_DOUBT" for r in (lg.get("results") or {}).values())]
            if doubt:
                book.check(f"batch {b.batch_id} has chunks in doubt (waiting for SES evidence)",
                           partial(str, f"{len(doubt)} chunk(s), oldest {min(x['created_at'] for x in doubt)}"),
                           required=False)
                for region in sorted({str(lg["region"]) for lg in doubt if lg.get("region")}):
                    mark = store.send_evidence(region)
                    book.check(f"{region}'s event pipeline: newest Send event recorded (and when)",
                               partial(str, f"{iso(mark[0])} (at {iso(mark[1])})" if mark else "none yet"),
                               required=False)
        book.check("queued batches no worker holds", lambda: [b.batch_id for b in orphaned] or "none")
        dead = [c.seq for c in store.callbacks(tx.transaction_id) if c.state == "DEAD"]
        book.check("dead-lettered callbacks", lambda: dead or "none", required=False)
        depth = d.send_queue.depth()
        book.check("send queue depth", lambda: depth)
        def redispatch(b: Batch) -> None:
            store.release_batch(b, d.clock.now())

        for b in orphaned:
            book.act(f"re-dispatch batch {b.batch_id} on the next controller pass", partial(redispatch, b))
        if not in_index and tx.status not in TERMINAL_TRANSACTION:
            book.act("put the campaign back in the active index", lambda: store.reactivate(tx))
        elif later and tx.status not in TERMINAL_TRANSACTION:
            book.act(f"make the controller look at it now, not at {look_at}", lambda: store.reactivate(tx))

    return run(book, body, args.json)


if __name__ == "__main__":
    main_guard(main)
