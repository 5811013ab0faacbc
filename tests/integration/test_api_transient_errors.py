"""AWS answers that mean "again, shortly" (throttling, a transaction conflict) once the SDK's
retries are spent reach the client as a 503 with Retry-After; anything else stays a logged 500."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.integration.test_passive_region import call


def _aws_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "from AWS"}}, "Query")


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException",
                                  "TransactionConflictException"])
def test_a_busy_aws_answer_is_a_503_with_retry_after(deps, tenant, monkeypatch, code):
    def busy(*a, **kw):
        raise _aws_error(code)

    monkeypatch.setattr(deps.store, "list_transactions", busy)
    status, headers, body = call(deps, "GET", "/campaigns", tenant["api_key"])
    assert (status, headers["Retry-After"], body["error"]["code"]) == (503, "1", "temporarily_unavailable")
    assert code in body["error"]["message"]


def test_any_other_aws_error_stays_a_500(deps, tenant, monkeypatch):
    def broken(*a, **kw):
        raise _aws_error("ValidationException")

    monkeypatch.setattr(deps.store, "list_transactions", broken)
    status, _, body = call(deps, "GET", "/campaigns", tenant["api_key"])
    assert (status, body["error"]["code"]) == (500, "internal_error")


def test_an_aws_error_that_may_have_been_applied_stays_a_500_without_retry_after(deps, tenant, monkeypatch):
    def maybe_applied(*a, **kw):
        raise _aws_error("InternalServerError")

    monkeypatch.setattr(deps.store, "list_transactions", maybe_applied)
    status, headers, _ = call(deps, "GET", "/campaigns", tenant["api_key"])
    assert status == 500 and "Retry-After" not in headers
