"""A long local command shows progress while it runs: `python -m bench.ingest` (what `make bench`
runs first) writes progress lines on stderr, from its parent and from the child that ingests,
while its stdout stays the result table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_ingest_prints_progress_on_stderr_and_only_its_figures_on_stdout():
    proc = subprocess.run([sys.executable, "-m", "bench.ingest", "--sizes", "1500"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "EMAILPLATFORM_PROGRESS_SECONDS": "0.2", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = [line for line in proc.stderr.splitlines() if line.startswith("[bench ingest]")]
    for phase in ("raw batch_write_item baseline", "writing a CSV of 1,500 rows", "ingesting 1,500 rows"):
        assert any(line.startswith(f"[bench ingest] {phase}") for line in progress), phase
    assert any(re.search(r"ingesting 1,500 rows: [\d,]+/1,500 rows \(\d+%\)", line) for line in progress)
    assert progress[-1].startswith("[bench ingest] done in ")
    assert "[bench" not in proc.stdout  # the figures stay machine-readable
    assert re.search(r"^1,500 +[\d,]+ ", proc.stdout, re.MULTILINE)
