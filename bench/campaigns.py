"""Many small campaigns at once: do controller passes stay short, and does throughput scale with
campaigns? (Found by users: 563 campaigns submitted in a minute, 144 done 20 minutes later, one
pass taking 60-120 s.)

Submits ``--campaigns`` campaigns of ``--recipients`` each over HTTP to an embedded stack, then
prints the time until all are COMPLETED, campaigns per minute, and the longest controller pass.

    python -m bench.campaigns [--campaigns 200] [--recipients 3]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import table


def run(campaigns: int, recipients: int, pass_workers: int) -> dict[str, Any]:
    from controller import jobs
    from local.moto import MotoServer, free_port
    from local.stack import Stack
    from ops.client import Client
    from tests.conftest import make_settings

    passes: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()
    original = jobs.Controller._timed

    def timed(self: Any, job: str, fn: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, job, fn)
        finally:
            with lock:
                passes[job].append(time.perf_counter() - started)

    jobs.Controller._timed = timed  # type: ignore[method-assign]
    moto = MotoServer().start()
    settings = make_settings(moto.url, api_port=free_port(), metrics_port=free_port(), batch_size=500,
                             ses_max_send_rate=2000, controller_interval_seconds=1, sender_workers=4,
                             completion_window_seconds=30, controller_pass_workers=pass_workers)
    stack = Stack.start(settings, metrics=False)
    try:
        c = Client(f"http://127.0.0.1:{settings.api_port}/api/v1/email", stack.tenant["api_key"])
        tid = c.create_template("many", "Hi {{ first_name }}", "<p>Hi {{ first_name }}</p>")
        csv = "email,first_name\n" + "".join(f"success+{i}@simulator.amazonses.com,S{i}\n" for i in range(recipients))
        started = time.perf_counter()

        def submit(i: int) -> str:
            up = c.upload_csv(csv)
            return c.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})["transaction_id"]

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(submit, range(campaigns)))
        submitted = time.perf_counter() - started
        waiting = set(ids)
        deadline = time.monotonic() + 1800
        while waiting and time.monotonic() < deadline:
            for tx_id in list(waiting):
                if stack.deps.store.get_transaction(tx_id).status.value in ("COMPLETED", "FAILED"):
                    waiting.discard(tx_id)
            time.sleep(1)
        elapsed = time.perf_counter() - started
    finally:
        stack.stop()
        moto.stop()
        jobs.Controller._timed = original  # type: ignore[method-assign]
    return {"elapsed": elapsed, "submitted": submitted, "left": len(waiting),
            "max_pass": {job: max(v) for job, v in passes.items() if v}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--campaigns", type=int, default=200)
    ap.add_argument("--recipients", type=int, default=3)
    ap.add_argument("--pass-workers", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    from core.observability import configure_logging

    configure_logging("ERROR")
    rows = []
    for workers in args.pass_workers:
        r = run(args.campaigns, args.recipients, workers)
        rows.append((str(workers), f"{r['submitted']:.0f}", f"{r['elapsed']:.0f}", str(r["left"]),
                     f"{(args.campaigns - r['left']) / r['elapsed'] * 60:.0f}",
                     f"{r['max_pass'].get('ingest', 0):.1f}", f"{r['max_pass'].get('advance', 0):.1f}"))
    print(f"{args.campaigns} campaigns of {args.recipients} recipients submitted at once over HTTP\n")
    print(table(rows, ("pass workers", "submit s", "all done s", "not done", "campaigns/min",
                       "longest ingest pass s", "longest advance pass s")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
