"""What the DR controller's automatic failover calls on AWS, against what infra grants its task role
(infra/policies.py: the controller's table and FAILOVER_ACTIONS), both ways. The promotion runs for
real on moto (the decider, the failover runbook's steps, the platform event) while every botocore
call is recorded; the policy pack's controller_actions.json is generated from the same tables."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from botocore.client import BaseClient

from controller.failover import Action
from controller.jobs import Controller
from core.adapters.aws import client
from core.bootstrap import bootstrap
from infra.policies import (
    COMPONENT_ACTIONS,
    FAILOVER_ACTIONS,
    FAILOVER_EMULATOR_ONLY,
    FAILOVER_NOT_EXERCISED_LOCALLY,
    action_for,
)
from runbooks.alarms import no_leader_alarm
from runbooks.regions import _flag, _set_flag, forced_unhealthy
from tests.conftest import make_settings


@pytest.fixture
def dr_api():
    """The DR API's health endpoint, which the runbook checks before promoting."""
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path == "/api/v1/health" else 404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_the_automatic_promotion_calls_exactly_what_the_dr_controller_is_granted(deps, clock, dr_api, monkeypatch):
    from local.bootstrap import create_resources

    s = deps.settings
    primary, dr = s.region, s.dr_region
    # GIVEN the DR region's resources, the primary active, DR's no-leader alarm muted, a health check
    dr_settings = make_settings(s.aws_endpoint_url, name_prefix=s.name_prefix, region=dr, dr_region=primary,
                                failover_automation=True, failover_quorum=2, failover_grace_seconds=10,
                                failover_api_url=dr_api, failover_peer_health_url="http://127.0.0.1:9/api/v1/health")
    create_resources(dr_settings)
    for region in (primary, dr):
        _set_flag(s, region, primary)
    hc = client(s, "route53").create_health_check(CallerReference=uuid.uuid4().hex, HealthCheckConfig={
        "Type": "HTTPS", "FullyQualifiedDomainName": "primary.example.com", "Port": 443,
        "ResourcePath": "/v1/api/v1/health", "RequestInterval": 30, "FailureThreshold": 3})["HealthCheck"]["Id"]
    topic = client(s, "sns", dr).create_topic(Name=f"{s.name_prefix}-alarms")["TopicArn"]
    cw = client(s, "cloudwatch", dr)
    alarm = no_leader_alarm(s.name_prefix, dr)
    cw.put_metric_alarm(AlarmName=alarm, MetricName="x", Namespace="x", Statistic="Maximum", Period=60,
                        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold",
                        ActionsEnabled=False, AlarmActions=[topic])
    dr_settings = dr_settings.model_copy(update={"failover_health_check_id": hc, "failover_event_topic_arn": topic})
    controller = Controller(bootstrap(dr_settings, clock=clock, region=dr), "dr-controller", region=dr)
    assert controller.failover is not None

    # WHEN the primary is gone (no heartbeat, its API refuses) for the grace period, every AWS call recorded
    calls: set[str] = set()
    real = BaseClient._make_api_call

    def record(self, operation_name, api_params):
        calls.add(f"{self.meta.service_model.service_name}.{operation_name}")
        return real(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    assert controller.failover.run_once().action is Action.SUSPECT
    clock.advance(11)
    assert controller.failover.run_once().action is Action.PROMOTE
    # the primary could not be told: DR leads only once the primary's SES was quiet for a window
    assert controller.heartbeat() is False
    clock.advance(dr_settings.failover_ses_window_seconds + 1)
    controller.failover.run_once()
    monkeypatch.undo()

    # THEN DR is promoted by the runbook's steps: flag, DNS override, its alarm notifies, its leader
    assert _flag(s, dr) == dr and forced_unhealthy(client(s, "route53"), hc)
    assert cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["ActionsEnabled"] is True
    assert controller.heartbeat() is True and controller.lease.epoch is not None

    # AND every call it made is granted to the DR controller's role, and every failover grant is used
    used = {action_for(op) for op in calls}
    granted = set(COMPONENT_ACTIONS["controller"]) | set(FAILOVER_ACTIONS)
    assert used - granted - FAILOVER_EMULATOR_ONLY == set(), "calls the DR controller's IAM does not allow"
    assert set(FAILOVER_ACTIONS) - used - FAILOVER_NOT_EXERCISED_LOCALLY == set(), "failover grants never used"
    assert {"sns:Publish", "route53:UpdateHealthCheck", "cloudwatch:EnableAlarmActions"} <= used
