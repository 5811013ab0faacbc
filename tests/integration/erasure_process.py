"""`python -m tests.integration.erasure_process ERASURE_ID`: a controller of its own that drives
erasures with its privacy pass (the lease, the fenced store, ``privacy_ports``, ``run_due_erasures``:
the code `python -m controller` runs) until the job is COMPLETED, then exits 0. The kill -9 test in
tests/integration/test_privacy.py starts it, lets it SIGKILL itself inside a step, and starts a
fresh one to resume.

Settings come from the environment like any process's (``EMAILPLATFORM_*``). Test-only wiring,
here and not in production code:

- ``ERASURE_TEST_PEER_ANALYTICS``: the DR region's analytics store, an SQLite file (the embedded
  stack wires it in-process; on AWS it is ``EMAILPLATFORM_PEER_OPENSEARCH_ENDPOINT``).
- ``ERASURE_TEST_KILL_AFTER=<step>:<n>``: the process SIGKILLs itself right after the ``n``-th
  write of that step: ``messages`` counts messages pseudonymised (``SubjectFinder``),
  ``objects`` counts object rewrites (``VersionedBlobs.put``; the old version is not deleted yet).
- A step that must wait (the DR replica behind) looks again after 0.3 s, not 5 s.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from config.settings import get_settings
from controller.jobs import Controller
from core.adapters.analytics import SqliteAnalytics
from core.adapters.privacy import ErasureRepository, SubjectFinder, VersionedBlobs
from core.bootstrap import bootstrap, worker_name
from core.services import privacy

KILL_POINTS: dict[str, tuple[type, str]] = {
    "messages": (SubjectFinder, "pseudonymise_message"),
    "objects": (VersionedBlobs, "put"),
}


def kill_after(step: str, n: int) -> None:
    """Wrap the step's write so that the process dies (SIGKILL, no clean-up) right after the
    ``n``-th call returned."""
    cls, name = KILL_POINTS[step]
    real = getattr(cls, name)
    calls = 0

    def write_then_die(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        out = real(self, *args, **kwargs)
        calls += 1
        if calls >= n:
            print(f"SIGKILL after {step} write {calls}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(cls, name, write_then_die)


def main(erasure_id: str, timeout: float = 60.0) -> int:
    if point := os.environ.get("ERASURE_TEST_KILL_AFTER"):
        step, n = point.split(":")
        kill_after(step, int(n))
    privacy.WAIT_SECONDS = 0.3
    deps = bootstrap(get_settings())
    if path := os.environ.get("ERASURE_TEST_PEER_ANALYTICS"):
        deps.peer_analytics[deps.settings.dr_region] = SqliteAnalytics(path)
    controller = Controller(deps, worker_name())
    jobs = ErasureRepository(deps.store.table)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if controller.heartbeat():  # a killed predecessor's lease runs out first
            controller.privacy_pass()
        job = jobs.get(erasure_id)
        if job["status"] == privacy.COMPLETED:
            controller.lease.release()
            print(f"erasure {erasure_id} completed", flush=True)
            return 0
        time.sleep(0.1)
    print(f"erasure {erasure_id} still at {jobs.get(erasure_id)['step']} after {timeout} s", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
