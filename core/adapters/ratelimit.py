"""Shared SES send-rate limiter backed by one DynamoDB item."""

from __future__ import annotations

from typing import Any

from core.adapters.dynamodb import Update
from core.domain.errors import StaleWrite, TemporaryError


class SharedRateLimiter:
    """A token schedule shared by all workers through one DynamoDB item.

    ``reserve(n)`` books the next ``n`` send slots at ``rate``/s with a conditional write on
    the slot pointer, and returns when the first slot starts; the caller spaces its sends by
    ``1/rate``. Booked windows never overlap, so the total rate across workers stays within
    the quota. One read and one write per chunk, not per message.
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

    def pace(self, start: float, i: int) -> None:
        wait = start + i / self.rate - self.clock.now().timestamp()
        if wait > 0:
            self.clock.sleep(wait)
