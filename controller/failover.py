"""Automatic failover: the DR region's controller promotes its region when the primary is gone.

It watches the active (primary) region through signals that fail independently of each other:

* ``heartbeat``: the primary leader's lease item as replicated into this region (the controller
  renews it every lease/3 seconds); bad once it has expired here;
* ``route53``: the Route 53 health check of the primary's API, as its global checkers see it;
* ``api``: the primary API's health endpoint, called from here;
* ``ses``: SES sends in the primary region; bad when campaigns are sending (per the replicated
  state) and the primary's SES accepted nothing for a window, unknown while nothing is sending.

A signal that cannot be read is *unknown*, never bad. DR is promoted only when at least
``failover_quorum`` (≥ 2) signals have been bad without a break for ``failover_grace_seconds``: a
cut link between the regions (the heartbeat stops replicating) or one failing probe never
promotes, and a signal that recovers for one pass starts the grace again (flapping). A hold
(``runbooks/failover.py --hold-automation``, a replicated item) stops the decider; the grace starts
again after a release.

Promotion runs the failover runbook's steps (``runbooks.failover.fail_over``: the same checks,
the active-region flag, Route 53, the new leader), with the primary treated as unreachable. Before
acting the decider claims a durable decision record (``PLATFORM/FAILOVER#<primary>#<epoch>``: one
per primary leadership, so two DR controllers never both act) holding why it decided; it then
logs, counts ``emailplatform_failover_promotions_total`` and publishes the decision to the alarms
topic. Failback is never automatic: only the region the flag names can be watched, and the
automation is enabled in the DR region's controller only.

The primary cannot keep sending once DR may: its senders fence themselves
(core/services/regions.py) and in-doubt chunks wait for SES evidence (core/services/sending.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from core import schema
from core.domain.errors import StaleWrite
from core.domain.models import iso, parse_iso
from core.observability import log

PROMOTIONS = Counter("emailplatform_failover_promotions_total", "Automatic failovers decided by this controller",
                     ["region", "outcome"])
SIGNAL_BAD = Gauge("emailplatform_failover_signal_bad", "1 while a failover signal says the watched region is down",
                   ["region", "signal"])
QUORUM_BAD_SINCE = Gauge("emailplatform_failover_quorum_bad_since_timestamp_seconds",
                         "Since when a quorum of failover signals has been bad (0: not now)", ["region"])
HELD = Gauge("emailplatform_failover_held", "1 while automatic failover is held by an operator", ["region"])

HOLD_KEY = {schema.PK: "PLATFORM", schema.SK: "FAILOVER_HOLD"}  # runbooks/regions.py writes it


def decision_key(watched: str, epoch: int) -> dict[str, str]:
    return {schema.PK: "PLATFORM", schema.SK: f"FAILOVER#{watched}#{epoch:012d}"}


# -- the decision (no I/O) ------------------------------------------------------------------
class Health(StrEnum):
    OK = "ok"
    BAD = "bad"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Observation:
    signal: str
    health: Health
    detail: str = ""


class Action(StrEnum):
    STANDBY = "standby"  # nothing to watch (this region is active, or there is no flag)
    WATCH = "watch"  # fewer than a quorum of signals bad
    SUSPECT = "suspect"  # a quorum bad, the grace period not over yet
    HELD = "held"  # an operator holds the automation
    PROMOTE = "promote"


@dataclass(frozen=True)
class Verdict:
    action: Action
    bad: tuple[str, ...] = ()
    bad_since: datetime | None = None
    reason: str = ""
    observations: tuple[Observation, ...] = field(default_factory=tuple)


class FailoverDecider:
    """Quorum over a grace period, level-triggered: call ``decide`` every pass with fresh
    observations. Its only state is since when the quorum has been bad; a restart forgets it (the
    grace starts again: later, never wrongly)."""

    def __init__(self, quorum: int, grace_seconds: float):
        if quorum < 2:
            raise ValueError("a failover quorum below 2 would promote on one signal")
        self.quorum, self.grace = quorum, timedelta(seconds=grace_seconds)
        self.bad_since: datetime | None = None

    def reset(self) -> None:
        self.bad_since = None

    def decide(self, observations: Iterable[Observation], now: datetime, hold: str | None = None) -> Verdict:
        obs = tuple(observations)
        bad = tuple(o.signal for o in obs if o.health is Health.BAD)
        if hold is not None:
            self.bad_since = None  # after a release the quorum must stay bad for a whole grace again
            return Verdict(Action.HELD, bad, None, f"held by an operator: {hold}", obs)
        if len(bad) < self.quorum:
            self.bad_since = None
            return Verdict(Action.WATCH, bad, None, f"{len(bad)} of {len(obs)} signals bad, quorum {self.quorum}", obs)
        if self.bad_since is None:
            self.bad_since = now
        waited = now - self.bad_since
        if waited < self.grace:
            return Verdict(Action.SUSPECT, bad, self.bad_since,
                           f"{len(bad)} signals bad for {waited.total_seconds():.0f}s of a "
                           f"{self.grace.total_seconds():.0f}s grace", obs)
        return Verdict(Action.PROMOTE, bad, self.bad_since,
                       f"{', '.join(bad)} bad for {waited.total_seconds():.0f}s "
                       f"(quorum {self.quorum}, grace {self.grace.total_seconds():.0f}s)", obs)


# -- signals ---------------------------------------------------------------------------------
class Signal(Protocol):
    name: str

    def observe(self, now: datetime) -> Observation: ...


class ReplicatedHeartbeat:
    """The watched region's leader lease, as replicated into this region's table."""

    name = "heartbeat"

    def __init__(self, read: Callable[[dict[str, str]], dict[str, Any] | None], watched: str):
        self.read, self.watched = read, watched
        self.epoch = 0  # the watched leader's fencing token, last seen

    def observe(self, now: datetime) -> Observation:
        lease = self.read(schema.lease_key(self.watched))
        if not lease or not lease.get("expires_at"):
            return Observation(self.name, Health.BAD, f"no controller lease of {self.watched} here")
        self.epoch = int(lease.get("epoch", 0))
        expires = parse_iso(lease["expires_at"])
        if expires <= now:
            return Observation(self.name, Health.BAD, f"lease of {lease.get('holder')} (epoch {self.epoch}) "
                                                      f"expired {(now - expires).total_seconds():.0f}s ago")
        return Observation(self.name, Health.OK, f"held by {lease.get('holder')} until {lease['expires_at']}")


class HttpHealth:
    """The watched region's API health endpoint: 200 is ok; no answer or a 5xx is bad."""

    name = "api"

    def __init__(self, url: str, get: Callable[..., Any] | None = None, timeout: float = 3.0):
        import requests

        self.url, self.timeout = url, timeout
        self.get = get or requests.get

    def observe(self, now: datetime) -> Observation:
        try:
            status = self.get(self.url, timeout=self.timeout).status_code
        except Exception as exc:  # refused, reset, timed out: the endpoint is not answering
            return Observation(self.name, Health.BAD, f"{type(exc).__name__}")
        if status >= 500:
            return Observation(self.name, Health.BAD, f"HTTP {status}")
        return Observation(self.name, Health.OK, f"HTTP {status}")


class Route53Health:
    """What Route 53's health checkers see of the watched API. Route 53 calls an endpoint healthy
    while more than 18 % of its checkers do; our own override (disabled + inverted during a
    failover) is not what the checkers report, so the observations are read, not the status."""

    name = "route53"

    def __init__(self, route53: Any, health_check_id: str):
        self.route53, self.health_check_id = route53, health_check_id

    def observe(self, now: datetime) -> Observation:
        try:
            checkers = self.route53.get_health_check_status(HealthCheckId=self.health_check_id)[
                "HealthCheckObservations"]
        except Exception as exc:
            return Observation(self.name, Health.UNKNOWN, f"{type(exc).__name__}")
        if not checkers:
            return Observation(self.name, Health.UNKNOWN, "no checker observations")
        ok = sum(1 for c in checkers if c.get("StatusReport", {}).get("Status", "").startswith("Success"))
        health = Health.OK if ok / len(checkers) > 0.18 else Health.BAD
        return Observation(self.name, health, f"{ok} of {len(checkers)} checkers healthy")


class SesSending:
    """SES sends in the watched region. ``sends(since, now)``: messages SES accepted there since
    ``since`` (None: unknown); ``sending()``: whether campaigns are sending per the replicated state."""

    name = "ses"

    def __init__(self, sends: Callable[[datetime, datetime], int | None], sending: Callable[[], bool],
                 window_seconds: float):
        self.sends, self.sending, self.window = sends, sending, timedelta(seconds=window_seconds)

    def observe(self, now: datetime) -> Observation:
        try:
            n = self.sends(now - self.window, now)
            busy = self.sending()
        except Exception as exc:
            return Observation(self.name, Health.UNKNOWN, f"{type(exc).__name__}")
        if n is None:
            return Observation(self.name, Health.UNKNOWN, "no SES figures for a whole window yet")
        if n > 0:
            return Observation(self.name, Health.OK, f"{n} sends in {self.window.total_seconds():.0f}s")
        if not busy:
            return Observation(self.name, Health.UNKNOWN, "no campaign sending: SES silence says nothing")
        return Observation(self.name, Health.BAD, f"no SES send for {self.window.total_seconds():.0f}s "
                                                  f"while campaigns are sending")


class SendStatisticsCounter:
    """Sends since a time from SES ``GetSendStatistics`` (the sum of its delivery attempts), sampled
    on every call: what the embedded SES (moto) offers. None until it has a sample older than the
    window's start."""

    def __init__(self, ses: Any):
        self.ses = ses
        self.samples: list[tuple[datetime, int]] = []

    def __call__(self, since: datetime, now: datetime) -> int | None:
        points = self.ses.get_send_statistics().get("SendDataPoints", [])
        count = sum(int(p.get("DeliveryAttempts", 0)) for p in points)
        self.samples.append((now, count))
        older = [s for s in self.samples if s[0] <= since]
        if older:  # keep the newest sample at or before the window's start, and everything after
            self.samples = [older[-1], *(s for s in self.samples if s[0] > since)]
            return count - older[-1][1]
        return None


class CloudWatchSends:
    """Sends since a time from the ``AWS/SES`` ``Send`` metric in the watched region (per minute,
    published a minute or two late: keep the window at five minutes or more)."""

    def __init__(self, cloudwatch: Any):
        self.cloudwatch = cloudwatch

    def __call__(self, since: datetime, now: datetime) -> int | None:
        points = self.cloudwatch.get_metric_statistics(Namespace="AWS/SES", MetricName="Send", StartTime=since,
                                                       EndTime=now, Period=60, Statistics=["Sum"])["Datapoints"]
        return int(sum(p["Sum"] for p in points))


# -- the job -----------------------------------------------------------------------------------
@dataclass
class Promotion:
    """What promoting did: the runbook's steps, or the error that stopped it."""

    ok: bool
    steps: list[dict[str, Any]]
    error: str | None = None


class FailoverWatch:
    """One decider pass per call (``run_once``); the controller schedules it. Idempotent: a pass
    after a promotion finds this region active and stands by."""

    def __init__(self, *, table: Any, region: str, watched: str, signals: list[Signal], decider: FailoverDecider,
                 promote: Callable[[Verdict], Promotion], notify: Callable[[str, dict[str, Any]], None],
                 clock: Any, heartbeat: ReplicatedHeartbeat | None = None):
        if len(signals) < decider.quorum:
            raise ValueError(f"failover quorum {decider.quorum} exceeds the {len(signals)} configured signals")
        self.table, self.region, self.watched = table, region, watched
        self.signals, self.decider, self.promote, self.notify, self.clock = signals, decider, promote, notify, clock
        self.heartbeat = heartbeat or next((s for s in signals if isinstance(s, ReplicatedHeartbeat)), None)
        self.last: Verdict | None = None

    def run_once(self) -> Verdict:
        now = self.clock.now()
        flag = self.table.get(schema.ACTIVE_REGION_KEY)
        if flag is None or flag.get("region") != self.watched:
            self.decider.reset()
            return self._seen(Verdict(Action.STANDBY, reason=f"active region: {flag.get('region') if flag else None}"))
        hold = self.table.get(HOLD_KEY)
        HELD.labels(self.region).set(1 if hold else 0)
        observations = [self._observe(s, now) for s in self.signals]
        verdict = self.decider.decide(observations, now, hold.get("reason", "held") if hold else None)
        for o in observations:
            SIGNAL_BAD.labels(self.region, o.signal).set(1 if o.health is Health.BAD else 0)
        QUORUM_BAD_SINCE.labels(self.region).set(verdict.bad_since.timestamp() if verdict.bad_since else 0)
        self._seen(verdict)
        if verdict.action is Action.PROMOTE:
            self._promote(verdict, now)
        return verdict

    @staticmethod
    def _observe(signal: Signal, now: datetime) -> Observation:
        try:
            return signal.observe(now)
        except Exception as exc:  # a probe's own failure says nothing about the watched region
            return Observation(signal.name, Health.UNKNOWN, f"probe failed: {type(exc).__name__}")

    def _seen(self, verdict: Verdict) -> Verdict:
        """Log a verdict when it changes (not every pass)."""
        before = self.last
        self.last = verdict
        if before is not None and (before.action, before.bad) == (verdict.action, verdict.bad):
            return verdict
        fields = dict(region=self.region, watched=self.watched, action=verdict.action.value, bad=list(verdict.bad),
                      why=verdict.reason, signals={o.signal: f"{o.health.value}: {o.detail}" for o in verdict.observations})
        if verdict.action is Action.SUSPECT:
            log.warning("failover signals bad", **fields)
        elif verdict.action is Action.HELD and verdict.bad:
            log.warning("automatic failover held", **fields)
        else:
            log.info("failover watch", **fields)
        return verdict

    def _claim(self, verdict: Verdict, now: datetime) -> dict[str, str] | None:
        """The durable decision record, written before acting; None when another controller of
        this region already acts on this primary leadership's failure."""
        epoch = self.heartbeat.epoch if self.heartbeat is not None else 0
        key = decision_key(self.watched, epoch)
        record = {**key, "decided_at": iso(now), "watched_region": self.watched, "promoted_region": self.region,
                  "quorum": self.decider.quorum, "grace_seconds": self.decider.grace.total_seconds(),
                  "bad_since": iso(verdict.bad_since) if verdict.bad_since else None, "why": verdict.reason,
                  "signals": [asdict(o) | {"health": o.health.value} for o in verdict.observations],
                  "outcome": "in_progress"}
        if self.table.put_new(record):
            return key
        from core.adapters.dynamodb import Update

        try:  # an earlier attempt that failed may be retried
            self.table.update(Update(key, set={k: v for k, v in record.items() if k not in key},
                                     condition="outcome = :failed", values={":failed": "failed"}))
            return key
        except StaleWrite:
            log.info("automatic failover already decided", region=self.region, watched=self.watched, epoch=epoch)
            return None

    def _promote(self, verdict: Verdict, now: datetime) -> None:
        key = self._claim(verdict, now)
        if key is None:
            self.decider.reset()
            return
        log.error("automatic failover: promoting region", region=self.region, watched=self.watched,
                  bad=list(verdict.bad), bad_since=iso(verdict.bad_since) if verdict.bad_since else None,
                  why=verdict.reason)
        started = time.monotonic()
        try:
            result = self.promote(verdict)
        except Exception as exc:  # noqa: BLE001 - recorded, alarmed; the next grace retries
            result = Promotion(False, [], f"{type(exc).__name__}: {exc}"[:500])
        outcome = "promoted" if result.ok else "failed"
        from core.adapters.dynamodb import Update

        try:
            self.table.update(Update(key, set={"outcome": outcome, "steps": json.dumps(result.steps, default=str),
                                               "error": result.error, "finished_at": iso(self.clock.now()),
                                               "seconds": round(time.monotonic() - started, 3)}))
        except Exception as exc:  # the decision stands; the record is for people
            log.warning("failover decision record not updated", error=str(exc)[:300])
        PROMOTIONS.labels(self.region, outcome).inc()
        detail = {"event": f"failover.{outcome}", "region": self.region, "watched_region": self.watched,
                  "why": verdict.reason, "bad_signals": list(verdict.bad), "decided_at": iso(now),
                  "bad_since": iso(verdict.bad_since) if verdict.bad_since else None, "error": result.error,
                  "record": key[schema.SK]}
        try:
            self.notify(f"failover.{outcome}", detail)
        except Exception as exc:
            log.warning("failover event not published", error=str(exc)[:300])
        if result.ok:
            log.error("automatic failover done", **{k: v for k, v in detail.items() if k != "event"})
        else:
            log.error("automatic failover failed", **{k: v for k, v in detail.items() if k != "event"})
            self.decider.reset()  # a whole grace before the next attempt


def sns_notifier(sns: Any, topic_arn: str | None) -> Callable[[str, dict[str, Any]], None]:
    """Publish decisions to the alarms topic (the platform event); without a topic, log only."""
    def notify(kind: str, detail: dict[str, Any]) -> None:
        log.warning("platform event", kind=kind, **{k: v for k, v in detail.items() if k != "event"})
        if topic_arn:
            sns.publish(TopicArn=topic_arn, Subject=f"emailplatform {kind}"[:100], Message=json.dumps(detail))

    return notify


def build_watch(deps: Any, region: str, watched: str, after_switch: Callable[[], Any]) -> FailoverWatch:
    """The DR controller's watch with the signals its settings allow: the heartbeat always; the
    primary's API health with ``failover_peer_health_url``; Route 53 with
    ``failover_health_check_id``; SES always (CloudWatch on AWS, send statistics on the emulator)."""
    from botocore.config import Config

    from core.adapters.aws import session
    from runbooks.common import Runbook, RunbookFailed
    from runbooks.failover import fail_over

    s = deps.settings
    quick = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 1})

    def client(_: Any, service: str, in_region: str | None = None) -> Any:
        # probes of a region that may be gone: one short attempt, never minutes of retries
        return session(s, in_region).client(service, endpoint_url=s.aws_endpoint_url, config=quick)

    table = deps.store.table
    heartbeat = ReplicatedHeartbeat(table.get, watched)
    signals: list[Signal] = [heartbeat]
    if s.failover_health_check_id:
        signals.append(Route53Health(client(s, "route53"), s.failover_health_check_id))
    if s.failover_peer_health_url:
        signals.append(HttpHealth(s.failover_peer_health_url))
    sends = (SendStatisticsCounter(client(s, "ses", watched)) if s.aws_endpoint_url
             else CloudWatchSends(client(s, "cloudwatch", watched)))

    def sending() -> bool:
        """A campaign should be going out: READY_TO_SEND and its tenant not paused (a kill switch
        or an automatic SES hold silences SES on purpose)."""
        return any(t.status.value == "READY_TO_SEND" and deps.store.sending_paused(t.tenant_id) is None
                   for t in deps.store.active_transactions())

    signals.append(SesSending(sends, sending, s.failover_ses_window_seconds))

    def promote(verdict: Verdict) -> Promotion:
        lines: list[str] = []
        book = Runbook("automatic-failover", execute=True, out=lines.append)
        try:
            fail_over(book, s, source=watched, target=region, target_api=s.failover_api_url or "",
                      health_check_id=s.failover_health_check_id, source_reachable=False,
                      wait_seconds=max(60.0, 4 * s.lease_seconds), after_switch=after_switch)
        except RunbookFailed as exc:  # a SystemExit: never let it end the scheduler's thread
            return Promotion(False, book.steps, str(exc))
        return Promotion(True, book.steps)

    decider = FailoverDecider(s.failover_quorum, s.failover_grace_seconds)
    notify = sns_notifier(client(s, "sns") if s.failover_event_topic_arn else None, s.failover_event_topic_arn)
    return FailoverWatch(table=table, region=region, watched=watched, signals=signals, decider=decider,
                         promote=promote, notify=notify, clock=deps.clock, heartbeat=heartbeat)
