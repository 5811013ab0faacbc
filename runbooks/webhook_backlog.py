"""Inspect the callback backlog and redeliver dead-lettered callbacks. See webhook_backlog.md."""

from __future__ import annotations

from collections import Counter
from functools import partial

from core.services import callbacks
from runbooks.common import Runbook, main_guard, parser, region_deps, run


def main(argv: list[str] | None = None, settings=None, out=print) -> int:  # noqa: ANN001
    p = parser("Webhook backlog")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--campaign")
    g.add_argument("--tenant", help="every campaign of this tenant (newest 500)")
    args = p.parse_args(argv)
    d = region_deps(args, settings)
    book = Runbook("webhook-backlog", args.execute, out)

    def body() -> None:
        due = d.store.due("CALLBACK", d.clock.now(), limit=1000)
        book.check("callbacks due now (platform-wide)", lambda: len(due))
        if args.campaign:
            txs = [book.check("campaign exists", lambda: d.store.get_transaction(args.campaign))]
        else:
            txs, _ = d.store.list_transactions(args.tenant, 500, None)
        dead: dict[str, list[int]] = {}
        states: Counter = Counter()
        for tx in txs:
            for cb in d.store.callbacks(tx.transaction_id):
                states[cb.state] += 1
                if cb.state == "DEAD":
                    dead.setdefault(tx.transaction_id, []).append(cb.seq)
                    last = cb.attempts[-1] if cb.attempts else {}
                    book.check(f"dead callback {cb.webhook_id}", partial(
                        str, f"{len(cb.attempts)} attempts, last {last.get('status') or last.get('error')}"), required=False)
        book.check("callbacks by state", lambda: dict(states) or "none")
        for tx_id, seqs in dead.items():
            book.act(f"redeliver {len(seqs)} dead callback(s) of {tx_id} (same webhook-id)",
                     partial(callbacks.redeliver, d.store, tx_id, d.clock))

    return run(book, body, args.json)


if __name__ == "__main__":
    main_guard(main)
