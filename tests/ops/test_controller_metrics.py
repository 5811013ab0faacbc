"""The controller metrics the alert rules read: heartbeat by role, stuck campaigns, event
pipeline lag, send quota and dead-letter queue depth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from controller.jobs import Controller, StuckCampaigns
from core import observability, schema
from core.adapters.aws import client
from core.adapters.dynamodb import DynamoTable
from core.adapters.sqs import SqsQueue
from core.domain.models import Summary, Transaction
from core.domain.statuses import TransactionStatus as T
from local.bootstrap import create_resources

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


def test_heartbeat_age_grows_while_the_lease_calls_fail(deps, clock, monkeypatch):
    """What the CloudWatch heartbeat alarms read: a leader whose lease calls keep failing still
    exports its leader series, but its age grows (computed at the scrape) until the alarm fires."""
    region = deps.settings.region
    c = Controller(deps, "a")
    assert c.heartbeat() is True
    assert value("emailplatform_controller_heartbeat_age_seconds", region=region, role="leader") == 0
    clock.advance(40)  # no pass runs: the scrape alone sees the age grow
    assert value("emailplatform_controller_heartbeat_age_seconds", region=region, role="leader") == 40

    # WHEN every lease call fails (DynamoDB unreachable)
    def unreachable() -> bool:
        raise ConnectionError("dynamodb unreachable")

    monkeypatch.setattr(c.lease, "acquire_or_renew", unreachable)
    for _ in range(3):
        clock.advance(10)
        with pytest.raises(ConnectionError):
            c.heartbeat()
    # THEN the leader's series is still exported, stale, and keeps growing
    assert value("emailplatform_controller_heartbeat_age_seconds", region=region, role="leader") == 70
    monkeypatch.undo()
    assert c.heartbeat() is True
    assert value("emailplatform_controller_heartbeat_age_seconds", region=region, role="leader") == 0
    c.lease.release()


LAG = "emailplatform_replication_lag_seconds"


def test_replication_lag_is_the_leaders_renewals_the_peer_copy_does_not_show(deps, clock):
    s = deps.settings
    c = Controller(deps, "a")
    c.replication_pass()  # not the leader: nothing measured
    assert value(LAG, receiving_region=s.dr_region) is None
    assert c.heartbeat()
    c.replication_pass()  # no table in the other region (a single-region stack): nothing measured
    assert value(LAG, receiving_region=s.dr_region) is None

    # GIVEN the other region's table copy, which has none of this leadership's renewals yet
    create_resources(s, region=s.dr_region)
    peer = DynamoTable(client(s, "dynamodb", s.dr_region), s.table_name)
    clock.advance(30)
    assert c.heartbeat()  # renewed 30 s after the acquisition
    c.replication_pass()
    assert value(LAG, receiving_region=s.dr_region) == 30

    # WHEN replication delivers the newest renewal (what the global table / local/replication.py does)
    peer.put(deps.store.table.get(schema.lease_key(s.region)))
    c.replication_pass()
    assert value(LAG, receiving_region=s.dr_region) == 0

    # AND THEN stalls while the leader renews for 20 more seconds
    clock.advance(20)
    assert c.heartbeat()
    c.replication_pass()
    assert value(LAG, receiving_region=s.dr_region) == 20
    c.lease.release()
    assert value(LAG, receiving_region=s.dr_region) is None  # only a leader measures it


def test_a_leader_that_turns_standby_stops_publishing_the_leaders_metrics(deps, clock):
    s = deps.settings
    c = Controller(deps, "a")
    assert c.heartbeat()
    # GIVEN a leader that published a stuck campaign, a lagging event pipeline and queue depths
    c.stuck.count = lambda active, now: 2  # type: ignore[method-assign]
    deps.store.advance_send_evidence(s.region, clock.now() - timedelta(seconds=400), clock.now())
    waiting = deps.events_queue.depth()["visible"]  # S3's s3:TestEvent, sent when the notification was set
    deps.events_queue.send({"waiting": 1})
    c.metrics_pass()
    assert value("emailplatform_campaigns_stuck") == 2
    assert value("emailplatform_ses_event_pipeline_lag_seconds") == 400
    assert value("emailplatform_queue_depth", queue="ses_events", state="visible") == waiting + 1

    # WHEN its region turns passive (the active-region flag names the other one): the renewal loses the lease
    deps.store.table.put({**schema.ACTIVE_REGION_KEY, "region": s.dr_region})
    assert c.heartbeat() is False

    # THEN it publishes what a controller that never led publishes, and its metrics pass changes nothing
    for _ in range(2):
        assert value("emailplatform_campaigns_stuck") == 0
        assert value("emailplatform_ses_event_pipeline_lag_seconds") == 0
        assert value("emailplatform_callback_backlog") == 0
        for queue in observability.QUEUES:
            for state in ("visible", "in_flight"):
                assert value("emailplatform_queue_depth", queue=queue, state=state) is None
        assert value("emailplatform_campaigns_active", status="READY_TO_SEND") is None
        c.metrics_pass()
