"""Shared SES send-rate limiter backed by one DynamoDB item."""

from __future__ import annotations

import math
from typing import Any

from core.adapters.dynamodb import Update
from core.domain.errors import StaleWrite, TemporaryError


class SharedRateLimiter:
    """A token schedule shared by all workers through one DynamoDB item.

    ``book(n)`` books the next ``n`` send slots at ``rate``/s with a conditional write on
    the slot pointer; the caller waits for each of its slots (``Booking.wait_turn``). Booked
    windows never overlap, so the total rate across workers stays within the quota. One read
    and one write per chunk, not per message.
    """

    def __init__(self, table: Any, key: dict[str, str], rate: float, clock: Any):
        self.table, self.key, self.rate, self.clock = table, key, rate, clock

    def reserve(self, n: int) -> float:
        for _ in range(50):
            now = self.clock.now().timestamp()
            item = self.table.get(self.key) or {}
            current = float(item.get("next_free", 0.0))
            start = max(now, current)
            try:
                self.table.update(Update(
                    self.key, set={"next_free": start + n / self.rate},
                    condition="attribute_not_exists(next_free) OR next_free = :cur",
                    values={":cur": item.get("next_free", 0)},
                ))
                return start
            except StaleWrite:
                continue
        raise TemporaryError("rate limiter contended", delay=0.5)

    def book(self, n: int) -> Booking:
        return Booking(self, n)


class Booking:
    """One worker's slots. A send that is late for its slot (a slow call) takes the next slot
    that has not passed instead of catching up in a burst over other workers' slots; when its
    own slots run out it books more (rare: one more write)."""

    def __init__(self, limiter: SharedRateLimiter, n: int):
        self.limiter = limiter
        self.start, self.n, self.used = limiter.reserve(n), n, 0

    @property
    def end(self) -> float:
        """When the booked slots end (epoch seconds)."""
        return self.start + self.n / self.limiter.rate

    def wait_turn(self, remaining: int) -> None:
        """Wait for the next usable slot; ``remaining`` counts this send and the ones after it."""
        rate, clock = self.limiter.rate, self.limiter.clock
        passed = math.ceil((clock.now().timestamp() - self.start) * rate - 1e-6)
        k = max(self.used, passed)
        if k >= self.n:
            self.start, self.n, self.used, k = self.limiter.reserve(remaining), remaining, 0, 0
        self.used = k + 1
        wait = self.start + k / rate - clock.now().timestamp()
        if wait > 0:
            clock.sleep(wait)
