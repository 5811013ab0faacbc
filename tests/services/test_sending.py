"""core/services/sending.py's BatchSender on the fakes, with the FakeMailer answering as SES would:
what one refused message, throttling and an account error do to a batch."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.models import batch_id_for, message_id_for
from core.domain.statuses import BatchStatus, MessageStatus
from core.services.sending import BatchSender
from tests.fakes import FakeMailer, FakeRateLimiter, FakeStore
from tests.services.builders import TENANT, stored_campaign

B, M = BatchStatus, MessageStatus
BATCH = batch_id_for("tx_1", 1)


@pytest.fixture
def queued(store, clock):
    """A READY_TO_SEND campaign whose one batch of 4 is QUEUED (dispatched)."""
    stored_campaign(store, per_batch=4)
    store.mark_queued(store.get_batch(BATCH, "tx_1"), clock.now(), clock.now())
    return store.get_batch(BATCH, "tx_1")


def sender(store: FakeStore, mailer: FakeMailer, clock: Any, settings: Any) -> BatchSender:
    return BatchSender(store=store, mailer=mailer, limiter=FakeRateLimiter(clock), clock=clock, settings=settings,
                       template_loader=lambda tid, v: ("Hi {{ email }}", "<p>Hello {{ email }}</p>", None),
                       worker="w1")


def statuses(store) -> list[MessageStatus]:
    return [m.status for m in store.batch_partition(BATCH)[0]]


def test_a_queued_batch_is_sent_once_to_each_recipient(store, mailer, clock, settings, queued):
    out = sender(store, mailer, clock, settings).send_batch("tx_1", BATCH)
    assert (out.state, out.sent, out.failed) == ("sent", 4, 0)
    assert mailer.per_recipient() == {f"u1-{j}@example.org": 1 for j in range(1, 5)}
    first = mailer.sent[0]
    assert first["subject"] == "Hi u1-1@example.org" and first["tags"]["message_id"] == message_id_for(BATCH, 1)
    assert first["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert store.get_batch(BATCH, "tx_1").status == B.SENT
    assert sender(store, mailer, clock, settings).send_batch("tx_1", BATCH).state == "nothing_to_do"
    assert len(mailer.sent) == 4


def test_a_message_ses_refuses_fails_alone_and_the_batch_goes_on(store, mailer, clock, settings, queued):
    mailer.fail_with("MessageRejected", "Illegal address", to="u1-2@example.org")
    out = sender(store, mailer, clock, settings).send_batch("tx_1", BATCH)
    assert (out.state, out.sent) == ("sent", 3)  # (out.failed counts render failures only, not SES refusals)
    refused = store.get_message(BATCH, message_id_for(BATCH, 2))
    assert refused.status == M.FAILED and "Illegal address" in (refused.failure_reason or "")
    assert store.get_transaction("tx_1").counts["failed"] == 1


def test_throttling_past_patience_gives_the_rest_of_the_batch_back(store, mailer, clock, settings, queued):
    mailer.fail_with("Throttling", "Maximum sending rate exceeded.", times=None, to="u1-3@example.org")
    out = sender(store, mailer, clock, settings).send_batch("tx_1", BATCH)
    assert out.state == "stopped" and [m["to"] for m in mailer.sent] == ["u1-1@example.org", "u1-2@example.org"]
    assert len(mailer.refused) == 6  # SES did not take those calls: retried, never counted as sent
    assert store.get_batch(BATCH, "tx_1").status == B.QUEUED and store.dispatch_state(queued)["released_at"]
    mailer.clear_failures()
    clock.advance(31)
    again = sender(store, mailer, clock, settings).send_batch("tx_1", BATCH)
    assert again.state == "sent" and sorted(mailer.per_recipient().values()) == [1, 1, 1, 1]


def test_an_unverified_from_domain_holds_the_tenant_not_the_platform(store, mailer, clock, settings, queued):
    mailer.fail_with("MailFromDomainNotVerifiedException", "MAIL FROM domain not verified")
    out = sender(store, mailer, clock, settings).send_batch("tx_1", BATCH)
    assert out.state == "held" and mailer.sent == []
    assert store.sending_paused(TENANT) == "tenant (automatic): SES MailFromDomainNotVerifiedException: " \
                                          "MailFromDomainNotVerifiedException: MAIL FROM domain not verified"
    assert store.sending_paused("tenant-b") is None


def test_a_suppressed_address_is_never_mailed(store, mailer, clock, settings, queued):
    store.suppress(TENANT, "u1-4@example.org", "complaint")
    out = sender(store, mailer, clock, settings).send_batch("tx_1", BATCH)
    assert out.sent == 3 and "u1-4@example.org" not in mailer.per_recipient()
    assert statuses(store)[3] == M.SUPPRESSED and store.get_transaction("tx_1").counts["suppressed"] == 1


def test_an_in_doubt_call_waits_while_the_send_events_of_what_ses_accepted_are_not_recorded(store, mailer, clock,
                                                                                             settings, queued):
    """A quiet event pipeline may be a stalled one (Firehose retries a bucket it cannot write for up
    to a day, and the events queue stays empty): while the Send events of the chunk's mail that SES
    did accept are missing, the call in doubt is not made again. Once they are in, the quiet rule
    decides as before (here: no evidence for the one in doubt, so it goes out, once)."""
    from core.services.events import SendEvidenceMark, record_ses_events
    from tests.services.test_events import event

    mailer.fail_with("InternalFailure", "no answer", http_status=500, to="u1-3@example.org")
    assert sender(store, mailer, clock, settings).send_batch("tx_1", BATCH).state == "in_doubt"
    assert [m["to"] for m in mailer.sent] == ["u1-1@example.org", "u1-2@example.org"]
    clock.advance(settings.send_evidence_window_seconds + settings.lease_seconds * 4 + 1)
    assert sender(store, mailer, clock, settings).send_batch("tx_1", BATCH).state == "in_doubt"  # still waiting
    assert len(mailer.sent) == 2

    evidence = SendEvidenceMark(store, clock, settings.region)
    record_ses_events([event("ses_send.json", n, ses_id=m["ses_id"]) for n, m in enumerate(mailer.sent, start=1)],
                      store=store, evidence=evidence)
    evidence.flush()
    clock.advance(settings.send_evidence_window_seconds + 1)
    assert sender(store, mailer, clock, settings).send_batch("tx_1", BATCH).state == "sent"
    assert mailer.per_recipient() == {f"u1-{j}@example.org": 1 for j in range(1, 5)}


def test_an_in_doubt_chunk_waits_a_day_at_most_for_a_stalled_pipeline(store, mailer, clock, settings, queued):
    mailer.fail_with("InternalFailure", "no answer", http_status=500, to="u1-3@example.org")
    sender(store, mailer, clock, settings).send_batch("tx_1", BATCH)
    clock.advance(24 * 3600 + 1)
    assert sender(store, mailer, clock, settings).send_batch("tx_1", BATCH).state == "sent"
    assert mailer.per_recipient() == {f"u1-{j}@example.org": 1 for j in range(1, 5)}
