"""Campaigns in a given state, built through the services where a user would (templates, uploads)
and through the store where the controller would (ingest's batches and messages)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from config.settings import Settings
from core.domain.models import Batch, Message, Transaction, batch_id_for, message_id_for
from core.domain.statuses import BatchStatus, MessageStatus, TransactionStatus
from core.services import campaigns, templates
from tests.fakes import FakeBlobs, FakeStore

TENANT = "tenant-a"
# The FakeClock's start in every service test: before any wall clock, as the store stamps some times
# (updated_at) with the wall clock and the controller compares them with the FakeClock.
NOW = datetime(2020, 3, 2, 9, 0, tzinfo=UTC)


def active_template(store: FakeStore, blobs: FakeBlobs, settings: Settings, tenant: str = TENANT,
                    html: str = "<p>Hello {{ first_name }}</p>", subject: str = "Hi {{ first_name }}") -> str:
    t = templates.create_template(store, blobs, settings, tenant, "welcome", subject)
    tv = store.get_template_version(t["template_id"], 1)
    blobs.put(settings.bucket("templates"), tv.s3_key, html.encode(), "text/html")
    templates.confirm_template(store, blobs, settings, tenant, t["template_id"])
    return str(t["template_id"])


def uploaded_csv(store: FakeStore, blobs: FakeBlobs, settings: Settings, text: str = "email,first_name\na@x.org,A\n",
                 tenant: str = TENANT) -> str:
    up = campaigns.create_upload(store, blobs, settings, tenant, None)
    blobs.put(settings.bucket("uploads"), up["csv_file_url"].split("/", 3)[3], text.encode())
    return str(up["upload_id"])


def stored_campaign(store: FakeStore, tx_id: str = "tx_1", *, status: TransactionStatus = TransactionStatus.READY_TO_SEND,
                    batches: list[BatchStatus] | None = None, per_batch: int = 2, tenant: str = TENANT,
                    created_at: datetime = NOW, **fields: Any) -> Transaction:
    """A campaign as ingest leaves it: its item at ``status``, its batches at the given statuses and
    ``per_batch`` READY_TO_SEND messages in each."""
    statuses = batches if batches is not None else [BatchStatus.READY]
    tx = Transaction(transaction_id=tx_id, tenant_id=tenant, template_id="tpl", template_version=1, csv_s3_key="k",
                     status=status, batch_count=len(statuses), total_messages=len(statuses) * per_batch,
                     created_at=created_at, updated_at=created_at, **fields)
    store.create_transaction(tx)
    for i, batch_status in enumerate(statuses, start=1):
        bid = batch_id_for(tx_id, i)
        store.put_batch(Batch(batch_id=bid, transaction_id=tx_id, tenant_id=tenant, index=i, status=batch_status,
                              message_count=per_batch))
        store.put_messages([Message(message_id=message_id_for(bid, j), batch_id=bid, transaction_id=tx_id,
                                    tenant_id=tenant, recipient_email=f"u{i}-{j}@example.org",
                                    metadata={"row": f"{i}-{j}"}) for j in range(1, per_batch + 1)])
    return store.get_transaction(tx_id)


def message_statuses(store: FakeStore, tx_id: str) -> list[MessageStatus]:
    tx = store.get_transaction(tx_id)
    return [m.status for i in range(1, tx.batch_count + 1)
            for m in store.batch_partition(batch_id_for(tx_id, i))[0]]
