"""Ingest benchmark: rows/s, peak memory per CSV size, DynamoDB writes per message, against a
raw batch_write_item loop on the same moto server (the ceiling here).

    python -m bench.ingest [--sizes 10000,100000,1000000]

Each size is ingested in a child process so its peak RSS is that size's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from bench.common import bench_settings, table
from local.progress import Progress


def make_csv(path: str, n: int) -> None:
    with open(path, "w") as f:
        f.write("email,first_name,plan,city\n")
        for i in range(n):
            f.write(f"user{i}@example.org,First{i},{'pro' if i % 3 else 'basic'},City {i % 97}\n")


def child(n: int, moto_url: str, csv_path: str) -> None:
    """Ingest one CSV and print the figures as JSON (runs in its own process)."""
    from prometheus_client import REGISTRY

    from core.adapters.aws import CallCounter
    from core.bootstrap import bootstrap
    from core.observability import configure_logging
    from core.services import campaigns
    from core.services.ingest import ingest_transaction
    from core.services.tenants import ensure_tenant
    from tests.helpers import active_template

    configure_logging("WARNING")
    settings = bench_settings(moto_url, batch_size=500)
    counter = CallCounter()
    deps = bootstrap(settings, counter=counter)
    ensure_tenant(deps.store, deps.secrets, "bench")
    tid = active_template(deps, "bench")
    up = campaigns.create_upload(deps.store, deps.blobs, settings, "bench", None)
    key = up["csv_file_url"].split("/", 3)[3]
    deps.clients["s3"].upload_file(csv_path, settings.bucket("uploads"), key)
    out = campaigns.submit_campaign(deps.store, deps.blobs, settings, deps.clock, "bench",
                                    {"template_id": tid, "upload_id": up["upload_id"]})
    tx = deps.store.get_transaction(out["transaction_id"])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counter.reset()
    progress = Progress("bench ingest")
    progress.phase(f"ingesting {n:,} rows", total=n, unit="rows")

    def rows_ingested() -> int:  # the counter core/services/ingest.py keeps, in this process
        return int(REGISTRY.get_sample_value("emailplatform_ingest_rows_total") or 0)

    base = rows_ingested()
    cpu0, t0 = time.process_time(), time.perf_counter()
    with progress.watch(lambda: rows_ingested() - base):
        tx = ingest_transaction(tx, store=deps.store, blobs=deps.blobs, settings=settings, clock=deps.clock)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert tx.total_messages == n, (tx.status, tx.total_messages, tx.failure_reason)
    print(json.dumps({
        "rows": n, "seconds": elapsed, "rows_per_s": n / elapsed, "cpu_ms_per_row": cpu * 1000 / n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss_before / 1024,
        "ddb_write_calls_per_msg": (counter.calls["dynamodb.BatchWriteItem"] + counter.calls["dynamodb.UpdateItem"]
                                    + counter.calls["dynamodb.PutItem"] + counter.calls["dynamodb.TransactWriteItems"]) / n,
        "ddb_items_written_per_msg": counter.items_written / n,
        "aws_calls_per_msg": counter.total() / n,
    }))


def raw_baseline(moto_url: str, n: int, progress: Progress | None = None) -> float:
    """Items/s of a bare batch_write_item loop writing the same item shape."""
    from core.adapters.aws import client

    settings = bench_settings(moto_url)
    ddb = client(settings, "dynamodb")
    t0 = time.perf_counter()
    for start in range(0, n, 25):
        if progress:
            progress.update(start)
        reqs = [{"PutRequest": {"Item": {
            "PK": {"S": "BATCH#raw"}, "SK": {"S": f"MESSAGE#{i:09d}"}, "recipient_email": {"S": f"user{i}@example.org"},
            "tenant_id": {"S": "bench"}, "status": {"S": "READY_TO_SEND"},
            "placeholder_data": {"M": {"first_name": {"S": f"First{i}"}, "plan": {"S": "pro"}, "city": {"S": "C"}}}}}}
            for i in range(start, min(n, start + 25))]
        pending = {settings.table_name: reqs}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1], args.child[2])
        return
    from local.moto import MotoServer

    moto = MotoServer().start()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        progress = Progress("bench ingest")
        progress.phase("raw batch_write_item baseline", total=min(max(sizes), 50_000), unit="items")
        raw = raw_baseline(moto.url, min(max(sizes), 50_000), progress)
        rows = []
        results = []
        for n in sizes:
            with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as f:
                path = f.name
            progress.phase(f"writing a CSV of {n:,} rows")
            make_csv(path, n)
            # the child's stderr (its progress, its errors) goes straight to ours; its stdout is the figures
            proc = subprocess.run([sys.executable, "-m", "bench.ingest", "--child", str(n), moto.url, path],
                                  stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
            os.unlink(path)
            if proc.returncode:
                print(f"the ingest of {n:,} rows failed (exit {proc.returncode}; its stderr is above)", file=sys.stderr)
                raise SystemExit(1)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            moto.reset()  # keep the server's own memory from skewing the next size
            rows.append((f"{n:,}", f"{r['rows_per_s']:,.0f}", f"{r['rows_per_s'] / raw:.2f}", f"{r['cpu_ms_per_row']:.3f}",
                         f"{r['peak_rss_mb']:.0f}", f"{r['ddb_write_calls_per_msg']:.3f}",
                         f"{r['ddb_items_written_per_msg']:.3f}", f"{r['aws_calls_per_msg']:.3f}"))
        progress.finish()
        print(f"raw batch_write_item loop on the same moto server: {raw:,.0f} items/s\n")
        print(table(rows, ("rows", "rows/s", "x raw", "cpu ms/row", "peak RSS MB", "DDB write calls/msg",
                           "DDB items/msg", "AWS calls/msg")))
        base = results[0]["peak_rss_mb"]
        print(f"\npeak memory, largest vs smallest input: {results[-1]['peak_rss_mb'] / base:.2f}x")
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
