"""A real Prometheus with ops/prometheus/rules.yml against an embedded stack: the no-leader alert is
quiet while the controller leads and fires once it stops. Needs Debian's `prometheus` (`make test`
installs it with `make prometheus`)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
import requests

from handlers import context
from local.moto import free_port
from local.stack import LocalPrometheus, Stack
from tests.conftest import make_settings

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "rules.yml"
# Regions no other test uses: the metrics registry is process-wide and other tests' controllers
# publish into it too; Prometheus keeps only this stack's regional series.
REGION, DR_REGION = "us-east-2", "us-west-2"
ALERT = "EmailPlatformNoLeader"


def _prometheus_binary() -> str | None:
    found = shutil.which("prometheus") or "/usr/bin/prometheus"
    return found if os.access(found, os.X_OK) else None


def shortened_for(rules: str, duration: str = "2s") -> str:
    """The rules with every ``for:`` set to ``duration`` (the same file, not a second copy to maintain)."""
    out, n = re.subn(r"(?m)^(\s+for:\s*)\S+\s*$", rf"\g<1>{duration}", rules)
    assert n > 0, "rules.yml has no `for:` to shorten"
    return out


def alert_states(prom: LocalPrometheus, name: str) -> set[str]:
    alerts = requests.get(f"{prom.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {a["state"] for a in alerts if a["labels"]["alertname"] == name}


def query(prom: LocalPrometheus, expr: str) -> list[dict]:
    return requests.get(f"{prom.url}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]


def evaluations(prom: LocalPrometheus, name: str) -> float:
    """When Prometheus last evaluated the alert rule, in seconds since its epoch (grows by 1 s per evaluation)."""
    from datetime import datetime

    for group in requests.get(f"{prom.url}/api/v1/rules", timeout=5).json()["data"]["groups"]:
        for rule in group["rules"]:
            if rule.get("name") == name:
                return datetime.fromisoformat(rule["lastEvaluation"][:19]).timestamp()  # to the second
    raise AssertionError(f"rule {name} not loaded")


def wait_until(check, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f} s"
        time.sleep(0.5)


@pytest.fixture
def small_stack(moto_server):
    settings = make_settings(moto_server.url, region=REGION, dr_region=DR_REGION, api_port=free_port(),
                             metrics_port=free_port(), lease_seconds=3, controller_interval_seconds=1)
    installed = context._deps  # Stack.start/stop swap the process-wide handler dependencies
    s = Stack.start(settings, api_server=False, workers=False, metrics=True)
    try:
        yield s
    finally:
        s.stop()
        context.use(installed)


@pytest.fixture
def prometheus(small_stack):
    if _prometheus_binary() is None:
        pytest.skip("prometheus is not installed: `make prometheus` installs Debian's package (make test does)")
    prom = LocalPrometheus(small_stack.settings.metrics_port, port=free_port(), interval="1s",
                           rules=shortened_for(RULES.read_text()),
                           # series without a region label, and this stack's regional series
                           metric_relabel=[{"source_labels": ["region"], "regex": f"|{REGION}", "action": "keep"}])
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


def test_shortened_rules_change_only_durations():
    text = RULES.read_text()
    short = shortened_for(text)
    assert re.findall(r"(?m)^\s+for:\s*(\S+)", short) == ["2s"] * len(re.findall(r"(?m)^\s+for:", text))
    assert re.sub(r"(?m)^(\s+for:).*$", r"\1", short) == re.sub(r"(?m)^(\s+for:).*$", r"\1", text)


def test_no_leader_alert_fires_when_the_controller_stops(small_stack, prometheus):
    # GIVEN the controller leads and Prometheus has scraped that
    wait_until(lambda: [r["value"][1] for r in query(prometheus, f'emailplatform_controller_is_leader{{region="{REGION}"}}')
                        ] == ["1"], 30, "the leader scraped")
    # (before the first scrape the heartbeat is absent, so the alert may have been pending: it clears)
    wait_until(lambda: not alert_states(prometheus, ALERT), 30, "no-leader alert quiet")
    quiet_since = evaluations(prometheus, ALERT)
    wait_until(lambda: evaluations(prometheus, ALERT) >= quiet_since + 4, 30, "four more evaluations")
    assert alert_states(prometheus, ALERT) == set()  # longer than the shortened `for:`: still quiet

    # WHEN the controller stops (it releases the lease and no other controller takes it)
    assert small_stack.controller is not None
    small_stack.controller.stop()

    # THEN the no-leader alert fires within a bounded time
    wait_until(lambda: "firing" in alert_states(prometheus, ALERT), 60, "no-leader alert firing")
    firing = [a for a in requests.get(f"{prometheus.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
              if a["labels"]["alertname"] == ALERT]
    assert firing[0]["labels"]["severity"] == "critical"
    assert firing[0]["labels"]["runbook"] == "runbooks/failover.md"
