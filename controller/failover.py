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
topic. Its metrics are defined in core/observability.py; the alerts on them (a promotion, signals
bad below the quorum for long, a hold left in place) are in ops/prometheus/rules.yml and, on AWS,
CloudWatch alarms (infra/components/operations.py). Failback is never automatic: only the region
the flag names can be watched, and the automation is enabled in the DR region's controller only.

The primary cannot keep sending once DR may: its senders fence themselves
(core/services/regions.py) and in-doubt chunks wait for SES evidence (core/services/sending.py).

**Both regions sending (replication lag).** The primary's senders fence on the flag and lease *in
the primary's replica*: they stop only once DR's flag write has replicated there. DR decides on
*its* replica, where a lagging stream makes a live primary's lease look expired. Quorum alone is
therefore not enough (primary API down, controller and senders alive, replication lagging by more
than a lease: heartbeat, route53 and api all bad). A complete fix is impossible (CAP: during a
partition DR cannot tell a dead primary from a cut-off live one), so the decider is safe by default
with three layers, each of which holds without the others:

1. *SES veto*: the primary region's SES, read from DR through CloudWatch in the primary's region (a
   path independent of DynamoDB replication), is the one signal that shows the primary's senders
   directly. While it shows sends after the quorum went bad, or sends in its window while those
   after cannot be known yet (CloudWatch publishes a minute a few minutes late) or cannot be read,
   the decider never promotes, whatever the quorum says (``Action.VETOED``), and the grace starts
   again after. Sends known to be all from before (a crash) do not veto.
2. *Wait for positive evidence after the switch*: an automatic promotion writes the flag in DR only,
   with ``awaiting_quiet_of`` (core/services/regions.py). Until the primary's SES has accepted
   nothing for a whole window that began after that write, DR's controller takes no lease and its
   senders claim nothing; ``FailoverWatch`` lifts the wait (a conditional update on the same
   ``awaiting_since``). An unreadable SES signal never lifts it: the operator's
   ``--confirm-source-stopped`` does, after checking.
3. *Region-distinct fencing tokens* (controller/lease.py): two regions electing on lagging replicas
   can never take the same epoch, so ``fence <= epoch`` always orders their writes.

Residual risk (README, runbooks/failover.md): a primary that is alive, cut off from DR's replica,
*and* idle for a whole SES window (nothing to send), which then starts sending a batch DR also
sends before the flag replicates to it. SES silence is evidence of not sending, not of being fenced.
The window must exceed the CloudWatch publishing delay (five minutes or more).

**Unfinished promotions.** The decision record carries ``outcome`` and ``decided_at`` (the claim's
time, which also names the attempt). A record ``in_progress`` for longer than ``stale_after`` (the
promotion's own bound: its checks time out and its lease wait is ``wait_seconds``) or ``failed`` is
re-claimed by a conditional update on the same ``outcome`` and ``decided_at``, so one controller
takes it over; the finishing update is conditional on that attempt, so a slow first attempt cannot
overwrite its successor. When the flag already names this region (the promotion died after the
switch: Route 53 or the alarms not moved yet) the watch re-runs the runbook's steps, each of which
checks whether it is done. ``emailplatform_failover_unfinished_since_timestamp_seconds`` says since
when a decision has been unfinished (alert ``EmailPlatformFailoverUnfinished``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import requests
from botocore.config import Config

from core import schema
from core.adapters.aws import session
from core.adapters.dynamodb import DynamoTable, Update
from core.bootstrap import Deps
from core.domain.errors import StaleWrite
from core.domain.models import iso, parse_iso
from core.observability import (
    FAILOVER_AWAITING_QUIET,
    FAILOVER_HELD,
    FAILOVER_OUTCOMES,
    FAILOVER_PROMOTIONS,
    FAILOVER_QUORUM,
    FAILOVER_QUORUM_BAD_SINCE,
    FAILOVER_SIGNAL_BAD,
    FAILOVER_SIGNALS_BAD,
    FAILOVER_UNFINISHED_SINCE,
    log,
)
from core.services.ports import Clock
from core.services.regions import AWAITING_QUIET_OF, AWAITING_SINCE, awaiting_quiet_of
from runbooks.common import Runbook, RunbookFailed
from runbooks.failover import fail_over

HOLD_KEY = schema.FAILOVER_HOLD_KEY  # runbooks/regions.py writes it


def decision_key(watched: str, epoch: int) -> dict[str, str]:
    return schema.failover_decision_key(watched, epoch)


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
    VETOED = "vetoed"  # a quorum bad, but the watched region's SES shows it sending: never promote
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
        self.bad_since: datetime | None = None  # the grace runs from here (a veto restarts it)
        self.quorum_since: datetime | None = None  # the quorum first seen bad (a veto keeps it)

    def reset(self) -> None:
        self.bad_since = self.quorum_since = None

    def decide(self, observations: Iterable[Observation], now: datetime, hold: str | None = None) -> Verdict:
        obs = tuple(observations)
        bad = tuple(o.signal for o in obs if o.health is Health.BAD)
        if hold is not None:
            self.reset()  # after a release the quorum must stay bad for a whole grace again
            return Verdict(Action.HELD, bad, None, f"held by an operator: {hold}", obs)
        if len(bad) < self.quorum:
            self.reset()
            return Verdict(Action.WATCH, bad, None, f"{len(bad)} of {len(obs)} signals bad, quorum {self.quorum}", obs)
        if self.quorum_since is None:
            self.quorum_since = now
        # OK from SES means sends since the quorum went bad (``SesSending.observe``'s ``since``);
        # sends from before it (a crash ends a sending region) say nothing about it now
        sending = next((o for o in obs if o.signal == SesSending.name and o.health is Health.OK), None)
        if sending is not None:  # the watched region is observably sending: it is alive, whatever else says
            self.bad_since = None
            return Verdict(Action.VETOED, bad, None, f"{', '.join(bad)} bad but the watched region's SES is "
                                                     f"sending ({sending.detail}): no promotion", obs)
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
        # sends strictly after a time, None while the source cannot tell yet (``after`` of the source)
        self.after: Callable[[datetime, datetime], int | None] = getattr(sends, "after", sends)

    def observe(self, now: datetime, since: datetime | None = None) -> Observation:
        """BAD after a window without sends while campaigns are sending; OK (alive: a veto) only for
        sends after ``since``, when the other signals went bad: the sends just before a crash
        would otherwise hold off the promotion for a whole window after it. While the source
        cannot tell the sends after ``since`` yet (CloudWatch publishes its minutes late) or the
        question fails, any send in the window still vetoes."""
        try:
            n = self.sends(now - self.window, now)
            busy = self.sending()
        except Exception as exc:
            return Observation(self.name, Health.UNKNOWN, f"{type(exc).__name__}")
        recent = n
        if n and since is not None and since > now - self.window:
            try:
                known = self.after(since, now)
            except Exception:  # noqa: BLE001 - unknown: the window's sends still veto
                known = None
            recent = n if known is None else known
        if n is None:
            return Observation(self.name, Health.UNKNOWN, "no SES figures for a whole window yet")
        if n > 0 and not recent:
            return Observation(self.name, Health.UNKNOWN, f"{n} sends in {self.window.total_seconds():.0f}s, "
                                                          f"none since the other signals went bad")
        if n > 0:
            return Observation(self.name, Health.OK, f"{recent} sends since the other signals went bad"
                               if recent != n else f"{n} sends in {self.window.total_seconds():.0f}s")
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
        self.span = timedelta(0)  # the longest stretch asked for: samples within it are kept

    def __call__(self, since: datetime, now: datetime) -> int | None:
        points = self.ses.get_send_statistics().get("SendDataPoints", [])
        count = sum(int(p.get("DeliveryAttempts", 0)) for p in points)
        self.samples.append((now, count))
        self.span = max(self.span, now - since)
        kept = [s for s in self.samples if s[0] <= now - self.span]
        self.samples = [*kept[-1:], *(s for s in self.samples if s[0] > now - self.span)]
        older = [s for s in self.samples if s[0] <= since]
        return count - older[-1][1] if older else None


class CloudWatchSends:
    """Sends since a time from the ``AWS/SES`` ``Send`` metric in the watched region (per minute,
    published a minute or two late: keep the window at five minutes or more)."""

    published_within = timedelta(minutes=3)  # a minute's sum appears a minute or two after it ends

    def __init__(self, cloudwatch: Any):
        self.cloudwatch = cloudwatch

    def __call__(self, since: datetime, now: datetime) -> int | None:
        """Sends from ``since``'s minute on (CloudWatch rounds a start down): may count a little
        before ``since``, never less, which is the safe side for the silence and quiet checks."""
        return self._sum(since, now)

    def after(self, since: datetime, now: datetime) -> int | None:
        """Sends in the whole minutes after ``since`` (the minute it falls in may hold earlier
        sends), or None until the first of them has surely been published."""
        start = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if now < start + timedelta(minutes=1) + self.published_within:
            return None
        return self._sum(start, now)

    def _sum(self, start: datetime, now: datetime) -> int:
        points = self.cloudwatch.get_metric_statistics(Namespace="AWS/SES", MetricName="Send", StartTime=start,
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
    after a promotion finds this region active, finishes an unfinished promotion, lets this
    region's senders start once the watched region is seen quiet, and otherwise stands by.

    ``stale_after_seconds`` bounds a promotion: a decision ``in_progress`` for longer was killed
    or hung and is taken over (keep it above the runbook's own bound, ``wait_seconds`` plus its
    checks' timeouts)."""

    def __init__(self, *, table: DynamoTable, region: str, watched: str, signals: list[Signal], decider: FailoverDecider,
                 promote: Callable[[Verdict], Promotion], notify: Callable[[str, dict[str, Any]], None],
                 clock: Clock, heartbeat: ReplicatedHeartbeat | None = None, stale_after_seconds: float = 600.0):
        if len(signals) < decider.quorum:
            raise ValueError(f"failover quorum {decider.quorum} exceeds the {len(signals)} configured signals")
        self.table, self.region, self.watched = table, region, watched
        self.signals, self.decider, self.promote, self.notify, self.clock = signals, decider, promote, notify, clock
        self.heartbeat = heartbeat or next((s for s in signals if isinstance(s, ReplicatedHeartbeat)), None)
        self.ses = next((s for s in signals if isinstance(s, SesSending)), None)  # evidence the watched stopped
        self.stale_after = timedelta(seconds=stale_after_seconds)
        self.last: Verdict | None = None
        # the alert rules' series exist from the start: a promotion is an increase from 0
        for outcome in FAILOVER_OUTCOMES:
            FAILOVER_PROMOTIONS.labels(region, outcome)
        FAILOVER_QUORUM.labels(region).set(decider.quorum)
        FAILOVER_UNFINISHED_SINCE.labels(region).set(0)
        FAILOVER_AWAITING_QUIET.labels(region).set(0)
        self._publish(Verdict(Action.STANDBY), hold=False)

    def run_once(self) -> Verdict:
        now = self.clock.now()
        flag = self.table.get(schema.ACTIVE_REGION_KEY)
        if flag is None or flag.get("region") != self.watched:
            self.decider.reset()
            verdict = Verdict(Action.STANDBY, reason=f"active region: {flag.get('region') if flag else None}")
            self._publish(verdict, hold=False)  # nothing watched: no stale "bad" or "held" after a failover
            if flag is not None and flag.get("region") == self.region:
                self._after_switch(flag, now)
            else:
                FAILOVER_AWAITING_QUIET.labels(self.region).set(0)
            return self._seen(verdict)
        FAILOVER_AWAITING_QUIET.labels(self.region).set(0)
        hold = self.table.get(HOLD_KEY)
        observations = [self._observe(s, now, self.decider.quorum_since) for s in self.signals]
        verdict = self.decider.decide(observations, now, hold.get("reason", "held") if hold else None)
        self._publish(verdict, hold=hold is not None)
        self._seen(verdict)
        self._track(self.table.get(self._decision_key()))
        if verdict.action is Action.PROMOTE:
            self._promote(verdict, now)
        return verdict

    def _publish(self, verdict: Verdict, hold: bool) -> None:
        """The gauges the failover alert rules read (ops/prometheus/rules.yml, README "What to watch")."""
        FAILOVER_HELD.labels(self.region).set(1 if hold else 0)
        bad = set(verdict.bad)
        for s in self.signals:
            FAILOVER_SIGNAL_BAD.labels(self.region, s.name).set(1 if s.name in bad else 0)
        FAILOVER_SIGNALS_BAD.labels(self.region).set(len(bad))
        FAILOVER_QUORUM_BAD_SINCE.labels(self.region).set(verdict.bad_since.timestamp() if verdict.bad_since else 0)

    @staticmethod
    def _observe(signal: Signal, now: datetime, quorum_since: datetime | None) -> Observation:
        try:
            return signal.observe(now, quorum_since) if isinstance(signal, SesSending) else signal.observe(now)
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

    # -- after the flag names this region -------------------------------------------------
    def _after_switch(self, flag: dict[str, Any], now: datetime) -> None:
        """Finish a promotion that stopped after the switch, then let the senders start once the
        watched region is seen quiet. A hold stops the first, never the second (it only ever
        waits for evidence)."""
        key = self._decision_key()
        record = self.table.get(key)
        self._track(record)
        if (record is not None and record.get("promoted_region") == self.region
                and self._reclaimable(record, now, failed_after=self.decider.grace)
                and self.table.get(HOLD_KEY) is None):
            self._promote(Verdict(Action.PROMOTE, reason=f"finishing the unfinished promotion {key[schema.SK]} "
                                                         f"(outcome {record.get('outcome')})"), now)
            flag = self.table.get(schema.ACTIVE_REGION_KEY) or flag
        self._release_when_quiet(flag, now)

    def _release_when_quiet(self, flag: dict[str, Any], now: datetime) -> None:
        """Lift the flag's wait for the watched region's quiet on positive evidence only: its SES
        accepted nothing in a whole window that lies after the flag was written."""
        old, since = awaiting_quiet_of(flag), flag.get(AWAITING_SINCE)
        if not old or not since:
            FAILOVER_AWAITING_QUIET.labels(self.region).set(0)
            return
        FAILOVER_AWAITING_QUIET.labels(self.region).set(1)
        if self.ses is None:
            return  # no way to see the old region's SES: an operator confirms (--confirm-source-stopped)
        start = now - self.ses.window
        if start < parse_iso(since):
            return
        try:
            sends = self.ses.sends(start, now)
        except Exception as exc:  # unreadable is not quiet
            log.warning("failover: cannot read the old region's SES sends", region=self.region, watched=old,
                        error=f"{type(exc).__name__}")
            return
        if sends is None or sends > 0:
            log.info("failover: waiting for the old region to stop sending", region=self.region, watched=old,
                     sends=sends, since=since)
            return
        try:
            self.table.update(Update(schema.ACTIVE_REGION_KEY, set={"senders_released_at": iso(now)},
                                     remove=(AWAITING_QUIET_OF, AWAITING_SINCE),
                                     condition="#region = :me AND awaiting_since = :since",
                                     values={":me": self.region, ":since": since}, names={"#region": "region"}))
        except StaleWrite:
            return  # the flag changed meanwhile (another controller lifted it, or a failback)
        FAILOVER_AWAITING_QUIET.labels(self.region).set(0)
        log.warning("failover: old region quiet, senders may start", region=self.region, watched=old,
                    quiet_since=iso(start), flag_since=since)

    # -- the decision record ---------------------------------------------------------------
    def _decision_key(self) -> dict[str, str]:
        """One record per watched leadership: the watched leader's epoch as replicated here."""
        lease = self.table.get(schema.lease_key(self.watched)) or {}
        return decision_key(self.watched, int(lease.get("epoch", 0)))

    def _reclaimable(self, record: dict[str, Any], now: datetime, failed_after: timedelta = timedelta(0)) -> bool:
        """A decision nobody finishes: in progress past the bound (killed, hung), or failed (after
        ``failed_after`` since it finished, so a failing step is not retried every pass)."""
        outcome, at = record.get("outcome"), record.get("decided_at")
        if outcome == "in_progress":
            return at is not None and parse_iso(at) + self.stale_after <= now
        if outcome == "failed":
            finished = record.get("finished_at") or at
            return finished is None or parse_iso(finished) + failed_after <= now
        return False

    def _track(self, record: dict[str, Any] | None) -> None:
        """The unfinished-decision gauge: since when the record has been in progress, or failed
        after this region was switched to (0: nothing unfinished)."""
        since = 0.0
        if record is not None and record.get("promoted_region") == self.region and record.get("decided_at"):
            flag = self.table.get(schema.ACTIVE_REGION_KEY) or {}
            if record.get("outcome") == "in_progress" or (record.get("outcome") == "failed"
                                                          and flag.get("region") == self.region):
                since = parse_iso(record.get("first_decided_at") or record["decided_at"]).timestamp()
        FAILOVER_UNFINISHED_SINCE.labels(self.region).set(since)

    def _claim(self, verdict: Verdict, now: datetime) -> tuple[dict[str, str], str] | None:
        """The durable decision record, written before acting: (its key, this attempt's
        ``decided_at``). None while another controller acts on this primary leadership's failure
        (its record in progress and not stale) or once it is promoted."""
        key = self._decision_key()
        record = {**key, "decided_at": iso(now), "watched_region": self.watched, "promoted_region": self.region,
                  "quorum": self.decider.quorum, "grace_seconds": self.decider.grace.total_seconds(),
                  "bad_since": iso(verdict.bad_since) if verdict.bad_since else None, "why": verdict.reason,
                  "signals": [asdict(o) | {"health": o.health.value} for o in verdict.observations],
                  "outcome": "in_progress", "first_decided_at": iso(now), "attempt": 1}
        if self.table.put_new(record):
            return key, iso(now)
        current = self.table.get(key) or {}
        if not self._reclaimable(current, now):
            log.info("automatic failover already decided", region=self.region, watched=self.watched,
                     record=key[schema.SK], outcome=current.get("outcome"))
            return None
        # take over an earlier attempt that failed or was killed: only if nobody did since we read it
        sets = {k: v for k, v in record.items() if k not in key and k != "first_decided_at"}
        sets["attempt"] = int(current.get("attempt", 1)) + 1
        if verdict.bad_since is None:  # a resumed promotion: keep the original decision's why
            sets = {k: v for k, v in sets.items() if k not in ("why", "signals", "bad_since")}
        try:
            self.table.update(Update(key, set=sets, condition="outcome = :o AND decided_at = :d",
                                     values={":o": current.get("outcome"), ":d": current.get("decided_at")}))
        except StaleWrite:
            log.info("automatic failover already taken over", region=self.region, watched=self.watched,
                     record=key[schema.SK])
            return None
        log.warning("automatic failover: taking over an unfinished decision", region=self.region,
                    record=key[schema.SK], outcome=current.get("outcome"), attempt=sets["attempt"])
        return key, iso(now)

    def _promote(self, verdict: Verdict, now: datetime) -> None:
        claimed = self._claim(verdict, now)
        if claimed is None:
            self.decider.reset()
            return
        key, attempt = claimed
        self._track(self.table.get(key))
        log.error("automatic failover: promoting region", region=self.region, watched=self.watched,
                  bad=list(verdict.bad), bad_since=iso(verdict.bad_since) if verdict.bad_since else None,
                  why=verdict.reason)
        started = time.monotonic()
        try:
            result = self.promote(verdict)
        except Exception as exc:  # noqa: BLE001 - recorded, alarmed; the next grace retries
            result = Promotion(False, [], f"{type(exc).__name__}: {exc}"[:500])
        outcome = "promoted" if result.ok else "failed"
        try:  # only our attempt's record: a successor that took it over is never overwritten
            self.table.update(Update(key, set={"outcome": outcome, "steps": json.dumps(result.steps, default=str),
                                               "error": result.error, "finished_at": iso(self.clock.now()),
                                               "seconds": round(time.monotonic() - started, 3)},
                                     condition="decided_at = :d", values={":d": attempt}))
        except Exception as exc:  # the decision stands; the record is for people
            log.warning("failover decision record not updated", error=str(exc)[:300])
        self._track(self.table.get(key))
        FAILOVER_PROMOTIONS.labels(self.region, outcome).inc()
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


def build_watch(deps: Deps, region: str, watched: str, after_switch: Callable[[], Any]) -> FailoverWatch:
    """The DR controller's watch with the signals its settings allow: the heartbeat always; the
    primary's API health with ``failover_peer_health_url``; Route 53 with
    ``failover_health_check_id``; SES always (CloudWatch on AWS, send statistics on the emulator)."""
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

    wait = max(60.0, 4 * s.lease_seconds)

    def promote(verdict: Verdict) -> Promotion:
        lines: list[str] = []
        book = Runbook("automatic-failover", execute=True, out=lines.append)
        try:
            fail_over(book, s, source=watched, target=region, target_api=s.failover_api_url or "",
                      health_check_id=s.failover_health_check_id, source_reachable=False,
                      wait_seconds=wait, after_switch=after_switch)
        except RunbookFailed as exc:  # a SystemExit: never let it end the scheduler's thread
            return Promotion(False, book.steps, str(exc))
        return Promotion(True, book.steps)

    decider = FailoverDecider(s.failover_quorum, s.failover_grace_seconds)
    notify = sns_notifier(client(s, "sns") if s.failover_event_topic_arn else None, s.failover_event_topic_arn)
    return FailoverWatch(table=table, region=region, watched=watched, signals=signals, decider=decider,
                         promote=promote, notify=notify, clock=deps.clock, heartbeat=heartbeat,
                         # the runbook's bound: its lease wait plus a few short probes (5 s timeouts)
                         stale_after_seconds=max(600.0, 4 * wait))
