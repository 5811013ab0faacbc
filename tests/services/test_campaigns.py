"""core/services/campaigns.py on the fakes: what submit refuses and why, the views, and the user's
actions (cancel, pause, resume, release) with their callbacks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from core.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StaleWrite,
    TemporaryError,
)
from core.domain.models import batch_id_for, message_id_for
from core.domain.statuses import BatchStatus, TransactionStatus
from core.services import campaigns, tenants
from tests.services.builders import NOW, TENANT, active_template, stored_campaign, uploaded_csv

T, B = TransactionStatus, BatchStatus


def submit(ports: dict[str, Any], tenant: str = TENANT, **req: Any) -> dict[str, Any]:
    store, blobs, settings = ports["store"], ports["blobs"], ports["settings"]
    if "template_id" not in req:
        req["template_id"] = active_template(store, blobs, settings, tenant)
    if "upload_id" not in req and "csv_file_url" not in req:
        req["upload_id"] = uploaded_csv(store, blobs, settings, tenant=tenant)
    req = {k: v for k, v in req.items() if v is not None}
    return campaigns.submit_campaign(store, blobs, settings, ports["clock"], tenant, req)


# ---- submit ---------------------------------------------------------------------------------------

def test_a_valid_submission_is_accepted_and_waits_in_the_active_index(ports, store):
    view = submit(ports, callback_url="https://hooks.example.com/cb", tags={"team": "a"})
    assert view["status"] == "ACCEPT" and view["callback_url"] == "https://hooks.example.com/cb"
    assert view["created_at"] == "2020-03-02T09:00:00.000000Z" and view["summary"]["total_messages"] == 0
    tx = store.get_transaction(view["transaction_id"], TENANT)
    assert tx.template_version == 1 and tx.tags == {"team": "a"} and tx.send_at is None
    assert [t.transaction_id for t in store.active_transactions()] == [view["transaction_id"]]


def test_a_template_without_an_active_version_is_refused(ports, store, blobs, settings):
    from core.services import templates

    t = templates.create_template(store, blobs, settings, TENANT, "draft", "Hi")
    with pytest.raises(Conflict, match="no ACTIVE version"):
        submit(ports, template_id=t["template_id"])
    tid = active_template(store, blobs, settings)
    templates.create_template(store, blobs, settings, TENANT, "v2", "Hi", template_id=tid)
    with pytest.raises(Conflict, match="version 2 is PENDING_UPLOAD, not ACTIVE"):
        submit(ports, template_id=tid, template_version=2)


def test_another_tenants_template_or_upload_is_not_found(ports, store, blobs, settings):
    theirs = active_template(store, blobs, settings, tenant="tenant-b")
    with pytest.raises(NotFound):
        submit(ports, template_id=theirs)
    their_upload = uploaded_csv(store, blobs, settings, tenant="tenant-b")
    with pytest.raises(NotFound):
        submit(ports, upload_id=their_upload)
    with pytest.raises(NotFound):  # an object under another tenant's prefix: indistinguishable from absent
        submit(ports, csv_file_url=f"s3://{settings.bucket('uploads')}/tenant-b/x.csv")


@pytest.mark.parametrize("recipients, message", [
    ({"csv_file_url": "s3://elsewhere/tenant-a/x.csv", "upload_id": "upl_1"}, "exactly one of csv_file_url or upload_id"),
    ({"csv_file_url": "s3://elsewhere/tenant-a/x.csv"}, "must be an s3:// URI in the platform's upload bucket"),
])
def test_the_recipients_csv_is_named_once_and_only_in_the_upload_bucket(ports, recipients, message):
    with pytest.raises(InvalidInput, match=message):
        submit(ports, **recipients)


def test_a_csv_not_uploaded_yet_or_too_large_is_refused(ports, store, blobs, settings):
    up = campaigns.create_upload(store, blobs, settings, TENANT, None)
    with pytest.raises(InvalidInput, match="has not been uploaded yet"):
        submit(ports, upload_id=up["upload_id"])
    blobs.put(settings.bucket("uploads"), f"{TENANT}/big.csv", b"email\n" + b"a@x.org\n" * 20)
    ports["settings"] = settings.model_copy(update={"max_csv_bytes": 100})
    with pytest.raises(PayloadTooLarge, match="the limit is 100"):
        submit(ports, csv_file_url=f"s3://{settings.bucket('uploads')}/{TENANT}/big.csv")


@pytest.mark.parametrize("schedule, message", [
    ({"send_at": NOW.replace(tzinfo=None) + timedelta(hours=1)}, "must include a timezone"),
    ({"send_at": NOW - timedelta(hours=1)}, "is in the past"),
    ({"send_at": NOW + timedelta(days=31)}, "more than 30 days ahead"),
    ({"send_at": NOW + timedelta(hours=2), "send_until": NOW + timedelta(hours=1)}, "must be after the campaign's send time"),
    ({"send_until": NOW + timedelta(days=40)}, "send_until is more than 30 days ahead"),
])
def test_a_schedule_that_cannot_be_kept_is_refused(ports, schedule, message):
    with pytest.raises(InvalidInput, match=message):
        submit(ports, schedule=schedule)


def test_a_send_time_just_past_sends_now_and_a_future_one_is_kept(ports, store):
    now_ish = submit(ports, schedule={"send_at": NOW - timedelta(seconds=30)})  # within the grace period
    later = submit(ports, schedule={"send_at": NOW + timedelta(hours=1), "send_until": NOW + timedelta(hours=5)})
    assert now_ish["send_at"] is None
    assert later["send_at"] == "2020-03-02T10:00:00.000000Z" and later["send_until"] == "2020-03-02T14:00:00.000000Z"
    assert store.get_transaction(later["transaction_id"]).send_at == NOW + timedelta(hours=1)


@pytest.mark.parametrize("fields, error, message", [
    ({"callback_url": "http://hooks.example.com/cb"}, InvalidInput, "https"),
    ({"callback_url": "https://10.0.0.7/cb"}, InvalidInput, "non-public address"),
    ({"callback_message_events": True}, InvalidInput, "needs a callback_url"),
    ({"subject": "Hi\r\nBcc: x@y.org"}, InvalidInput, "subject contains a line break"),
    ({"subject": "Due {{ send_at }}"}, InvalidInput, "per-recipient send time column"),
    ({"from": "News <news@example.net>"}, Forbidden, "may not send as news@example.net"),
    ({"from": "not an address"}, InvalidInput, "from is not a valid address"),
    ({"reply_to": "a@x.org\nBcc: b@y.org"}, InvalidInput, "reply_to contains a line break"),
    ({"attachment_column": "email"}, InvalidInput, "attachment_column email must be a column of its own"),
    ({"attachments": ["att_missing"]}, InvalidInput, "attachment att_missing not found"),
])
def test_what_submit_refuses_and_why(ports, fields, error, message):
    with pytest.raises(error) as err:
        submit(ports, **fields)
    assert message in err.value.message


def test_a_sender_the_tenant_was_authorised_for_is_kept(ports, store):
    store.put_tenant(TENANT, {"name": TENANT})
    tenants.allow_sender(store, TENANT, "@example.net")
    view = submit(ports, **{"from": "News <news@example.net>", "reply_to": "help@example.net"})
    tx = store.get_transaction(view["transaction_id"])
    assert (tx.from_address, tx.reply_to) == ("News <news@example.net>", "help@example.net")


# ---- queries ----------------------------------------------------------------------------------------

def test_a_campaign_is_read_only_by_its_tenant_with_its_live_counts(store):
    stored_campaign(store)
    store.add_counts("tx_1", {"sent": 2, "delivered": 1, "final": 1}, NOW + timedelta(minutes=1))
    view = campaigns.get_campaign(store, TENANT, "tx_1")
    assert (view["summary"]["sent"], view["summary"]["delivered"], view["summary"]["total_messages"]) == (2, 1, 2)
    assert view["counts_updated_at"] == "2020-03-02T09:01:00.000000Z" and view["counts_final"] is False
    with pytest.raises(NotFound):
        campaigns.get_campaign(store, "tenant-b", "tx_1")


def test_a_summary_is_the_live_counts_never_below_zero_with_ingests_totals(store):
    stored_campaign(store, refused_rows=3)
    store.add_counts("tx_1", {"sent": 2, "cancelled": -1, "suppressed": 1}, NOW)  # a correction overshot
    summary = campaigns.summarize(store, store.get_transaction("tx_1"))
    assert (summary.total_messages, summary.refused_at_ingest, summary.sent) == (2, 3, 2)
    assert (summary.cancelled, summary.suppressed, summary.delivered) == (0, 1, 0)


def test_campaigns_are_listed_newest_first_until_the_cursor_runs_out(store):
    for i in range(5):
        stored_campaign(store, f"tx_{i}", created_at=NOW + timedelta(minutes=i))
    stored_campaign(store, "tx_theirs", tenant="tenant-b")
    seen, cursor, pages = [], None, 0
    while True:
        page = campaigns.list_campaigns(store, TENANT, 2, cursor)
        pages += 1
        seen += [c["transaction_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["tx_4", "tx_3", "tx_2", "tx_1", "tx_0"] and pages == 3


def test_messages_are_listed_across_batches_with_a_resumable_cursor(store):
    stored_campaign(store, batches=[B.READY, B.READY, B.READY], per_batch=3)
    ids, cursor = [], None
    for _ in range(20):
        page = campaigns.list_messages(store, TENANT, "tx_1", None, 4, cursor)
        assert len(page["items"]) <= 4
        ids += [m["message_id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == [message_id_for(batch_id_for("tx_1", b), m) for b in (1, 2, 3) for m in (1, 2, 3)]
    for bad in ("9:", "x:", "0:", "٣:"):
        with pytest.raises(InvalidInput, match="cursor is not valid"):
            campaigns.list_messages(store, TENANT, "tx_1", None, 4, bad)


def test_a_message_filter_finds_the_rare_status_across_batches(store):
    from core.domain.statuses import MessageStatus

    stored_campaign(store, batches=[B.READY, B.READY], per_batch=3)
    store.fail_message(batch_id_for("tx_1", 2), message_id_for(batch_id_for("tx_1", 2), 2), MessageStatus.SUPPRESSED,
                       "suppressed")
    found, cursor = [], None
    for _ in range(20):
        page = campaigns.list_messages(store, TENANT, "tx_1", "SUPPRESSED", 2, cursor)
        found += [(m["message_id"], m["status"]) for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert found == [(message_id_for(batch_id_for("tx_1", 2), 2), "SUPPRESSED")]


def test_a_message_is_found_by_its_id_only_by_its_tenant(store):
    from core.domain.statuses import MessageStatus

    stored_campaign(store)
    mid = message_id_for(batch_id_for("tx_1", 1), 1)
    store.record_message_event(batch_id_for("tx_1", 1), mid, MessageStatus.SENT,
                               {"id": "e1", "type": "Send", "at": "2020-03-02T09:00:01Z"})
    view = campaigns.get_message(store, TENANT, mid)
    assert view["status"] == "SENT" and view["timestamps"] == {"SENT": "2020-03-02T09:00:01Z"}
    assert view["metadata"] == {"row": "1-1"} and view["recipient_email"] == "u1-1@example.org"
    for tenant, message_id in (("tenant-b", mid), (TENANT, "not-a-message-id"), (TENANT, "tx_1-b00009-00001")):
        with pytest.raises(NotFound):
            campaigns.get_message(store, tenant, message_id)


# ---- actions ----------------------------------------------------------------------------------------

def test_a_cancel_writes_its_callback_and_a_second_cancel_is_a_conflict(store, clock):
    stored_campaign(store, status=T.SCHEDULED, callback_url="https://hooks.example.com/cb")
    view = campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    assert view["status"] == "CANCELLED"
    (cb,) = store.callbacks("tx_1")
    assert (cb.seq, cb.payload["status"], cb.payload["sequence"], cb.state) == (1, "CANCELLED", 1, "PENDING")
    with pytest.raises(Conflict, match="campaign is CANCELLED; only .* can be cancelled"):
        campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    with pytest.raises(NotFound):
        campaigns.cancel_campaign(store, clock, "tenant-b", "tx_1")


def test_a_cancelled_draft_goes_back_to_the_controller_to_be_settled(store, clock):
    tx = stored_campaign(store, status=T.DRAFT, batches=[B.PROCESSING])
    store.deactivate(tx)
    assert list(store.active_transactions()) == []
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    assert [(t.transaction_id, t.status) for t in store.active_transactions()] == [("tx_1", T.CANCELLED)]


def test_a_cancel_that_races_the_controller_reads_again_and_cancels(store, clock):
    stored_campaign(store, status=T.ACCEPT)
    real = store.change_transaction_status
    raced: list[Any] = []

    def controller_first(tx, target, **kw):
        if not raced:  # the controller's ACCEPT → PROCESSING lands between the user's read and write
            raced.append(real(store.get_transaction(tx.transaction_id), T.PROCESSING))
        return real(tx, target, **kw)

    store.change_transaction_status = controller_first  # type: ignore[method-assign]
    assert campaigns.cancel_campaign(store, clock, TENANT, "tx_1")["status"] == "CANCELLED"
    assert store.get_transaction("tx_1").version == 2


def test_a_cancel_that_keeps_losing_gives_up_with_the_stale_write(store, clock):
    stored_campaign(store, status=T.ACCEPT)

    def always_stale(*a, **kw):
        raise StaleWrite("someone else moved it")

    store.change_transaction_status = always_stale  # type: ignore[method-assign]
    with pytest.raises(StaleWrite):
        campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    assert store.get_transaction("tx_1").status == T.ACCEPT


def test_a_cancel_whose_write_collides_with_another_in_flight_is_tried_again(store, clock):
    # DynamoDB cancels a transaction that meets another on the same item (TransactionConflict):
    # the events handler adding counts to the campaign while its owner cancels it
    stored_campaign(store, status=T.READY_TO_SEND)
    real = store.change_transaction_status
    conflicts = [TemporaryError("transaction cancelled, retry: ['TransactionConflict']", delay=0.1)] * 2

    def colliding(tx, target, **kw):
        if conflicts:
            raise conflicts.pop()
        return real(tx, target, **kw)

    store.change_transaction_status = colliding  # type: ignore[method-assign]
    started = clock.now()
    assert campaigns.cancel_campaign(store, clock, TENANT, "tx_1")["status"] == "CANCELLED"
    assert conflicts == [] and clock.now() > started  # it waited before trying again


def test_a_conflict_that_outlasts_the_tries_is_a_503(store, clock):
    stored_campaign(store, status=T.READY_TO_SEND)

    def always(*a, **kw):
        raise TemporaryError("transaction cancelled, retry: ['TransactionConflict']", delay=0.1)

    store.change_transaction_status = always  # type: ignore[method-assign]
    with pytest.raises(TemporaryError) as e:
        campaigns.pause_campaign(store, clock, TENANT, "tx_1")
    assert e.value.http_status == 503
    assert store.get_transaction("tx_1").status == T.READY_TO_SEND


def test_pause_and_resume_go_back_where_the_campaign_was(store, clock):
    stored_campaign(store, callback_url="https://hooks.example.com/cb")
    paused = campaigns.pause_campaign(store, clock, TENANT, "tx_1", reason="looks wrong")
    assert paused["status"] == "PAUSED"
    tx = store.get_transaction("tx_1")
    assert tx.paused_from == T.READY_TO_SEND
    assert tx.pause_reason == "looks wrong"
    with pytest.raises(Conflict, match="only SCHEDULED or READY_TO_SEND campaigns can be paused"):
        campaigns.pause_campaign(store, clock, TENANT, "tx_1")
    assert campaigns.resume_campaign(store, clock, TENANT, "tx_1")["status"] == "READY_TO_SEND"
    assert (store.get_transaction("tx_1").paused_from, store.get_transaction("tx_1").pause_reason) == (None, None)
    with pytest.raises(Conflict, match="only PAUSED campaigns can be resumed"):
        campaigns.resume_campaign(store, clock, TENANT, "tx_1")
    assert [c.payload["status"] for c in store.callbacks("tx_1")] == ["PAUSED", "READY_TO_SEND"]


@pytest.mark.parametrize("batches, resumed", [
    ([B.SCHEDULED, B.SCHEDULED], T.SCHEDULED),
    ([B.SCHEDULED, B.READY], T.READY_TO_SEND),  # released just before the pause: it must not wait
])
def test_a_campaign_paused_while_scheduled_resumes_by_its_batches(store, clock, batches, resumed):
    stored_campaign(store, status=T.SCHEDULED, batches=batches)
    campaigns.pause_campaign(store, clock, TENANT, "tx_1")
    assert campaigns.resume_campaign(store, clock, TENANT, "tx_1")["status"] == resumed.value


def test_a_released_draft_sends_what_is_due_and_schedules_the_rest(store, clock):
    from core.domain.models import Batch

    stored_campaign(store, status=T.DRAFT, batches=[B.PROCESSING])
    store.put_batch(Batch(batch_id=batch_id_for("tx_1", 2), transaction_id="tx_1", tenant_id=TENANT, index=2,
                          send_at=NOW + timedelta(hours=3)))
    store.update_transaction(store.get_transaction("tx_1"), {"batch_count": 2})
    with pytest.raises(NotFound):
        campaigns.release_campaign(store, clock, "tenant-b", "tx_1")
    assert campaigns.release_campaign(store, clock, TENANT, "tx_1")["status"] == "READY_TO_SEND"
    assert [b.status for b in store.batches("tx_1")] == [B.READY, B.SCHEDULED]
    assert [i["batch_id"] for i in store.due("BATCH", NOW + timedelta(hours=3))] == [batch_id_for("tx_1", 2)]
    with pytest.raises(Conflict, match="only DRAFT campaigns can be released"):
        campaigns.release_campaign(store, clock, TENANT, "tx_1")


def test_a_campaign_still_being_ingested_cannot_be_released(store, clock):
    stored_campaign(store, status=T.PROCESSING, batches=[B.PROCESSING])
    with pytest.raises(Conflict, match="still being ingested"):
        campaigns.release_campaign(store, clock, TENANT, "tx_1")
    assert store.get_transaction("tx_1").status == T.PROCESSING
