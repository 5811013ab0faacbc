from __future__ import annotations

import json
from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.services import attachments, campaigns, previews, templates
from handlers.context import deps
from handlers.routes.common import answers, audit, path_param, principal, requires

router = Router()


class CreateTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    subject: str = Field(min_length=1, max_length=998, description="Jinja2; rendered per recipient")
    text: bool = Field(False, description="the version has a plain-text source too, uploaded to the answer's "
                                          "text_upload form; without one the text part is derived from the HTML")


DataKey = Annotated[str, StringConstraints(min_length=1, max_length=100)]
DataValue = Annotated[str, StringConstraints(max_length=10_000)]


class PreviewTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1, le=1_000_000, description="default: the active version, else the latest")
    data: dict[DataKey, DataValue] | None = Field(None, max_length=200,
                                                  description="placeholder values, as a CSV row would give them")
    subject: str | None = Field(None, max_length=998, description="Jinja2; instead of the template's subject")


class CreateAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=200, description="the name the recipient sees; its extension "
                                                                     "must belong to content_type")
    content_type: str = Field(min_length=3, max_length=127, description="application/pdf, image/png, image/jpeg, "
                              "image/gif, text/plain, text/csv, text/calendar, or an Office document (docx, xlsx, pptx)")


class CreateUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str | None = Field(None, max_length=255)


def _created(body: dict):
    return Response(201, "application/json", json.dumps(body, default=str))


@router.post("/templates", summary="Register a template; returns a presigned, size-limited upload",
             responses=answers(ok=201, ok_description="created"))
@requires("templates:write")
def create_template(body: CreateTemplate):
    p, d = principal(), deps()
    out = templates.create_template(d.store, d.blobs, d.settings, p.tenant_id, body.name, body.subject,
                                    text=body.text)
    audit(router, p, "template.create", out["template_id"])
    return _created(out)


@router.post("/templates/<template_id>/versions", summary="Start a new version of a template",
             responses=answers(ok=201, ok_description="created"))
@requires("templates:write")
def create_version(template_id: str, body: CreateTemplate):
    p, d, template_id = principal(), deps(), path_param(template_id)
    out = templates.create_template(d.store, d.blobs, d.settings, p.tenant_id, body.name, body.subject, template_id,
                                    text=body.text)
    audit(router, p, "template.version", template_id, version=out["version"])
    return _created(out)


@router.post("/templates/<template_id>/confirm", summary="Validate the uploaded source and activate it",
             responses=answers(409, 413))
@requires("templates:write")
def confirm_template(template_id: str, version: Annotated[int | None, Query(
        ge=1, le=1_000_000, description="the version to confirm (default: the latest)")] = None) -> dict:
    p, d, template_id = principal(), deps(), path_param(template_id)
    tv = templates.confirm_template(d.store, d.blobs, d.settings, p.tenant_id, template_id, version)
    audit(router, p, "template.confirm", template_id, version=tv.version)
    return tv.model_dump(mode="json", exclude={"tenant_id"})


@router.post("/templates/<template_id>/preview", summary="Render subject, HTML and text with given data; sends nothing",
             responses=answers(409))
@requires("templates:write")
def preview_template(template_id: str, body: PreviewTemplate) -> dict:
    p, d = principal(), deps()
    return previews.preview_template(d.store, d.blobs, d.settings, p.tenant_id, path_param(template_id),
                                     version=body.version, data=body.data, subject=body.subject)


@router.get("/templates/<template_id>", summary="A template and its versions", responses=answers())
@requires("campaigns:read")
def get_template(template_id: str) -> dict:
    return templates.describe_template(deps().store, principal().tenant_id, path_param(template_id))


@router.post("/uploads", summary="Presigned upload for a recipients CSV",
             responses=answers(ok=201, ok_description="created"))
@requires("campaigns:write")
def create_upload(body: CreateUpload):
    p, d = principal(), deps()
    out = campaigns.create_upload(d.store, d.blobs, d.settings, p.tenant_id, body.filename)
    audit(router, p, "upload.create", out["upload_id"])
    return _created(out)


@router.post("/attachments", summary="Register an attachment; returns a presigned, size-limited upload",
             responses=answers(ok=201, ok_description="created"))
@requires("campaigns:write")
def create_attachment(body: CreateAttachment):
    p, d = principal(), deps()
    out = attachments.create_attachment(d.store, d.blobs, d.settings, p.tenant_id, body.filename, body.content_type)
    audit(router, p, "attachment.create", out["attachment_id"])
    return _created(out)


@router.post("/attachments/<attachment_id>/confirm",
             summary="Check the uploaded file (size, content against its type, no macros) and make it usable",
             responses=answers(409, 413))
@requires("campaigns:write")
def confirm_attachment(attachment_id: str) -> dict:
    p, d, attachment_id = principal(), deps(), path_param(attachment_id)
    out = attachments.confirm_attachment(d.store, d.blobs, d.settings, p.tenant_id, attachment_id)
    audit(router, p, "attachment.confirm", attachment_id)
    return out


@router.get("/attachments/<attachment_id>", summary="An attachment and its status", responses=answers())
@requires("campaigns:read")
def get_attachment(attachment_id: str) -> dict:
    return attachments.get_attachment(deps().store, principal().tenant_id, path_param(attachment_id))
