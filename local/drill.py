"""`make drill`: a scripted disaster-recovery drill on the embedded stack.

Primary and DR regions run side by side on one moto server (replication emulated, see
local/replication.py). A campaign of thousands of recipients starts in the primary; mid-send the
primary's compute is killed (API, controller, senders; its SES calls fail from that instant, so
chunks are cut between SES and their send log). `runbooks/failover.py --execute` moves the
platform to DR, DR finishes the campaign, and the drill prints RPO, RTO, messages sent twice and
messages lost. Then the primary's compute comes back and `runbooks/failback.py` moves back.

What stays up when the primary's compute dies: the AWS-managed parts (SES event publishing to
SNS/SQS and the events Lambda, global-table and S3 replication).

The chunks in flight at the kill are in doubt. The embedded event pipeline runs well behind the
sends (one moto process on two cores), often more than the evidence window, so DR only resolves
them once the primary's pipeline has drained (core/services/sending.py). The drill prints how
far behind that pipeline was at the failure.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import UTC, datetime

from config.settings import load_settings
from core.observability import configure_logging
from local.bootstrap import create_resources
from local.client import Client
from local.moto import MotoServer, free_port
from local.replication import BucketReplicator, EchoRegistry, TableReplicator
from local.ses_simulator import Rates
from local.stack import Stack
from runbooks import failback, failover
from runbooks.regions import _set_flag, probe_lag

RECIPIENTS = 3000


def main() -> int:
    configure_logging("WARNING")
    moto = MotoServer(free_port()).start()
    common = dict(aws_endpoint_url=moto.url, environment="local", callback_allow_loopback=True,
                  callback_require_https=False, batch_size=250, send_chunk_size=25, ses_max_send_rate=40,
                  controller_interval_seconds=0.5, lease_seconds=5, redispatch_after_seconds=10,
                  send_evidence_window_seconds=30, recount_interval_seconds=1.0, sender_workers=3,
                  local_api_key="ep_drill_key_000000000", completion_window_seconds=600)
    p = load_settings(**common, api_port=free_port(), metrics_port=free_port())
    d = p.model_copy(update={"region": p.dr_region, "dr_region": p.region, "api_port": free_port(),
                             "metrics_port": free_port()})
    create_resources(p)
    create_resources(d)
    echoes = EchoRegistry()
    forward = TableReplicator(p, p.region, p.dr_region, lag=0.5, echoes=echoes)
    backward = TableReplicator(p, p.dr_region, p.region, lag=0.5, from_now=True, echoes=echoes)
    s3 = BucketReplicator(p, p.region, p.dr_region, interval=0.5)
    for r in (forward, backward, s3):
        r.start()
    for region in (p.region, p.dr_region):
        _set_flag(p, region, p.region)
    rates = Rates(delivery=0.97, open=0.0, click=0.0)
    primary = Stack.start(p, metrics=False, rates=rates)
    dr = Stack.start(d, metrics=False, rates=rates)
    papi, dapi = f"http://127.0.0.1:{p.api_port}", f"http://127.0.0.1:{d.api_port}"
    out = print
    try:
        c = Client(f"{papi}/api/v1/email", "ep_drill_key_000000000")
        tid = c.create_template("drill", "Drill {{ first_name }}", "<p>Hello {{ first_name }}</p>")
        rows = ["email,first_name"] + [f"person{i}@example.org,P{i}" for i in range(RECIPIENTS)]
        up = c.upload_csv("\n".join(rows) + "\n")
        tx_id = c.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})["transaction_id"]
        out(f"campaign {tx_id}: {RECIPIENTS} recipients, sending from {p.region}")
        c.wait_for(tx_id, {"READY_TO_SEND"}, timeout=300)
        while len(primary.simulator.sent) < RECIPIENTS // 3:
            time.sleep(0.2)
        rpo_probe = probe_lag(p, p.region, p.dr_region)
        failed_at = time.monotonic()
        primary.kill_compute()
        mark = primary.deps.store.send_evidence(p.region)
        pipeline_lag = (datetime.now(UTC) - mark[0]).total_seconds() if mark else 0.0
        events_queued = sum(primary.deps.events_queue.depth().values())
        sent_by_primary = len(primary.simulator.sent)
        out(f"killed {p.region}'s compute after {sent_by_primary} sends; replication lag at failure {rpo_probe:.2f}s")

        lines: list[str] = []
        code = failover.main(["--target-api", dapi, "--execute", "--wait", "60"], settings=p, out=lines.append)
        for line in lines:
            out(f"  failover {line}")
        if code:
            return 1
        accepting = None
        dr_client = Client(f"{dapi}/api/v1/email", "ep_drill_key_000000000")
        while accepting is None:
            try:
                dr_client.call("GET", "/campaigns?limit=1")
                accepting = time.monotonic()
            except Exception:
                time.sleep(0.2)
        while not dr.simulator.sent:
            time.sleep(0.2)
        first_dr_send = time.monotonic()
        final = dr_client.wait_for(tx_id, {"COMPLETED"}, timeout=900)
        sends = Counter(s["to"] for s in primary.simulator.sent + dr.simulator.sent
                        if s["message_id"].startswith(tx_id))
        twice = sum(1 for n in sends.values() if n > 1)
        lost = RECIPIENTS - len(sends) - final["summary"]["failed"] - final["summary"]["suppressed"]

        primary.restart_compute()
        lines = []
        code = failback.main(["--target-api", papi, "--execute", "--wait", "60"], settings=p, out=lines.append)
        for line in lines:
            out(f"  failback {line}")
        out("")
        out("DR drill figures")
        out(f"  RPO: replication lag at failure        {rpo_probe:.2f} s (DynamoDB; S3 backlog checked by the runbook)")
        out(f"  RTO: failure → DR accepting API calls   {accepting - failed_at:.1f} s")
        out(f"  RTO: failure → DR sending               {first_dr_send - failed_at:.1f} s")
        out(f"  sent by primary / by DR                 {sent_by_primary} / {len(dr.simulator.sent)}")
        out(f"  event pipeline at failure               newest Send recorded {pipeline_lag:.1f} s ago, {events_queued} events "
            f"queued (evidence window {p.send_evidence_window_seconds} s)")
        out(f"  messages sent twice                     {twice}")
        out(f"  messages lost                           {lost}")
        out(f"  campaign                                {final['status']} {final['summary']}")
        out(f"  failback                                {'ok' if code == 0 else 'FAILED'}")
        return 0 if (twice == 0 and lost == 0 and code == 0) else 1
    finally:
        for r in (forward, backward, s3):
            r.stop()
        dr.stop()
        primary.stop()
        moto.stop()


if __name__ == "__main__":
    sys.exit(main())
