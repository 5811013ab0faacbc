"""``SendQueue`` in memory: a FIFO queue's messages in order, a deduplication id sent twice kept
once (SQS FIFO, within its window: here, for the queue's life), and the depth the controller reads
to tell a lost message from one waiting in a busy queue."""

from __future__ import annotations

import threading
from typing import Any


class FakeQueue:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []  # {"body", "group", "dedup_id"}, oldest first, not yet taken
        self.sent: list[dict[str, Any]] = []  # every message accepted, taken or not
        self._dedup: set[str] = set()
        self._lock = threading.Lock()

    def send(self, body: dict[str, Any], *, group: str | None = None, dedup_id: str | None = None) -> None:
        with self._lock:
            if dedup_id is not None and dedup_id in self._dedup:
                return
            if dedup_id is not None:
                self._dedup.add(dedup_id)
            message = {"body": dict(body), "group": group, "dedup_id": dedup_id}
            self.messages.append(message)
            self.sent.append(message)

    def take(self) -> list[dict[str, Any]]:
        """Every waiting message's body, removed from the queue (a sender consumed them)."""
        with self._lock:
            taken, self.messages = self.messages, []
        return [m["body"] for m in taken]

    def depth(self) -> dict[str, int]:
        with self._lock:
            return {"visible": len(self.messages), "in_flight": 0}
