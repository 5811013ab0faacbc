"""The progress lines of long local commands (local/progress.py): on stderr, at most one per
interval, with the phase, done/total, rate and ETA. A fake clock; no sleeping."""

from __future__ import annotations

import io
import threading

from local.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def progress(every: float = 5.0) -> tuple[Progress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    return Progress("demo", every=every, out=out, clock=clock), out, clock


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_phase_is_written_at_once_then_at_most_one_line_per_interval():
    p, out, clock = progress(every=5)
    p.phase("sending", total=1000, unit="sent")
    assert lines(out) == ["[demo] sending: 0/1,000 sent (0%), 0s in"]
    for done in range(0, 400, 10):  # many updates within the interval: no line
        clock.t += 0.1
        p.update(done)
    assert len(lines(out)) == 1
    clock.t = 1005.0
    p.update(400)
    assert lines(out)[-1] == "[demo] sending: 400/1,000 sent (40%) 80.0/s ETA 8s, 5s in"


def test_rate_and_eta_are_over_the_current_phase_and_a_note_ends_the_line():
    p, out, clock = progress(every=1)
    p.phase("ingesting", total=100)
    clock.t += 100
    p.update(100)
    p.phase("sending", total=3000, done=0, unit="sent", note="delivered 0")
    clock.t += 60
    p.update(600, note="delivered 550")
    assert lines(out)[-1] == "[demo] sending: 600/3,000 sent (20%) 10.0/s ETA 4m00s, 2m40s in; delivered 550"


def test_without_a_total_the_count_and_rate_are_shown_without_eta():
    p, out, clock = progress(every=1)
    p.phase("waiting for the final recount")
    assert lines(out) == ["[demo] waiting for the final recount, 0s in"]
    clock.t += 2
    p.update(50)
    assert lines(out)[-1] == "[demo] waiting for the final recount: 50 25.0/s, 2s in"


def test_finish_and_a_zero_interval():
    p, out, clock = progress(every=1)
    p.phase("x", total=1)
    clock.t += 3725
    p.finish()
    assert lines(out)[-1] == "[demo] done in 1h02m"
    quiet, out, _ = progress(every=0)  # EMAILPLATFORM_PROGRESS_SECONDS=0: nothing at all
    quiet.phase("x", total=10)
    quiet.update(5)
    quiet.finish()
    assert out.getvalue() == ""


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EMAILPLATFORM_PROGRESS_SECONDS", "0.5")
    assert Progress("bench").every == 0.5
    monkeypatch.delenv("EMAILPLATFORM_PROGRESS_SECONDS")
    assert Progress("bench").every == 5.0


def test_watch_polls_a_counter_on_a_thread_and_survives_a_failing_read():
    p, out, clock = progress(every=0.0001)
    written = threading.Event()

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            if "7/10" in text:
                written.set()
            return super().write(text)

    p.out = Out()
    reads = iter([RuntimeError("not yet"), 7])

    def read() -> int:
        clock.t += 1  # a poll per second of the fake clock
        value = next(reads, 7)
        if isinstance(value, Exception):
            raise value
        return value

    p.phase("sending", total=10)
    with p.watch(read, poll=0.001):
        assert written.wait(timeout=10)  # a condition, not a sleep
    assert "[demo] sending: 7/10 (70%)" in p.out.getvalue()
