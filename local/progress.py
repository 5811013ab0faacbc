"""Progress of long local commands (`make demo`, `make drill`, `make bench`): one line on stderr
every few seconds with the phase, done/total, rate and ETA, e.g.

    [drill] sending from eu-west-1: 1,204/3,000 (40%) 38.2/s ETA 47s, 31s in

stdout stays the command's result (tables, JSON), so ``cmd > result.json`` still works. The
interval is ``EMAILPLATFORM_PROGRESS_SECONDS`` (default 5; 0 turns the lines off).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


def _interval() -> float:
    try:
        return float(os.environ.get("EMAILPLATFORM_PROGRESS_SECONDS", "5"))
    except ValueError:
        return 5.0


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Where a long command is. ``update`` as often as convenient: a line is written only when the
    interval has passed or the phase changed. Thread-safe; ``watch`` polls a counter on a thread
    for work that reports nothing itself. The rate and ETA are over the current phase."""

    def __init__(self, command: str, *, every: float | None = None, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.command, self.every = command, _interval() if every is None else every
        self.out, self.clock = out, clock
        self._lock = threading.Lock()
        self.started = clock()
        self.total: int | None = None
        self.phase_name, self.done, self.unit, self.note = "", 0, "", ""
        self._phase_started, self._phase_done0 = self.started, 0
        self._last_line_at: float | None = None

    # -- what callers report ----------------------------------------------------------------
    def phase(self, name: str, total: int | None = None, done: int = 0, unit: str = "", note: str = "") -> None:
        """Start a phase (written at once): its own done/total, rate and ETA; ``note`` ends the line."""
        with self._lock:
            self.phase_name, self.total, self.done, self.unit, self.note = name, total, done, unit, note
            self._phase_started, self._phase_done0 = self.clock(), done
            self._write_locked()

    def update(self, done: int, total: int | None = None, note: str | None = None) -> None:
        """How far the current phase is; written when the interval has passed since the last line."""
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
            if note is not None:
                self.note = note
            if self._last_line_at is None or self.clock() - self._last_line_at >= self.every:
                self._write_locked()

    def finish(self, note: str = "done") -> None:
        with self._lock:
            if self.every > 0:
                self._emit(f"[{self.command}] {note} in {_duration(self.clock() - self.started)}")

    @contextmanager
    def watch(self, read: Callable[[], int], poll: float | None = None) -> Iterator[Progress]:
        """Poll ``read()`` (done so far) on a daemon thread while the block runs; a failing read is
        skipped (progress must never break the command)."""
        stop = threading.Event()
        period = poll if poll is not None else max(0.2, self.every)

        def loop() -> None:
            while not stop.wait(period):
                try:
                    self.update(read())
                except Exception:  # noqa: BLE001 - progress is best effort
                    continue

        thread = threading.Thread(target=loop, name=f"progress-{self.command}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)

    # -- the line --------------------------------------------------------------------------------
    def line(self) -> str:
        now = self.clock()
        elapsed = now - self._phase_started
        unit = f" {self.unit}" if self.unit else ""
        text = f"[{self.command}] {self.phase_name}"
        if self.total:
            text += f": {self.done:,}/{self.total:,}{unit} ({min(100, 100 * self.done // self.total)}%)"
        elif self.done:
            text += f": {self.done:,}{unit}"
        moved = self.done - self._phase_done0
        if elapsed > 0 and moved > 0:
            rate = moved / elapsed
            text += f" {rate:,.1f}/s"
            if self.total and self.done < self.total:
                text += f" ETA {_duration((self.total - self.done) / rate)}"
        note = f"; {self.note}" if self.note else ""
        return f"{text}, {_duration(now - self.started)} in{note}"

    def _write_locked(self) -> None:
        if self.every <= 0:
            return
        self._last_line_at = self.clock()
        self._emit(self.line())

    def _emit(self, text: str) -> None:
        out = self.out or sys.stderr
        print(text, file=out, flush=True)
