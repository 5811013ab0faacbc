"""The sender against moto's SES v2: exactly one send per recipient, at the dangerous points too."""

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest

from core.domain.errors import TemporaryError
from core.domain.models import iso, parse_iso
from core.domain.statuses import BatchStatus, MessageStatus
from core.services.events import record_ses_event
from tests.conftest import make_settings, ses_event_for, sns_envelope
from tests.helpers import (
    RecordingMailer,
    active_template,
    batch_sender,
    queued_campaign,
    recipients,
)


class Crash(Exception):
    pass


def test_a_batch_is_sent_once_with_tags_and_unsubscribe_headers(deps, tenant):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(25))
    mailer = RecordingMailer(deps.mailer)
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 25
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.sent) == 25
    first = mailer.sent[0]
    assert first["subject"] == "Hi User0" and "Hello User0" in first["html"]
    assert first["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["headers"]["List-Unsubscribe"].startswith("<http://127.0.0.1:8080/api/v1/email/unsubscribe/")
    assert set(first["tags"]) == {"tenant_id", "transaction_id", "batch_id", "message_id"}
    assert deps.store.get_batch(batch.batch_id, tx_id).status == BatchStatus.SENT
    # a redelivered queue message finds nothing left to do
    again = batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id)
    assert again.state == "nothing_to_do" and len(mailer.sent) == 25


def test_render_failure_fails_only_that_message(deps, tenant):
    tid = active_template(deps, "tenant-a", html="<p>{{ 100 // (n | int) }}</p>")
    csv_text = "email,first_name,n\na@x.org,A,5\nb@x.org,B,0\nc@x.org,C,4\n"
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", csv_text, template_id=tid)
    mailer = RecordingMailer(deps.mailer)
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 2 and out.failed == 1
    assert sorted(mailer.per_recipient()) == ["a@x.org", "c@x.org"]
    failed = deps.store.get_message(batch.batch_id, f"{batch.batch_id}-00002")
    assert failed.status == MessageStatus.FAILED and "ZeroDivisionError" in failed.failure_reason


def test_header_injection_in_a_subject_is_refused_per_message(deps, tenant):
    tid = active_template(deps, "tenant-a", subject="Hi {{ first_name }}")
    csv_text = "email,first_name\na@x.org,Ann\nb@x.org,\"Bob\r\nBcc: victim@x.org\"\n"
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", csv_text, template_id=tid)
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert list(mailer.per_recipient()) == ["a@x.org"]
    bad = deps.store.get_message(batch.batch_id, f"{batch.batch_id}-00002")
    assert "header injection" in bad.failure_reason


def test_addresses_suppressed_after_ingest_are_not_sent(deps, tenant):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(5))
    deps.store.suppress("tenant-a", "user3@example.org", "complaint")
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert "user3@example.org" not in mailer.per_recipient() and len(mailer.sent) == 4
    assert deps.store.get_message(batch.batch_id, f"{batch.batch_id}-00004").status == MessageStatus.SUPPRESSED


def test_throttling_backs_off_and_retries_without_duplicates(deps, tenant):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(10))
    throttles = Counter()

    def throttle_twice(kw, before):
        if before and throttles[kw["to"]] < 2:
            throttles[kw["to"]] += 1
            raise TemporaryError("SES throttled: TooManyRequestsException")

    mailer = RecordingMailer(deps.mailer, throttle_twice)
    started = deps.clock.now()
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "sent"
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.sent) == 10
    assert sum(throttles.values()) == 20
    assert (deps.clock.now() - started).total_seconds() >= 10 * (0.2 + 0.4)  # backoff slept (fake clock)


def test_crash_between_ses_accepting_and_the_send_log(deps, tenant, clock):
    """The dangerous point: SES accepted some of a chunk, then the worker died."""
    tx_id, batch, mailer = _crash_after(deps, clock)
    assert len(mailer.sent) == 4

    # Another worker straight away: the dead worker's lease still holds the batch.
    assert batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id).state == "busy"
    # Once the lease lapses: the chunk is in doubt, nothing is re-sent blindly.
    clock.advance(deps.settings.lease_seconds * 4 + 1)
    out = batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id)
    assert out.state == "in_doubt" and len(mailer.sent) == 4

    # SES's Send events arrive for what it accepted: the evidence.
    for s in mailer.sent:
        body = sns_envelope(ses_event_for("ses_send.json", tenant="tenant-a", message_id=s["tags"]["message_id"],
                                          recipient=s["to"], ses_id=s["ses_id"]))
        assert record_ses_event(body, store=deps.store) == "applied"

    clock.advance(deps.settings.send_evidence_window_seconds + 1)
    out = batch_sender(deps, mailer, "w3").send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 6
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.per_recipient()) == 10
    assert deps.store.get_batch(batch.batch_id, tx_id).status == BatchStatus.SENT


def _crash_after(deps, clock, accepted: int = 4):
    """Ten recipients (one chunk, unless the settings make chunks smaller); the worker dies right
    after SES accepted the ``accepted``-th message."""
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(10))

    def die(kw, before):
        if not before and len(mailer.sent) == accepted:
            raise Crash(f"worker killed right after SES accepted message {accepted}")

    mailer = RecordingMailer(deps.mailer, die)
    with pytest.raises(Crash):
        batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    mailer.fail = None
    return tx_id, batch, mailer


def _pipeline_records(deps, sends):
    """The events Lambda recording SES Send events (with the times SES sent them) and its mark."""
    for s in sends:
        body = sns_envelope(ses_event_for("ses_send.json", tenant="tenant-a", message_id=s["tags"]["message_id"],
                                          recipient=s["to"], ses_id=s["ses_id"], sent_at=s["sent_at"]))
        record_ses_event(body, store=deps.store, evidence=deps.evidence)
    deps.evidence.flush()


def test_an_in_doubt_chunk_waits_for_a_lagging_event_pipeline(deps, tenant, clock):
    """A fixed window is not enough: when the event pipeline lags by more than the window, the
    evidence of what SES accepted is still queued as the window ends. The chunk waits for it."""
    crashed_at = clock.now()
    tx_id, batch, mailer = _crash_after(deps, clock)
    for s in mailer.sent:
        s["sent_at"] = iso(crashed_at)
    clock.advance(deps.settings.lease_seconds * 4 + deps.settings.send_evidence_window_seconds + 1)

    # The pipeline is still working through mail older than the chunk.
    deps.evidence.saw(iso(crashed_at - timedelta(seconds=1)))
    deps.evidence.flush()
    out = batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id)
    assert out.state == "in_doubt" and len(mailer.sent) == 4

    _pipeline_records(deps, mailer.sent)  # it reaches the chunk's Send events ...
    clock.advance(deps.settings.send_evidence_window_seconds + 1)  # ... and then has nothing more to record
    out = batch_sender(deps, mailer, "w3").send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 6
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.per_recipient()) == 10


def test_an_in_doubt_chunk_resolves_once_the_pipeline_is_past_it(deps, tenant, clock):
    crashed_at = clock.now()
    tx_id, batch, mailer = _crash_after(deps, clock)
    for s in mailer.sent:
        s["sent_at"] = iso(crashed_at)
    clock.advance(deps.settings.lease_seconds * 4 + deps.settings.send_evidence_window_seconds + 1)
    _pipeline_records(deps, mailer.sent)
    # Busy, but with mail sent a window after the chunk's send-by time: its evidence is in.
    deps.evidence.saw(iso(clock.now()))
    deps.evidence.flush()
    out = batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 6
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.per_recipient()) == 10


def test_a_worker_that_stalls_past_its_lease_sends_nothing_more(deps, tenant, clock):
    """Every SES call of a chunk happens before its send-by time, the end of the batch lease."""
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(10))

    def stall_after_third(kw, before):
        if not before and len(mailer.sent) == 3:
            clock.advance(deps.settings.lease_seconds * 4 + 1)  # a long pause: the lease is gone

    mailer = RecordingMailer(deps.mailer, stall_after_third)
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "stopped" and len(mailer.sent) == 3
    mailer.fail = None
    clock.advance(31)
    out = batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 7
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.per_recipient()) == 10


def test_pause_stops_a_batch_between_chunks_and_resume_finishes_it(deps, tenant):
    from core.services import campaigns

    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(30))  # three chunks of 10

    def pause_after_first_chunk(kw, before):
        if not before and len(mailer.sent) == 10:
            campaigns.pause_campaign(deps.store, deps.clock, "tenant-a", tx_id)

    mailer = RecordingMailer(deps.mailer, pause_after_first_chunk)
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "stopped" and len(mailer.sent) == 10
    mailer.fail = None
    campaigns.resume_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and set(mailer.per_recipient().values()) == {1} and len(mailer.sent) == 30


def test_measured_send_rate_stays_within_a_low_quota(moto_server):
    """Two workers share a 20/s quota. Bookings never overlap and no worker sends faster than the
    quota, even after a slow call (no catch-up burst). What can exceed the quota briefly is one
    worker finishing a late booking while the next one starts: bounded by one call's latency,
    never sustained (and SES answers it with a retriable throttle, which the sender backs off)."""
    from core.bootstrap import bootstrap
    from core.services.tenants import ensure_tenant
    from local.bootstrap import create_resources

    settings = make_settings(moto_server.url, ses_max_send_rate=20, send_chunk_size=5, batch_size=30)
    create_resources(settings)
    deps = bootstrap(settings)  # real clock: this test measures time
    ensure_tenant(deps.store, deps.secrets, "tenant-a")
    tx_id, batches = queued_campaign(deps, "tenant-a", recipients(60))
    mailer = RecordingMailer(deps.mailer)
    stamps: list[tuple[float, int]] = []
    orig = mailer.send

    def timed(**kw):
        stamps.append((time.monotonic(), threading.get_ident()))
        return orig(**kw)

    mailer.send = timed
    workers = [threading.Thread(target=batch_sender(deps, mailer, f"w{i}").send_batch, args=(tx_id, b.batch_id))
               for i, b in enumerate(batches)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(mailer.sent) == 60
    times = sorted(t for t, _ in stamps)
    # Sends never come before their booked slot; the first may come late (the lease and send-log
    # writes sit between booking and sending), which shortens the span a little.
    elapsed = times[-1] - times[0]
    assert elapsed >= (60 - 1) / 20 - 0.45, f"60 sends in {elapsed:.2f}s exceeds 20/s"
    for worker in {w for _, w in stamps}:
        own = sorted(t for t, w in stamps if w == worker)
        gaps = [b - a for a, b in zip(own, own[1:])]
        assert min(gaps) >= 1 / 20 - 0.005, f"a worker sent {min(gaps) * 1000:.0f} ms after its previous send"
    window_max = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert window_max <= 25, f"{window_max} sends within one second: {[round(t - times[0], 3) for t in times]}"


def test_kill_switch_holds_sending_platform_wide_and_per_tenant(deps, tenant):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(5))
    mailer = RecordingMailer(deps.mailer)
    deps.store.set_sending_switch(tenant_id="tenant-a", tenant_paused=True, reason="incident 42")
    assert batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "stopped"
    deps.store.set_sending_switch(tenant_id="tenant-a", tenant_paused=False)
    deps.store.set_sending_switch(paused=True, reason="SES incident")
    assert batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "stopped"
    assert mailer.sent == []
    deps.store.set_sending_switch(paused=False)
    assert batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "sent" and len(mailer.sent) == 5


def test_stuck_campaign_shows_an_in_doubt_chunk_and_its_event_pipeline(deps, tenant, clock):
    from runbooks import stuck_campaign

    crashed_at = clock.now()
    tx_id, batch, mailer = _crash_after(deps, clock)
    for s in mailer.sent:
        s["sent_at"] = iso(crashed_at)
    _pipeline_records(deps, mailer.sent[:2])
    lines: list[str] = []
    assert stuck_campaign.main(["--campaign", tx_id], settings=deps.settings, out=lines.append) == 0
    text = "\n".join(lines)
    assert f"batch {batch.batch_id} has chunks in doubt (waiting for SES evidence): ok — 1 chunk(s)" in text
    assert f"{deps.settings.region}'s event pipeline: newest Send event recorded (and when): ok — {iso(crashed_at)}" in text


def test_a_second_copy_of_the_batch_in_the_same_process_is_busy(deps, tenant):
    """The lease holder is the send call: threads (or Lambda sandboxes) sharing a host name and
    pid must not both send a batch the queue delivered twice."""
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(30))  # three chunks of 10
    sender = batch_sender(deps, None)
    seen = []

    def second_copy_arrives(kw, before):
        if not before and len(mailer.sent) == 5:
            seen.append(sender.send_batch(tx_id, batch.batch_id).state)

    mailer = RecordingMailer(deps.mailer, second_copy_arrives)
    sender.mailer = mailer
    out = sender.send_batch(tx_id, batch.batch_id)
    assert seen == ["busy"] and out.state == "sent" and out.sent == 30
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.per_recipient()) == 30


def test_slots_booked_behind_other_workers_extend_the_lease_instead_of_stopping(deps, tenant, clock):
    """Other workers hold the next two minutes of the quota: this chunk's slots start after its
    lease would end, so it extends the lease and its send-by time before sending anything."""
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(10))
    deps.limiter.reserve(int(deps.settings.ses_max_send_rate * 120))
    mailer = RecordingMailer(deps.mailer)
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and len(mailer.sent) == 10
    (entry,) = [i for i in deps.store.table.query_all(f"BATCH#{batch.batch_id}", "SENDLOG#")]
    assert parse_iso(entry["send_by"]) > parse_iso(entry["created_at"]) + timedelta(seconds=120)


@pytest.mark.parametrize("how", ["deleted", "access_denied"])
def test_a_template_that_cannot_be_loaded_fails_the_campaign(deps, tenant, how, monkeypatch):
    """Not re-dispatched forever: the campaign goes FAILED with a reason and its callback."""
    from core.domain.statuses import TransactionStatus
    from tests.helpers import leader

    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(5), callback_url="http://127.0.0.1:9/cb")
    tx = deps.store.get_transaction(tx_id)
    tv = deps.store.get_template_version(tx.template_id, tx.template_version)
    if how == "deleted":
        deps.clients["s3"].delete_object(Bucket=deps.settings.bucket("templates"), Key=tv.s3_key)
    else:
        from botocore.exceptions import ClientError

        def denied(*a, **kw):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")

        monkeypatch.setattr(deps.blobs, "read_bytes", denied)
    mailer = RecordingMailer(deps.mailer)
    out = batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "failed" and mailer.sent == []
    c = leader(deps)
    c.advance_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.FAILED
    assert f"template {tx.template_id} version {tx.template_version} cannot be loaded" in tx.failure_reason
    assert [cb.payload["status"] for cb in deps.store.callbacks(tx_id)][-1] == "FAILED"
    c.advance_pass()
    assert deps.store.get_batch(batch.batch_id, tx_id).status == BatchStatus.CANCELLED


def test_a_dead_workers_chunk_waits_while_the_batchs_accepted_mail_has_no_recorded_send_event(deps, tenant, clock):
    """A stalled pipeline looks quiet. A worker died mid-chunk (which of its calls SES accepted is
    unknown), and the Send events of the mail SES accepted in the batch's earlier chunk are not in
    either: the chunk waits instead of sending its accepted mail again; once the events are in,
    only what SES never took goes out."""
    deps.settings = deps.settings.model_copy(update={"send_chunk_size": 5})
    tx_id, batch, mailer = _crash_after(deps, clock, accepted=7)  # the 2nd message of chunk 2
    sent_at = clock.now()
    for s in mailer.sent:
        s["sent_at"] = iso(sent_at)
    clock.advance(deps.settings.lease_seconds * 4 + deps.settings.send_evidence_window_seconds + 1)
    out = batch_sender(deps, mailer, "w2").send_batch(tx_id, batch.batch_id)
    assert out.state == "in_doubt" and len(mailer.sent) == 7  # the quiet pipeline is not believed

    _pipeline_records(deps, mailer.sent)
    clock.advance(deps.settings.send_evidence_window_seconds + 1)
    out = batch_sender(deps, mailer, "w3").send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 3
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.per_recipient()) == 10
