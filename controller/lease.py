"""Leader lease per region, gated by the replicated active-region flag: only the lease holder in
the active region acts.

The lease's epoch is the leader's fencing token. Tokens come from one replicated counter
(``FENCING_COUNTER_KEY``, ``PLATFORM/EPOCH``) that an election in any region bumps in the same
transaction that takes the lease, so the newest leader anywhere has the highest token: after a
failover the new region's leader is never fenced out by items the old region's leaders stamped,
and a deposed leader (of either region) is fenced by its successor's writes. The first election
after an upgrade starts the counter above both regions' lease epochs.

**Epochs are region-distinct.** The counter's condition is checked in the electing region's replica
only (global tables check conditions per replica and settle concurrent writes last-writer-wins), so
two regions electing while replication lags both pass it from the same old value. With ``+1`` they
would take the *same* token, and ``fence <= epoch`` would let either leader overwrite the other's
items. Each region therefore takes only tokens of its own parity (``region_bit``: 0 for the region
whose name sorts first, 1 for the other; no setting, the same answer in both regions): the next
token is the smallest above every epoch seen with that parity. Two leaders of different regions can
never tie; the newer election in either region still outranks everything it saw. (A tie-free token
does not stop both regions acting while replication lags: the active-region flag's
``awaiting_quiet_of`` does that, see core/services/regions.py.)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from core import schema
from core.adapters.dynamodb import FENCING_COUNTER_KEY, DynamoTable, Update
from core.domain.errors import StaleWrite, TemporaryError
from core.domain.models import iso, parse_iso
from core.observability import LEASE_HOLDER, LEASE_LOST, log
from core.services.ports import Clock
from core.services.regions import awaiting_quiet_of


def region_bit(region: str, peer_region: str | None) -> int | None:
    """This region's epoch parity in a two-region deployment (None: a single region, any token)."""
    if not peer_region or peer_region == region:
        return None
    return 0 if region < peer_region else 1


def next_epoch(seen: int, bit: int | None) -> int:
    """The smallest token above ``seen`` that belongs to this region (of its parity)."""
    epoch = seen + 1
    if bit is not None and epoch % 2 != bit:
        epoch += 1
    return epoch


class Lease:
    """``on_lost`` runs each time a held lease is lost or released (after ``epoch`` is None)."""

    def __init__(self, table: DynamoTable, region: str, holder: str, seconds: float, clock: Clock,
                 peer_region: str | None = None, on_lost: Callable[[], None] | None = None):
        self.table, self.region, self.holder, self.seconds, self.clock = table, region, holder, seconds, clock
        self.key = schema.lease_key(region)
        self.peer_key = schema.lease_key(peer_region) if peer_region else None
        self.bit = region_bit(region, peer_region)
        self.on_lost = on_lost
        self.epoch: int | None = None
        # this leadership's first and newest write of the lease item (its ``renewed_at``)
        self.acquired_at: datetime | None = None
        self.renewed_at: datetime | None = None

    def region_is_active(self) -> bool:
        flag = self.table.get(schema.ACTIVE_REGION_KEY)
        # No flag: a single-region setup. A two-region deployment sets the flag in both regions
        # before the DR controller starts (infra bootstrap / the embedded stack / the drill).
        # A flag still awaiting the old region's quiet names us but does not make us active yet.
        return flag is None or (flag.get("region") == self.region and not awaiting_quiet_of(flag))

    def acquire_or_renew(self) -> bool:
        """True while we hold the lease. Taking it from an expired holder takes the next fencing token."""
        now = self.clock.now()
        until = iso(now + timedelta(seconds=self.seconds))
        if not self.region_is_active():
            return self._lost("region is not active")
        if self.epoch is not None:
            try:
                self.table.update(Update(self.key, set={"expires_at": until, "renewed_at": iso(now)},
                                         condition="holder = :me AND epoch = :e",
                                         values={":me": self.holder, ":e": self.epoch}))
                self.renewed_at = now
                return True
            except StaleWrite:
                return self._lost("renewal lost")
        peer: dict[str, Any] = {}
        if self.peer_key is not None:  # after a region switch, let the other region's leader lapse first
            peer = self.table.get(self.peer_key) or {}
            if peer.get("expires_at", "") > iso(now):
                LEASE_HOLDER.labels(self.region, self.holder).set(0)
                return False
        current = self.table.get(self.key) or {}
        if current.get("holder") not in (None, self.holder) and current.get("expires_at", "") > iso(now):
            # another leader's lease is live: a standby polls often (controller/jobs.py
            # LEASE_TAKEOVER_POLL_SECONDS) and must not pay a refused transaction every time
            LEASE_HOLDER.labels(self.region, self.holder).set(0)
            return False
        counter = self.table.get(FENCING_COUNTER_KEY)
        counted = int((counter or {}).get("epoch", 0))
        epoch = next_epoch(max(counted, int(current.get("epoch", 0)), int(peer.get("epoch", 0))), self.bit)
        try:
            self.table.transact([
                Update(self.key, set={"holder": self.holder, "epoch": epoch, "expires_at": until,
                                      "renewed_at": iso(now)},
                       condition="attribute_not_exists(epoch) OR (epoch = :old AND (expires_at < :now OR holder = :me))",
                       values={":old": int(current.get("epoch", 0)), ":now": iso(now), ":me": self.holder}),
                Update(FENCING_COUNTER_KEY, set={"epoch": epoch, "region": self.region, "holder": self.holder,
                                                 "elected_at": iso(now)},
                       condition="attribute_not_exists(epoch) OR epoch = :counted" if counter is not None
                       else "attribute_not_exists(epoch)",
                       values={":counted": counted} if counter is not None else None),
            ])
        except (StaleWrite, TemporaryError):  # another contender won (here or in the other region)
            LEASE_HOLDER.labels(self.region, self.holder).set(0)
            return False
        self.epoch = epoch
        self.acquired_at = self.renewed_at = now
        LEASE_HOLDER.labels(self.region, self.holder).set(1)
        log.info("lease acquired", region=self.region, holder=self.holder, epoch=epoch)
        return True

    def unreplicated_seconds(self, replica: dict[str, Any] | None) -> float | None:
        """How many seconds of this leadership's renewals a replica's copy of the lease item (the
        other region's, read there) does not show yet: the newest renewal here minus the newest one
        in the copy, or minus the acquisition while the copy shows none of this leadership. None
        while not leading. Resolution: the renewal interval."""
        epoch, acquired, newest = self.epoch, self.acquired_at, self.renewed_at
        if epoch is None or acquired is None or newest is None:
            return None
        seen = acquired
        if replica and replica.get("holder") == self.holder and replica.get("epoch") == epoch \
                and replica.get("renewed_at"):
            seen = max(seen, parse_iso(str(replica["renewed_at"])))
        return max(0.0, (newest - seen).total_seconds())

    def _lost(self, why: str) -> bool:
        held = self.epoch is not None
        if held:
            LEASE_LOST.inc()
            log.warning("lease lost", region=self.region, holder=self.holder, epoch=self.epoch, why=why)
        self.epoch = None
        LEASE_HOLDER.labels(self.region, self.holder).set(0)
        if held and self.on_lost is not None:
            self.on_lost()
        return False

    def release(self) -> None:
        if self.epoch is None:
            return
        try:
            self.table.update(Update(self.key, set={"expires_at": iso(self.clock.now())},
                                     condition="holder = :me AND epoch = :e",
                                     values={":me": self.holder, ":e": self.epoch}))
            log.info("lease released", region=self.region, holder=self.holder, epoch=self.epoch)
        except StaleWrite:
            pass
        self.epoch = None
        LEASE_HOLDER.labels(self.region, self.holder).set(0)
        if self.on_lost is not None:
            self.on_lost()
