"""Data protection: erasure jobs, subject access, retention settings (core/services/privacy.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, ConfigDict, Field

from core.adapters.privacy import IdentityRepository
from core.bootstrap import Deps, privacy_ports
from core.services import compliance, privacy
from handlers.context import deps, memo
from handlers.routes.common import (
    CursorParam,
    Limit,
    answers,
    open_cursor,
    path_param,
    principal,
    requires,
    sealed,
)

router = Router()


class RequestErasure(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320, description="the person's address")


class RetentionDays(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: int | None = Field(None, description="message items: address, placeholder data, SES events")
    rejections: int | None = Field(None, description="refused CSV rows")
    uploads: int | None = Field(None, description="recipient CSVs as uploaded")
    batches: int | None = Field(None, description="per-batch CSV files")
    analytics: int | None = Field(None, description="engagement events in the analytics index")
    audit: int | None = Field(None, description="this tenant's audit log")


def _ports(d: Deps):
    # API reads and job creation touch only the home region: the controller reaches the other one
    return privacy_ports(d, peer_table=False)


@router.post("/privacy/erasures", summary="Erase a person's data for this tenant (202, an erasure job)",
             responses=answers(ok=202, ok_description="the erasure job, carried out by the controller"))
@requires("privacy:write")
def request_erasure(body: RequestErasure):
    p = principal()
    out = privacy.request_erasure(memo("privacy_ports", _ports), p.tenant_id, body.email, p.key_id)
    return Response(202, "application/json", json.dumps(out))


@router.get("/privacy/erasures", summary="This tenant's erasure jobs, newest first", responses=answers())
@requires("privacy:read")
def list_erasures(limit: Limit = 50, cursor: CursorParam = None) -> dict:
    d = deps()
    page = memo("privacy_ports", _ports).jobs.page(principal().tenant_id, limit, open_cursor(d.settings, cursor))
    return sealed(d.settings, {"items": [privacy.view(j) for j in page.items], "next_cursor": page.cursor})


@router.get("/privacy/erasures/<erasure_id>", summary="An erasure's progress and receipt", responses=answers())
@requires("privacy:read")
def get_erasure(erasure_id: str) -> dict:
    return privacy.get_erasure(memo("privacy_ports", _ports).jobs, principal().tenant_id, path_param(erasure_id))


@router.get("/privacy/subjects/<email>", summary="Everything held about an address for this tenant (subject access)",
            responses=answers())
@requires("privacy:read")
def subject_access(email: str) -> dict:
    return privacy.subject_access(memo("privacy_ports", _ports), principal().tenant_id, path_param(email))


@router.get("/privacy/retention", summary="This tenant's retention (days per kind of data) and its bounds",
            responses=answers())
@requires("privacy:read")
def get_retention() -> dict:
    return privacy.describe_retention(memo("privacy_ports", _ports).retention, principal().tenant_id)


@router.put("/privacy/retention", summary="Change retention days; applies to data written from now on",
            responses=answers())
@requires("admin")
def put_retention(body: RetentionDays) -> dict:
    d = deps()
    return privacy.set_retention(memo("privacy_ports", _ports).retention, principal().tenant_id,
                                 body.model_dump(exclude_none=True), d.clock.now())


@router.get("/compliance/report", summary="Compliance report for a period (JSON, or ?format=html)",
            responses={**answers(), 200: {"description": "the report: JSON, or an HTML page with ?format=html",
                                          "content": {"application/json": {"schema": {"type": "object"}},
                                                      "text/html": {"schema": {"type": "string"}}}}})
@requires("audit:read")
def compliance_report(
        start: Annotated[date, Query(description="first day of the period (UTC), e.g. 2026-01-01")],
        end: Annotated[date, Query(description="day after the period (UTC), e.g. 2026-02-01")],
        format: Annotated[Literal["json", "html"], Query(description="json (default) or html")] = "json"):
    d, p = deps(), principal()
    ports = memo("privacy_ports", _ports)
    report = compliance.compliance_report(
        campaigns=ports.finder.campaigns(p.tenant_id), suppressions=ports.hashes.every(p.tenant_id),
        erasures=ports.jobs.of_tenant(p.tenant_id), tenant_id=p.tenant_id,
        start=datetime.combine(start, time.min, UTC), end=datetime.combine(end, time.min, UTC), settings=d.settings)
    if format == "html":
        return Response(200, "text/html; charset=utf-8", compliance.render_compliance(report))
    return report


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    postal_address: str = Field(min_length=10, max_length=500, description="shown in every mail's footer")
    sender_name: str = Field(min_length=1, max_length=200, description=(
        "who the mail is from, as a person reads it (CAN-SPAM); required, shown where templates use "
        "{{ sender_name }}"))


def _identity(d: Deps) -> IdentityRepository:
    return IdentityRepository(d.store.table)


@router.get("/compliance/identity", summary="The tenant's postal address and sender name (CAN-SPAM footer)",
            responses=answers())
@requires("campaigns:read")
def get_identity() -> dict:
    return memo("identity_repo", _identity).get(principal().tenant_id) or {"postal_address": None, "sender_name": None}


@router.put("/compliance/identity", summary="Set the postal address and sender name every mail carries",
            responses=answers())
@requires("admin")
def put_identity(body: Identity) -> dict:
    d = deps()
    return compliance.set_identity(memo("identity_repo", _identity), principal().tenant_id, body.postal_address,
                                   body.sender_name, d.clock.now())
