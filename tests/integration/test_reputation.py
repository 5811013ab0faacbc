"""The reputation guard pauses a tenant's sending when its bounce rate crosses our threshold."""

from prometheus_client import REGISTRY

from core.domain.statuses import TransactionStatus
from core.services.events import record_ses_event
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import RecordingMailer, batch_sender, leader, queued_campaign, recipients


def test_bounce_rate_over_threshold_pauses_the_tenant_and_raises_the_alarm(deps, tenant):
    deps.settings = deps.settings.model_copy(update={"reputation_min_volume": 40})
    tx_id, batches = queued_campaign(deps, "tenant-a", recipients(100))  # two batches of 50
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batches[0].batch_id)
    for i, s in enumerate(mailer.sent):
        kind = "ses_bounce.json" if i < 5 else "ses_delivery.json"  # 10 % bounces, above 5 %
        for name in ("ses_send.json", kind):
            record_ses_event(sns_envelope(ses_event_for(name, tenant="tenant-a", message_id=s["tags"]["message_id"],
                                                        recipient=s["to"], ses_id=s["ses_id"])), store=deps.store)
    c = leader(deps)
    c.deps.settings = deps.settings
    c.settings = deps.settings
    c.reputation_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.PAUSED
    assert REGISTRY.get_sample_value("emailplatform_reputation_alarm", {"tenant": "tenant-a", "kind": "bounce"}) == 1
    # the second batch does not go out while paused
    out = batch_sender(deps, mailer, "w2").send_batch(tx_id, batches[1].batch_id)
    assert out.state == "stopped" and len(mailer.sent) == 50


def test_below_threshold_keeps_sending(deps, tenant):
    deps.settings = deps.settings.model_copy(update={"reputation_min_volume": 40})
    tx_id, batches = queued_campaign(deps, "tenant-a", recipients(100))
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batches[0].batch_id)
    for i, s in enumerate(mailer.sent):
        kind = "ses_bounce.json" if i < 1 else "ses_delivery.json"  # 2 %
        for name in ("ses_send.json", kind):
            record_ses_event(sns_envelope(ses_event_for(name, tenant="tenant-a", message_id=s["tags"]["message_id"],
                                                        recipient=s["to"], ses_id=s["ses_id"])), store=deps.store)
    c = leader(deps)
    c.settings = deps.settings
    c.reputation_pass()
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.READY_TO_SEND
