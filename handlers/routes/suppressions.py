from __future__ import annotations

from datetime import UTC, datetime

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict, Field

from core.domain.unsubscribe import open_unsubscribe_token
from core.services import suppressions
from handlers.context import deps
from handlers.routes.common import (
    PUBLIC,
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

router = APIGatewayRouter()  # current_event typed as the REST API's APIGatewayProxyEvent


class Suppress(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("manual", max_length=200)


@router.get("/suppressions", summary="The tenant's suppression list", responses=answers())
@requires("campaigns:read")
def list_suppressions(limit: Limit = 50, cursor: CursorParam = None) -> dict:
    d = deps()
    return sealed(d.settings, suppressions.list_suppressions(d.store, principal().tenant_id, limit,
                                                             open_cursor(d.settings, cursor)))


@router.get("/suppressions/<email>", summary="Whether an address is suppressed, and why", responses=answers())
@requires("campaigns:read")
def get_suppression(email: str) -> dict:
    return suppressions.get_suppression(deps().store, principal().tenant_id, path_param(email))


@router.put("/suppressions/<email>", summary="Suppress an address for this tenant", responses=answers())
@requires("suppressions:write")
def put_suppression(email: str, body: Suppress) -> dict:
    p = principal()
    out = suppressions.add_suppression(deps().store, p.tenant_id, path_param(email), body.reason)
    audit(router, p, "suppression.add", out["email"])
    return out


@router.delete("/suppressions/<email>", summary="Lift a suppression",
               responses=answers(ok=204, ok_description="removed"))
@requires("suppressions:write")
def delete_suppression(email: str):
    p = principal()
    suppressions.remove_suppression(deps().store, p.tenant_id, path_param(email))
    audit(router, p, "suppression.remove", path_param(email))
    return Response(204, "application/json", "")


def _page(message: str):
    html = ("<!doctype html><html><head><meta charset='utf-8'><title>Unsubscribe</title></head>"
            f"<body style='font-family:sans-serif;max-width:40em;margin:4em auto'><p>{message}</p>"
            "<form method='post'><button type='submit'>Unsubscribe</button></form></body></html>")
    return Response(200, "text/html", html)


@router.get("/unsubscribe/<token>", summary="Unsubscribe page (no API key)", responses=answers(public=True),
            security=[])
@requires(PUBLIC)
def unsubscribe_page(token: str):
    open_unsubscribe_token(deps().settings.unsubscribe_secret, path_param(token))
    return _page("Press the button to stop receiving these emails.")


@router.post("/unsubscribe/<token>", summary="RFC 8058 one-click unsubscribe (no API key)",
             responses=answers(public=True), security=[])
@requires(PUBLIC)
def unsubscribe(token: str):
    d = deps()
    suppressions.unsubscribe(d.store, d.settings.unsubscribe_secret, path_param(token), requested_at=_arrived())
    return Response(200, "text/html", "<!doctype html><p>You are unsubscribed.</p>")


def _arrived() -> datetime | None:
    """When API Gateway received the request (``requestTimeEpoch``, ms; local/gateway.py sets it
    too); None for an event without it."""
    try:
        return datetime.fromtimestamp(int(router.current_event.request_context.request_time_epoch) / 1000, UTC)
    except KeyError:
        return None
