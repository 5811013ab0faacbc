"""The controller metrics the alert rules read: heartbeat by role, stuck campaigns, event
pipeline lag, send quota and dead-letter queue depth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from controller.jobs import StuckCampaigns
from core.domain.models import Summary, Transaction
from core.domain.statuses import TransactionStatus as T

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def tx(tx_id: str, status: T = T.READY_TO_SEND, sent: int = 0) -> Transaction:
    return Transaction(transaction_id=tx_id, tenant_id="t", status=status, template_id="tpl", template_version=1,
                       csv_s3_key="k", summary=Summary(total_messages=100, sent=sent))


def test_a_sending_campaign_without_progress_counts_as_stuck_after_the_threshold():
    stuck = StuckCampaigns(after=600)
    assert stuck.count([tx("a"), tx("b")], T0) == 0
    assert stuck.count([tx("a"), tx("b", sent=10)], T0 + timedelta(seconds=599)) == 0
    # a has not moved for 10 minutes; b moved at 599 s, so its clock restarted then
    assert stuck.count([tx("a"), tx("b", sent=10)], T0 + timedelta(seconds=600)) == 1
    assert stuck.count([tx("a"), tx("b", sent=10)], T0 + timedelta(seconds=1199)) == 2


def test_campaigns_that_leave_the_sending_set_are_forgotten():
    stuck = StuckCampaigns(after=600)
    stuck.count([tx("a"), tx("b"), tx("c", status=T.PAUSED)], T0)
    assert len(stuck) == 2  # only READY_TO_SEND campaigns are tracked
    assert stuck.count([tx("b")], T0 + timedelta(seconds=700)) == 1
    assert len(stuck) == 1
    # a comes back (resumed): its clock starts again
    assert stuck.count([tx("a"), tx("b")], T0 + timedelta(seconds=800)) == 1


def test_heartbeat_publishes_the_attempt_time_under_the_current_role(deps, clock):
    from controller.jobs import Controller

    region = deps.settings.region
    leader, standby = Controller(deps, "a"), Controller(deps, "b")
    assert leader.heartbeat() is True
    assert value("emailplatform_controller_heartbeat_timestamp_seconds", region=region, role="leader") == \
        clock.now().timestamp()
    clock.advance(1)
    assert standby.heartbeat() is False
    assert value("emailplatform_controller_heartbeat_timestamp_seconds", region=region, role="standby") == \
        clock.now().timestamp()
    assert value("emailplatform_controller_heartbeat_timestamp_seconds", region=region, role="leader") is None
    leader.lease.release()


def test_metrics_pass_publishes_quota_lag_and_dead_letter_depth(deps, clock):
    from controller.jobs import Controller
    from core import schema
    from core.adapters.sqs import SqsQueue

    c = Controller(deps, "a")
    assert c.heartbeat()
    c.metrics_pass()
    assert value("emailplatform_ses_max_send_rate") == deps.settings.ses_max_send_rate
    assert value("emailplatform_ses_event_pipeline_lag_seconds") == 0  # nothing queued
    assert value("emailplatform_queue_depth", queue="send-dlq", state="visible") == 0
    assert value("emailplatform_campaigns_stuck") == 0

    # GIVEN the pipeline last recorded a Send event 400 s ago and events are waiting
    deps.store.advance_send_evidence(deps.settings.region, clock.now() - timedelta(seconds=400), clock.now())
    deps.events_queue.send({"waiting": 1})
    dlq = SqsQueue(deps.clients["sqs"], schema.EVENTS_QUEUE.dlq_name(deps.settings.name_prefix))
    dlq.send({"poison": 1})
    c.metrics_pass()
    assert value("emailplatform_ses_event_pipeline_lag_seconds") == 400
    assert value("emailplatform_queue_depth", queue="ses_events-dlq", state="visible") == 1
    c.lease.release()
