from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import BaseModel, Field

from core.services import suppressions
from handlers.context import deps
from handlers.routes.common import audit, limit_param, principal

router = Router()


class Suppress(BaseModel):
    reason: str = Field("manual", max_length=200)


@router.get("/suppressions")
def list_suppressions() -> dict:
    p = principal(router, "campaigns:read")
    limit, cursor = limit_param(router)
    return suppressions.list_suppressions(deps().store, p.tenant_id, limit, cursor)


@router.get("/suppressions/<email>")
def get_suppression(email: str) -> dict:
    p = principal(router, "campaigns:read")
    return suppressions.get_suppression(deps().store, p.tenant_id, email)


@router.put("/suppressions/<email>")
def put_suppression(email: str, body: Suppress) -> dict:
    p = principal(router, "suppressions:write")
    out = suppressions.add_suppression(deps().store, p.tenant_id, email, body.reason)
    audit(router, p, "suppression.add", out["email"])
    return out


@router.delete("/suppressions/<email>")
def delete_suppression(email: str):
    p = principal(router, "suppressions:write")
    suppressions.remove_suppression(deps().store, p.tenant_id, email)
    audit(router, p, "suppression.remove", email)
    return Response(204, "application/json", "")


def _page(message: str):
    html = ("<!doctype html><html><head><meta charset='utf-8'><title>Unsubscribe</title></head>"
            f"<body style='font-family:sans-serif;max-width:40em;margin:4em auto'><p>{message}</p>"
            "<form method='post'><button type='submit'>Unsubscribe</button></form></body></html>")
    return Response(200, "text/html", html)


@router.get("/unsubscribe/<token>", summary="Unsubscribe page (no API key)")
def unsubscribe_page(token: str):
    suppressions.verify_token(deps().settings.unsubscribe_secret, token)
    return _page("Press the button to stop receiving these emails.")


@router.post("/unsubscribe/<token>", summary="RFC 8058 one-click unsubscribe (no API key)")
def unsubscribe(token: str):
    d = deps()
    suppressions.unsubscribe(d.store, d.settings.unsubscribe_secret, token)
    return Response(200, "text/html", "<!doctype html><p>You are unsubscribed.</p>")
