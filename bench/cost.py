"""What a million mails cost on AWS besides SES's own $100, from the calls one real campaign makes.

A campaign runs end to end on the embedded stack (ingest, controller, senders, the SES event
pipeline) with every AWS call counted on the wire; the counts per message are priced at list
prices (us-east-1, on demand) with the DR replica's replicated writes. moto returns no consumed
capacity, so DynamoDB units are estimated from the bytes on the wire (core/adapters/aws.py).
A second part shows that a controller pass costs the same with 1 or 20 SENT campaigns waiting for
their events: the pass reads only campaigns that changed or have work due.

    python -m bench.cost [--recipients 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from bench.common import table
from core.schema import SES_EVENTS_STREAM
from infra.components.compute import FUNCTIONS
from local.progress import Progress

# list prices, USD (us-east-1, on demand)
PRICE = {
    "ddb_read_unit": 0.125 / 1e6,
    "ddb_write_unit": 0.625 / 1e6,
    "ddb_replicated_write_unit": 0.625 / 1e6,  # global tables, per replica region
    "ddb_stream_read_request": 0.02 / 1e5,
    "sqs_request": 0.40 / 1e6,
    "sqs_fifo_request": 0.50 / 1e6,
    "firehose_gb": 0.029,  # Direct PUT ingestion (SES's events), first 500 TB a month, records in 5 KB steps
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm": 0.0000133334,
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
    "secrets_call": 0.05 / 10000,
}
LAMBDA_MB = {fn: memory for fn, (_, _, memory) in FUNCTIONS.items()}
# Lambda gives a function CPU in proportion to its memory: one full vCPU at 1,769 MB (AWS Lambda
# developer guide, "Memory and computing power"); below that, CPU work takes longer in wall time.
FULL_VCPU_MB = 1769
# A Lambda is billed for its wall time, mostly waiting on AWS. The embedded stack's waits (moto on
# a busy 2-core machine, the sender's own rate limit) say nothing about AWS's, so billed time is
# modelled as the handler's measured CPU (on a full core here, stretched to its memory's share of
# one) plus each AWS call it made at a typical in-region latency (ms; p50 figures, the SES one from
# SES v2 SendEmail). The measured wall time is printed beside.
AWS_LATENCY_MS = {"dynamodb": 6.0, "sesv2": 40.0, "sqs": 12.0, "s3": 20.0,
                  "secretsmanager": 20.0, "dynamodbstreams": 10.0}


class _Timed:
    """Counts a Lambda handler's invocations, wall time and CPU time (its thread's)."""

    def __init__(self, fn: Any):
        self.fn, self.calls, self.seconds, self.cpu = fn, 0, 0.0, 0.0
        self._lock = threading.Lock()

    def __call__(self, event: Any, context: Any) -> Any:
        started, cpu0 = time.perf_counter(), time.thread_time()
        try:
            return self.fn(event, context)
        finally:
            with self._lock:
                self.calls += 1
                self.seconds += time.perf_counter() - started
                self.cpu += time.thread_time() - cpu0

    def billed_gb_seconds(self, counter: Any, component: str) -> float:
        """Its CPU (without the bench's call counting) at its memory's share of a vCPU, plus the
        AWS calls it made at in-region latency (AWS_LATENCY_MS), times its memory in GB."""
        waits = sum(n * AWS_LATENCY_MS.get(op.split(".")[0], 10.0) / 1000
                    for (comp, op), n in counter.component_calls.items() if comp == component)
        memory = LAMBDA_MB[component]
        cpu = max(self.cpu - counter.component_cpu[component], 0.0) * max(1.0, FULL_VCPU_MB / memory)
        return (cpu + waits) * memory / 1024


def campaign_cost(recipients: int, progress: Progress | None = None) -> dict[str, Any]:
    from core.adapters.aws import CallCounter
    from core.observability import SES_EVENTS
    from local import workers
    from local.moto import MotoServer, free_port
    from local.ses_simulator import Rates
    from local.stack import Stack
    from ops.client import Client
    from tests.conftest import make_settings

    # SES's events reach the events Lambda through Firehose's objects: a buffer nearer AWS's 60 s
    # than the embedded stack's 0.5 s, so a message's Send and Delivery mostly share an object as
    # they do on AWS (the moto server reads it when it starts)
    os.environ.setdefault("EMAILPLATFORM_FIREHOSE_BUFFER_SECONDS", str(BENCH_FIREHOSE_BUFFER_SECONDS))
    sender, events = _Timed(workers.SendWorker.lambda_handler), _Timed(workers.EventsWorker.lambda_handler)
    workers.SendWorker.lambda_handler = staticmethod(sender)  # type: ignore[assignment]
    workers.EventsWorker.lambda_handler = staticmethod(events)  # type: ignore[assignment]
    moto = MotoServer().start()
    counter = CallCounter()
    settings = make_settings(moto.url, api_port=free_port(), metrics_port=free_port(), batch_size=500,
                             send_chunk_size=100, ses_max_send_rate=500, controller_interval_seconds=0.5,
                             sender_workers=2, completion_window_seconds=60, recount_quiet_seconds=2,
                             reputation_min_volume=10_000_000)
    events_before = sum(s.value for m in SES_EVENTS.collect() for s in m.samples if s.name.endswith("_total"))
    firehose_before = firehose_usage(moto.url)
    stack = Stack.start(settings, metrics=False, rates=Rates(delivery=0.95, open=0.3, click=0.05), counter=counter)
    progress = progress or Progress("bench cost", every=0)
    try:
        progress.phase(f"uploading a campaign of {recipients:,} recipients")
        c = Client(f"http://127.0.0.1:{settings.api_port}/api/v1/email", stack.tenant["api_key"])
        tid = c.create_template("cost", "Hello {{ first_name }}", "<p>Hi {{ first_name }}, <a href='https://x'>x</a></p>")
        up = c.upload_csv("email,first_name\n" + "".join(f"u{i}@example.org,U{i}\n" for i in range(recipients)))
        counter.reset()
        started = time.perf_counter()
        tx = c.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})
        progress.phase("campaign running", total=recipients, unit="sent")
        final = c.wait_for(tx["transaction_id"], {"COMPLETED"}, timeout=1800,
                           on_poll=lambda cv: progress.update(cv["summary"]["sent"], note=cv["status"]))
        progress.phase("settling (final recount)")
        deadline = time.monotonic() + 60  # the settle pass: final recount, out of the active index
        while tx["transaction_id"] in {t.transaction_id for t in stack.deps.store.active_transactions()} \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        firehose = {k: v - firehose_before.get(k, 0) for k, v in firehose_usage(moto.url).items()}
    finally:
        stack.stop()
        moto.stop()
    n = recipients
    ses_events = sum(s.value for m in SES_EVENTS.collect() for s in m.samples if s.name.endswith("_total")) - events_before
    calls = counter.calls
    sqs_fifo = sum(v for k, v in calls.items() if k == "sqs.SendMessage")  # only the send queue is written by us
    sqs_std = sum(v for k, v in calls.items() if k.startswith("sqs.")) - sqs_fifo
    per_message = {
        "DynamoDB read units": counter.read_units / n,
        "DynamoDB write units": counter.write_units / n,
        # the replica applies each item written once (a transaction's double units are the source's),
        # and nothing of a write that lost its condition
        "DynamoDB replicated write units (DR)":
            (counter.write_units - counter.transaction_surcharge - counter.lost_condition_units) / n,
        "SQS requests (standard)": sqs_std / n,
        "SQS requests (FIFO)": sqs_fifo / n,
        "Firehose GB ingested (SES events, 5 KB a record)": firehose["billed_bytes"] / 2**30 / n,
        # Firehose writes an object per buffer (60 s or 5 MB on AWS): at a million mails, 5 MB ones
        "S3 PUT (Firehose objects of 5 MB)": firehose["bytes"] / (SES_EVENTS_STREAM.buffer_mb * 2**20) / n,
        "Lambda invocations": (sender.calls + events.calls) / n,
        "Lambda GB-s (sender)": sender.billed_gb_seconds(counter, "sender") / n,
        "Lambda GB-s (ses_events)": events.billed_gb_seconds(counter, "ses_events") / n,
        "S3 PUT": sum(v for k, v in calls.items() if k in ("s3.PutObject", "s3.CopyObject")) / n,
        "S3 GET": sum(v for k, v in calls.items() if k in ("s3.GetObject", "s3.HeadObject")) / n,
        "Secrets Manager calls": sum(v for k, v in calls.items() if k.startswith("secretsmanager.")) / n,
    }
    price_of = {
        "DynamoDB read units": PRICE["ddb_read_unit"], "DynamoDB write units": PRICE["ddb_write_unit"],
        "DynamoDB replicated write units (DR)": PRICE["ddb_replicated_write_unit"],
        "SQS requests (standard)": PRICE["sqs_request"], "SQS requests (FIFO)": PRICE["sqs_fifo_request"],
        "Firehose GB ingested (SES events, 5 KB a record)": PRICE["firehose_gb"],
        "S3 PUT (Firehose objects of 5 MB)": PRICE["s3_put"], "Lambda invocations": PRICE["lambda_request"],
        "Lambda GB-s (sender)": PRICE["lambda_gb_second_arm"], "Lambda GB-s (ses_events)": PRICE["lambda_gb_second_arm"],
        "S3 PUT": PRICE["s3_put"], "S3 GET": PRICE["s3_get"], "Secrets Manager calls": PRICE["secrets_call"],
    }
    return {"per_message": per_message, "price_of": price_of, "elapsed": elapsed, "summary": final["summary"],
            "events_per_message": ses_events / n, "calls": Counter({k: v for k, v in calls.items()}),
            # the handlers' CPU without the call counting's own (it parses every request and answer again)
            "cpu_ms_per_event": (events.cpu - counter.component_cpu["ses_events"]) * 1000 / max(ses_events, 1),
            "cpu_ms_per_send": (sender.cpu - counter.component_cpu["sender"]) * 1000 / n,
            "counting_cpu_ms_per_event": counter.component_cpu["ses_events"] * 1000 / max(ses_events, 1),
            "wall_ms_per_event_here": events.seconds * 1000 / max(ses_events, 1),
            "wall_ms_per_send_here": sender.seconds * 1000 / n,
            "ddb_writes_per_event": counter_writes_per_event(counter, ses_events),
            "write_units_by_component": dict(counter.component_write_units),
            "component_calls": Counter(counter.component_calls)}


BENCH_FIREHOSE_BUFFER_SECONDS = 10


def firehose_usage(moto_url: str) -> dict[str, int]:
    """What the embedded Firehose ingested so far (records, bytes, bytes billed in 5 KB steps)."""
    from local.moto import FIREHOSE_USAGE_PATH

    with urllib.request.urlopen(f"{moto_url}{FIREHOSE_USAGE_PATH}", timeout=30) as r:
        return {k: int(v) for k, v in json.loads(r.read()).items()}


def counter_writes_per_event(counter: Any, events: float) -> float:
    """DynamoDB items the events Lambda wrote per SES event (budget: ≤ 1): a batched request's
    statements each count, as each is billed as its own write."""
    return counter.component_items_written["ses_events"] / max(events, 1)


def pass_cost(finished: int, progress: Progress | None = None) -> dict[str, float]:
    """AWS calls and read and write units of one controller pass with one sending campaign and
    ``finished`` campaigns of 2,000 recipients whose mail is all sent, SENT and waiting for their
    SES events (the completion window is 3 days): the pass must not read them."""
    from controller.jobs import Controller
    from core.adapters.aws import CallCounter
    from core.bootstrap import bootstrap
    from core.services.ports import FakeClock
    from core.services.tenants import ensure_tenant
    from local.bootstrap import create_resources
    from local.moto import MotoServer
    from tests.conftest import make_settings
    from tests.helpers import RecordingMailer, batch_sender, submit

    moto = MotoServer().start()
    try:
        settings = make_settings(moto.url, batch_size=500, send_chunk_size=100, recount_quiet_seconds=120,
                                 completion_window_seconds=3 * 24 * 3600)
        create_resources(settings)
        counter = CallCounter()
        clock = FakeClock(datetime.now(UTC))
        deps = bootstrap(settings, clock=clock, counter=counter)
        ensure_tenant(deps.store, deps.secrets, "bench")
        c = Controller(deps, "bench")
        c.heartbeat()
        csv_text = "email,first_name\n" + "".join(f"u{i}@example.org,U{i}\n" for i in range(2000))
        progress = progress or Progress("bench cost", every=0)
        progress.phase(f"a controller pass beside {finished} SENT campaigns: preparing them", total=finished,
                       unit="campaigns")
        for done in range(finished):
            progress.update(done)
            tx_id = submit(deps, "bench", csv_text)
            c.ingest_pass()
            c.advance_pass()
            for b in deps.store.batches(tx_id):
                batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, b.batch_id)
            clock.advance(2)
            c.advance_pass()  # READY_TO_SEND → SENT: it waits for its events
            assert deps.store.get_transaction(tx_id).status.value == "SENT"
        submit(deps, "bench", "email,first_name\nlive@example.org,L\n")
        c.ingest_pass()
        c.advance_pass()
        counter.reset()
        c.advance_pass()
        return {"calls": float(counter.total()), "read_units": counter.read_units, "write_units": counter.write_units}
    finally:
        moto.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=2000)
    ap.add_argument("--finished", type=int, default=20, help="SENT campaigns beside the sending one")
    args = ap.parse_args()
    from core.observability import configure_logging

    configure_logging("ERROR")
    progress = Progress("bench cost")
    r = campaign_cost(args.recipients, progress)
    rows, total = [], 0.0
    for item, qty in r["per_message"].items():
        dollars = qty * r["price_of"][item] * 1e6
        total += dollars
        rows.append((item, f"{qty:.4f}", f"{dollars:.3f}"))
    print(f"cost of one campaign of {args.recipients:,} recipients, priced per million mails "
          f"({r['events_per_message']:.2f} SES events per mail; {r['elapsed']:.0f} s end to end here)\n")
    print(table(rows, ("per mail", "quantity", "USD per million")))
    print(f"\n  total besides SES's own $100 per million: ${total:.2f} per million mails (goal ≤ $5)")
    print(f"  summary: {r['summary']}")
    print(f"  platform CPU: {r['cpu_ms_per_send']:.2f} ms per send, {r['cpu_ms_per_event']:.2f} ms per SES event "
          f"(budget ≤ 1 ms; the bench's own call counting, {r['counting_cpu_ms_per_event']:.2f} ms per event, "
          f"taken out); DynamoDB items written per SES event: {r['ddb_writes_per_event']:.2f} (budget ≤ 1)")
    print("  DynamoDB write units per mail by component:",
          {k: round(v / args.recipients, 2) for k, v in r["write_units_by_component"].items()})
    print("  calls per mail by component:", {f"{c}:{op}": round(v / args.recipients, 3)
                                             for (c, op), v in r["component_calls"].most_common(16)})
    print(f"  wall time here (moto on this machine, not billed): {r['wall_ms_per_send_here']:.1f} ms per send, "
          f"{r['wall_ms_per_event_here']:.1f} ms per SES event")
    print("  AWS calls per mail:", {k: round(v / args.recipients, 3) for k, v in r["calls"].most_common(12)})
    one, many = pass_cost(1, progress), pass_cost(args.finished, progress)
    progress.finish()
    print(f"\none controller pass with one sending campaign and 1 SENT campaign of 2,000 recipients waiting "
          f"for its events: {one['calls']:.0f} AWS calls, {one['read_units']:.1f} read units, "
          f"{one['write_units']:.1f} write units")
    print(f"the same with {args.finished} SENT campaigns waiting: {many['calls']:.0f} AWS calls, "
          f"{many['read_units']:.1f} read units, {many['write_units']:.1f} write units (budget: the same)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
