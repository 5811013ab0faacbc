"""Send benchmark on the embedded backend.

1. Sending: messages/s of the platform sender (claim, render, quota, send log, SES v2) with W
   worker threads, against a raw send_email loop with the same W threads on the same moto
   server; SES calls and DynamoDB writes per message; platform CPU per message.
2. SES events: events handled per second by the events handler (parse, precedence write,
   suppression) against a raw SQS receive/delete loop over the same number of messages.

    python -m bench.send [--messages 3000] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from bench.common import bench_settings, table
from local.progress import Progress


def _threads(n: int, target, args_list):  # noqa: ANN001
    ts = [threading.Thread(target=target, args=a) for a in args_list]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def bench_sending(moto_url: str, n: int, workers: int, progress: Progress | None = None) -> dict:
    from controller.jobs import Controller
    from core.adapters.aws import CallCounter, client
    from core.bootstrap import bootstrap
    from core.services.tenants import ensure_tenant
    from tests.helpers import batch_sender, submit

    settings = bench_settings(moto_url, batch_size=max(1, n // (workers * 2)), send_chunk_size=100,
                              ses_max_send_rate=100_000)
    counter = CallCounter()
    deps = bootstrap(settings, counter=counter)
    ensure_tenant(deps.store, deps.secrets, "bench")
    csv_text = "email,first_name,plan\n" + "".join(f"user{i}@example.org,First{i},pro\n" for i in range(n))
    tx_id = submit(deps, "bench", csv_text)
    progress = progress or Progress("bench send", every=0)
    progress.phase(f"ingesting {n:,} recipients")
    c = Controller(deps, "bench")
    c.heartbeat()
    c.ingest_pass()
    c.advance_pass()
    batches = [b.batch_id for b in deps.store.batches(tx_id)]
    queue: list[str] = list(batches)
    lock = threading.Lock()

    def work(i: int) -> None:
        sender = batch_sender(deps, deps.mailer, f"w{i}")
        while True:
            with lock:
                if not queue:
                    return
                b = queue.pop()
            sender.send_batch(tx_id, b)

    counter.reset()
    progress.phase(f"platform sending with {workers} workers", total=n, unit="sent")
    cpu0, t0 = time.process_time(), time.perf_counter()
    with progress.watch(lambda: counter.calls["sesv2.SendEmail"]):
        _threads(workers, work, [(i,) for i in range(workers)])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sends = counter.calls["sesv2.SendEmail"]
    assert sends == n, sends
    platform = {"msgs_per_s": n / elapsed, "cpu_ms": cpu * 1000 / n,
                "calls": {k: round(v / n, 3) for k, v in counter.calls.most_common()},
                "ses_calls_per_msg": sends / n, "ddb_writes_per_msg": counter.items_written / n,
                "aws_calls_per_msg": counter.total() / n}

    ses = client(settings, "sesv2")
    per = [list(range(i, n, workers)) for i in range(workers)]
    raw_sent = [0]  # progress only: increments from several threads, approximate

    def raw(ids: list[int]) -> None:
        for i in ids:
            raw_sent[0] += 1
            # the same request the platform makes: tags for event routing, unsubscribe headers
            ses.send_email(FromEmailAddress=settings.default_from, Destination={"ToAddresses": [f"user{i}@example.org"]},
                           Content={"Simple": {"Subject": {"Data": f"Hi First{i}", "Charset": "UTF-8"},
                                               "Body": {"Html": {"Data": f"<p>Hello First{i}</p>", "Charset": "UTF-8"}},
                                               "Headers": [{"Name": "List-Unsubscribe", "Value": f"<https://x/u/{i}>"},
                                                           {"Name": "List-Unsubscribe-Post",
                                                            "Value": "List-Unsubscribe=One-Click"}]}},
                           ConfigurationSetName=settings.ses_configuration_set,
                           EmailTags=[{"Name": k, "Value": f"v{i}"} for k in ("tenant_id", "transaction_id",
                                                                              "batch_id", "message_id")])

    progress.phase(f"raw send_email loop with {workers} threads", total=n, unit="sent")
    cpu0, t0 = time.process_time(), time.perf_counter()
    with progress.watch(lambda: raw_sent[0]):
        _threads(workers, raw, [(ids,) for ids in per])
    r_elapsed, r_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    platform.update(raw_msgs_per_s=n / r_elapsed, raw_cpu_ms=r_cpu * 1000 / n)
    return platform


def bench_events(moto_url: str, n: int, progress: Progress | None = None) -> dict:
    from core.adapters.aws import CallCounter, client
    from core.bootstrap import bootstrap
    from core.domain.models import Message, Transaction
    from handlers import ses_events
    from handlers.context import LocalContext, use
    from local.ses_simulator import ses_event
    from local.workers import _sqs_event

    settings = bench_settings(moto_url)
    counter = CallCounter()
    deps = bootstrap(settings, counter=counter)
    batch = "tx_bench-b00001"
    deps.store.create_transaction(Transaction(transaction_id="tx_bench", tenant_id="bench", template_id="t",
                                              template_version=1, csv_s3_key="bench.csv", total_messages=n))
    deps.store.put_messages(Message(message_id=f"{batch}-{i:05d}", batch_id=batch, transaction_id="tx_bench",
                                    tenant_id="bench", recipient_email=f"u{i}@example.org") for i in range(1, n + 1))
    sqs = client(settings, "sqs")

    def fill() -> None:
        entries = []
        for i in range(1, n + 1):
            ev = ses_event("Delivery", ses_id=f"ses-{i}", sender="a@example.com", to=f"u{i}@example.org", subject="s",
                           tags={"tenant_id": "bench", "message_id": f"{batch}-{i:05d}"})
            entries.append({"Id": str(i % 10), "MessageBody": json.dumps({"Message": json.dumps(ev)})})
            if len(entries) == 10:
                sqs.send_message_batch(QueueUrl=deps.events_queue.url, Entries=entries)
                entries = []

    progress = progress or Progress("bench send", every=0)
    progress.phase(f"queueing {n:,} SES events")
    fill()
    use(deps)
    counter.reset()
    progress.phase("events handler", total=n, unit="events")
    cpu0, t0 = time.process_time(), time.perf_counter()
    handled = 0
    while handled < n:
        progress.update(handled)
        msgs = deps.events_queue.receive(10, wait_seconds=0)
        if not msgs:
            continue
        resp = ses_events.handler(_sqs_event(msgs, "q"), LocalContext())
        assert not resp["batchItemFailures"]
        deps.events_queue.delete([m["ReceiptHandle"] for m in msgs])
        handled += len(msgs)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    writes = counter.items_written / n
    use(None)
    progress.phase(f"queueing {n:,} SES events again")
    fill()
    progress.phase("raw SQS receive/delete loop", total=n, unit="messages")
    t0 = time.perf_counter()
    got = 0
    while got < n:
        progress.update(got)
        msgs = deps.events_queue.receive(10, wait_seconds=0)
        if msgs:
            deps.events_queue.delete([m["ReceiptHandle"] for m in msgs])
            got += len(msgs)
    raw = n / (time.perf_counter() - t0)
    return {"events_per_s": n / elapsed, "raw_per_s": raw, "ddb_writes_per_event": writes, "cpu_ms": cpu * 1000 / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--events", type=int, default=1000)
    args = ap.parse_args()
    from core.observability import configure_logging
    from local.moto import MotoServer

    configure_logging("WARNING")
    moto = MotoServer().start()
    progress = Progress("bench send")
    try:
        s = bench_sending(moto.url, args.messages, args.workers, progress)
        print(f"sending {args.messages} messages with {args.workers} workers (moto server in its own process)\n")
        print(table([(f"{s['msgs_per_s']:,.0f}", f"{s['raw_msgs_per_s']:,.0f}", f"{s['msgs_per_s'] / s['raw_msgs_per_s']:.2f}",
                      f"{s['cpu_ms']:.3f}", f"{s['raw_cpu_ms']:.3f}", f"{s['cpu_ms'] - s['raw_cpu_ms']:.3f}",
                      f"{s['ses_calls_per_msg']:.2f}", f"{s['ddb_writes_per_msg']:.3f}", f"{s['aws_calls_per_msg']:.3f}")],
                    ("msgs/s", "raw msgs/s", "x raw", "cpu ms/msg", "raw cpu ms/msg", "platform cpu ms/msg",
                     "SES calls/msg", "DDB writes/msg", "AWS calls/msg")))
        print("AWS calls per message by operation:", s["calls"])
        e = bench_events(moto.url, args.events, progress)
        progress.finish()
        print(f"\nSES events ({args.events} Delivery notifications through the events handler)\n")
        print(table([(f"{e['events_per_s']:,.0f}", f"{e['raw_per_s']:,.0f}", f"{e['events_per_s'] / e['raw_per_s']:.2f}",
                      f"{e['ddb_writes_per_event']:.2f}", f"{e['cpu_ms']:.3f}")],
                    ("events/s", "raw SQS recv+delete/s", "x raw", "DDB writes/event", "cpu ms/event")))
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
