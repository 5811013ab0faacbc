"""Campaign commands and queries the API serves. Status changes carry their callback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email

from config.settings import Settings
from core.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StaleWrite,
    TemporaryError,
)
from core.domain.headers import check_custom_headers, check_metadata_columns
from core.domain.models import (
    Summary,
    TemplateStatus,
    Transaction,
    Upload,
    batch_id_for,
    batch_of_message,
    iso,
    new_id,
    transaction_of_batch,
)
from core.domain.schedule import SEND_AT_COLUMN
from core.domain.statuses import BatchStatus, batch_released, on_release, release_refusal
from core.domain.statuses import TransactionStatus as T
from core.domain.urls import check_callback_url
from core.observability import log
from core.services.attachments import check_campaign_attachments
from core.services.compliance import check_footer
from core.services.ports import (
    BatchRepository,
    BlobStore,
    CampaignBatches,
    CampaignMessages,
    CampaignSubmission,
    Clock,
    MessageRepository,
    TransactionRepository,
    UploadRepository,
)
from core.services.rendering import template_variables
from core.services.tenants import check_sender

# --- uploads -------------------------------------------------------------------------


def create_upload(store: UploadRepository, blobs: BlobStore, settings: Settings, tenant_id: str, filename: str | None) -> dict[str, Any]:
    upload_id = new_id("upl_")
    key = f"{tenant_id}/{upload_id}.csv"
    store.put_upload(Upload(upload_id=upload_id, tenant_id=tenant_id, s3_key=key))
    post = blobs.presign_post(settings.bucket("uploads"), key, settings.max_csv_bytes,
                              settings.presign_expiry_seconds, "text/csv")
    return {"upload_id": upload_id, "csv_file_url": f"s3://{settings.bucket('uploads')}/{key}", "upload": post}


# --- submit --------------------------------------------------------------------------


def _email(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    if "\r" in value or "\n" in value:
        raise InvalidInput(f"{field} contains a line break")
    try:
        validate_email(value.split("<")[-1].rstrip(">").strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"{field} is not a valid address: {exc}") from None
    return value


def _csv_key(store: UploadRepository, blobs: BlobStore, settings: Settings, tenant_id: str, csv_file_url: str | None,
             upload_id: str | None) -> str:
    if bool(csv_file_url) == bool(upload_id):
        raise InvalidInput("give exactly one of csv_file_url or upload_id")
    if upload_id:
        key = store.get_upload(upload_id, tenant_id).s3_key
    else:
        prefix = f"s3://{settings.bucket('uploads')}/"
        if not csv_file_url.startswith(prefix):  # type: ignore[union-attr]
            raise InvalidInput(f"csv_file_url must be an s3:// URI in the platform's upload bucket ({prefix}...)")
        key = csv_file_url[len(prefix):]  # type: ignore[index]
        if not key.startswith(f"{tenant_id}/"):
            raise NotFound("upload not found")  # another tenant's object: indistinguishable from absent
    try:
        size = blobs.size(settings.bucket("uploads"), key)
    except NotFound:
        raise InvalidInput("the recipients CSV has not been uploaded yet") from None
    if size > settings.max_csv_bytes:  # S3 enforces the presigned policy; moto and other writers may not
        raise PayloadTooLarge(f"the recipients CSV is {size} bytes; the limit is {settings.max_csv_bytes}")
    return key


def submit_campaign(store: CampaignSubmission, blobs: BlobStore, settings: Settings, clock: Clock, tenant_id: str,
                    req: dict[str, Any]) -> dict[str, Any]:
    """Validate everything that can be validated now, then write the ACCEPT transaction."""
    now = clock.now()
    head = store.template_head(req["template_id"], tenant_id)
    version = req.get("template_version") or head.get("active_version")
    if not version:
        raise Conflict("template has no ACTIVE version: confirm an upload first")
    tv = store.get_template_version(req["template_id"], int(version), tenant_id)
    if tv.status != TemplateStatus.ACTIVE:
        raise Conflict(f"template version {version} is {tv.status}, not ACTIVE")
    key = _csv_key(store, blobs, settings, tenant_id, req.get("csv_file_url"), req.get("upload_id"))
    send_at: datetime | None = (req.get("schedule") or {}).get("send_at")
    if send_at is not None:
        if send_at.tzinfo is None:
            raise InvalidInput("schedule.send_at must include a timezone (e.g. Z)")
        if send_at < now - timedelta(seconds=settings.schedule_grace_seconds):
            raise InvalidInput("schedule.send_at is in the past")
        if send_at > now + timedelta(days=settings.max_schedule_days):
            raise InvalidInput(f"schedule.send_at is more than {settings.max_schedule_days} days ahead")
        if send_at <= now:
            send_at = None
    send_until = _send_until((req.get("schedule") or {}).get("send_until"), send_at or now, now, settings)
    callback = req.get("callback_url")
    if callback:
        callback = check_callback_url(callback, require_https=settings.callback_require_https,
                           allow_loopback=settings.callback_allow_loopback).url
    if req.get("callback_message_events") and not callback:
        raise InvalidInput("callback_message_events needs a callback_url to deliver them to",
                           [{"loc": ["body", "callback_message_events"]}])
    subject = req.get("subject")
    used = set(tv.variables)
    if subject is not None:
        if "\r" in subject or "\n" in subject:
            raise InvalidInput("subject contains a line break")
        used |= set(template_variables(subject, what="subject"))  # a broken subject is refused now, not per message
    if SEND_AT_COLUMN in used:
        raise InvalidInput(f"the template or subject uses {SEND_AT_COLUMN!r}, which is the CSV's per-recipient send "
                           f"time column: it is consumed, never rendered (list it in metadata_columns to keep it)")
    check_footer(store, settings, tenant_id, tv.variables)  # CAN-SPAM, when required
    headers = check_custom_headers(req.get("headers"))
    metadata_columns = check_metadata_columns(req.get("metadata_columns"), used)
    check_campaign_attachments(store, settings, tenant_id, req.get("attachments"))
    attachment_column = (req.get("attachment_column") or "").strip() or None
    if attachment_column is not None and (attachment_column.lower() in ("email", SEND_AT_COLUMN)
                                          or attachment_column in used or attachment_column in metadata_columns):
        raise InvalidInput(f"attachment_column {attachment_column} must be a column of its own: not email or "
                           f"send_at, not a variable of the template or subject, not a metadata column",
                           [{"loc": ["body", "attachment_column"]}])
    check_sender(store, settings, tenant_id, _email("from", req.get("from")))
    tx = Transaction(
        transaction_id=new_id("tx_"), tenant_id=tenant_id, template_id=tv.template_id,
        template_version=tv.version, csv_s3_key=key, callback_url=callback, send_at=send_at, send_until=send_until,
        message_events=bool(req.get("callback_message_events")),
        from_address=_email("from", req.get("from")), reply_to=_email("reply_to", req.get("reply_to")),
        subject=subject, tags=req.get("tags") or {}, headers=headers, metadata_columns=metadata_columns,
        draft=bool(req.get("draft")), attachments=list(req.get("attachments") or []),
        attachment_column=attachment_column, created_at=now, updated_at=now,
    )
    store.create_transaction(tx)
    log.info("campaign accepted", transaction_id=tx.transaction_id, tenant_id=tenant_id)
    return campaign_view(tx, Summary())


def _send_until(value: datetime | None, start: datetime, now: datetime, settings: Settings) -> datetime | None:
    """``schedule.send_until``: the latest per-recipient send time a CSV row may ask for."""
    if value is None:
        return None
    where = [{"loc": ["body", "schedule", "send_until"]}]
    if value.tzinfo is None:
        raise InvalidInput("schedule.send_until must include a timezone (e.g. Z)", where)
    if value <= start:
        raise InvalidInput("schedule.send_until must be after the campaign's send time", where)
    if value > now + timedelta(days=settings.max_schedule_days):
        raise InvalidInput(f"schedule.send_until is more than {settings.max_schedule_days} days ahead", where)
    return value


# --- queries -------------------------------------------------------------------------


def summarize(store: TransactionRepository, tx: Transaction) -> Summary:
    """The campaign's counts: live counters on its item (no read of batches or messages)."""
    return tx.live_summary()


def campaign_view(tx: Transaction, summary: Summary) -> dict[str, Any]:
    return {
        "transaction_id": tx.transaction_id,
        "status": tx.status.value,
        "template_id": tx.template_id,
        "template_version": tx.template_version,
        "callback_url": tx.callback_url,
        "send_at": iso(tx.send_at) if tx.send_at else None,  # one format everywhere: UTC with Z
        "send_until": iso(tx.send_until) if tx.send_until else None,
        "callback_message_events": tx.message_events,
        "created_at": iso(tx.created_at),
        "updated_at": iso(tx.updated_at),
        "failure_reason": tx.failure_reason,
        "batch_count": tx.batch_count,
        "tags": tx.tags,
        "headers": tx.headers,
        "metadata_columns": tx.metadata_columns,
        "draft": tx.draft,
        "attachments": tx.attachments,
        "attachment_column": tx.attachment_column,
        "summary": summary.model_dump(),
        # counts follow SES events: when they last changed, and whether the final recount is done
        "counts_updated_at": iso(tx.counts_at) if tx.counts_at else None,
        "counts_final": tx.recounted,
    }


def get_campaign(store: TransactionRepository, tenant_id: str, tx_id: str) -> dict[str, Any]:
    tx = store.get_transaction(tx_id, tenant_id)
    return campaign_view(tx, summarize(store, tx))


def list_campaigns(store: TransactionRepository, tenant_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    txs, nxt = store.list_transactions(tenant_id, limit, cursor)
    return {"items": [campaign_view(t, t.summary) for t in txs], "next_cursor": nxt}


def list_batches(store: CampaignBatches, tenant_id: str, tx_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    store.get_transaction(tx_id, tenant_id)
    batches, nxt = store.batches_page(tx_id, limit, cursor)
    return {"items": [b.model_dump(mode="json", exclude={"tenant_id", "version"}) for b in batches], "next_cursor": nxt}


def list_rejections(store: CampaignMessages, tenant_id: str, tx_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
    store.get_transaction(tx_id, tenant_id)
    rows, nxt = store.rejections_page(tx_id, limit, cursor)
    return {"items": [r.model_dump() for r in rows], "next_cursor": nxt}


def message_view(item: dict[str, Any]) -> dict[str, Any]:
    keep = ("message_id", "batch_id", "transaction_id", "recipient_email", "status", "ses_message_id",
            "failure_reason", "events")
    view = {k: item.get(k) for k in keep}
    view["metadata"] = item.get("metadata") or {}
    view["attachments"] = list(item.get("attachments") or [])  # the recipient's own, besides the campaign's
    view["timestamps"] = {k[3:].upper(): v for k, v in item.items() if k.startswith("ts_")}
    return view


MESSAGE_PAGE_QUERIES = 25


def list_messages(store: CampaignMessages, tenant_id: str, tx_id: str, status: str | None, limit: int,
                  cursor: str | None) -> dict[str, Any]:
    """Messages across the campaign's batches; the cursor is ``<batch index>:<batch cursor>``."""
    tx = store.get_transaction(tx_id, tenant_id)
    batch_ix, inner = 1, None
    if cursor:
        ix, _, inner = cursor.partition(":")
        if not ix.isascii() or not ix.isdigit() or not 1 <= int(ix) <= max(tx.batch_count, 1):
            raise InvalidInput("cursor is not valid")
        batch_ix, inner = int(ix), inner or None

    items: list[dict[str, Any]] = []
    queries = 0
    # A rare ?status= can match nothing in thousands of batches: a page costs at most
    # MESSAGE_PAGE_QUERIES queries and may come back short, with a cursor to go on.
    while batch_ix <= tx.batch_count and len(items) < limit and queries < MESSAGE_PAGE_QUERIES:
        page = store.messages_page(batch_id_for(tx_id, batch_ix), status, limit - len(items), inner)
        queries += 1
        items += [message_view(i) for i in page.items]
        if page.cursor:
            inner = page.cursor
        else:
            batch_ix, inner = batch_ix + 1, None
    nxt = f"{batch_ix}:{inner or ''}" if batch_ix <= tx.batch_count else None
    return {"items": items, "next_cursor": nxt}


def get_message(store: MessageRepository, tenant_id: str, message_id: str) -> dict[str, Any]:
    try:
        batch_id = batch_of_message(message_id)
        transaction_of_batch(batch_id)
    except ValueError:
        raise NotFound(f"message {message_id} not found") from None
    item = store.get_message(batch_id, message_id, tenant_id).model_dump(mode="json")
    item.update({f"ts_{k.lower()}": v for k, v in item.pop("timestamps").items()})
    return message_view(item)


# --- actions -------------------------------------------------------------------------

CANCELLABLE = {T.ACCEPT, T.PROCESSING, T.DRAFT, T.SCHEDULED, T.READY_TO_SEND, T.PAUSED}


def change_status(store: TransactionRepository, clock: Clock, tx: Transaction, target: T,
                  fields: dict[str, Any] | None = None) -> Transaction:
    """The one way a transaction's status changes: conditional write + callback outbox entry.
    The model says whether the move is allowed (``Transaction.check_move``: ``IllegalTransition``)."""
    tx.check_move(target)
    merged = tx.model_copy(update=fields or {})
    summary = merged.live_summary()  # what the move itself writes counts too (a failed ingest's refused rows)
    cb = merged.status_callback(target, summary, clock.now())
    new = store.change_transaction_status(tx, target, fields={**(fields or {}), "summary": summary.model_dump()}, callback=cb)
    log.info("campaign status changed", transaction_id=tx.transaction_id, tenant_id=tx.tenant_id,
             from_status=tx.status.value, to_status=target.value)
    return new


ACTION_TRIES = 5


def _act(store: TransactionRepository, clock: Clock, tenant_id: str, tx_id: str,
         act: Callable[[Transaction], dict[str, Any]]) -> dict[str, Any]:
    """A user's action on a campaign the controller may be moving at the same moment (ingest,
    release, a count): a lost version race is read again and tried again, its checks run on what
    is there now, so the user sees the outcome (or a 409 naming the new status), not the race.
    A write that collided with another in flight (DynamoDB's TransactionConflict, throttling) is
    tried again after its short delay; only if that outlasts the tries does the user get a 503."""
    for attempt in range(ACTION_TRIES):
        try:
            return act(store.get_transaction(tx_id, tenant_id))
        except StaleWrite:
            if attempt == ACTION_TRIES - 1:
                raise
        except TemporaryError as exc:
            if attempt == ACTION_TRIES - 1:
                raise
            clock.sleep(min(exc.delay, 1.0) * (attempt + 1))
    raise AssertionError("unreachable")


def cancel_campaign(store: TransactionRepository, clock: Clock, tenant_id: str, tx_id: str) -> dict[str, Any]:
    def cancel(tx: Transaction) -> dict[str, Any]:
        if tx.status not in CANCELLABLE:
            raise Conflict(f"campaign is {tx.status.value}; only {sorted(s.value for s in CANCELLABLE)} can be cancelled")
        if tx.status == T.DRAFT:
            store.reactivate(tx)  # the controller settles a cancelled campaign (its batches are cancelled)
        tx = change_status(store, clock, tx, T.CANCELLED)
        return campaign_view(tx, summarize(store, tx))
    return _act(store, clock, tenant_id, tx_id, cancel)


def pause_campaign(store: TransactionRepository, clock: Clock, tenant_id: str, tx_id: str, reason: str = "requested") -> dict[str, Any]:
    def pause(tx: Transaction) -> dict[str, Any]:
        if tx.status not in (T.SCHEDULED, T.READY_TO_SEND):
            raise Conflict(f"campaign is {tx.status.value}; only SCHEDULED or READY_TO_SEND campaigns can be paused")
        tx = change_status(store, clock, tx, T.PAUSED, {"paused_from": tx.status, "failure_reason": None,
                                                        "pause_reason": reason})
        return campaign_view(tx, summarize(store, tx))
    return _act(store, clock, tenant_id, tx_id, pause)


def resume_campaign(store: CampaignBatches, clock: Clock, tenant_id: str, tx_id: str) -> dict[str, Any]:
    def resume(tx: Transaction) -> dict[str, Any]:
        if tx.status != T.PAUSED:
            raise Conflict(f"campaign is {tx.status.value}; only PAUSED campaigns can be resumed")
        target = tx.paused_from or T.READY_TO_SEND
        if target == T.SCHEDULED:  # a batch released just before the pause must not wait in a SCHEDULED campaign
            target = on_release(b.status for b in store.batches(tx.transaction_id))
        tx = change_status(store, clock, tx, target, {"paused_from": None, "pause_reason": None})
        return campaign_view(tx, summarize(store, tx))
    return _act(store, clock, tenant_id, tx_id, resume)


# --- drafts ---------------------------------------------------------------------------


def move_batches_on(store: BatchRepository, tx: Transaction, now: datetime) -> T:
    """Release a campaign's written batches, each for its own send time (the campaign's, or its
    recipients' per-recipient ``send_at``): SCHEDULED and due at that time while it is ahead, else
    READY. Returns where the campaign goes (``on_release``). Idempotent: batches already moved are
    left alone."""
    statuses = []
    for batch in store.batches(tx.transaction_id):
        if batch.status == BatchStatus.PROCESSING:
            target = batch_released(batch.send_at, now)
            batch = store.change_batch_status(batch, target, due_at=batch.send_at if target == BatchStatus.SCHEDULED
                                              else None)
        statuses.append(batch.status)
    return on_release(statuses)


def rest_as_draft(store: TransactionRepository, clock: Clock, tx: Transaction) -> Transaction:
    """An ingested draft: DRAFT with its counts and rejections readable, batches unreleased, and out
    of the controller's active index (nothing to do for it until a release or a cancel)."""
    tx = change_status(store, clock, tx, T.DRAFT)
    store.deactivate(tx)
    log.info("campaign rests as a draft", transaction_id=tx.transaction_id, tenant_id=tx.tenant_id,
             total_messages=tx.total_messages, refused_rows=tx.refused_rows)
    return tx


def release_campaign(store: CampaignBatches, clock: Clock, tenant_id: str, tx_id: str) -> dict[str, Any]:
    """DRAFT → SCHEDULED (its send time is ahead) or READY_TO_SEND, with its callback. 409 for any
    other status. Back in the active index first, so a crash part-way leaves a DRAFT the
    controller merely reads, never a released campaign it does not see; a retry finishes it."""
    tx = store.get_transaction(tx_id, tenant_id)
    refusal = release_refusal(tx.status)
    if refusal:
        raise Conflict(refusal)
    store.reactivate(tx)
    target = move_batches_on(store, tx, clock.now())
    tx = change_status(store, clock, tx, target)
    return campaign_view(tx, summarize(store, tx))
