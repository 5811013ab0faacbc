"""Ingest error classification (C8): a permanent error refuses the row or fails the campaign with a
reason, once; a temporary one is retried from the checkpoint. moto enforces DynamoDB's 400 KB item
limit (ValidationException "Item size has exceeded the maximum allowed size")."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from core.domain.statuses import TransactionStatus
from core.services import ingest
from core.services.ingest import ingest_transaction
from tests.helpers import leader, recipients, submit

BIG = "x" * (450 * 1024)


def big_row_csv() -> str:
    return recipients(3) + f"big@example.org,{BIG}\n" + recipients(2, start=3).split("\n", 1)[1]


def run_ingest(deps, tx_id, blobs=None):
    tx = deps.store.get_transaction(tx_id)
    return ingest_transaction(tx, store=deps.store, blobs=blobs or deps.blobs, settings=deps.settings,
                              clock=deps.clock)


class FailingBlobs:
    """The real blob store, except that reading the recipients CSV answers an S3 error."""

    def __init__(self, real, code: str, times: int = 1_000_000):
        self.real, self.code, self.times, self.reads = real, code, times, 0

    def open_bytes(self, bucket, key):
        self.reads += 1
        if self.reads <= self.times:
            raise ClientError({"Error": {"Code": self.code, "Message": "refused by the test"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
        return self.real.open_bytes(bucket, key)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_row_too_large_for_a_message_item_is_refused_with_a_reason(deps, tenant):
    tx_id = submit(deps, "tenant-a", big_row_csv())
    c = leader(deps)
    c.ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.READY_TO_SEND
    assert tx.total_messages == 5 and tx.refused_rows == 1
    (rejection,), _ = deps.store.rejections_page(tx_id, 10, None)
    assert rejection.line == 5 and rejection.email == "big@example.org"
    assert rejection.reason.startswith("too_large: the row's values are 450 KB")


def test_a_write_dynamodb_refuses_as_too_large_fails_the_campaign_with_the_reason(deps, tenant, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_ROW_DATA_BYTES", 10 * 1024 * 1024, raising=False)  # the row check missed it
    tx_id = submit(deps, "tenant-a", big_row_csv())
    c = leader(deps)
    c.ingest_pass()  # the controller's (fenced) store
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.FAILED
    assert "larger than DynamoDB's 400 KB item limit" in tx.failure_reason
    c.ingest_pass()  # nothing retries it
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.FAILED


@pytest.mark.parametrize("code,reason", [("AccessDenied", "the platform is not allowed to read it (AccessDenied)"),
                                         ("NoSuchKey", "it no longer exists (NoSuchKey)")])
def test_an_unreadable_csv_fails_the_campaign_once_with_the_reason(deps, tenant, code, reason):
    tx_id = submit(deps, "tenant-a", recipients(10), callback_url="http://127.0.0.1:9/hook")
    blobs = FailingBlobs(deps.blobs, code)
    tx = run_ingest(deps, tx_id, blobs)
    assert tx.status == TransactionStatus.FAILED
    assert tx.failure_reason == f"the recipients CSV cannot be read: {reason}"
    assert run_ingest(deps, tx_id, blobs).status == TransactionStatus.FAILED
    assert blobs.reads == 1  # not re-read on every pass
    assert [c.payload["status"] for c in deps.store.callbacks(tx_id)] == ["PROCESSING", "FAILED"]


def test_a_temporary_s3_error_is_retried_on_the_next_pass(deps, tenant):
    tx_id = submit(deps, "tenant-a", recipients(10))
    blobs = FailingBlobs(deps.blobs, "SlowDown", times=1)
    with pytest.raises(ClientError):
        run_ingest(deps, tx_id, blobs)
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.PROCESSING
    tx = run_ingest(deps, tx_id, blobs)
    assert tx.status == TransactionStatus.READY_TO_SEND and tx.total_messages == 10
