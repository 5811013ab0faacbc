"""The controller: leader-gated, level-triggered passes on APScheduler, nudged by the table stream."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler

from controller.lease import Lease
from core.adapters.streams import follow_table_stream
from core.bootstrap import Deps
from core.domain.errors import DomainError, Fenced, StaleWrite
from core.domain.statuses import TransactionStatus as T
from core.observability import (
    CALLBACK_BACKLOG,
    CAMPAIGNS,
    PASS_ERRORS,
    PASS_SECONDS,
    QUEUE_DEPTH,
    SCHEDULER_LAG,
    acting_as,
    log,
)
from core.services import callbacks, reconcile
from core.services.ingest import Abandoned, ingest_transaction


class Controller:
    def __init__(self, deps: Deps, holder: str, region: str | None = None):
        self.deps = deps
        self.settings = deps.settings
        self.region = region or deps.settings.region
        peer = deps.settings.dr_region if self.region == deps.settings.region else deps.settings.region
        self.lease = Lease(deps.store.table, self.region, holder, deps.settings.lease_seconds, deps.clock, peer)
        self.stopping = threading.Event()
        self.scheduler: BackgroundScheduler | None = None
        self._stream: threading.Thread | None = None
        self.recounts = reconcile.RecountThrottle(deps.settings.recount_interval_seconds)

    # -- passes (each callable on its own, so tests drive them without the scheduler) ----
    @property
    def store(self) -> Any:
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

    def _each(self, job: str, txs: list[Any], fn: Any) -> None:
        for tx in txs:
            if self.stopping.is_set():
                return
            try:
                fn(tx)
            except StaleWrite:
                continue  # another writer moved it; the next pass decides again
            except Fenced:
                raise
            except (Abandoned, DomainError, Exception) as exc:  # one bad item never stops the pass
                PASS_ERRORS.labels(job, type(exc).__name__).inc()
                log.warning("item failed", job=job, transaction_id=tx.transaction_id, error=str(exc)[:300])

    def heartbeat(self) -> bool:
        with acting_as("controller"):
            return self.lease.acquire_or_renew()

    def ingest_pass(self) -> None:
        def run() -> None:
            store = self.store
            todo = [t for t in store.active_transactions() if t.status in (T.ACCEPT, T.PROCESSING)]
            self._each("ingest", todo, lambda tx: ingest_transaction(
                tx, store=store, blobs=self.deps.blobs, settings=self.settings, clock=self.deps.clock,
                should_stop=self.stopping.is_set))
        self._timed("ingest", run)

    def advance_pass(self) -> None:
        def run() -> None:
            store = self.store
            reconcile.release_due(store=store, clock=self.deps.clock)
            active = [t for t in store.active_transactions() if t.status not in (T.ACCEPT, T.PROCESSING)]
            self._each("advance", active, lambda tx: reconcile.advance(
                tx, store=store, queue=self.deps.send_queue, clock=self.deps.clock, settings=self.settings,
                throttle=self.recounts))
            reconcile.guard_reputation(
                [store.get_transaction(t.transaction_id) for t in active
                 if t.status in (T.READY_TO_SEND, T.SENT, T.SCHEDULED)],
                store=store, clock=self.deps.clock, settings=self.settings)
        self._timed("advance", run)

    def callbacks_pass(self) -> None:
        self._timed("callbacks", lambda: callbacks.deliver_due(
            store=self.store, http=self.deps.http, secrets=self.deps.secrets, clock=self.deps.clock,
            timeout=self.settings.callback_timeout_seconds))

    def metrics_pass(self) -> None:
        def run() -> None:
            counts = Counter(t.status.value for t in self.deps.store.active_transactions())
            for status in T:
                CAMPAIGNS.labels(status.value).set(counts.get(status.value, 0))
            for name, q in (("send", self.deps.send_queue), ("ses_events", self.deps.events_queue)):
                for state, n in q.depth().items():
                    QUEUE_DEPTH.labels(name, state).set(n)
            CALLBACK_BACKLOG.set(len(self.deps.store.due("CALLBACK", self.deps.clock.now(), limit=1000)))
        self._timed("metrics", run)

    def run_once(self) -> None:
        """Every pass once, in order (tests and `python -m controller --once`)."""
        if self.heartbeat():
            self.ingest_pass()
            self.advance_pass()
            self.callbacks_pass()

    # -- daemon ---------------------------------------------------------------------
    def start(self) -> None:
        s = BackgroundScheduler(job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 30})
        interval = self.settings.controller_interval_seconds
        s.add_job(self.heartbeat, "interval", seconds=max(0.5, self.settings.lease_seconds / 3), id="lease")
        s.add_job(self.ingest_pass, "interval", seconds=interval, id="ingest")
        s.add_job(self.advance_pass, "interval", seconds=interval, id="advance")
        s.add_job(self.callbacks_pass, "interval", seconds=interval, id="callbacks")
        s.add_job(self.metrics_pass, "interval", seconds=10, id="metrics")
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
        """Follow the table stream; any record only makes the passes run sooner."""
        with acting_as("controller"):
            self._follow_stream()

    def _follow_stream(self) -> None:
        try:
            for records in follow_table_stream(self.deps.clients["dynamodb"], self.deps.clients["dynamodbstreams"],
                                               self.settings.table_name, self.stopping):
                changed = any(r["dynamodb"].get("Keys", {}).get("SK", {}).get("S") == "METADATA"
                              and r["dynamodb"]["Keys"]["PK"]["S"].startswith("TRANSACTION#") for r in records)
                if changed and self.lease.epoch is not None:
                    self.nudge()
                    self.stopping.wait(0.5)  # at most two nudges a second
        except Exception as exc:  # the periodic passes keep the controller correct without it
            log.warning("stream watch stopped", error=str(exc)[:300])

    def stop(self) -> None:
        """Finish or abandon the current item (ingest resumes from its checkpoint), release the lease."""
        self.stopping.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
        with acting_as("controller"):
            self.lease.release()
        log.info("controller stopped", region=self.region)
