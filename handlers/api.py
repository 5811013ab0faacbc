"""API Gateway (REST, proxy) Lambda entrypoint: a resolver over the route modules."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from core.domain.errors import DomainError
from core.observability import API_REQUESTS, acting_as, log
from handlers.context import context_or_local
from handlers.routes import account, campaigns, suppressions, templates

BASE = "/api/v1/email"
app = APIGatewayRestResolver(enable_validation=True)
for module in (templates, campaigns, suppressions, account):
    app.include_router(module.router, prefix=BASE)


def error(status: int, code: str, message: str, details: list | None = None):
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return Response(status, "application/json", json.dumps(body, default=str))


@app.get("/api/v1/health")
@app.get(f"{BASE}/health")
def health() -> dict:
    return {"status": "ok"}


@app.get(f"{BASE}/openapi.json")
def openapi():
    return Response(200, "application/json", app.get_openapi_json_schema(title="Email Platform API", version="1.0.0"))


@app.exception_handler(DomainError)
def domain_error(exc: DomainError):
    return error(exc.http_status, exc.code, exc.message, exc.details)


@app.exception_handler(RequestValidationError)
def validation_error(exc: RequestValidationError):
    details = [{"loc": list(e.get("loc", [])), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
    return error(422, "invalid_input", "the request does not match the schema", details)


@app.exception_handler(IdempotencyValidationError)
def idempotency_mismatch(exc: Exception):
    return error(422, "idempotency_key_reused", "this Idempotency-Key was used with a different body")


@app.exception_handler(IdempotencyAlreadyInProgressError)
def idempotency_in_progress(exc: Exception):
    return error(409, "idempotency_in_progress", "a request with this Idempotency-Key is still in progress")


@app.not_found
def not_found(exc: NotFoundError):
    return error(404, "not_found", "no such route")


@app.exception_handler(json.JSONDecodeError)
def bad_json(exc: Exception):
    return error(400, "invalid_json", "the body is not valid JSON")


@app.exception_handler(Exception)
def unexpected(exc: Exception):
    log.exception("unhandled error", error=str(exc)[:500])
    return error(500, "internal_error", "unexpected error; it has been logged")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with acting_as("api"):
        response = app.resolve(event, context_or_local(context))
    API_REQUESTS.labels(event.get("resource") or "unknown", str(response.get("statusCode"))).inc()
    return response
