"""Text parts, custom headers, metadata, previews, test sends and drafts against moto (issue 18).

The mail SES accepted is read back from the embedded SES (``local.ses_mailbox``): what moto's
SendEmail received, as the MIME message SES would deliver."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from core.domain.errors import (
    AddressSuppressed,
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    TemporaryError,
)
from core.domain.models import iso
from core.domain.schedule import send_minute
from core.services import attachments, campaigns, message_events, previews, templates
from core.services.events import record_ses_event, record_ses_events
from local.ses_mailbox import received
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import RecordingMailer, batch_sender, leader, queued_campaign, submit


def text_template(deps: Any, tenant_id: str, html: str, text: str | None,
                  subject: str = "Hi {{ first_name }}") -> str:
    t = templates.create_template(deps.store, deps.blobs, deps.settings, tenant_id, "t", subject, text=text is not None)
    tv = deps.store.get_template_version(t["template_id"], 1)
    deps.blobs.put(deps.settings.bucket("templates"), tv.s3_key, html.encode(), "text/html")
    if text is not None:
        assert "text_upload" in t and t["text_upload"]["fields"]["Content-Type"] == "text/plain"
        deps.blobs.put(deps.settings.bucket("templates"), tv.text_s3_key, text.encode(), "text/plain")
    templates.confirm_template(deps.store, deps.blobs, deps.settings, tenant_id, t["template_id"])
    return t["template_id"]


def sent_mail(deps: Any, message_id: str):
    (mail,) = received(deps.settings.aws_endpoint_url, message_id=message_id)
    return mail


def test_a_text_version_goes_out_as_the_plain_part_of_a_multipart_alternative(deps, tenant):
    tid = text_template(deps, "tenant-a", "<p>Hello {{ first_name }}</p>", "Hello {{ first_name }}, in {{ city }}")
    assert deps.store.get_template_version(tid, 1).variables == ["city", "first_name"]  # the text's too
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name,city\na@x.org,Ann,Oslo\n", template_id=tid)
    mailer = RecordingMailer(deps.mailer)
    assert batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id).sent == 1
    mail = sent_mail(deps, f"{batch.batch_id}-00001")
    assert mail.get_content_type() == "multipart/alternative"
    assert mail.get_body(("plain",)).get_content().strip() == "Hello Ann, in Oslo"
    assert "<p>Hello Ann</p>" in mail.get_body(("html",)).get_content()
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_without_a_text_version_the_text_part_is_derived_from_the_html(deps, tenant):
    tid = text_template(deps, "tenant-a", "<p>Hi {{ first_name }}</p><p><a href='https://x.org/o'>Offer</a></p>", None)
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\nb@x.org,Bo\n", template_id=tid)
    batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id)
    mail = sent_mail(deps, f"{batch.batch_id}-00001")
    assert mail.get_body(("plain",)).get_content().strip() == "Hi Bo\n\nOffer (https://x.org/o)"


def test_a_declared_text_version_must_be_uploaded_before_confirming(deps, tenant):
    t = templates.create_template(deps.store, deps.blobs, deps.settings, "tenant-a", "t", "S", text=True)
    tv = deps.store.get_template_version(t["template_id"], 1)
    deps.blobs.put(deps.settings.bucket("templates"), tv.s3_key, b"<p>x</p>", "text/html")
    with pytest.raises(Conflict, match="text version not uploaded"):
        templates.confirm_template(deps.store, deps.blobs, deps.settings, "tenant-a", t["template_id"])


def test_custom_headers_go_out_and_metadata_is_kept_apart_from_the_placeholders(deps, tenant):
    csv_text = "email,first_name,crm_id,segment\nc@x.org,Cy,C-1,gold\n"
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", csv_text, headers={"X-Campaign-Ref": "spring-26"},
                                      metadata_columns=["crm_id", "segment"])
    mid = f"{batch.batch_id}-00001"
    msg = deps.store.get_message(batch.batch_id, mid)
    assert msg.metadata == {"crm_id": "C-1", "segment": "gold"} and msg.placeholder_data == {"first_name": "Cy"}
    batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id)
    mail = sent_mail(deps, mid)
    assert mail["X-Campaign-Ref"] == "spring-26" and mail["List-Unsubscribe"].startswith("<http")
    # a message read and the SES event documents carry the metadata
    assert campaigns.get_message(deps.store, "tenant-a", mid)["metadata"] == {"crm_id": "C-1", "segment": "gold"}
    page = campaigns.list_messages(deps.store, "tenant-a", tx_id, None, 10, None)
    assert page["items"][0]["metadata"] == {"crm_id": "C-1", "segment": "gold"}
    docs: list[dict] = []

    class Sink:
        def index_many(self, batch):
            docs.extend(batch)

    for kind in ("ses_send.json", "ses_delivery.json"):
        record_ses_event(sns_envelope(ses_event_for(kind, tenant="tenant-a", message_id=mid, recipient="c@x.org")),
                         store=deps.store, analytics=Sink())
    assert [d["message_metadata"] for d in docs] == [{"crm_id": "C-1", "segment": "gold"}] * 2


def test_a_header_injection_or_a_platform_header_is_refused_at_submit(deps, tenant):
    for headers, why in (({"X-Ref": "a\r\nBcc: victim@x.org"}, "line break"), ({"From": "ceo@x.org"}, "overridden")):
        with pytest.raises(InvalidInput, match=why):
            submit(deps, "tenant-a", "email,first_name\na@x.org,A\n", headers=headers)
    with pytest.raises(InvalidInput, match="used by the template"):
        submit(deps, "tenant-a", "email,first_name\na@x.org,A\n", metadata_columns=["first_name"])


def test_a_csv_without_a_declared_metadata_column_fails_the_campaign_with_the_reason(deps, tenant):
    tx_id = submit(deps, "tenant-a", "email,first_name\na@x.org,A\n", metadata_columns=["crm_id"])
    leader(deps).ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status.value == "FAILED" and "metadata columns ['crm_id']" in tx.failure_reason


def test_a_preview_renders_subject_html_and_text_and_sends_nothing(deps, tenant):
    tid = text_template(deps, "tenant-a", "<p>Hi {{ first_name }}</p>", "Hi {{ first_name }} (text)")
    out = previews.preview_template(deps.store, deps.blobs, deps.settings, "tenant-a", tid, data={"first_name": "<Al>"})
    assert out == {"template_id": tid, "version": 1, "subject": "Hi <Al>", "html": "<p>Hi &lt;Al&gt;</p>",
                   "text": "Hi <Al> (text)", "text_derived": False}
    derived = previews.preview_template(deps.store, deps.blobs, deps.settings, "tenant-a",
                                        text_template(deps, "tenant-a", "<p>Yo {{ email }}</p>", None, subject="Yo"))
    assert derived["text"] == "Yo recipient@example.com\n" and derived["text_derived"]
    with pytest.raises(InvalidInput, match="missing placeholder"):
        previews.preview_template(deps.store, deps.blobs, deps.settings, "tenant-a", tid, data={})
    pending = templates.create_template(deps.store, deps.blobs, deps.settings, "tenant-a", "p", "S")
    with pytest.raises(Conflict, match="not uploaded"):
        previews.preview_template(deps.store, deps.blobs, deps.settings, "tenant-a", pending["template_id"])
    with pytest.raises(NotFound):
        previews.preview_template(deps.store, deps.blobs, deps.settings, "tenant-b", tid)


def _test_send(deps, tx_id, to, data=None):
    return previews.send_test_mail(deps.store, deps.blobs, deps.settings, deps.mailer, deps.limiter, deps.clock,
                                   "tenant-a", tx_id, to, data)


def test_a_test_send_of_a_scheduled_campaign_goes_to_one_address_and_touches_no_message(deps, tenant):
    later = (deps.clock.now() + timedelta(days=1)).isoformat()
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\nr@x.org,Ria\n",
                                      schedule={"send_at": datetime.fromisoformat(later)},
                                      headers={"X-Ref": "t1"})
    assert deps.store.get_transaction(tx_id).status.value == "SCHEDULED"
    out = _test_send(deps, tx_id, "qa@example.org")  # the first recipient's row by default
    assert out["to"] == "qa@example.org" and out["subject"] == "Hi Ria"
    (mail,) = received(deps.settings.aws_endpoint_url, message_id=out["test_message_id"])
    assert mail["To"] == "qa@example.org" and mail["X-Ref"] == "t1" and mail.email_tags["test_send"] == "true"
    assert "Hello Ria" in mail.get_body(("html",)).get_content()
    # its SES events concern no message of the campaign
    ev = ses_event_for("ses_delivery.json", tenant="tenant-a", message_id=f"{batch.batch_id}-00001")
    ev["mail"]["tags"]["message_id"] = [out["test_message_id"]]
    assert record_ses_event(sns_envelope(ev), store=deps.store) == "ignored"
    assert deps.store.get_message(batch.batch_id, f"{batch.batch_id}-00001").status.value == "SCHEDULED"
    deps.store.suppress("tenant-a", "gone@example.org", "complaint")
    with pytest.raises(AddressSuppressed):
        _test_send(deps, tx_id, "Gone@example.org", {"first_name": "G"})
    with pytest.raises(InvalidInput, match="not a valid address"):
        _test_send(deps, tx_id, "nobody@", {"first_name": "G"})


def test_a_released_campaign_takes_no_test_send(deps, tenant):
    tx_id, _ = queued_campaign(deps, "tenant-a", "email,first_name\nr@x.org,Ria\n")
    with pytest.raises(Conflict, match="READY_TO_SEND"):
        _test_send(deps, tx_id, "qa@example.org")


def test_a_draft_is_ingested_and_validated_then_sent_only_once_released(deps, tenant):
    tx_id = submit(deps, "tenant-a", "email,first_name\nd1@x.org,D\nbroken@,X\nd2@x.org,E\n", draft=True)
    c = leader(deps)
    c.ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status.value == "DRAFT" and tx.total_messages == 2 and tx.refused_rows == 1
    view = campaigns.get_campaign(deps.store, "tenant-a", tx_id)
    assert view["draft"] and view["summary"]["total_messages"] == 2 and view["summary"]["refused_at_ingest"] == 1
    assert campaigns.list_rejections(deps.store, "tenant-a", tx_id, 10, None)["items"][0]["line"] == 3
    assert tx_id not in {t.transaction_id for t in deps.store.active_transactions()}  # nothing for the controller
    c.advance_pass()
    assert all(b.status.value == "PROCESSING" for b in deps.store.batches(tx_id))  # nothing released
    assert _test_send(deps, tx_id, "qa@example.org")["subject"] == "Hi D"  # a draft takes test sends
    out = campaigns.release_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    assert out["status"] == "READY_TO_SEND"
    with pytest.raises(Conflict, match="only DRAFT"):
        campaigns.release_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    c.advance_pass()
    (batch,) = deps.store.batches(tx_id)
    assert batch.status.value == "QUEUED"
    assert batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id).sent == 2


def test_a_scheduled_draft_is_released_to_its_schedule_and_a_draft_can_be_cancelled(deps, tenant):
    when = deps.clock.now() + timedelta(hours=2)
    tx_id = submit(deps, "tenant-a", "email,first_name\ns@x.org,S\n", draft=True, schedule={"send_at": when})
    leader(deps).ingest_pass()
    assert campaigns.release_campaign(deps.store, deps.clock, "tenant-a", tx_id)["status"] == "SCHEDULED"
    (batch,) = deps.store.batches(tx_id)
    assert batch.status.value == "SCHEDULED"

    other = submit(deps, "tenant-a", "email,first_name\nt@x.org,T\n", draft=True)
    c = leader(deps)
    c.ingest_pass()
    with pytest.raises(Conflict, match="still being ingested"):
        campaigns.release_campaign(deps.store, deps.clock, "tenant-a",
                                   submit(deps, "tenant-a", "email,first_name\nu@x.org,U\n", draft=True))
    assert campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", other)["status"] == "CANCELLED"
    c.advance_pass()  # back in the active index: the controller settles it
    assert [b.status.value for b in deps.store.batches(other)] == ["CANCELLED"]


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def attachment(deps: Any, filename: str, content_type: str, data: bytes, confirm: bool = True) -> str:
    a = attachments.create_attachment(deps.store, deps.blobs, deps.settings, "tenant-a", filename, content_type)
    assert a["upload"]["fields"]["Content-Type"] == content_type
    key = deps.store.get_attachment(a["attachment_id"]).s3_key
    deps.blobs.put(deps.settings.bucket("templates"), key, data, content_type)
    if confirm:
        attachments.confirm_attachment(deps.store, deps.blobs, deps.settings, "tenant-a", a["attachment_id"])
    return a["attachment_id"]


def test_attachments_for_all_and_per_recipient_go_out_in_a_raw_mime_message(deps, tenant):
    terms = attachment(deps, "terms.pdf", "application/pdf", PDF)
    inv = attachment(deps, "invoice-1.csv", "text/csv", b"item,price\nbook,12\n")
    csv_text = f"email,first_name,file\na@x.org,Ann,{inv}\nb@x.org,Bo,\nc@x.org,Cy,att_missing\n"
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", csv_text, attachments=[terms], attachment_column="file",
                                      headers={"X-Ref": "att"})
    rej = campaigns.list_rejections(deps.store, "tenant-a", tx_id, 10, None)["items"]
    assert [(r["line"], r["reason"].split(":")[0]) for r in rej] == [(4, "attachment_missing")]
    assert "att_missing" in rej[0]["reason"]
    mailer = RecordingMailer(deps.mailer)
    assert batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id).sent == 2
    a_mail, b_mail = (sent_mail(deps, f"{batch.batch_id}-0000{i}") for i in (1, 2))
    files = {p.get_filename(): p.get_content() for p in a_mail.iter_attachments()}
    assert files == {"terms.pdf": PDF, "invoice-1.csv": "item,price\nbook,12\n"}
    assert [p.get_filename() for p in b_mail.iter_attachments()] == ["terms.pdf"]
    assert a_mail["X-Ref"] == "att" and a_mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert a_mail.get_body(("plain",)).get_content().strip() == "Hello Ann"
    assert a_mail.email_tags["message_id"] == f"{batch.batch_id}-00001"  # the send-evidence tags stay
    assert campaigns.get_message(deps.store, "tenant-a", f"{batch.batch_id}-00001")["attachments"] == [inv]


def test_a_file_named_for_all_and_in_a_recipients_column_is_attached_once(deps, tenant):
    terms = attachment(deps, "terms.pdf", "application/pdf", PDF)
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", f"email,first_name,file\na@x.org,Ann,{terms}\n",
                                      attachments=[terms], attachment_column="file")
    assert batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id).sent == 1
    assert [p.get_filename() for p in sent_mail(deps, f"{batch.batch_id}-00001").iter_attachments()] == ["terms.pdf"]


def test_a_file_that_is_not_what_it_claims_turns_invalid_and_cannot_be_attached(deps, tenant):
    bad_id = attachment(deps, "report.pdf", "application/pdf", b"MZ\x90\x00payload", confirm=False)
    with pytest.raises(InvalidInput, match="executable"):
        attachments.confirm_attachment(deps.store, deps.blobs, deps.settings, "tenant-a", bad_id)
    bad = deps.store.get_attachment(bad_id)
    assert bad.status == "INVALID" and "executable" in bad.error
    with pytest.raises(Conflict, match="was refused"):
        attachments.confirm_attachment(deps.store, deps.blobs, deps.settings, "tenant-a", bad_id)
    pending = attachment(deps, "later.pdf", "application/pdf", PDF, confirm=False)
    for ids, why in (([bad.attachment_id], "INVALID"), ([pending], "PENDING_UPLOAD"), (["att_nope"], "not found")):
        with pytest.raises(InvalidInput, match=why):
            submit(deps, "tenant-a", "email,first_name\na@x.org,A\n", attachments=ids)


def test_too_large_attachments_are_refused_on_confirm_and_at_submit(deps, tenant):
    deps.settings = deps.settings.model_copy(update={"max_attachment_bytes": 100, "max_message_attachment_bytes": 150})
    with pytest.raises(PayloadTooLarge, match="limit is 100"):
        attachment(deps, "big.pdf", "application/pdf", PDF + b"x" * 200)
    one, two = (attachment(deps, f"f{i}.pdf", "application/pdf", PDF + b"x" * 40) for i in (1, 2))
    with pytest.raises(PayloadTooLarge, match="at most 150"):
        submit(deps, "tenant-a", "email,first_name\na@x.org,A\n", attachments=[one, two])
    tx_id, _ = queued_campaign(deps, "tenant-a", f"email,first_name,f\na@x.org,A,{two}\nb@x.org,B,\n",
                               attachments=[one], attachment_column="f")
    rej = campaigns.list_rejections(deps.store, "tenant-a", tx_id, 10, None)["items"]
    assert [r["reason"].split(":")[0] for r in rej] == ["attachment_too_large"]


def test_a_test_send_carries_the_campaigns_attachments_and_a_vanished_file_fails_only_its_mail(deps, tenant):
    terms = attachment(deps, "terms.pdf", "application/pdf", PDF)
    own = attachment(deps, "own.txt", "text/plain", b"yours\n")
    later = deps.clock.now() + timedelta(days=1)
    tx_id, _ = queued_campaign(deps, "tenant-a", "email,first_name\nq@x.org,Q\n", attachments=[terms],
                               schedule={"send_at": later})
    out = _test_send(deps, tx_id, "qa@example.org")
    (mail,) = received(deps.settings.aws_endpoint_url, message_id=out["test_message_id"])
    assert [p.get_filename() for p in mail.iter_attachments()] == ["terms.pdf"]

    tx_id, (batch,) = queued_campaign(deps, "tenant-a", f"email,first_name,f\na@x.org,A,{own}\nb@x.org,B,\n",
                                      attachment_column="f")
    deps.blobs.client.delete_object(Bucket=deps.settings.bucket("templates"),
                                    Key=deps.store.get_attachment(own).s3_key)
    out = batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id)
    assert (out.sent, out.failed) == (1, 1)
    failed = deps.store.get_message(batch.batch_id, f"{batch.batch_id}-00001")
    assert failed.status.value == "FAILED" and failed.failure_reason.startswith("attachment unavailable")


def test_an_image_attachment_the_html_shows_by_cid_is_sent_inline(deps, tenant):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    logo = attachment(deps, "logo.png", "image/png", png)
    terms = attachment(deps, "terms.pdf", "application/pdf", PDF)
    tid = text_template(deps, "tenant-a", f'<p>Hi {{{{ first_name }}}}</p><img src="cid:{logo}" alt="Logo">', None)
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\ni@x.org,Ida\n", template_id=tid,
                                      attachments=[logo, terms])
    batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id)
    mail = sent_mail(deps, f"{batch.batch_id}-00001")
    (image,) = [p for p in mail.walk() if p.get("Content-ID") == f"<{logo}>"]
    assert image.get_content() == png and image.get_content_disposition() == "inline"
    assert [p.get_filename() for p in mail.iter_attachments()] == ["terms.pdf"]
    assert mail.get_body(("plain",)).get_content().strip() == "Hi Ida\n\n[Logo]"


def test_a_test_send_does_not_wait_long_behind_sending_campaigns(deps, tenant):
    tx_id = submit(deps, "tenant-a", "email,first_name\nw@x.org,W\n", draft=True)
    leader(deps).ingest_pass()
    deps.limiter.reserve(int(deps.settings.ses_max_send_rate * 60))  # the next minute of slots is taken
    with pytest.raises(TemporaryError, match="send rate"):
        _test_send(deps, tx_id, "qa@example.org")


# --- per-recipient send times (the CSV's send_at column) ------------------------------------------


def _hour(deps: Any, hours: float, offset: str = "+01:00") -> str:
    """A time ``hours`` after the fake clock's now, written in the zone ``offset`` like a CSV would."""
    sign, hh, mm = (1 if offset[0] == "+" else -1), int(offset[1:3]), int(offset[4:6])
    tz = timezone(sign * timedelta(hours=hh, minutes=mm))
    return (deps.clock.now() + timedelta(hours=hours)).astimezone(tz).isoformat()


def test_each_recipient_is_released_at_their_own_time_and_the_campaign_waits_scheduled_between(deps, tenant):
    # GIVEN rows due now (empty cell), in one hour (two zones, same minute), in three hours, and three bad ones
    csv_text = ("email,first_name,send_at,crm_id\n"
                "now@x.org,Nu,,N-1\n"
                f"paris@x.org,Pa,{_hour(deps, 1, '+01:00')},P-1\n"
                f"ny@x.org,Ny,{_hour(deps, 1, '-05:00')},Y-1\n"
                f"tokyo@x.org,To,{_hour(deps, 3, '+09:00')},T-1\n"
                "bad@x.org,Ba,next tuesday,B-1\n"
                f"naive@x.org,Na,{(deps.clock.now() + timedelta(hours=1)).replace(tzinfo=None).isoformat()},B-2\n"
                f"late@x.org,La,{_hour(deps, 49, '+00:00')},B-3\n")
    tx_id = submit(deps, "tenant-a", csv_text, metadata_columns=["crm_id", "send_at"],
                   callback_url="http://127.0.0.1:9/hook")  # never delivered here: its outbox shows the moves
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    # THEN the bad rows are rejected with their reasons, each minute has a batch of its own
    rej = campaigns.list_rejections(deps.store, "tenant-a", tx_id, 10, None)["items"]
    assert [(r["line"], r["reason"].split(":")[0]) for r in rej] == [
        (6, "send_at_invalid"), (7, "send_at_invalid"), (8, "send_at_outside_window")]
    tx = deps.store.get_transaction(tx_id)
    assert tx.total_messages == 4 and tx.status.value == "READY_TO_SEND"
    now_b, one_h, three_h = deps.store.batches(tx_id)
    assert (now_b.status.value, now_b.message_count, now_b.send_at) == ("QUEUED", 1, None)
    # each batch is due at the first minute boundary at or after its rows' time (never before it)
    due_1h, due_3h = (send_minute(deps.clock.now() + timedelta(hours=h)) for h in (1, 3))
    assert (one_h.status.value, one_h.message_count, one_h.send_at) == ("SCHEDULED", 2, due_1h)
    assert (three_h.status.value, three_h.send_at) == ("SCHEDULED", due_3h)
    paris = deps.store.get_message(one_h.batch_id, f"{one_h.batch_id}-00001")
    assert paris.placeholder_data == {"first_name": "Pa"}  # consumed, never rendered
    assert paris.metadata == {"crm_id": "P-1", "send_at": _hour(deps, 1, "+01:00")}  # declared: kept as given
    sender = batch_sender(deps, RecordingMailer(deps.mailer))

    # WHEN what is due is sent THEN the campaign waits SCHEDULED (no controller work until the next minute)
    assert sender.send_batch(tx_id, now_b.batch_id).sent == 1
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status.value == "SCHEDULED"
    deps.clock.advance((due_1h - deps.clock.now()).total_seconds() - 1)
    c.advance_pass()
    assert deps.store.get_batch(one_h.batch_id, tx_id).status.value == "SCHEDULED"
    deps.clock.advance(1)
    c.advance_pass()  # the due index releases the one-hour batch: sending again
    assert deps.store.get_transaction(tx_id).status.value == "READY_TO_SEND"
    assert deps.store.get_batch(one_h.batch_id, tx_id).status.value == "QUEUED"
    assert sender.send_batch(tx_id, one_h.batch_id).sent == 2
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status.value == "SCHEDULED"

    # a pause holds the not-yet-due batch past its time; a resume lets it go
    campaigns.pause_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    deps.clock.advance((due_3h - deps.clock.now()).total_seconds() + 10)
    c.advance_pass()
    assert deps.store.get_batch(three_h.batch_id, tx_id).status.value == "SCHEDULED"
    assert campaigns.resume_campaign(deps.store, deps.clock, "tenant-a", tx_id)["status"] == "SCHEDULED"
    deps.clock.advance(61)
    c.advance_pass()
    assert deps.store.get_batch(three_h.batch_id, tx_id).status.value == "QUEUED"
    assert sender.send_batch(tx_id, three_h.batch_id).sent == 1
    c.advance_pass()
    moves = [cb.payload["status"] for cb in deps.store.callbacks(tx_id)]
    assert moves[:9] == ["PROCESSING", "READY_TO_SEND", "SCHEDULED", "READY_TO_SEND", "SCHEDULED", "PAUSED",
                         "SCHEDULED", "READY_TO_SEND", "SENT"]  # then COMPLETED, once its outcomes are in


def test_a_cancel_reaches_the_recipients_whose_time_has_not_come(deps, tenant):
    tx_id = submit(deps, "tenant-a", f"email,first_name,send_at\nsoon@x.org,S,\nlater@x.org,L,{_hour(deps, 5)}\n")
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    first, later = deps.store.batches(tx_id)
    batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, first.batch_id)
    c.advance_pass()
    assert deps.store.get_transaction(tx_id).status.value == "SCHEDULED"
    assert campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)["status"] == "CANCELLED"
    c.advance_pass()
    assert deps.store.get_batch(later.batch_id, tx_id).status.value == "CANCELLED"
    assert deps.store.get_message(later.batch_id, f"{later.batch_id}-00001").status.value == "CANCELLED"
    assert not [i for i in deps.store.due("BATCH", deps.clock.now() + timedelta(days=3)) if i["transaction_id"] == tx_id]


def test_send_at_is_no_template_variable_and_the_window_is_checked_at_submit(deps, tenant):
    tid = text_template(deps, "tenant-a", "<p>At {{ send_at }}</p>", None, subject="Hi")
    with pytest.raises(InvalidInput, match="per-recipient send time column"):
        submit(deps, "tenant-a", "email,send_at\na@x.org,\n", template_id=tid)
    with pytest.raises(InvalidInput, match="send_until must be after"):
        submit(deps, "tenant-a", "email,first_name\na@x.org,A\n",
               schedule={"send_at": deps.clock.now() + timedelta(hours=2),
                         "send_until": deps.clock.now() + timedelta(hours=1)})
    with pytest.raises(InvalidInput, match="attachment_column"):
        submit(deps, "tenant-a", "email,first_name\na@x.org,A\n", attachment_column="send_at")
    # a narrower window: a row past send_until is rejected
    until = deps.clock.now() + timedelta(hours=2)
    tx_id = submit(deps, "tenant-a", f"email,first_name,send_at\na@x.org,A,{_hour(deps, 1)}\nb@x.org,B,{_hour(deps, 3)}\n",
                   schedule={"send_until": until})
    leader(deps).ingest_pass()
    rej = campaigns.list_rejections(deps.store, "tenant-a", tx_id, 10, None)["items"]
    assert [(r["line"], r["reason"].split(":")[0]) for r in rej] == [(3, "send_at_outside_window")]
    view = campaigns.get_campaign(deps.store, "tenant-a", tx_id)
    assert view["send_until"] == iso(until) and view["status"] == "SCHEDULED"  # its one row waits for its hour


# --- message events (per-message status changes with their metadata) -------------------------------


@pytest.fixture
def receiver():
    from tests.integration.test_callbacks import Receiver

    r = Receiver()
    yield r
    r.close()


def _deliver_message_events(deps: Any) -> int:
    from core.adapters.webhooks import GuardedHttpClient

    return message_events.deliver_due(store=deps.store, http=GuardedHttpClient(require_https=False, allow_loopback=True),
                                      secrets=deps.secrets, clock=deps.clock, timeout=2.0)


def _events_of(deps: Any, tx_id: str) -> list[Any]:
    return deps.store.message_event_batches(tx_id, 100, None)[0]


def test_message_events_of_an_opted_in_campaign_are_batched_signed_and_carry_the_metadata(deps, tenant, receiver):
    from standardwebhooks.webhooks import Webhook

    # GIVEN an opted-in campaign of three; one address is suppressed after ingest
    csv_text = "email,first_name,crm_id\na@x.org,A,C-1\nb@x.org,B,C-2\nsup@x.org,S,C-3\n"
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", csv_text, metadata_columns=["crm_id"],
                                      callback_url=receiver.url, callback_message_events=True)
    deps.store.suppress("tenant-a", "sup@x.org", "complaint")
    mids = [f"{batch.batch_id}-0000{i}" for i in (1, 2, 3)]
    assert batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id).sent == 2
    assert sent_mail(deps, mids[0]).email_tags["message_events"] == "true"  # the events Lambda needs no read
    (suppressed,) = _events_of(deps, tx_id)  # the chunk's SUPPRESSED message, written once by the sender
    assert [(e["message_id"], e["status"], e["metadata"]) for e in suppressed.payload["events"]] == [
        (mids[2], "SUPPRESSED", {"crm_id": "C-3"})]

    # WHEN one SQS batch of SES events is handled THEN one outbox item holds its status changes
    buffer = message_events.MessageEventBuffer(deps.store, deps.clock)
    bodies = []
    for mid in mids[:2]:
        for kind in ("ses_send.json", "ses_delivery.json", "ses_delivery.json"):  # a replay changes nothing
            ev = ses_event_for(kind, tenant="tenant-a", message_id=mid)
            ev["mail"]["tags"]["message_events"] = ["true"]  # as the sender tagged the mail
            bodies.append(sns_envelope(ev))
    deps.counter.reset()
    outcomes = record_ses_events(bodies, store=deps.store, message_events=buffer)  # one SQS batch
    assert outcomes == ["applied", "applied", "duplicate"] * 2
    # the outbox item is written before the messages, in one create-only put for four events
    assert deps.counter.calls.get("dynamodb.PutItem", 0) == 1 and len(buffer) == 0
    batches = _events_of(deps, tx_id)
    assert len(batches) == 2

    # THEN the receiver gets each batch signed like a campaign callback, with ids, status, time and metadata
    assert _deliver_message_events(deps) == 2
    bodies = []
    for headers, body in receiver.got:
        payload = Webhook(tenant["webhook_secret"]).verify(body, headers)
        assert payload["type"] == "message.events" and payload["transaction_id"] == tx_id
        assert headers["webhook-id"].startswith(f"msg_{tx_id}_ev_") and headers["x-signature"].startswith("v1=")
        bodies += payload["events"]
    got = sorted((e["message_id"], e["status"], e["metadata"]["crm_id"], e["batch_id"]) for e in bodies)
    assert got == sorted([(mids[0], "SENT", "C-1", batch.batch_id), (mids[0], "DELIVERED", "C-1", batch.batch_id),
                          (mids[1], "SENT", "C-2", batch.batch_id), (mids[1], "DELIVERED", "C-2", batch.batch_id),
                          (mids[2], "SUPPRESSED", "C-3", batch.batch_id)])
    assert all(e["timestamp"] and e["event_id"] and "x.org" not in json.dumps(e) for e in bodies)  # no address
    assert all(b.state == "DELIVERED" for b in _events_of(deps, tx_id))
    assert _deliver_message_events(deps) == 0
    # the campaign's own callbacks are untouched by them
    assert [cb.payload["status"] for cb in deps.store.callbacks(tx_id)][-1] == "READY_TO_SEND"


def test_message_events_retry_on_the_campaign_callback_schedule_and_dead_letter_the_same_way(deps, tenant):
    from tests.integration.test_callbacks import Receiver

    r = Receiver([(503, {"Retry-After": "60"}, 0)])
    try:
        tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\nq@x.org,Q\n", callback_url=r.url,
                                          callback_message_events=True)
        campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)
        leader(deps).advance_pass()  # settles: the never-sent message is CANCELLED, with its event
        (cb,) = _events_of(deps, tx_id)
        assert cb.payload["events"][0]["status"] == "CANCELLED"
        assert _deliver_message_events(deps) == 1
        (cb,) = _events_of(deps, tx_id)
        assert cb.state == "PENDING" and 59 <= (cb.next_attempt_at - deps.clock.now()).total_seconds() <= 61
        deps.clock.advance(61)
        assert _deliver_message_events(deps) == 1
        (cb,) = _events_of(deps, tx_id)
        assert cb.state == "DELIVERED" and len(cb.attempts) == 2
        assert r.got[0][0]["webhook-id"] == r.got[1][0]["webhook-id"]  # the same id: receivers de-duplicate
    finally:
        r.close()


def test_a_campaign_that_did_not_opt_in_costs_nothing_more_per_event(deps, tenant, receiver):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", "email,first_name\nn@x.org,N\n", callback_url=receiver.url)
    mid = f"{batch.batch_id}-00001"
    batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id)
    assert "message_events" not in sent_mail(deps, mid).email_tags
    buffer = message_events.MessageEventBuffer(deps.store, deps.clock)
    for kind in ("ses_send.json", "ses_delivery.json"):
        assert record_ses_event(sns_envelope(ses_event_for(kind, tenant="tenant-a", message_id=mid)),
                                store=deps.store, message_events=buffer) == "applied"
    assert len(buffer) == 0 and buffer.flush() == 0 and _events_of(deps, tx_id) == []
    with pytest.raises(InvalidInput, match="needs a callback_url"):
        submit(deps, "tenant-a", "email,first_name\na@x.org,A\n", callback_message_events=True)
