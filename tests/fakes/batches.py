"""``BatchRepository`` in memory, with DynamoStore's semantics: status moves conditional on the
status and version read, the send lease (claim, release, hand back) conditional on who holds it
until when, and the sparse ``due`` index read page by page."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from core import schema
from core.domain.errors import NotFound, StaleWrite
from core.domain.models import Batch, Page, Summary, iso
from core.domain.statuses import BatchStatus
from tests.fakes.base import FakeRepository
from tests.fakes.table import FakeUpdate, Item, fields_of

Q = BatchStatus.QUEUED


def _lease_free(item: Item, now: str, strictly: bool = True) -> bool:
    """``attribute_not_exists(lease_until) OR lease_until < :now`` (``<=`` when not ``strictly``)."""
    if "lease_until" not in item:
        return True
    return item["lease_until"] < now if strictly else item["lease_until"] <= now


class FakeBatches(FakeRepository):
    def put_batch(self, batch: Batch) -> bool:
        return self.table.put_new({**schema.batch_key(batch.transaction_id, batch.batch_id), **batch.model_dump()})

    def batches(self, tx_id: str) -> list[Batch]:
        return [Batch.model_validate(fields_of(i)) for i in self.table.query_all(schema.transaction_partition(tx_id),
                                                                                    schema.BATCH_PREFIX)]

    def batches_page(self, tx_id: str, limit: int, cursor: str | None) -> tuple[list[Batch], str | None]:
        page = self.table.query(schema.transaction_partition(tx_id), schema.BATCH_PREFIX, limit=limit, cursor=cursor)
        return [Batch.model_validate(fields_of(i)) for i in page.items], page.cursor

    def get_batch(self, batch_id: str, tx_id: str) -> Batch:
        item = self.table.get(schema.batch_key(tx_id, batch_id))
        if not item:
            raise NotFound(f"batch {batch_id} not found")
        return Batch.model_validate(fields_of(item))

    def change_batch_status(self, batch: Batch, target: BatchStatus, fields: dict[str, Any] | None = None,
                            *, due_at: datetime | None = None, clear_due: bool = False) -> Batch:
        sets = {**batch.move_to(target), **(fields or {})}  # the model says whether it may (IllegalTransition)
        if due_at is not None:
            sets.update(schema.due_entry(schema.DUE_BATCHES, iso(due_at)))
        self.table.update(FakeUpdate(
            schema.batch_key(batch.transaction_id, batch.batch_id), set=sets,
            remove=schema.DUE_INDEX.keys if clear_due else (),
            condition=lambda i: i is not None and i.get("status") == batch.status and i.get("version") == batch.version))
        return Batch.model_validate({**batch.model_dump(), **{k: v for k, v in sets.items() if k in Batch.model_fields}})

    def update_batch_summary(self, batch: Batch, summary: Summary) -> Batch:
        self.table.update(FakeUpdate(schema.batch_key(batch.transaction_id, batch.batch_id),
                                     set={"summary": summary.model_dump()}, condition=lambda i: i is not None))
        return batch.model_copy(update={"summary": summary})

    def claim_batch(self, batch: Batch, worker: str, now: datetime, lease_seconds: float) -> bool:
        until = now + timedelta(seconds=lease_seconds)
        try:
            self.table.update(FakeUpdate(
                schema.batch_key(batch.transaction_id, batch.batch_id),
                set={"lease_owner": worker, "lease_until": iso(until), "redispatch_at": iso(until)},
                condition=lambda i: i is not None and i.get("status") == Q and (
                    _lease_free(i, iso(now)) or i.get("lease_owner") == worker)))
            return True
        except StaleWrite:
            return False

    def release_batch(self, batch: Batch, when: datetime) -> None:
        try:
            self.table.update(FakeUpdate(
                schema.batch_key(batch.transaction_id, batch.batch_id),
                set={"redispatch_at": iso(when), "released_at": iso(when)}, remove=("lease_owner", "lease_until"),
                condition=lambda i: i is not None and i.get("status") == Q))
        except StaleWrite:
            pass

    def hand_back_unclaimed(self, batch: Batch, now: datetime, when: datetime) -> bool:
        try:
            self.table.update(FakeUpdate(
                schema.batch_key(batch.transaction_id, batch.batch_id),
                set={"redispatch_at": iso(when), "released_at": iso(when)},
                condition=lambda i: i is not None and i.get("status") == Q and _lease_free(i, iso(now))))
            return True
        except StaleWrite:
            return False

    def mark_queued(self, batch: Batch, now: datetime, redispatch_at: datetime) -> Batch:
        sets = {"status": Q, "version": batch.version + 1, "queued_at": now, "redispatch_at": iso(redispatch_at)}
        remove: tuple[str, ...] = schema.DUE_INDEX.keys  # a released batch leaves the due index once dispatched
        requeue = batch.status == Q
        if requeue:
            remove = ("lease_owner", "lease_until", "released_at", *remove)

        def allowed(i: Item | None) -> bool:
            if i is None or i.get("status") != batch.status or i.get("version") != batch.version:
                return False
            return not requeue or _lease_free(i, iso(now), strictly=False)

        self.table.update(FakeUpdate(schema.batch_key(batch.transaction_id, batch.batch_id), set=sets,
                                     add={"dispatches": 1}, remove=remove, condition=allowed))
        return Batch.model_validate({**batch.model_dump(), "status": Q, "version": batch.version + 1,
                                     "queued_at": now, "redispatch_at": redispatch_at,
                                     "dispatches": batch.dispatches + 1})

    def dispatch_state(self, batch: Batch) -> dict[str, Any]:
        item = self.table.get(schema.batch_key(batch.transaction_id, batch.batch_id)) or {}
        return {k: item.get(k) for k in ("lease_owner", "lease_until", "released_at", "version", "status")}

    def postpone_redispatch(self, batch: Batch, when: datetime) -> None:
        try:
            self.table.update(FakeUpdate(
                schema.batch_key(batch.transaction_id, batch.batch_id), set={"redispatch_at": iso(when)},
                condition=lambda i: (i is not None and i.get("status") == Q and i.get("version") == batch.version
                                     and "lease_owner" not in i)))
        except StaleWrite:
            pass

    def snooze_due(self, batch: Batch, until: datetime) -> bool:
        try:
            self.table.update(FakeUpdate(
                schema.batch_key(batch.transaction_id, batch.batch_id), set={schema.DUE_INDEX.range_key: iso(until)},
                condition=lambda i: (i is not None and i.get("status") in (BatchStatus.SCHEDULED, BatchStatus.READY)
                                     and schema.DUE_INDEX.hash_key in i)))
            return True
        except StaleWrite:
            return False

    def due(self, kind: str, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
        return self.due_page(kind, now, limit).items

    def due_page(self, kind: str, now: datetime, limit: int = 100, cursor: str | None = None) -> Page:
        return self.table.query(kind, index=schema.DUE_INDEX.name, sk_upto=iso(now), limit=limit, cursor=cursor)
