"""The controller: leader-gated, level-triggered passes on APScheduler, nudged by the table stream."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from botocore.exceptions import ClientError

from controller.failover import build_watch
from controller.lease import Lease
from core import schema
from core.adapters.sqs import SqsQueue
from core.adapters.store import DynamoStore
from core.adapters.streams import follow_table_stream
from core.bootstrap import Deps, peer_table, privacy_ports
from core.domain.errors import DomainError, Fenced, StaleWrite
from core.domain.models import Summary, Transaction
from core.domain.statuses import TransactionStatus as T
from core.observability import (
    CALLBACK_BACKLOG,
    CAMPAIGNS,
    CAMPAIGNS_STUCK,
    EVENT_PIPELINE_LAG,
    HEARTBEAT,
    HEARTBEAT_AGE,
    PASS_ERRORS,
    PASS_SECONDS,
    QUEUE_DEPTH,
    REPLICATION_LAG,
    SCHEDULER_LAG,
    SEND_QUOTA,
    acting_as,
    log,
)
from core.services import callbacks, message_events, privacy, reconcile
from core.services.ingest import Abandoned, ingest_transaction

STREAM_RESTART_SECONDS = 5.0  # pause before the stream watch starts again after an error
# How often a standby tries to take the lease (the leader renews every lease/3 seconds). A leader
# stopped by a redeploy releases the lease on SIGTERM (``stop``); the new task, already running as a
# standby (ECS starts it first: infra/components/controller.py), takes it within this, so the
# senders' self-fencing (core/services/regions.py) pauses sending for about this plus their recheck
# second. A poll while another lease is live is a few reads, no write (controller/lease.py).
LEASE_TAKEOVER_POLL_SECONDS = 1.0
STUCK_AFTER_SECONDS = 600.0  # a sending campaign whose counts have not moved for this long is "stuck"


class StuckCampaigns:
    """Counts READY_TO_SEND campaigns whose summary has not changed for ``after`` seconds.

    Keeps one entry per such campaign, replaced on every call by the campaigns passed in: a
    campaign that leaves the active set (or READY_TO_SEND) is forgotten, so the state stays as
    small as the active set. After a restart the clock starts again (the alert waits longer, never
    fires wrongly)."""

    def __init__(self, after: float = STUCK_AFTER_SECONDS):
        self.after = after
        self._unchanged_since: dict[str, tuple[Summary, datetime]] = {}

    def count(self, active: Iterable[Transaction], now: datetime) -> int:
        seen: dict[str, tuple[Summary, datetime]] = {}
        for tx in active:
            if tx.status != T.READY_TO_SEND:
                continue
            before = self._unchanged_since.get(tx.transaction_id)
            seen[tx.transaction_id] = before if before is not None and before[0] == tx.summary else (tx.summary, now)
        self._unchanged_since = seen
        return sum(1 for _, since in seen.values() if (now - since).total_seconds() >= self.after)

    def __len__(self) -> int:
        return len(self._unchanged_since)


def acting_as_controller(fn: Any, *args: Any) -> Any:
    """Run ``fn`` in a pool thread with the controller's identity (AWS calls are counted and
    attributed per component through a context variable, which threads do not inherit)."""
    with acting_as("controller"):
        return fn(*args)


class Controller:
    def __init__(self, deps: Deps, holder: str, region: str | None = None, *,
                 stuck_after: float = STUCK_AFTER_SECONDS):
        self.deps = deps
        self.settings = deps.settings
        self.region = region or deps.settings.region
        self.peer = peer = deps.settings.dr_region if self.region == deps.settings.region else deps.settings.region
        self.lease = Lease(deps.store.table, self.region, holder, deps.settings.lease_seconds, deps.clock, peer,
                           on_lost=self._clear_leader_metrics)
        self._heartbeat_at: datetime | None = None  # when the last lease call completed
        self._peer_unreadable: str | None = None  # why the peer's table copy could not be read (logged once)
        self.stopping = threading.Event()
        self.scheduler: BackgroundScheduler | None = None
        self._stream: threading.Thread | None = None
        self.stuck = StuckCampaigns(stuck_after)
        self._dlqs = ([(f"{q.purpose.replace('-', '_')}-dlq", SqsQueue(deps.clients["sqs"], q.dlq_name(deps.settings.name_prefix)))
                       for q in schema.QUEUES if q.dlq] if "sqs" in deps.clients else [])
        self._dlq_unreadable: set[str] = set()
        # automatic failover: enabled in the DR region's controller only (see controller/failover.py)
        self.failover = (build_watch(deps, self.region, peer, self._renew_lease_now)
                         if deps.settings.failover_automation else None)
        self._analytics_purged_at: datetime | None = None
        self._heartbeat_lock = threading.Lock()  # the lease job and the takeover poll never race
        if self.settings.send_evidence_window_seconds < schema.SEND_EVIDENCE_WINDOW_FLOOR:
            log.warning("send evidence window shorter than an events consumer crash: an in-doubt chunk can be "
                        "re-sent (refused where deployed)", window_seconds=self.settings.send_evidence_window_seconds,
                        floor_seconds=schema.SEND_EVIDENCE_WINDOW_FLOOR)

    # -- passes (each callable on its own, so tests drive them without the scheduler) ----
    @property
    def store(self) -> DynamoStore:
        if self.lease.epoch is None:
            raise Fenced("not the leader")
        return self.deps.store.fenced(self.lease.epoch)

    def _timed(self, job: str, fn: Any) -> Any:
        if self.lease.epoch is None or self.stopping.is_set():
            return None
        started = time.perf_counter()
        try:
            with acting_as("controller"):
                return fn()
        except Fenced as exc:
            self.lease._lost(str(exc))
        except Exception as exc:
            PASS_ERRORS.labels(job, type(exc).__name__).inc()
            log.exception("pass failed", job=job, error=str(exc)[:300])
        finally:
            PASS_SECONDS.labels(job).observe(time.perf_counter() - started)
        return None

    def _each(self, job: str, txs: list[Transaction], fn: Callable[[Transaction], object]) -> None:
        """``fn`` for each campaign, ``controller_pass_workers`` at a time: a pass over hundreds of
        small campaigns waits on DynamoDB, not on CPU, and each campaign is one worker's alone."""
        def one(tx: Transaction) -> None:
            if self.stopping.is_set():
                return
            try:
                fn(tx)
            except StaleWrite:
                return  # another writer moved it; the next pass decides again
            except Fenced:
                raise
            except (Abandoned, DomainError, Exception) as exc:  # one bad item never stops the pass
                PASS_ERRORS.labels(job, type(exc).__name__).inc()
                log.warning("item failed", job=job, transaction_id=tx.transaction_id, error=str(exc)[:300])

        workers = min(self.settings.controller_pass_workers, len(txs))
        if workers <= 1:
            for tx in txs:
                one(tx)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{job}-pass") as pool:
            for future in [pool.submit(acting_as_controller, one, tx) for tx in txs]:
                future.result()  # re-raises Fenced: the pass stops, the lease is given up

    def heartbeat(self) -> bool:
        """Take or renew the lease; publish the attempt's time under this controller's role. An
        attempt that raises (DynamoDB unreachable) publishes nothing, so the heartbeat goes stale:
        the timestamp stays (Prometheus compares it with time()) and the age, computed at each
        scrape, grows (what the CloudWatch alarms read: they cannot compare with the time)."""
        with self._heartbeat_lock, acting_as("controller"):
            held = self.lease.acquire_or_renew()
        role, other = ("leader", "standby") if held else ("standby", "leader")
        self._heartbeat_at = now = self.deps.clock.now()
        HEARTBEAT.labels(self.region, role).set(now.timestamp())
        HEARTBEAT_AGE.labels(self.region, role).set_function(self._heartbeat_age)
        for series in (HEARTBEAT, HEARTBEAT_AGE):
            with contextlib.suppress(KeyError):  # one series per controller: its current role
                series.remove(self.region, other)
        return held

    def _heartbeat_age(self) -> float:
        if self._heartbeat_at is None:
            return 0.0
        return max(0.0, (self.deps.clock.now() - self._heartbeat_at).total_seconds())

    def ingest_pass(self) -> None:
        def run() -> None:
            store = self.store
            todo = [t for t in store.due_transactions(self.deps.clock.now()) if t.status in (T.ACCEPT, T.PROCESSING)]
            self._each("ingest", todo, lambda tx: ingest_transaction(
                tx, store=store, blobs=self.deps.blobs, settings=self.settings, clock=self.deps.clock,
                should_stop=self.stopping.is_set))
        self._timed("ingest", run)

    def advance_pass(self) -> None:
        """Release due batches, then move each campaign that is due (``due_transactions``: one
        that changed or has work due; one that waits is not read)."""
        def run() -> None:
            store = self.store
            reconcile.release_due(store=store, clock=self.deps.clock)
            due = [t for t in store.due_transactions(self.deps.clock.now()) if t.status not in (T.ACCEPT, T.PROCESSING)]
            self._each("advance", due, lambda tx: reconcile.advance(
                tx, store=store, queue=self.deps.send_queue, clock=self.deps.clock, settings=self.settings))
        self._timed("advance", run)

    def reputation_pass(self) -> None:
        """The reputation guard over every active campaign's live counts: one read of the
        ``active`` index (rates need every campaign of a tenant, not only the due ones)."""
        def run() -> None:
            store = self.store
            reconcile.guard_reputation(
                [t for t in store.active_transactions() if t.status in (T.READY_TO_SEND, T.SENT, T.SCHEDULED)],
                store=store, clock=self.deps.clock, settings=self.settings)
        self._timed("reputation", run)

    def callbacks_pass(self) -> None:
        """Campaign callbacks, then batches of message events (opted-in campaigns), signed alike."""
        for deliver in (callbacks.deliver_due, message_events.deliver_due):
            self._timed("callbacks", lambda deliver=deliver: deliver(
                store=self.store, http=self.deps.http, secrets=self.deps.secrets, clock=self.deps.clock,
                timeout=self.settings.callback_timeout_seconds, should_stop=self.stopping.is_set))

    def privacy_pass(self) -> None:
        """Erasure jobs (core/services/privacy.py), and once an hour the tenants' analytics retention
        in both regions' stores (the other region's controller is a standby and purges nothing:
        ``privacy.purge_analytics_everywhere``). A purge that failed in any region (counted in
        PASS_ERRORS) is tried again at the next pass, not an hour later."""
        def run() -> None:
            ports = privacy_ports(self.deps, self.store)
            privacy.run_due_erasures(ports, should_stop=self.stopping.is_set)
            now = self.deps.clock.now()
            if self._analytics_purged_at is None or (now - self._analytics_purged_at).total_seconds() >= 3600:
                if privacy.purge_analytics_everywhere(ports, now).complete:
                    self._analytics_purged_at = now
        self._timed("privacy", run)

    def metrics_pass(self) -> None:
        def run() -> None:
            now = self.deps.clock.now()
            active = list(self.deps.store.active_transactions())
            counts = Counter(t.status.value for t in active)
            for status in T:
                CAMPAIGNS.labels(status.value).set(counts.get(status.value, 0))
            CAMPAIGNS_STUCK.set(self.stuck.count(active, now))
            depths: dict[str, dict[str, int]] = {}
            for name, q in (("send", self.deps.send_queue), ("ses_events", self.deps.events_queue)):
                depths[name] = q.depth()
                for state, n in depths[name].items():
                    QUEUE_DEPTH.labels(name, state).set(n)
            self._dlq_depths()
            EVENT_PIPELINE_LAG.set(self._event_pipeline_lag(now, sum(depths["ses_events"].values())))
            SEND_QUOTA.set(self.settings.ses_max_send_rate)
            CALLBACK_BACKLOG.set(len(self.deps.store.due("CALLBACK", now, limit=1000)))
            if self.lease.epoch is None:  # lost during the pass (its clearing may have run before these)
                self._clear_leader_metrics()
        self._timed("metrics", run)

    def _clear_leader_metrics(self) -> None:
        """What only a leader publishes goes back to what a controller that never led exports:
        unlabelled gauges at 0, labelled ones absent. Runs when the lease is lost or released, so a
        deposed leader never keeps exporting its last stuck count, lag or queue depths."""
        for gauge in (CAMPAIGNS_STUCK, EVENT_PIPELINE_LAG, SEND_QUOTA, CALLBACK_BACKLOG):
            gauge.set(0)
        for labelled in (CAMPAIGNS, QUEUE_DEPTH):
            labelled.clear()
        self._forget_replication_lag()

    def _forget_replication_lag(self) -> None:
        """Stop exporting the peer region's replication lag (absent, not 0: nothing was measured)."""
        with contextlib.suppress(KeyError):  # never published, or already removed
            REPLICATION_LAG.remove(self.peer)

    def replication_pass(self) -> None:
        """Publish ``emailplatform_replication_lag_seconds``: how many seconds of this region's
        writes the other region's table copy does not show yet (leader only).

        Source: this leader's own lease renewals, which stamp ``renewed_at`` on the lease item every
        lease_seconds/3 (controller/lease.py ``unreplicated_seconds``), read back from the peer
        region's replica with one GetItem. It is the same on AWS (the global table replicates the
        item) and in the embedded stack (local/replication.py TableReplicator copies it), and needs
        no permission the controller lacks (GetItem on ``peer_table``), unlike CloudWatch's
        ReplicationLatency (which the AWS alarm reads). Not published where the peer region has no
        table (a single-region stack) or cannot be read. Its own job: a peer region that does not
        answer delays this pass, never the other metrics."""
        def run() -> None:
            try:
                copy = peer_table(self.deps, self.peer).get(schema.lease_key(self.region))
            except Exception as exc:
                self._forget_replication_lag()
                missing = isinstance(exc, ClientError) and exc.response["Error"]["Code"] == "ResourceNotFoundException"
                if not missing:
                    PASS_ERRORS.labels("replication", type(exc).__name__).inc()
                why = "no table in the other region" if missing else type(exc).__name__
                if self._peer_unreadable != why:
                    self._peer_unreadable = why
                    log.warning("replication lag not measured", peer_region=self.peer, why=why,
                                error=str(exc)[:300])
                return
            self._peer_unreadable = None
            lag = self.lease.unreplicated_seconds(copy)
            if lag is not None:
                REPLICATION_LAG.labels(self.peer).set(lag)
            if self.lease.epoch is None:
                self._clear_leader_metrics()
        self._timed("replication", run)

    def _event_pipeline_lag(self, now: datetime, queued_events: int) -> float:
        """How far behind the sends this region's SES event pipeline records Send events, while it
        has events to work through (an idle pipeline is not lagging)."""
        mark = self.deps.store.send_evidence(self.region)
        if not queued_events or mark is None:
            return 0.0
        return max(0.0, (now - mark[0]).total_seconds())

    def _dlq_depths(self) -> None:
        """Dead-letter queue depths; one unreadable DLQ (e.g. not granted) is logged once and skipped."""
        for name, q in self._dlqs:
            try:
                for state, n in q.depth().items():
                    QUEUE_DEPTH.labels(name, state).set(n)
            except Exception as exc:
                PASS_ERRORS.labels("metrics", type(exc).__name__).inc()
                if name not in self._dlq_unreadable:
                    self._dlq_unreadable.add(name)
                    log.warning("dead-letter queue unreadable", queue=q.name, error=str(exc)[:300])

    def failover_pass(self) -> None:
        """One automatic-failover decision (runs while this controller is passive, too)."""
        if self.failover is None or self.stopping.is_set():
            return
        try:
            with acting_as("controller"):
                self.failover.run_once()
        except Exception as exc:
            PASS_ERRORS.labels("failover", type(exc).__name__).inc()
            log.exception("pass failed", job="failover", error=str(exc)[:300])

    def takeover_poll(self) -> bool:
        """A standby's quick try for the lease (between heartbeats): True once this controller
        leads. Does nothing while it leads or is stopping."""
        if self.lease.epoch is not None or self.stopping.is_set():
            return self.lease.epoch is not None
        return self.heartbeat()

    def _renew_lease_now(self) -> None:
        """Right after a promotion: take the lease now rather than at the next heartbeat."""
        import datetime as dt

        job = self.scheduler.get_job("lease") if self.scheduler is not None else None
        if job is not None:
            job.modify(next_run_time=dt.datetime.now(dt.UTC))
        else:
            self.heartbeat()

    def run_once(self) -> None:
        """Every pass once, in order (tests and `python -m controller --once`)."""
        if self.heartbeat():
            self.ingest_pass()
            self.reputation_pass()  # before a dispatch: a tenant over its thresholds sends nothing more
            self.advance_pass()
            self.callbacks_pass()
            self.privacy_pass()

    # -- daemon ---------------------------------------------------------------------
    def start(self) -> None:
        s = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 30})
        interval = self.settings.controller_interval_seconds
        s.add_job(self.heartbeat, "interval", seconds=max(0.5, self.settings.lease_seconds / 3), id="lease")
        s.add_job(self.takeover_poll, "interval", seconds=min(LEASE_TAKEOVER_POLL_SECONDS, self.settings.lease_seconds / 3),
                  id="takeover")
        s.add_job(self.ingest_pass, "interval", seconds=interval, id="ingest")
        s.add_job(self.advance_pass, "interval", seconds=interval, id="advance")
        s.add_job(self.callbacks_pass, "interval", seconds=interval, id="callbacks")
        s.add_job(self.privacy_pass, "interval", seconds=interval, id="privacy")
        s.add_job(self.reputation_pass, "interval", seconds=10, id="reputation")
        s.add_job(self.metrics_pass, "interval", seconds=10, id="metrics")
        s.add_job(self.replication_pass, "interval", seconds=10, id="replication")
        if self.failover is not None:
            s.add_job(self.failover_pass, "interval", seconds=self.settings.failover_check_interval_seconds,
                      id="failover")
        s.add_listener(self._on_job, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self.heartbeat()
        self.metrics_pass()  # metrics are meaningful from the first scrape
        s.start()
        self.scheduler = s
        self._stream = threading.Thread(target=self._watch_stream, name="stream-watch", daemon=True)
        self._stream.start()
        log.info("controller started", region=self.region, holder=self.lease.holder)

    def _on_job(self, event: Any) -> None:
        import datetime as dt

        lag = (dt.datetime.now(dt.UTC) - event.scheduled_run_time).total_seconds()
        SCHEDULER_LAG.labels(event.job_id).set(max(0.0, lag))

    def nudge(self) -> None:
        """Run the advance and ingest passes now (a stream record said something changed)."""
        if self.scheduler is None:
            return
        import datetime as dt

        for job_id in ("ingest", "advance", "callbacks"):
            job = self.scheduler.get_job(job_id)
            if job is not None:
                job.modify(next_run_time=dt.datetime.now(dt.UTC))

    def _watch_stream(self) -> None:
        """Follow the table stream; any record only makes the passes run sooner. An error
        (throttling, an expired iterator) restarts the follower after a pause: the periodic passes
        keep the controller correct meanwhile."""
        with acting_as("controller"):
            while not self.stopping.is_set():
                if self._follow_stream():
                    return
                self.stopping.wait(STREAM_RESTART_SECONDS)

    def _follow_stream(self) -> bool:
        """True when the follower ended normally (stopping, or the table has no stream)."""
        try:
            for records in follow_table_stream(self.deps.clients["dynamodb"], self.deps.clients["dynamodbstreams"],
                                               self.settings.table_name, self.stopping):
                changed = any(r["dynamodb"].get("Keys", {}).get(schema.SK, {}).get("S") == schema.METADATA
                              and r["dynamodb"]["Keys"][schema.PK]["S"].startswith(schema.TRANSACTION_PARTITION_PREFIX)
                              for r in records)
                if changed and self.lease.epoch is not None:
                    self.nudge()
                    self.stopping.wait(0.5)  # at most two nudges a second
            return True
        except Exception as exc:
            PASS_ERRORS.labels("stream", type(exc).__name__).inc()
            log.warning("stream watch failed, restarting", error=str(exc)[:300], retry_in=STREAM_RESTART_SECONDS)
            return False

    def stop(self) -> None:
        """Finish or abandon the current item (ingest resumes from its checkpoint), release the lease."""
        self.stopping.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
        with acting_as("controller"):
            self.lease.release()
        log.info("controller stopped", region=self.region)
