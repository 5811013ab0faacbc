from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from pydantic import BaseModel, Field

from core.domain.errors import InvalidInput
from core.services import analytics, callbacks, campaigns
from handlers.context import deps
from handlers.routes.common import audit, limit_param, principal

router = Router()


class Schedule(BaseModel):
    send_at: datetime | None = None


class SubmitCampaign(BaseModel):
    template_id: str = Field(min_length=1, max_length=100)
    template_version: int | None = Field(None, ge=1)
    csv_file_url: str | None = Field(None, max_length=1024, description="s3:// URI in the upload bucket")
    upload_id: str | None = Field(None, max_length=100)
    callback_url: str | None = Field(None, max_length=2048)
    schedule: Schedule | None = None
    from_: str | None = Field(None, alias="from", max_length=320)
    reply_to: str | None = Field(None, max_length=320)
    subject: str | None = Field(None, max_length=998)
    tags: dict[str, str] | None = None

    model_config = {"populate_by_name": True}


_submitters: dict[int, tuple[IdempotencyConfig, Any]] = {}


def _idempotent_submit() -> tuple[IdempotencyConfig, Any]:
    """The idempotent submit for the current dependency set: keys are per tenant, kept ≥ 24 h,
    the same key with another body is refused, one still running answers 409."""
    d = deps()
    if id(d) not in _submitters:
        store = DynamoDBPersistenceLayer(
            table_name=d.settings.table_name, key_attr="PK", sort_key_attr="SK",
            static_pk_value="IDEMPOTENCY#campaigns", boto3_client=d.clients["dynamodb"],
        )
        config = IdempotencyConfig(event_key_jmespath="[tenant_id, key]", payload_validation_jmespath="body_hash",
                                   expires_after_seconds=d.settings.idempotency_ttl_seconds,
                                   raise_on_no_idempotency_key=True)

        @idempotent_function(data_keyword_argument="request", config=config, persistence_store=store)
        def submit(request: dict) -> dict:
            d2 = deps()
            return campaigns.submit_campaign(d2.store, d2.blobs, d2.settings, d2.clock, request["tenant_id"],
                                             _revive(request["body"]))

        _submitters[id(d)] = (config, submit)
    return _submitters[id(d)]


def _revive(body: dict) -> dict:
    send_at = (body.get("schedule") or {}).get("send_at")
    if send_at:
        body = {**body, "schedule": {"send_at": datetime.fromisoformat(send_at.replace("Z", "+00:00"))}}
    return body


@router.post("/campaigns", summary="Submit a campaign (202 ACCEPT); Idempotency-Key replays the first answer")
def submit_campaign(body: SubmitCampaign):
    p = principal(router, "campaigns:write")
    headers = router.current_event.headers
    key = headers.get("idempotency-key") or headers.get("Idempotency-Key")
    data = body.model_dump(mode="json", by_alias=True, exclude_none=True)
    if key:
        if len(key) > 255:
            raise InvalidInput("Idempotency-Key is longer than 255 characters")
        body_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        config, submit = _idempotent_submit()
        config.register_lambda_context(router.lambda_context)
        out = submit(request={"tenant_id": p.tenant_id, "key": key, "body": data, "body_hash": body_hash})
    else:
        d = deps()
        out = campaigns.submit_campaign(d.store, d.blobs, d.settings, d.clock, p.tenant_id, _revive(data))
    audit(router, p, "campaign.submit", out["transaction_id"], idempotency_key=key)
    return Response(202, "application/json", json.dumps(out))


@router.get("/campaigns", summary="The tenant's campaigns, newest first")
def list_campaigns() -> dict:
    p = principal(router, "campaigns:read")
    limit, cursor = limit_param(router)
    return campaigns.list_campaigns(deps().store, p.tenant_id, limit, cursor)


@router.get("/campaigns/<tx_id>", summary="Status and summary counts")
def get_campaign(tx_id: str) -> dict:
    p = principal(router, "campaigns:read")
    return campaigns.get_campaign(deps().store, p.tenant_id, tx_id)


@router.get("/campaigns/<tx_id>/batches")
def list_batches(tx_id: str) -> dict:
    p = principal(router, "campaigns:read")
    limit, cursor = limit_param(router)
    return campaigns.list_batches(deps().store, p.tenant_id, tx_id, limit, cursor)


@router.get("/campaigns/<tx_id>/messages", summary="Messages, optionally ?status=, cursor-paginated")
def list_messages(tx_id: str) -> dict:
    p = principal(router, "campaigns:read")
    limit, cursor = limit_param(router)
    status = (router.current_event.query_string_parameters or {}).get("status")
    if status:
        from core.domain.statuses import MessageStatus

        if status not in MessageStatus.__members__:
            raise InvalidInput(f"unknown status {status!r}", [{"allowed": list(MessageStatus.__members__)}])
    return campaigns.list_messages(deps().store, p.tenant_id, tx_id, status, limit, cursor)


@router.get("/campaigns/<tx_id>/rejections", summary="CSV rows refused at ingest, with line and reason")
def list_rejections(tx_id: str) -> dict:
    p = principal(router, "campaigns:read")
    limit, cursor = limit_param(router)
    return campaigns.list_rejections(deps().store, p.tenant_id, tx_id, limit, cursor)


@router.get("/campaigns/<tx_id>/callbacks", summary="Every callback with every delivery attempt")
def list_callbacks(tx_id: str) -> dict:
    p = principal(router, "campaigns:read")
    d = deps()
    d.store.get_transaction(tx_id, p.tenant_id)
    return {"items": [c.model_dump(mode="json", exclude={"tenant_id"}) for c in d.store.callbacks(tx_id)]}


@router.get("/campaigns/<tx_id>/analytics", summary="Counts, rates, events over time, bounce reasons, top links")
def campaign_analytics(tx_id: str) -> dict:
    p = principal(router, "campaigns:read")
    d = deps()
    q = router.current_event.query_string_parameters or {}
    bucket = max(1, int(q["bucket_seconds"])) if str(q.get("bucket_seconds", "")).isdigit() else None
    return analytics.campaign_analytics(d.store, d.analytics, p.tenant_id, tx_id, bucket)


@router.get("/campaigns/<tx_id>/report", summary="An HTML report with a chart of events over time")
def campaign_report(tx_id: str):
    p = principal(router, "campaigns:read")
    d = deps()
    data = analytics.campaign_analytics(d.store, d.analytics, p.tenant_id, tx_id)
    summary = campaigns.get_campaign(d.store, p.tenant_id, tx_id)["summary"]
    return Response(200, "text/html; charset=utf-8", analytics.render_report(data, summary))


@router.post("/campaigns/<tx_id>/callbacks/redeliver", summary="Re-queue dead-lettered callbacks")
def redeliver(tx_id: str) -> dict:
    p = principal(router, "campaigns:write")
    d = deps()
    d.store.get_transaction(tx_id, p.tenant_id)
    seqs = callbacks.redeliver(d.store, tx_id, d.clock)
    audit(router, p, "campaign.callbacks.redeliver", tx_id, seqs=seqs)
    return {"requeued": seqs}


@router.post("/campaigns/<tx_id>/<action>", summary="cancel | pause | resume")
def campaign_action(tx_id: str, action: str) -> dict:
    p = principal(router, "campaigns:write")
    d = deps()
    fn = {"cancel": campaigns.cancel_campaign, "pause": campaigns.pause_campaign,
          "resume": campaigns.resume_campaign}.get(action)
    if fn is None:
        from core.domain.errors import NotFound

        raise NotFound(f"no action {action!r}; use cancel, pause or resume")
    out = fn(d.store, d.clock, p.tenant_id, tx_id)
    audit(router, p, f"campaign.{action}", tx_id)
    return out


@router.get("/messages/<message_id>", summary="One message with its status history")
def get_message(message_id: str) -> dict:
    p = principal(router, "campaigns:read")
    return campaigns.get_message(deps().store, p.tenant_id, message_id)
