"""`make drill`: a scripted disaster-recovery drill on the embedded stack.

Primary and DR regions run side by side on one moto server (replication emulated, see
local/replication.py). A campaign of thousands of recipients starts in the primary; mid-send the
primary's compute is killed (API, controller, senders; its SES calls fail from that instant, so
chunks are cut between SES and their send log). `runbooks/failover.py --execute` moves the
platform to DR, DR finishes the campaign, and the drill prints RPO, RTO, messages sent twice and
messages lost. Then the primary's compute comes back and `runbooks/failback.py` moves back.

What stays up when the primary's compute dies: the AWS-managed parts (SES event publishing to
Firehose, S3, SQS and the events Lambda, global-table and S3 replication).

The chunks in flight at the kill are in doubt. The embedded event pipeline runs well behind the
sends (one moto process on two cores), often more than the evidence window, so DR only resolves
them once the primary's pipeline has drained (core/services/sending.py). The drill prints how
far behind that pipeline was at the failure.

`make drill-auto` (``python -m local.drill --auto``) drills the *automatic* failover: the DR
controller runs the failover decider (controller/failover.py) and nobody runs a runbook.
1. Partition: only the link between the controllers is cut (the primary's heartbeat stops
   replicating to DR) while the primary sends a campaign. DR sees one bad signal of three and must
   not promote; the campaign completes in the primary with nothing sent twice.
2. Disaster: the primary's compute is killed mid-send. DR detects it (a quorum of signals bad),
   promotes itself after the grace period and finishes the campaign. The drill prints the time to
   detect, to promote and until DR sends, and, counted from the SES side (every message the
   embedded SES accepted, both regions), the messages sent twice and lost.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config.settings import Settings, load_settings
from core.domain.models import parse_iso
from core.observability import configure_logging
from core.services.failover_doubt import NOT_RESENT_REASON
from local import ses_mailbox
from local.bootstrap import create_resources
from local.moto import MotoServer, free_port
from local.progress import Progress
from local.replication import BucketReplicator, EchoRegistry, TableReplicator
from local.ses_simulator import Rates
from local.stack import Stack
from ops.client import Client
from runbooks import failback, failover
from runbooks.regions import _flag, _set_flag, probe_lag

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
    progress = Progress("drill")
    try:
        c = Client(f"{papi}/api/v1/email", "ep_drill_key_000000000")
        progress.phase(f"uploading {RECIPIENTS:,} recipients")
        tid = c.create_template("drill", "Drill {{ first_name }}", "<p>Hello {{ first_name }}</p>")
        rows = ["email,first_name"] + [f"person{i}@example.org,P{i}" for i in range(RECIPIENTS)]
        up = c.upload_csv("\n".join(rows) + "\n")
        tx_id = c.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})["transaction_id"]
        out(f"campaign {tx_id}: {RECIPIENTS} recipients, sending from {p.region}")
        progress.phase("ingesting", total=RECIPIENTS, unit="messages")
        c.wait_for(tx_id, {"READY_TO_SEND"}, timeout=300,
                   on_poll=lambda cv: progress.update(cv["summary"]["total_messages"]))
        progress.phase(f"sending from {p.region} until the kill", total=RECIPIENTS // 3, unit="sent")
        while len(primary.simulator.sent) < RECIPIENTS // 3:
            progress.update(len(primary.simulator.sent))
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
        progress.phase(f"failover runbook to {p.dr_region}")
        code = failover.main(["--target-api", dapi, "--execute", "--wait", "60"], settings=p, out=lines.append)
        for line in lines:
            out(f"  failover {line}")
        if code:
            return 1
        accepting = None
        progress.phase(f"waiting for {p.dr_region} to accept calls and send")
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
        progress.phase(f"{p.dr_region} finishing the campaign", total=RECIPIENTS, unit="sent")
        final = dr_client.wait_for(tx_id, {"COMPLETED"}, timeout=900,
                                   on_poll=lambda cv: progress.update(cv["summary"]["sent"], note=cv["status"]))
        sends = Counter(s["to"] for s in primary.simulator.sent + dr.simulator.sent
                        if s["message_id"].startswith(tx_id))
        twice = sum(1 for n in sends.values() if n > 1)
        lost = RECIPIENTS - len(sends) - final["summary"]["failed"] - final["summary"]["suppressed"]

        progress.phase(f"failback to {p.region}")
        primary.restart_compute()
        lines = []
        code = failback.main(["--target-api", papi, "--execute", "--wait", "60"], settings=p, out=lines.append)
        for line in lines:
            out(f"  failback {line}")
        progress.finish()
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




# -- automatic failover (`make drill-auto`) ---------------------------------------------------
class LinkCuttingReplicator(TableReplicator):
    """Table replication whose controllers' link can be cut alone: while ``cut`` is set the lease
    items (the controllers' heartbeat) do not replicate; campaign data still does."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.cut = threading.Event()

    def _apply(self, dst: Any, records: list[dict[str, Any]]) -> None:
        if self.cut.is_set():
            records = [r for r in records if not r["dynamodb"]["Keys"]["PK"]["S"].startswith("LEASE#")]
        super()._apply(dst, records)


@dataclass
class Regions:
    """The primary and the DR region side by side on one moto server, DR's decider armed."""

    moto: MotoServer
    p: Settings
    d: Settings
    primary: Stack
    dr: Stack
    forward: LinkCuttingReplicator
    replicators: list[Any]

    @property
    def papi(self) -> str:
        return f"http://127.0.0.1:{self.p.api_port}"

    @property
    def dapi(self) -> str:
        return f"http://127.0.0.1:{self.d.api_port}"

    def client(self, api: str) -> Client:
        return Client(f"{api}/api/v1/email", self.p.local_api_key or "")

    def dr_table(self) -> Any:
        return self.dr.deps.store.table

    def sent(self, prefix: str) -> int:
        """Sends both regions' platforms saw accepted (cheap progress; the figures count SES's side)."""
        return sum(1 for st in (self.primary, self.dr) for m in st.simulator.sent if m["to"].startswith(prefix))

    def decisions(self) -> list[dict[str, Any]]:
        return list(self.dr_table().query_all("PLATFORM", "FAILOVER#"))

    def stop(self) -> None:
        for r in self.replicators:
            r.stop()
        self.dr.stop()
        self.primary.stop()
        self.moto.stop()


def start_regions(*, grace: float, quorum: int = 2, lease_seconds: float = 5, evidence_window: int = 30,
                  redispatch_after: int = 10, rate: float = 40, ses_window: float = 60.0, batch_size: int = 100,
                  chunk_size: int = 25) -> Regions:
    moto = MotoServer(free_port()).start()
    common = dict(aws_endpoint_url=moto.url, environment="local", callback_allow_loopback=True,
                  callback_require_https=False, batch_size=batch_size, send_chunk_size=chunk_size, ses_max_send_rate=rate,
                  controller_interval_seconds=0.5, lease_seconds=lease_seconds,
                  redispatch_after_seconds=redispatch_after, send_evidence_window_seconds=evidence_window,
                  recount_interval_seconds=1.0, sender_workers=3, local_api_key="ep_drill_key_000000000",
                  completion_window_seconds=600)
    p = load_settings(**common, api_port=free_port(), metrics_port=free_port())
    d = p.model_copy(update={"region": p.dr_region, "dr_region": p.region, "api_port": free_port(),
                             "metrics_port": free_port()})
    d = load_settings(**{**d.model_dump(), "failover_automation": True, "failover_grace_seconds": grace,
                         "failover_quorum": quorum, "failover_check_interval_seconds": 0.5,
                         "failover_api_url": f"http://127.0.0.1:{d.api_port}",
                         "failover_peer_health_url": f"http://127.0.0.1:{p.api_port}/api/v1/health",
                         "failover_ses_window_seconds": ses_window})
    create_resources(p)
    create_resources(d)
    echoes = EchoRegistry()
    forward = LinkCuttingReplicator(p, p.region, p.dr_region, lag=0.3, echoes=echoes)
    backward = TableReplicator(p, p.dr_region, p.region, lag=0.3, from_now=True, echoes=echoes)
    s3 = BucketReplicator(p, p.region, p.dr_region, interval=0.5)
    for r in (forward, backward, s3):
        r.start()
    for region in (p.region, p.dr_region):
        _set_flag(p, region, p.region)
    rates = Rates(delivery=0.97, open=0.0, click=0.0)
    primary = Stack.start(p, metrics=False, rates=rates)
    probe_lag(p, p.region, p.dr_region)  # DR's replica has caught up before DR's controller starts
    dr = Stack.start(d, metrics=False, rates=rates)
    return Regions(moto, p, d, primary, dr, forward, [forward, backward, s3])


def ses_accepted(moto_url: str, prefix: str) -> Counter[str]:
    """How often the embedded SES (every region) accepted a message to each address starting with
    ``prefix``: the SES side's count, including calls whose caller died before hearing back."""
    with urllib.request.urlopen(f"{moto_url}{ses_mailbox.PATH}", timeout=60) as r:
        data = json.load(r)
    seen: Counter[str] = Counter()
    for rec in data:
        for to in (rec.get("destinations") or {}).get("ToAddresses", []):
            if to.startswith(prefix):
                seen[to] += 1
    return seen


def _campaign(c: Client, prefix: str, n: int) -> str:
    tid = c.create_template(f"drill-{prefix}", "Drill {{ first_name }}", "<p>Hello {{ first_name }}</p>")
    rows = ["email,first_name"] + [f"{prefix}{i}@example.org,P{i}" for i in range(n)]
    up = c.upload_csv("\n".join(rows) + "\n")
    return c.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})["transaction_id"]


def _not_resent(c: Client, tx: str) -> int:
    """The campaign's messages DR failed rather than re-send (in doubt in the killed region)."""
    n, cursor = 0, None
    while True:
        page = c.call("GET", f"/campaigns/{tx}/messages", params={"status": "FAILED", "limit": 100,
                                                                  **({"cursor": cursor} if cursor else {})})
        n += sum(1 for m in page["items"] if m.get("failure_reason") == NOT_RESENT_REASON)
        cursor = page.get("next_cursor")
        if not cursor:
            return n


def _wait(what: str, cond: Any, timeout: float, every: float = 0.2) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(every)
    raise TimeoutError(f"drill: {what} did not happen within {timeout}s")


def partition_scenario(r: Regions, recipients: int, watch_seconds: float,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Cut the controllers' link while the primary sends; DR must not promote."""
    progress = progress or Progress("drill-auto", every=0)
    prefix = f"part{uuid.uuid4().hex[:4]}-"
    c = r.client(r.papi)
    progress.phase("partition: uploading and ingesting")
    tx = _campaign(c, prefix, recipients)
    c.wait_for(tx, {"READY_TO_SEND", "SENT", "COMPLETED"}, timeout=300)
    progress.phase("partition: primary sending before the cut", total=recipients // 5, unit="sent")
    with progress.watch(lambda: r.sent(prefix)):
        _wait("first sends", lambda: r.sent(prefix) >= recipients // 5, 900)
    r.forward.cut.set()
    verdicts: Counter[str] = Counter()
    most_bad: set[str] = set()
    progress.phase("partition: link cut, DR must not promote", total=round(watch_seconds), unit="s")
    cut_at = time.monotonic()
    deadline = cut_at + watch_seconds
    while time.monotonic() < deadline:
        v = r.dr.controller.failover.last if r.dr.controller and r.dr.controller.failover else None
        if v is not None:
            verdicts[v.action.value] += 1
            most_bad = max(most_bad, set(v.bad), key=len)
        progress.update(round(time.monotonic() - cut_at), note=f"DR verdict {v.action.value if v else '-'}")
        time.sleep(0.5)
    r.forward.cut.clear()
    progress.phase("partition: link restored, primary finishing", total=recipients, unit="sent")
    with progress.watch(lambda: r.sent(prefix)):  # every message has its send outcome
        final = c.wait_for(tx, {"SENT", "COMPLETED"}, timeout=600)
    sends = ses_accepted(r.moto.url, prefix)
    flag = _flag(r.p, r.d.region)
    return {"promotions": len(r.decisions()) + (1 if flag != r.p.region else 0),
            "active_region": flag, "bad_signals": sorted(most_bad), "verdicts": dict(verdicts),
            "sent_by_dr": sum(1 for s in r.dr.simulator.sent if s["to"].startswith(prefix)),
            "sent_twice": sum(1 for n in sends.values() if n > 1),
            "lost": recipients - len(sends) - final["summary"]["failed"] - final["summary"]["suppressed"],
            "not_resent": _not_resent(r.client(r.dapi), tx),
            "status": final["status"], "watched_seconds": watch_seconds}


def kill_scenario(r: Regions, recipients: int, progress: Progress | None = None) -> dict[str, Any]:
    """Kill the primary's compute mid-send; DR detects, promotes and finishes with no human step."""
    progress = progress or Progress("drill-auto", every=0)
    prefix = f"kill{uuid.uuid4().hex[:4]}-"
    c = r.client(r.papi)
    progress.phase("disaster: uploading and ingesting")
    tx = _campaign(c, prefix, recipients)
    c.wait_for(tx, {"READY_TO_SEND"}, timeout=300)
    progress.phase("disaster: primary sending until the kill", total=recipients // 3, unit="sent")
    with progress.watch(lambda: r.sent(prefix)):
        _wait("a third of the sends", lambda: r.sent(prefix) >= recipients // 3, 900)
    dr_before = len(r.dr.simulator.sent)
    failed_at, failed_wall = time.monotonic(), datetime.now(UTC)
    r.primary.kill_compute()
    sent_by_primary = sum(ses_accepted(r.moto.url, prefix).values())
    grace = r.d.failover_grace_seconds
    progress.phase(f"disaster: primary killed, DR deciding (grace {grace:.0f}s)", total=round(grace), unit="s")
    with progress.watch(lambda: round(time.monotonic() - failed_at)):
        promoted = _wait("the automatic failover", lambda: _flag(r.p, r.d.region) == r.d.region, grace + 120)
    progress.phase("disaster: DR promoted, taking the lead and sending")
    _wait("DR's leader", lambda: bool(r.decisions()) and r.decisions()[-1].get("outcome") != "in_progress", 120)
    record = r.decisions()[-1]
    first_dr_send = _wait("DR's first send", lambda: len(r.dr.simulator.sent) > dr_before, 300)
    progress.phase("disaster: DR finishing the campaign", total=recipients, unit="sent")
    with progress.watch(lambda: r.sent(prefix)):
        final = r.client(r.dapi).wait_for(tx, {"SENT", "COMPLETED"}, timeout=900)
    sends = ses_accepted(r.moto.url, prefix)

    def since(stamp: str | None) -> float | None:
        return round((parse_iso(stamp) - failed_wall).total_seconds(), 1) if stamp else None

    return {"detect_s": since(record.get("bad_since")), "decide_s": since(record.get("decided_at")),
            "promoted_s": since(record.get("finished_at")), "flag_seen_s": round(promoted - failed_at, 1),
            "dr_sends_s": round(first_dr_send - failed_at, 1), "grace_s": grace, "outcome": record.get("outcome"),
            "why": record.get("why"), "sent_by_primary": sent_by_primary,
            "sent_by_dr": sum(1 for s in r.dr.simulator.sent if s["to"].startswith(prefix)),
            "sent_twice": sum(1 for n in sends.values() if n > 1),
            "lost": recipients - len(sends) - final["summary"]["failed"] - final["summary"]["suppressed"],
            "not_resent": _not_resent(r.client(r.dapi), tx),
            "status": final["status"], "summary": final["summary"]}


def auto(recipients: int = 600, grace: float = 15.0, out: Any = print) -> int:
    """Both scenarios, one after the other, on one pair of regions."""
    configure_logging("WARNING")
    progress = Progress("drill-auto")
    progress.phase("starting both regions")
    r = start_regions(grace=grace)
    try:
        out(f"automatic failover drill: {r.p.region} → {r.d.region}, grace {grace:.0f}s, quorum "
            f"{r.d.failover_quorum} of 3 signals (heartbeat, primary API health, SES sends)")
        part = partition_scenario(r, recipients, watch_seconds=grace * 2 + 2 * r.p.lease_seconds, progress=progress)
        out("")
        out("1. partition: the controllers' link cut for "
            f"{part['watched_seconds']:.0f}s while the primary sends")
        out(f"  bad signals seen at most                {', '.join(part['bad_signals']) or 'none'}")
        out(f"  DR decider verdicts (passes)            {part['verdicts']}")
        out(f"  promotions                              {part['promotions']} (active region {part['active_region']})")
        out(f"  sent by DR                              {part['sent_by_dr']}")
        out(f"  messages sent twice (SES side)          {part['sent_twice']}")
        out(f"  messages lost                           {part['lost']}  (campaign {part['status']})")
        kill = kill_scenario(r, recipients, progress=progress)
        out("")
        out("2. disaster: the primary's compute killed mid-send, no human step")
        out(f"  time to detect (quorum bad)             {kill['detect_s']} s")
        out(f"  time to promote (decision)              {kill['decide_s']} s  (grace {kill['grace_s']:.0f} s)")
        out(f"  time to promote (DR leader, steps done) {kill['promoted_s']} s  ({kill['outcome']})")
        out(f"  time until DR sends                     {kill['dr_sends_s']} s")
        out(f"  why                                     {kill['why']}")
        out(f"  sent by primary / by DR                 {kill['sent_by_primary']} / {kill['sent_by_dr']}")
        out(f"  messages sent twice (SES side)          {kill['sent_twice']}")
        out(f"  messages lost                           {kill['lost']}")
        out(f"  in doubt, not re-sent (FAILED, counted)  {kill['not_resent']}  (runbooks/failover.md: "
            f"--resend-in-doubt re-sends them, accepting a possible duplicate)")
        out(f"  campaign                                {kill['status']} {kill['summary']}")
        progress.finish()
        ok = (part["promotions"] == 0 and part["sent_twice"] == 0 and part["lost"] == 0
              and kill["outcome"] == "promoted" and kill["sent_twice"] == 0 and kill["lost"] == 0
              and kill["promoted_s"] is not None and kill["promoted_s"] <= grace + 60)
        out("")
        out("automatic failover drill: " + ("PASSED" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        r.stop()


if __name__ == "__main__":
    import argparse

    cli = argparse.ArgumentParser(prog="python -m local.drill", description="DR drills on the embedded stack")
    cli.add_argument("--auto", action="store_true", help="the automatic failover drill (partition, then disaster)")
    cli.add_argument("--recipients", type=int, default=600, help="--auto: recipients per campaign")
    cli.add_argument("--grace", type=float, default=15.0, help="--auto: the decider's grace period (seconds)")
    opts = cli.parse_args()
    sys.exit(auto(opts.recipients, opts.grace) if opts.auto else main())
