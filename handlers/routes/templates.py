from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import BaseModel, Field

from core.services import campaigns, templates
from handlers.context import deps
from handlers.routes.common import audit, principal

router = Router()


class CreateTemplate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=998, description="Jinja2; rendered per recipient")


class CreateUpload(BaseModel):
    filename: str | None = Field(None, max_length=255)


def _created(body: dict):
    import json

    return Response(201, "application/json", json.dumps(body, default=str))


@router.post("/templates", summary="Register a template; returns a presigned, size-limited upload")
def create_template(body: CreateTemplate):
    p = principal(router, "templates:write")
    d = deps()
    out = templates.create_template(d.store, d.blobs, d.settings, p.tenant_id, body.name, body.subject)
    audit(router, p, "template.create", out["template_id"])
    return _created(out)


@router.post("/templates/<template_id>/versions", summary="Start a new version of a template")
def create_version(template_id: str, body: CreateTemplate):
    p = principal(router, "templates:write")
    d = deps()
    out = templates.create_template(d.store, d.blobs, d.settings, p.tenant_id, body.name, body.subject, template_id)
    audit(router, p, "template.version", template_id, version=out["version"])
    return _created(out)


@router.post("/templates/<template_id>/confirm", summary="Validate the uploaded source and activate it")
def confirm_template(template_id: str) -> dict:
    p = principal(router, "templates:write")
    d = deps()
    q = router.current_event.query_string_parameters or {}
    version = int(q["version"]) if str(q.get("version", "")).isdigit() else None
    tv = templates.confirm_template(d.store, d.blobs, d.settings, p.tenant_id, template_id, version)
    audit(router, p, "template.confirm", template_id, version=tv.version)
    return tv.model_dump(mode="json", exclude={"tenant_id"})


@router.get("/templates/<template_id>", summary="A template and its versions")
def get_template(template_id: str) -> dict:
    p = principal(router, "campaigns:read")
    return templates.describe_template(deps().store, p.tenant_id, template_id)


@router.post("/uploads", summary="Presigned upload for a recipients CSV")
def create_upload(body: CreateUpload):
    p = principal(router, "campaigns:write")
    d = deps()
    out = campaigns.create_upload(d.store, d.blobs, d.settings, p.tenant_id, body.filename)
    audit(router, p, "upload.create", out["upload_id"])
    return _created(out)
