"""SES errors that moto never returns, injected into the real SES v2 client (local.ses_simulator):
per-message refusals, throttling, account/configuration holds with a probe that lifts them, and
calls in doubt resolved by Send evidence."""

import pytest

from core.adapters.ses import SES_CONFIG_ERRORS
from core.domain.errors import TemporaryError
from core.domain.statuses import BatchStatus, MessageStatus
from core.services.events import record_ses_event
from local.ses_simulator import SesFaults
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import RecordingMailer, batch_sender, queued_campaign, recipients

PLATFORM_HOLDS = [
    ("AccessDeniedException", None),
    ("NotFoundException", None),
    ("AccountSuspendedException", None),
    ("SendingPausedException", None),
    ("BadRequestException", None),  # a tag SES refuses: our request, not the message
    ("MessageRejected", "Email address is not verified. The following identities failed the check in region "
                        "EU-WEST-1: user3@example.org"),  # sandbox: a recipient identity
]
TENANT_HOLDS = [
    ("MailFromDomainNotVerifiedException", None),
    ("MessageRejected", None),  # "Email address is not verified …: <the tenant's from address>"
]


@pytest.fixture
def faults(deps):
    f = SesFaults(deps.mailer.client)
    yield f
    f.detach()


def _metric(code: str) -> float:
    return SES_CONFIG_ERRORS.labels(code)._value.get()


def test_a_recipient_rejection_fails_only_that_message(deps, tenant, faults):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(5))
    faults.inject("MessageRejected", to="user2@example.org", message="Illegal address")
    mailer = RecordingMailer(deps.mailer)
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 4
    failed = deps.store.get_message(batch.batch_id, f"{batch.batch_id}-00003")
    assert failed.status == MessageStatus.FAILED and "Illegal address" in failed.failure_reason
    assert deps.store.sending_paused("tenant-a") is None


def test_throttling_from_ses_is_retried_and_each_message_sent_once(deps, tenant, faults):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(4))
    faults.inject("TooManyRequestsException", times=2)
    faults.inject("LimitExceededException", times=1)
    mailer = RecordingMailer(deps.mailer)
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 4 and set(mailer.per_recipient().values()) == {1}


@pytest.mark.parametrize(("code", "message"), PLATFORM_HOLDS + TENANT_HOLDS)
def test_an_account_or_configuration_error_holds_sending_until_a_probe_succeeds(deps, tenant, faults, clock,
                                                                                code, message):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(10))
    faults.inject(code, to="user3@example.org", times=None, message=message)
    mailer = RecordingMailer(deps.mailer)
    before = _metric(code)

    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)

    # GIVEN SES refuses for a reason about the account: nothing is failed, the batch is held.
    assert out.state == "held" and len(mailer.sent) == 3
    msgs, _ = deps.store.batch_partition(batch.batch_id)
    assert not [m for m in msgs if m.status == MessageStatus.FAILED]
    scope = "tenant" if (code, message) in TENANT_HOLDS else "platform"
    holds = deps.store.sending_holds("tenant-a")
    assert holds["operator"] is None and holds["automatic"] == [scope] and code in holds["reason"]
    assert _metric(code) == before + 1
    assert deps.store.get_batch(batch.batch_id, tx_id).redispatch_at > clock.now()
    # Until the probe time nothing is tried again.
    assert batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id).state == "held"
    assert len(mailer.sent) == 3

    # WHEN the probe comes and SES still refuses: one call, held again.
    clock.advance(61)
    calls = faults._faults[0].hits
    assert batch_sender(deps, mailer, "w3").send_batch(tx_id, batch.batch_id).state == "held"
    assert faults._faults[0].hits == calls + 1 and len(mailer.sent) == 3

    # THEN once SES works again the probe succeeds, lifts the hold and the batch finishes.
    faults.clear()
    clock.advance(61)
    out = batch_sender(deps, mailer, "w4").send_batch(tx_id, batch.batch_id)
    assert out.state == "sent"
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.per_recipient()) == 10
    assert deps.store.sending_holds("tenant-a")["automatic"] == []
    assert deps.store.get_batch(batch.batch_id, tx_id).status == BatchStatus.SENT


def test_a_tenant_hold_does_not_stop_other_tenants(deps, tenant, faults):
    from core.services.tenants import allow_sender, ensure_tenant

    ensure_tenant(deps.store, deps.secrets, "tenant-b")
    allow_sender(deps.store, "tenant-a", "@tenant-a.example")
    tx_a, (batch_a,) = queued_campaign(deps, "tenant-a", recipients(3), **{"from": "news@tenant-a.example"})
    tx_b, (batch_b,) = queued_campaign(deps, "tenant-b", recipients(3))
    faults.inject("MailFromDomainNotVerifiedException", sender="@tenant-a.example", times=None)
    mailer = RecordingMailer(deps.mailer)
    assert batch_sender(deps, mailer).send_batch(tx_a, batch_a.batch_id).state == "held"
    assert deps.store.sending_holds("tenant-a")["automatic"] == ["tenant"]
    assert batch_sender(deps, mailer).send_batch(tx_b, batch_b.batch_id).state == "sent"
    assert len(mailer.sent) == 3


def test_access_denied_on_a_tenants_own_identity_holds_only_that_tenant(deps, tenant, faults):
    """IAM refusing ses:SendEmail on identity/<the tenant's domain> is about that tenant's sender
    (an identity not verified, or not granted): the other tenants keep sending."""
    from core.services.tenants import allow_sender, ensure_tenant

    ensure_tenant(deps.store, deps.secrets, "tenant-b")
    allow_sender(deps.store, "tenant-a", "@tenant-a.example")
    tx_a, (batch_a,) = queued_campaign(deps, "tenant-a", recipients(3), **{"from": "news@tenant-a.example"})
    tx_b, (batch_b,) = queued_campaign(deps, "tenant-b", recipients(3))
    denied = ("User `arn:aws:sts::123456789012:assumed-role/emailplatform-sender/emailplatform-sender' is not "
              "authorized to perform `ses:SendEmail' on resource "
              "`arn:aws:ses:eu-west-1:123456789012:identity/tenant-a.example'")
    faults.inject("AccessDeniedException", sender="@tenant-a.example", times=None, message=denied)
    mailer = RecordingMailer(deps.mailer)
    assert batch_sender(deps, mailer).send_batch(tx_a, batch_a.batch_id).state == "held"
    assert deps.store.sending_holds("tenant-a")["automatic"] == ["tenant"]
    assert batch_sender(deps, mailer).send_batch(tx_b, batch_b.batch_id).state == "sent"
    assert deps.store.sending_holds("tenant-b")["automatic"] == [] and len(mailer.sent) == 3


def test_access_denied_on_the_configuration_set_holds_the_platform(deps, tenant, faults):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(3))
    faults.inject("AccessDeniedException", times=None, message=(
        "User `arn:aws:sts::123456789012:assumed-role/r/s' is not authorized to perform `ses:SendEmail' on "
        "resource `arn:aws:ses:eu-west-1:123456789012:configuration-set/emailplatform'"))
    assert batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id).state == "held"
    assert deps.store.sending_holds("tenant-a")["automatic"] == ["platform"]


def test_a_probe_never_lifts_the_operators_switch(deps, tenant, faults, clock):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(3))
    faults.inject("AccessDeniedException", times=1)
    mailer = RecordingMailer(deps.mailer)
    assert batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "held"
    deps.store.set_sending_switch(paused=True, reason="runbook: SES incident")
    clock.advance(61)
    assert batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "stopped"  # the operator's hold
    assert mailer.sent == []
    deps.store.set_sending_switch(paused=False)
    clock.advance(31)
    assert batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "sent"  # the probe lifts the rest
    assert len(mailer.sent) == 3 and deps.store.sending_paused("tenant-a") is None

    # and a successful probe leaves an operator's tenant switch alone
    deps.store.set_sending_switch(tenant_id="tenant-a", tenant_paused=True, reason="runbook")
    deps.store.lift_automatic_hold("tenant-a", ["platform", "tenant"])
    assert deps.store.sending_holds("tenant-a")["operator"] == "tenant: runbook"


@pytest.mark.parametrize(("code", "accepted"), [("ReadTimeout", True), ("ReadTimeout", False),
                                                ("InternalFailure", False), ("ConnectionClosed", True)])
def test_a_call_in_doubt_stops_the_chunk_and_send_evidence_decides(deps, tenant, faults, clock, code, accepted):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(10))
    doubtful = f"{batch.batch_id}-00004"
    faults.inject(code, to="user3@example.org", accepted=accepted)
    mailer = RecordingMailer(deps.mailer)

    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)

    assert out.state == "in_doubt" and out.sent == 3 and len(mailer.sent) == 3  # stopped at the doubtful call
    assert deps.store.get_message(batch.batch_id, doubtful).status == MessageStatus.READY_TO_SEND
    (entry,) = deps.store.table.query_all(f"BATCH#{batch.batch_id}", "SENDLOG#")
    assert entry["results"][doubtful]["outcome"] == "IN_DOUBT"
    # Nothing is retried blindly, however often the batch comes back before the window ends.
    clock.advance(deps.settings.lease_seconds * 4 + 1)
    assert batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id).state == "in_doubt"
    assert len(mailer.sent) == 3 and faults._faults == []

    for s in mailer.sent:  # the pipeline records the Send events of what SES answered for (while they
        # are missing the call in doubt waits: a quiet pipeline may be a stalled one)
        record_ses_event(sns_envelope(ses_event_for("ses_send.json", tenant="tenant-a", recipient=s["to"],
                                                    message_id=s["tags"]["message_id"], ses_id=s["ses_id"])),
                         store=deps.store)
    if accepted:  # SES took it: its Send event is the evidence
        body = sns_envelope(ses_event_for("ses_send.json", tenant="tenant-a", message_id=doubtful,
                                          recipient="user3@example.org", ses_id="lost-answer"))
        assert record_ses_event(body, store=deps.store) == "applied"
    clock.advance(deps.settings.send_evidence_window_seconds + 1)
    out = batch_sender(deps, mailer, "w3").send_batch(tx_id, batch.batch_id)
    assert out.state == "sent"
    sent_again = mailer.per_recipient().get("user3@example.org", 0)
    assert sent_again == (0 if accepted else 1)
    assert len(mailer.per_recipient()) == (9 if accepted else 10) and set(mailer.per_recipient().values()) == {1}


def test_no_ses_call_starts_after_the_send_by_time(deps, tenant, clock):
    """A throttled call is retried with backoff, but never once the chunk's send-by time passed."""
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(3))
    calls = []

    def throttled_past_the_lease(kw, before):
        if before:
            calls.append(kw["to"])
            clock.advance(deps.settings.lease_seconds * 4 + 1)
            raise TemporaryError("SES throttled: TooManyRequestsException")

    out = batch_sender(deps, RecordingMailer(deps.mailer, throttled_past_the_lease)).send_batch(tx_id, batch.batch_id)
    assert out.state == "stopped" and calls == ["user0@example.org"]
