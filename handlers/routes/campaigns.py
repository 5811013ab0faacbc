from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core import schema
from core.bootstrap import Deps
from core.domain.errors import InvalidInput, NotFound
from core.domain.statuses import MessageStatus
from core.services import analytics, callbacks, campaigns, message_events, previews
from handlers.context import deps, memo
from handlers.routes.common import (
    CursorParam,
    Limit,
    answers,
    audit,
    open_cursor,
    path_param,
    principal,
    requires,
    sealed,
)

router = Router()

TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/=+@-]+$")]
TagValue = Annotated[str, StringConstraints(max_length=256)]


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    send_at: datetime | None = Field(None, description="ISO 8601 with a time zone; at most 30 days ahead")
    send_until: datetime | None = Field(
        None, description="the end of the window for per-recipient send times (the CSV's optional send_at column, "
                          "ISO 8601 with an offset, e.g. 2026-12-03T09:00:00+01:00: each row is released at its own "
                          "time, to the minute). The window starts at send_at (or at submission); default: 48 hours "
                          "after that. A row outside the window or with an unreadable time is rejected "
                          "(send_at_outside_window, send_at_invalid); an empty cell goes at the campaign's time")


class SubmitCampaign(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    template_id: str = Field(min_length=1, max_length=100)
    template_version: int | None = Field(None, ge=1)
    csv_file_url: str | None = Field(None, max_length=1024, description="s3:// URI in the upload bucket")
    upload_id: str | None = Field(None, max_length=100)
    callback_url: str | None = Field(None, max_length=2048)
    callback_message_events: bool = Field(
        False, description="also POST each message's events, at least once (de-duplicate on event_id) (SENT, DELIVERED, BOUNCED, COMPLAINED, OPENED, "
                           "CLICKED, REJECTED, FAILED, SUPPRESSED, CANCELLED) with its ids and metadata to "
                           "callback_url, in signed batches of up to 100 ({\"type\": \"message.events\", "
                           "\"events\": [...]}); needs callback_url")
    schedule: Schedule | None = None
    from_: str | None = Field(None, alias="from", max_length=320)
    reply_to: str | None = Field(None, max_length=320)
    subject: str | None = Field(None, max_length=998, description="Jinja2; overrides the template's subject")
    tags: dict[TagKey, TagValue] | None = Field(None, max_length=50, description="at most 50 tags")
    headers: dict[Annotated[str, StringConstraints(max_length=126)], Annotated[str, StringConstraints(max_length=870)]] | None = Field(
        None, max_length=10, description="custom mail headers (at most 10): RFC 5322 names, printable ASCII values "
                                         "(1-870, no tab or line break); From, To, Subject, Reply-To, Message-ID, Date, "
                                         "List-Unsubscribe, Content-*, Resent-* and X-SES-* headers are the "
                                         "platform's and refused")
    attachments: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None = Field(
        None, max_length=10, description="confirmed attachment ids attached to every mail (together at most "
                                         "max_message_attachment_bytes, 25 MB by default)")
    attachment_column: str | None = Field(None, min_length=1, max_length=100,
                                          description="CSV column naming each recipient's own attachment id "
                                                      "(empty: none); a row naming a missing one is rejected")
    draft: bool = Field(False, description="ingest and validate only: the campaign rests in DRAFT (counts and "
                                           "rejections readable) until POST /campaigns/{id}/release")
    metadata_columns: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None = Field(
        None, max_length=20, description="CSV columns kept as per-message metadata (not rendered): returned in "
                                         "message reads, SES event documents and message events "
                                         "(callback_message_events). Listing send_at also keeps each row's raw "
                                         "per-recipient send time as metadata")


def _build_submit(d: Deps) -> tuple[IdempotencyConfig, Any]:
    """The idempotent submit for one dependency set: keys are per tenant, kept ≥ 24 h, the same
    key with another body is refused, one still running answers 409."""
    store = DynamoDBPersistenceLayer(
        table_name=d.settings.table_name, key_attr=schema.PK, sort_key_attr=schema.SK,
        static_pk_value=schema.SUBMIT_IDEMPOTENCY_PARTITION, boto3_client=d.clients["dynamodb"],
    )
    config = IdempotencyConfig(event_key_jmespath="[tenant_id, key]", payload_validation_jmespath="body_hash",
                               expires_after_seconds=d.settings.idempotency_ttl_seconds,
                               raise_on_no_idempotency_key=True)

    @idempotent_function(data_keyword_argument="request", config=config, persistence_store=store)
    def submit(request: dict) -> dict:
        return campaigns.submit_campaign(d.store, d.blobs, d.settings, d.clock, request["tenant_id"],
                                         _revive(request["body"]))

    return config, submit


def _revive(body: dict) -> dict:
    schedule = body.get("schedule") or {}
    if schedule:
        body = {**body, "schedule": {k: datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None
                                     for k, v in schedule.items()}}
    return body


@router.post("/campaigns", summary="Submit a campaign (202 ACCEPT); Idempotency-Key replays the first answer",
             responses=answers(409, 413, ok=202, ok_description="accepted"))
@requires("campaigns:write")
def submit_campaign(body: SubmitCampaign):
    p = principal()
    headers = router.current_event.headers or {}
    key = next((v for k, v in headers.items() if k.lower() == "idempotency-key"), None)
    data = body.model_dump(mode="json", by_alias=True, exclude_none=True)
    if key:
        if len(key) > 255:
            raise InvalidInput("Idempotency-Key is longer than 255 characters")
        body_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        config, submit = memo("idempotent_submit", _build_submit)
        config.register_lambda_context(router.lambda_context)
        out = submit(request={"tenant_id": p.tenant_id, "key": key, "body": data, "body_hash": body_hash})
    else:
        d = deps()
        out = campaigns.submit_campaign(d.store, d.blobs, d.settings, d.clock, p.tenant_id, _revive(data))
    audit(router, p, "campaign.submit", out["transaction_id"], idempotency_key=key)
    return Response(202, "application/json", json.dumps(out))


@router.get("/campaigns", summary="The tenant's campaigns, newest first", responses=answers())
@requires("campaigns:read")
def list_campaigns(limit: Limit = 50, cursor: CursorParam = None) -> dict:
    d = deps()
    return sealed(d.settings, campaigns.list_campaigns(d.store, principal().tenant_id, limit,
                                                       open_cursor(d.settings, cursor)))


@router.get("/campaigns/<tx_id>", summary="Status and summary counts", responses=answers())
@requires("campaigns:read")
def get_campaign(tx_id: str) -> dict:
    return campaigns.get_campaign(deps().store, principal().tenant_id, path_param(tx_id))


@router.get("/campaigns/<tx_id>/batches", summary="The campaign's batches", responses=answers())
@requires("campaigns:read")
def list_batches(tx_id: str, limit: Limit = 50, cursor: CursorParam = None) -> dict:
    d = deps()
    return sealed(d.settings, campaigns.list_batches(d.store, principal().tenant_id, path_param(tx_id), limit,
                                                     open_cursor(d.settings, cursor)))


@router.get("/campaigns/<tx_id>/messages", summary="Messages, optionally ?status=, cursor-paginated",
            responses=answers())
@requires("campaigns:read")
def list_messages(tx_id: str, limit: Limit = 50, cursor: CursorParam = None,
                  status: Annotated[MessageStatus | None, Query(description="only messages in this status")] = None
                  ) -> dict:
    d = deps()
    return sealed(d.settings, campaigns.list_messages(
        d.store, principal().tenant_id, path_param(tx_id), status.value if status else None, limit,
        open_cursor(d.settings, cursor)))


@router.get("/campaigns/<tx_id>/rejections", summary="CSV rows refused at ingest, with line and reason",
            responses=answers())
@requires("campaigns:read")
def list_rejections(tx_id: str, limit: Limit = 50, cursor: CursorParam = None) -> dict:
    d = deps()
    return sealed(d.settings, campaigns.list_rejections(d.store, principal().tenant_id, path_param(tx_id), limit,
                                                        open_cursor(d.settings, cursor)))


@router.get("/campaigns/<tx_id>/callbacks", summary="Every callback with every delivery attempt",
            responses=answers())
@requires("campaigns:read")
def list_callbacks(tx_id: str) -> dict:
    d = deps()
    tx_id = path_param(tx_id)
    d.store.get_transaction(tx_id, principal().tenant_id)
    # a campaign has a handful of callbacks (one per status change): one page, shaped like the other lists
    return {"items": [c.model_dump(mode="json", exclude={"tenant_id"}) for c in d.store.callbacks(tx_id)],
            "next_cursor": None}


@router.get("/campaigns/<tx_id>/analytics", summary="Counts, rates, events over time, bounce reasons, top links",
            responses=answers())
@requires("campaigns:read")
def campaign_analytics(tx_id: str, bucket_seconds: Annotated[int | None, Query(
        ge=1, le=86400, description="width of the over-time buckets in seconds")] = None) -> dict:
    d = deps()
    return analytics.campaign_analytics(d.store, d.analytics, principal().tenant_id, path_param(tx_id),
                                        bucket_seconds)


@router.get("/campaigns/<tx_id>/report", summary="An HTML report with a chart of events over time",
            responses=answers())
@requires("campaigns:read")
def campaign_report(tx_id: str):
    d = deps()
    tenant, tx_id = principal().tenant_id, path_param(tx_id)
    data = analytics.campaign_analytics(d.store, d.analytics, tenant, tx_id)
    summary = campaigns.get_campaign(d.store, tenant, tx_id)["summary"]
    return Response(200, "text/html; charset=utf-8", analytics.render_report(data, summary))


@router.get("/campaigns/<tx_id>/message-events",
            summary="Batches of message events (callback_message_events) with every delivery attempt",
            responses=answers())
@requires("campaigns:read")
def list_message_events(tx_id: str, limit: Limit = 50, cursor: CursorParam = None) -> dict:
    d = deps()
    tx_id = path_param(tx_id)
    d.store.get_transaction(tx_id, principal().tenant_id)
    return sealed(d.settings, message_events.list_batches(d.store, tx_id, limit, open_cursor(d.settings, cursor)))


@router.post("/campaigns/<tx_id>/callbacks/redeliver",
             summary="Re-queue dead-lettered callbacks and message-event batches", responses=answers())
@requires("campaigns:write")
def redeliver(tx_id: str) -> dict:
    p, d, tx_id = principal(), deps(), path_param(tx_id)
    tx = d.store.get_transaction(tx_id, p.tenant_id)
    seqs = callbacks.redeliver(d.store, tx_id, d.clock)
    refs = message_events.redeliver(d.store, tx_id, d.clock) if tx.message_events else []
    audit(router, p, "campaign.callbacks.redeliver", tx_id, seqs=seqs, message_event_batches=len(refs))
    return {"requeued": seqs, "requeued_message_events": refs}


class SendTestMail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=3, max_length=320, description="the one address the test mail goes to")
    data: dict[Annotated[str, StringConstraints(min_length=1, max_length=100)],
               Annotated[str, StringConstraints(max_length=10_000)]] | None = Field(
        None, max_length=200, description="placeholder values; default: the campaign's first recipient's row")


# Registered before the ``<action>`` route, which would match its path too.
@router.post("/campaigns/<tx_id>/test-send",
             summary="Send one rendered mail of a campaign not released yet to one address",
             responses=answers(409))
@requires("campaigns:write")
def send_test_mail(tx_id: str, body: SendTestMail) -> dict:
    p, d, tx_id = principal(), deps(), path_param(tx_id)
    out = previews.send_test_mail(d.store, d.blobs, d.settings, d.mailer, d.limiter, d.clock, p.tenant_id, tx_id,
                                  body.to, body.data)
    audit(router, p, "campaign.test_send", tx_id, ses_message_id=out["ses_message_id"])
    return out


@router.post("/campaigns/<tx_id>/release",
             summary="Release a DRAFT: SCHEDULED if its send time is ahead, else READY_TO_SEND",
             responses=answers(409))
@requires("campaigns:write")
def release_campaign(tx_id: str) -> dict:
    p, d, tx_id = principal(), deps(), path_param(tx_id)
    out = campaigns.release_campaign(d.store, d.clock, p.tenant_id, tx_id)
    audit(router, p, "campaign.release", tx_id)
    return out


ACTIONS = {"cancel": campaigns.cancel_campaign, "pause": campaigns.pause_campaign,
           "resume": campaigns.resume_campaign, "release": campaigns.release_campaign}


@router.post("/campaigns/<tx_id>/<action>", summary="cancel | pause | resume | release (a DRAFT)",
             responses=answers(409))
@requires("campaigns:write")
def campaign_action(tx_id: str, action: str) -> dict:
    p, d, tx_id = principal(), deps(), path_param(tx_id)
    fn = ACTIONS.get(action)
    if fn is None:
        raise NotFound(f"no action {action!r}; use cancel, pause, resume or release")
    out = fn(d.store, d.clock, p.tenant_id, tx_id)
    audit(router, p, f"campaign.{action}", tx_id)
    return out


@router.get("/messages/<message_id>", summary="One message with its status history", responses=answers())
@requires("campaigns:read")
def get_message(message_id: str) -> dict:
    return campaigns.get_message(deps().store, principal().tenant_id, path_param(message_id))
