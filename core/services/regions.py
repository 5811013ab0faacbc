"""Self-fencing of a region's senders: a region calls SES only while it knows it is the active one.

In a two-region deployment (the replicated ``PLATFORM/ACTIVE_REGION`` flag exists) a sender may
start a chunk only while the flag names its region *and* its region's controller lease is live.
The leader renews that lease only after reading the flag and finding its own region there
(controller/lease.py), so a live lease is a confirmation of the flag less than one lease period
old. Hence a region stops sending by itself:

* at once when it reads a flag naming the other region (a failover, manual or automatic);
* within one lease period when nobody can confirm the flag any more: its leader is gone or cannot
  reach DynamoDB (the lease runs out), or the sender itself cannot read the flag or the lease (the
  last confirmation runs out).

The check sits on ``claim_batch``, which the sender calls before every chunk; a refused claim
reads as "busy", so the batch stays QUEUED for the active region's controller to re-dispatch. The
SES calls of a chunk already started end by the chunk's ``send_by`` (core/services/sending.py),
and the other region treats that chunk with the send-evidence policy, so the moment the other
region may send, this one cannot. Without the flag (a single-region setup) nothing is checked.

That holds only once the flag has *replicated* to the old region. A region promoted while the old
one could not be told (its flag written in the new region only: ``source_reachable=False``, which
is every automatic failover) cannot know when that is: a lagging replica keeps the old region's
senders going while the new region already reads itself active. Such a flag carries
``AWAITING_QUIET_OF`` (the old region) and ``AWAITING_SINCE``; while it does, the promoted region is
*not yet active*: its controller takes no lease (controller/lease.py) and its senders claim nothing.
The attributes are removed, conditionally on the same ``AWAITING_SINCE``, only on positive evidence
that the old region stopped: its SES accepted nothing for a whole window that started after the
flag was written (controller/failover.py ``FailoverWatch``), or an operator's explicit
``runbooks/failover.py --confirm-source-stopped``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from config.settings import Settings
from core import schema
from core.domain.models import Batch, parse_iso
from core.observability import log
from core.services.ports import CampaignStore, Clock

# The flag of a region promoted without the old region being told (see the module's docstring).
AWAITING_QUIET_OF = "awaiting_quiet_of"
AWAITING_SINCE = "awaiting_since"


def awaiting_quiet_of(flag: dict[str, Any] | None) -> str | None:
    """The old region this region's flag still waits to see quiet (None: nothing to wait for)."""
    return (flag or {}).get(AWAITING_QUIET_OF) or None


def active_region_flag(active: str, now: datetime, awaiting_quiet: str | None = None) -> dict[str, Any]:
    """The ``PLATFORM/ACTIVE_REGION`` item naming ``active``; with ``awaiting_quiet`` (the old
    region, when it cannot be told) ``active`` may not send until that region is seen quiet."""
    item: dict[str, Any] = {**schema.ACTIVE_REGION_KEY, "region": active, "updated_at": now.isoformat()}
    if awaiting_quiet:
        item |= {AWAITING_QUIET_OF: awaiting_quiet, AWAITING_SINCE: now.isoformat()}
    return item


class ActiveRegionGate:
    """Whether this region may send now. Re-reads the flag and the lease at most every
    ``recheck_seconds`` (two small strongly consistent reads); thread-safe enough for the
    sender's threads (a race only re-reads)."""

    def __init__(self, read: Callable[[dict[str, str]], dict[str, Any] | None], region: str, clock: Clock,
                 lease_seconds: float, recheck_seconds: float = 1.0, monotonic: Callable[[], float] = time.monotonic):
        self.read, self.region, self.clock = read, region, clock
        self.lease_seconds, self.recheck_seconds, self.monotonic = lease_seconds, recheck_seconds, monotonic
        self._checked_at: float | None = None
        self._refusal: str | None = None
        self._confirmed_until: datetime | None = None
        # the flag named this region at the last check: a refusal is then only its controller being
        # between two leases (a redeploy), and a sender may write to the table (hand a batch back)
        self.flag_names_us = False

    def refusal(self) -> str | None:
        """None while this region may send, else why not (fixed wording, for logs and tests)."""
        tick = self.monotonic()
        if self._checked_at is not None and tick - self._checked_at < self.recheck_seconds:
            return self._refusal
        before = self._refusal
        self._refusal = self._check(self.clock.now())
        self._checked_at = tick
        if self._refusal != before:
            if self._refusal:
                log.warning("sending fenced: region not confirmed active", region=self.region, why=self._refusal)
            else:
                log.info("sending allowed: region confirmed active", region=self.region)
        return self._refusal

    def _check(self, now: datetime) -> str | None:
        self.flag_names_us = False
        try:
            flag = self.read(schema.ACTIVE_REGION_KEY)
            if flag is None:  # a single-region setup
                self._confirmed_until = now + timedelta(seconds=self.lease_seconds)
                return None
            active = flag.get("region")
            self.flag_names_us = active == self.region
            if active != self.region:
                self._confirmed_until = None
                return f"region {self.region} is passive (active region: {active})"
            old = awaiting_quiet_of(flag)
            if old:  # promoted, but the old region may still be sending: nothing is written here yet
                self.flag_names_us, self._confirmed_until = False, None
                return f"region {self.region} waits for evidence that {old} stopped sending"
            lease = self.read(schema.lease_key(self.region)) or {}
        except Exception as exc:  # unreadable: the last confirmation holds until it runs out
            if self._confirmed_until is not None and now < self._confirmed_until:
                return None
            return f"active region unconfirmed for a lease period ({type(exc).__name__})"
        expires = parse_iso(lease["expires_at"]) if lease.get("expires_at") else None
        if expires is None or expires <= now:
            self._confirmed_until = None
            return f"no live controller lease in {self.region}: the active region is unconfirmed"
        self._confirmed_until = expires
        return None


class RegionGatedClaims:
    """The sender's view of the store: ``claim_batch`` is refused while the gate is closed;
    everything else passes through unchanged.

    A refused claim has consumed its queue message. In the active region (the flag names it; its
    controller is only between two leases, as in a redeploy) the batch is handed back at once, to
    be re-dispatched within ``HAND_BACK_SECONDS`` of a leader being back, instead of waiting to be
    found lost. A passive or unconfirmed region writes nothing: its write could win over the
    active region's on the replicated item (global tables keep the last writer's item)."""

    HAND_BACK_SECONDS = 5.0

    def __init__(self, store: CampaignStore, gate: ActiveRegionGate):
        self._store, self.gate = store, gate

    def claim_batch(self, batch: Batch, worker: str, now: datetime, lease_seconds: float) -> bool:
        if self.gate.refusal() is not None:
            if self.gate.flag_names_us:
                self._store.hand_back_unclaimed(batch, now, now + timedelta(seconds=self.HAND_BACK_SECONDS))
            return False
        return self._store.claim_batch(batch, worker, now, lease_seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def gate_sending(store: CampaignStore, settings: Settings, clock: Clock) -> RegionGatedClaims:
    """The store a region's senders use: claims only while the region is confirmed active."""
    gate = ActiveRegionGate(store.get_flag, settings.region, clock, settings.lease_seconds,
                            recheck_seconds=min(1.0, settings.lease_seconds / 5))
    return RegionGatedClaims(store, gate)
