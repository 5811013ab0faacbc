"""API Gateway (REST, proxy) Lambda entrypoint: a gate, then a resolver over the route modules.

The gate answers what the resolver cannot answer well: unknown paths (404), known paths with
another method (405, OPTIONS 204, HEAD as GET without a body), oversized or undecodable bodies,
authentication and authorisation before any validation (401, 403, then 422), writes in the
passive region (503: global tables settle conflicting writes last-writer-wins, so only the active
region takes them), and query parameters a route does not declare (422, so a typo never passes
silently).
"""

from __future__ import annotations

import inspect
import json
import re
import time
from dataclasses import dataclass
from typing import Any, get_args, get_type_hints

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import (
    APIKey,
    APIKeyIn,
    HTTPBearer,
    SecurityScheme,
)
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from botocore.exceptions import ClientError

from core import schema
from core.domain.errors import DomainError
from core.observability import API_REQUESTS, correlated, lambda_entry, log
from handlers.context import context_or_local, deps, memo
from handlers.routes import account, audit, campaigns, privacy, suppressions, templates
from handlers.routes.common import (
    PUBLIC,
    Authenticator,
    answers,
    current_principal,
    requires,
    reset_principal,
    set_principal,
)

BASE = "/api/v1/email"
MAX_JSON_BODY = 256 * 1024  # a campaign request is small; API Gateway itself allows 10 MB
app = APIGatewayRestResolver(enable_validation=True)
for module in (templates, campaigns, suppressions, account, privacy, audit):
    app.include_router(module.router, prefix=BASE)

SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    "apiKey": APIKey.model_validate({"name": "X-API-Key", "in": APIKeyIn.header}),
    "bearer": HTTPBearer(bearerFormat="JWT")}


def error(status: int, code: str, message: str, details: list | None = None,
          headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return Response(status, "application/json", json.dumps(body, default=str), headers=headers)


@app.get("/api/v1/health", responses=answers(public=True), security=[])
@app.get(f"{BASE}/health", responses=answers(public=True), security=[])
@requires(PUBLIC)
def health() -> dict:
    return {"status": "ok"}


@app.get(f"{BASE}/openapi.json", responses=answers(public=True), security=[])
@requires(PUBLIC)
def openapi():
    return Response(200, "application/json", openapi_document())


def openapi_document() -> str:
    """The generated document, plus what the generator cannot say: public operations need no
    credentials (``security: []``) and each operation's required scope."""
    doc = json.loads(app.get_openapi_json_schema(
        title="Email Platform API", version="1.0.0", security_schemes=SECURITY_SCHEMES,
        security=[{"apiKey": []}, {"apiKey": [], "bearer": []}]))
    for ep in ENDPOINTS:
        op = doc["paths"].get(re.sub(r"<(\w+)>", r"{\1}", ep.template), {}).get(ep.method.lower())
        if op is None:
            continue
        if ep.scope == PUBLIC:
            op["security"] = []
        else:
            op["x-required-scope"] = ep.scope
    return json.dumps(doc)


@app.exception_handler(DomainError)
def domain_error(exc: DomainError):
    return error(exc.http_status, exc.code, exc.message, exc.details)


def _field(loc: list[Any]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path", "header"))


@app.exception_handler(RequestValidationError)
def validation_error(exc: RequestValidationError):
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error(400, "invalid_json", "the body is not valid JSON")
    details = [{"loc": list(e.get("loc", [])), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
    unknown = [_field(list(e.get("loc", []))) for e in errors if e.get("type") == "extra_forbidden"]
    message = (f"unknown field(s): {', '.join(unknown)}" if unknown
               else "the request does not match the schema: " + "; ".join(
                   f"{_field(list(e.get('loc', []))) or 'body'}: {e.get('msg')}" for e in errors[:5]))
    return error(422, "invalid_input", message, details)


@app.exception_handler(IdempotencyValidationError)
def idempotency_mismatch(exc: Exception):
    return error(422, "idempotency_key_reused", "this Idempotency-Key was used with a different body")


@app.exception_handler(IdempotencyAlreadyInProgressError)
def idempotency_in_progress(exc: Exception):
    return error(409, "idempotency_in_progress", "a request with this Idempotency-Key is still in progress")


@app.not_found
def not_found(exc: NotFoundError):
    return error(404, "not_found", "no such route")


@app.exception_handler([json.JSONDecodeError, UnicodeDecodeError, RecursionError])
def bad_body(exc: Exception):
    if isinstance(exc, UnicodeDecodeError):
        return error(400, "invalid_encoding", "the body is not UTF-8 text")
    if isinstance(exc, RecursionError):
        return error(400, "invalid_json", "the JSON body is nested too deeply")
    return error(400, "invalid_json", "the body is not valid JSON")


# AWS answers that say the request was not applied and may be repeated shortly, once the SDK's
# own retries are spent: a 503 with Retry-After, not a 500. A 5xx from AWS may have been applied
# (a write without a client token), so it stays a logged 500 and invites no blind repeat.
TRANSIENT_AWS_CODES = frozenset({
    "ThrottlingException", "Throttling", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
    "TransactionConflictException", "TransactionInProgressException", "TooManyRequestsException", "SlowDown",
})


@app.exception_handler(ClientError)
def aws_error(exc: ClientError):
    code = exc.response.get("Error", {}).get("Code", "")
    if code not in TRANSIENT_AWS_CODES:
        return unexpected(exc)
    log.warning("aws busy, request refused with 503", aws_code=code, operation=exc.operation_name)
    return error(503, "temporarily_unavailable", f"the service is busy ({code}); try again shortly",
                 headers={"Retry-After": "1"})


@app.exception_handler(Exception)
def unexpected(exc: Exception):
    log.exception("unhandled error", error=str(exc)[:500])
    return error(500, "internal_error", "unexpected error; it has been logged")


# --- the gate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # e.g. /api/v1/email/campaigns/<tx_id>: the metrics label, never the raw path
    rule: re.Pattern[str]
    scope: str
    query: frozenset[str]


def _declared_query(func: Any) -> frozenset[str]:
    hints = get_type_hints(func, include_extras=True)
    names = set()
    for name, param in inspect.signature(func).parameters.items():
        if any(isinstance(m, Query) for m in get_args(hints.get(name))[1:]) or isinstance(param.default, Query):
            names.add(name)
    return frozenset(names)


def _endpoints() -> list[Endpoint]:
    out = []
    for route in app._static_routes + app._dynamic_routes:
        scope = getattr(route.func, "required_scope", None)
        if scope is None:
            raise RuntimeError(f"route {route.method} {route.path} declares no scope (use @requires)")
        out.append(Endpoint(route.method, route.path, route.rule, scope, _declared_query(route.func)))
    return out


ENDPOINTS = _endpoints()


def _match(method: str, path: str) -> tuple[Endpoint | None, list[str]]:
    allowed = []
    for ep in ENDPOINTS:
        if ep.rule.match(path):
            if ep.method == method:
                return ep, []
            allowed.append(ep.method)
    return None, sorted(set(allowed))


READS = frozenset({"GET", "HEAD", "OPTIONS"})


class _ActiveRegion:
    """The replicated ``PLATFORM/ACTIVE_REGION`` flag, re-read at most every ``seconds``. No flag:
    a single-region setup, every region is active. A failed read keeps the last answer (at first:
    active), so an unreachable table never turns into refusals of its own."""

    def __init__(self, table: Any, seconds: float, monotonic: Any = time.monotonic):
        self.table, self.seconds, self.monotonic = table, seconds, monotonic
        self._region: str | None = None
        self._read_at: float | None = None

    def region(self) -> str | None:
        now = self.monotonic()
        if self._read_at is None or now - self._read_at >= self.seconds:
            try:
                item = self.table.get(schema.ACTIVE_REGION_KEY)
                self._region = item.get("region") if item else None
            except Exception as exc:
                log.warning("active-region flag unreadable", error=str(exc)[:300])
            self._read_at = now
        return self._region


def _passive_refusal() -> Response | None:
    """503 for a write when this region is not the active one (reads keep working)."""
    d = deps()
    active = memo("active_region", lambda d: _ActiveRegion(d.store.table, d.settings.active_region_cache_seconds)).region()
    if active is None or active == d.settings.region:
        return None
    retry = d.settings.passive_region_retry_after_seconds
    return error(503, "passive_region",
                 f"this region ({d.settings.region}) is passive and takes no writes; the active region is {active}",
                 [{"region": d.settings.region, "active_region": active}], headers={"Retry-After": str(retry)})


def _gate(event: dict[str, Any], method: str) -> tuple[Endpoint | None, Response | None]:
    path = event.get("path") or "/"
    ep, allowed = _match(method, path)
    if ep is None:
        if not allowed:
            return None, error(404, "not_found", "no such route")
        allow = ", ".join([*allowed, "OPTIONS"] + (["HEAD"] if "GET" in allowed else []))
        if method == "OPTIONS":
            return None, Response(204, None, "", headers={"Allow": allow})
        return None, error(405, "method_not_allowed", f"{method} is not allowed here; use {allow}",
                           headers={"Allow": allow})
    body = event.get("body") or ""
    if len(body) > MAX_JSON_BODY * (4 / 3 if event.get("isBase64Encoded") else 1):
        return ep, error(413, "payload_too_large", f"the body is over {MAX_JSON_BODY} bytes")
    token = None
    if ep.scope != PUBLIC:
        try:
            p = memo("authenticator", lambda d: Authenticator(d.settings, d.store)).authenticate(
                event.get("headers") or {})
            p.require(ep.scope)
        except DomainError as exc:
            return ep, error(exc.http_status, exc.code, exc.message, exc.details)
        token = set_principal(p)
    passive = _passive_refusal() if method not in READS else None
    if passive is not None:
        if token is not None:
            reset_principal(token)
        return ep, passive
    unknown = sorted(set(event.get("queryStringParameters") or {}) - ep.query)
    if unknown:
        if token is not None:
            reset_principal(token)
        return ep, error(422, "invalid_input", f"unknown query parameter(s): {', '.join(unknown)}",
                         [{"loc": ["query", name], "type": "extra_forbidden"} for name in unknown])
    return ep, None


def resolve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    method = str(event.get("httpMethod") or "GET").upper()
    head = method == "HEAD"
    ep, refusal = _gate(event, "GET" if head else method)
    caller = current_principal()  # the audit log names who called (None: public or refused before auth)
    if refusal is not None:
        response = _plain(refusal)
    else:
        try:
            with correlated(**_ids(ep, event)):
                response = app.resolve({**event, "httpMethod": "GET"} if head else event, context_or_local(context))
        finally:
            set_principal(None)
    if ep is not None:
        audit.record_call(event, ep.template, ep.scope, ep.rule, BASE, caller, response)
    if head:
        response = {**response, "body": ""}
    API_REQUESTS.labels(ep.template if ep else "unmatched", str(response.get("statusCode"))).inc()
    return response


def _ids(ep: Endpoint | None, event: dict[str, Any]) -> dict[str, str | None]:
    """Correlation ids for the request's log lines: the caller's tenant, the campaign in the path."""
    caller = current_principal()  # None on a public route
    found = ep.rule.match(event.get("path") or "") if ep else None
    return {"tenant_id": caller.tenant_id if caller else None,
            "transaction_id": (found.groupdict() if found else {}).get("tx_id")}


def _plain(r: Response) -> dict[str, Any]:
    headers = {k: v for k, v in (r.headers or {}).items()}
    if r.content_type:
        headers["Content-Type"] = r.content_type
    return {"statusCode": r.status_code, "headers": {k: v if isinstance(v, str) else ", ".join(v)
                                                     for k, v in headers.items()},
            "body": r.body or "", "isBase64Encoded": False}


@lambda_entry("api", correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    deps()  # dependencies are built before the first request is timed
    return resolve(event, context)
