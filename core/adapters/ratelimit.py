"""Shared SES send-rate limiter backed by one DynamoDB item."""

from __future__ import annotations

from core.adapters.dynamodb import DynamoTable, Update
from core.domain.errors import StaleWrite, TemporaryError
from core.services.ports import Clock


class SharedRateLimiter:
    """A token schedule shared by all workers through one DynamoDB item.

    ``book(n)`` books the next ``n`` send slots at ``rate``/s with a conditional write on
    the slot pointer; the caller waits for each of its slots (``Booking.wait_turn``). Booked
    windows never overlap and no worker sends faster than the rate, so the sustained rate
    across workers stays within the quota; a worker running late on its booking can overlap
    the next one by about one call's latency. One read and one write per chunk, not per message.
    """

    def __init__(self, table: DynamoTable, key: dict[str, str], rate: float, clock: Clock):
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
    """One worker's slots, used in order. A send late for its slot (a slow call before it) waits
    ``1/rate`` after this worker's previous send instead of catching up in a burst."""

    def __init__(self, limiter: SharedRateLimiter, n: int):
        self.limiter = limiter
        self.start, self.n, self.used = limiter.reserve(n), n, 0
        self._last: float | None = None

    @property
    def end(self) -> float:
        """When the booked slots end (epoch seconds)."""
        return self.start + self.n / self.limiter.rate

    def wait_turn(self) -> None:
        rate, clock = self.limiter.rate, self.limiter.clock
        due = self.start + self.used / rate
        if self._last is not None:
            due = max(due, self._last + 1 / rate)
        wait = due - clock.now().timestamp()
        if wait > 0:
            clock.sleep(wait)
        self.used += 1
        self._last = clock.now().timestamp()
