"""``RateLimiter`` in memory: slots at ``rate`` a second from the clock's now, one booking after
another (SharedRateLimiter's booking without the shared DynamoDB item); a turn waits on the
clock, so a FakeClock moves instead of the test sleeping."""

from __future__ import annotations

import threading

from core.services.ports import Clock


class FakeBooking:
    def __init__(self, clock: Clock, start: float, n: int, rate: float):
        self.clock, self.start, self.n, self.rate, self.used = clock, start, n, rate, 0

    @property
    def end(self) -> float:
        return self.start + self.n / self.rate

    def wait_turn(self) -> None:
        wait = self.start + self.used / self.rate - self.clock.now().timestamp()
        if wait > 0:
            self.clock.sleep(wait)
        self.used += 1


class FakeRateLimiter:
    def __init__(self, clock: Clock, rate: float = 1000.0):
        self.clock, self.rate = clock, rate
        self.booked: list[int] = []  # each booking's slots
        self._next = 0.0
        self._lock = threading.Lock()

    def book(self, n: int) -> FakeBooking:
        with self._lock:
            start = max(self._next, self.clock.now().timestamp())
            self._next = start + n / self.rate
            self.booked.append(n)
        return FakeBooking(self.clock, start, n, self.rate)
