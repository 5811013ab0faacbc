"""The alert rules, their tests and the Grafana dashboard: valid, tested with promtool, and written
only against metrics the platform really exports (core/observability.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from core import observability

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "ops" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "dashboard.json"
METRIC = re.compile(r"\bemailplatform_[a-z0-9_]+")
RECORDED = re.compile(r"\bemailplatform:[a-z0-9_:]+")
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not os.access(found, os.X_OK):
        pytest.skip("promtool is not installed (not on PATH, not /usr/bin/promtool): `make prometheus` installs "
                    "Debian's prometheus package, and `make test` runs it first")
    return found


def exported_metric_names() -> set[str]:
    """Every series name the registry's metrics expose (a counter `x` is scraped as `x_total`)."""
    names: set[str] = set()
    for metric in vars(observability).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alerts() -> list[dict]:
    return [r for r in rules() if "alert" in r]


def dashboard_exprs() -> list[str]:
    def walk(panels: list[dict]) -> list[str]:
        found = []
        for p in panels:
            found += [t["expr"] for t in p.get("targets", []) if "expr" in t]
            found += walk(p.get("panels", []))
        return found

    dash = json.loads(DASHBOARD.read_text())
    return walk(dash["panels"]) + [a["expr"] for a in dash.get("annotations", {}).get("list", []) if "expr" in a]


def test_rules_are_valid_prometheus_rules():
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_fires_and_stays_quiet_as_rules_test_yml_says():
    out = subprocess.run([promtool(), "test", "rules", "rules_test.yml"], cwd=PROMETHEUS, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_test_yml_has_a_firing_and_a_quiet_case_for_every_alert():
    cases = [c for t in yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
             for c in t.get("alert_rule_test", [])]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{alert['alert']}: no firing case"
        assert any(not c.get("exp_alerts") for c in mine), f"{alert['alert']}: no quiet case"


def test_every_alert_names_its_severity_and_an_existing_runbook():
    assert {g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]} == {"emailplatform"}
    for alert in alerts():
        labels, notes = alert.get("labels", {}), alert.get("annotations", {})
        assert labels.get("severity") in {"critical", "warning"}, alert["alert"]
        assert labels.get("runbook") == notes.get("runbook"), alert["alert"]
        assert re.fullmatch(r"runbooks/[a-z_]+\.md", labels["runbook"]), alert["alert"]
        assert (ROOT / labels["runbook"]).is_file(), f"{alert['alert']}: {labels['runbook']} does not exist"
        assert notes.get("summary") and notes.get("description"), alert["alert"]


def test_the_alerts_the_issue_asks_for_exist():
    assert {a["alert"] for a in alerts()} >= {
        "EmailPlatformNoLeader", "EmailPlatformCampaignStuck", "EmailPlatformSendRateUnderQuota",
        "EmailPlatformEventPipelineLag", "EmailPlatformCallbackDeadLetters", "EmailPlatformBounceRateHigh",
        "EmailPlatformComplaintRateHigh", "EmailPlatformDeadLetterQueueNotEmpty", "EmailPlatformApiErrors",
        "EmailPlatformFailoverPromoted", "EmailPlatformFailoverSignalsBad", "EmailPlatformFailoverHeld",
        "EmailPlatformReplicationLag"}


def test_rules_use_only_metrics_the_platform_exports():
    exported = exported_metric_names()
    recorded = {r["record"] for r in rules() if "record" in r}
    for rule in rules():
        expr = rule["expr"]
        assert set(METRIC.findall(expr)) <= exported, (rule.get("alert") or rule.get("record"), expr)
        assert set(RECORDED.findall(expr)) <= recorded, expr


def test_dashboard_uses_only_metrics_the_platform_exports():
    exported = exported_metric_names()
    recorded = {r["record"] for r in rules() if "record" in r}
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        unknown = set(METRIC.findall(expr)) - exported
        assert not unknown, f"dashboard expr uses {sorted(unknown)} which core/observability.py does not define: {expr}"
        assert set(RECORDED.findall(expr)) <= recorded, expr


def test_dashboard_shows_what_on_call_needs():
    used = {m for e in dashboard_exprs() for m in METRIC.findall(e) + RECORDED.findall(e)}
    assert used >= {
        "emailplatform_sends_total", "emailplatform:sends_sent:rate5m", "emailplatform_ses_max_send_rate",
        "emailplatform_ses_event_pipeline_lag_seconds", "emailplatform_callback_backlog",
        "emailplatform_api_requests_total", "emailplatform_controller_pass_errors_total",
        "emailplatform_controller_pass_seconds_bucket", "emailplatform_campaigns_stuck",
        "emailplatform_controller_is_leader", "emailplatform_queue_depth",
        "emailplatform_failover_signal_bad", "emailplatform_failover_signals_bad", "emailplatform_failover_quorum",
        "emailplatform_failover_held", "emailplatform_failover_promotions_total"}


def test_a_name_the_registry_does_not_define_is_caught():
    assert "emailplatform_sends_total" in exported_metric_names()
    assert "emailplatform_sends" not in exported_metric_names()  # a counter is scraped with _total
    assert "emailplatform_campaign_last_progress_timestamp_seconds" not in exported_metric_names()
