from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from core.services import tenants
from handlers.context import deps
from handlers.routes.common import answers, audit, principal, requires

router = Router()


@router.get("/webhook-secret", summary="The tenant's webhook signing secrets (current, previous)",
            responses=answers())
@requires("admin")
def get_webhook_secret() -> dict:
    return {"secrets": deps().secrets.signing_secrets(principal().tenant_id)}


@router.post("/webhook-secret/rotate", summary="New signing secret; the previous one stays valid during overlap",
             responses=answers())
@requires("admin")
def rotate_webhook_secret() -> dict:
    p = principal()
    out = tenants.rotate_webhook_secret(deps().secrets, p.tenant_id)
    audit(router, p, "webhook_secret.rotate", p.tenant_id)
    return out
