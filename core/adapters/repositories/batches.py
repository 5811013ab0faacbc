"""Batches: status moves, the send lease a sender claims, dispatch and the ``due`` index."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from core import schema
from core.adapters.dynamodb import Page, Update
from core.adapters.repositories._base import (
    TableRepository,
    _fields,
    _on,
    _written,
    versioned_update,
)
from core.domain.errors import NotFound, StaleWrite
from core.domain.models import Batch, Summary, iso
from core.domain.statuses import BatchStatus


class DynamoBatches(TableRepository):
    """The batch aggregate: ``TRANSACTION#<id>``/``BATCH#<batch id>`` items, due as ``BATCH`` (and it reads every kind in ``due``)."""

    def put_batch(self, batch: Batch) -> bool:
        return self.table.put_new({**schema.batch_key(batch.transaction_id, batch.batch_id), **batch.model_dump()})

    def batches(self, tx_id: str) -> list[Batch]:
        return [Batch.model_validate(_fields(i))
                for i in self.table.query_all(schema.transaction_partition(tx_id), schema.BATCH_PREFIX)]

    def batches_page(self, tx_id: str, limit: int, cursor: str | None) -> tuple[list[Batch], str | None]:
        page = self.table.query(schema.transaction_partition(tx_id), schema.BATCH_PREFIX, limit=limit, cursor=cursor)
        return [Batch.model_validate(_fields(i)) for i in page.items], page.cursor

    def get_batch(self, batch_id: str, tx_id: str) -> Batch:
        item = self.table.get(schema.batch_key(tx_id, batch_id))
        if not item:
            raise NotFound(f"batch {batch_id} not found")
        return Batch.model_validate(_fields(item))

    def change_batch_status(self, batch: Batch, target: BatchStatus, fields: dict[str, Any] | None = None,
                            *, due_at: datetime | None = None, clear_due: bool = False) -> Batch:
        """Move ``batch`` to ``target`` (``Batch.move_to`` says whether it may) if it is still at the
        status and version we read; ``due_at`` puts it in the ``due`` index, ``clear_due`` takes it out."""
        sets = {**batch.move_to(target), **(fields or {})}
        if due_at is not None:
            sets.update(schema.due_entry(schema.DUE_BATCHES, iso(due_at)))
        self.table.update(versioned_update(
            schema.batch_key(batch.transaction_id, batch.batch_id), batch.status, batch.version, set=sets,
            remove=schema.DUE_INDEX.keys if clear_due else (),
        ))
        return _written(batch, sets)

    def update_batch_summary(self, batch: Batch, summary: Summary) -> Batch:
        """Store a recount. Counts are derived data, re-counted from the messages every pass, so
        the write leaves ``version`` alone: status writes are conditioned on it, and a recount
        must never make the sender's QUEUED → SENT (or any status write) lose its condition."""
        self.table.update(Update(
            schema.batch_key(batch.transaction_id, batch.batch_id),
            set={"summary": summary.model_dump()}, condition="attribute_exists(PK)",
        ))
        return batch.model_copy(update={"summary": summary})

    def claim_batch(self, batch: Batch, worker: str, now: datetime, lease_seconds: float) -> bool:
        """Take the batch's send lease; False when another live worker holds it."""
        until = now + timedelta(seconds=lease_seconds)
        try:
            self.table.update(Update(
                schema.batch_key(batch.transaction_id, batch.batch_id),
                # while a worker holds the lease the controller leaves the batch alone
                set={"lease_owner": worker, "lease_until": iso(until), "redispatch_at": iso(until)},
                condition="#st = :q AND (attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :w)",
                values={":q": BatchStatus.QUEUED, ":now": iso(now), ":w": worker},
                names={"#st": "status"},
            ))
            return True
        except StaleWrite:
            return False

    def release_batch(self, batch: Batch, when: datetime) -> None:
        """Give up the send lease and ask the controller to re-dispatch the batch at ``when``
        (``released_at``: the sender consumed its queue message, so a new one is needed)."""
        try:
            self.table.update(Update(
                schema.batch_key(batch.transaction_id, batch.batch_id),
                set={"redispatch_at": iso(when), "released_at": iso(when)}, remove=("lease_owner", "lease_until"),
                condition="#st = :q", values={":q": BatchStatus.QUEUED}, names={"#st": "status"},
            ))
        except StaleWrite:
            pass

    def hand_back_unclaimed(self, batch: Batch, now: datetime, when: datetime) -> bool:
        """A sender that may not send now gives back a queue message it consumed: re-dispatch at
        ``when``, unless a live worker holds the batch (its claim is never touched)."""
        try:
            self.table.update(Update(
                schema.batch_key(batch.transaction_id, batch.batch_id),
                set={"redispatch_at": iso(when), "released_at": iso(when)},
                condition="#st = :q AND (attribute_not_exists(lease_until) OR lease_until < :now)",
                values={":q": BatchStatus.QUEUED, ":now": iso(now)}, names={"#st": "status"},
            ), returns="NONE")
            return True
        except StaleWrite:
            return False

    def mark_queued(self, batch: Batch, now: datetime, redispatch_at: datetime) -> Batch:
        """READY → QUEUED, or a re-dispatch of a QUEUED batch (bumps ``dispatches``). Written
        *before* the queue message is sent. A re-dispatch never takes a batch from a live lease
        holder, and it clears the old claim and hand-back: from here the batch waits for a claim."""
        sets = {"status": BatchStatus.QUEUED, "version": batch.version + 1, "queued_at": now,
                "redispatch_at": iso(redispatch_at)}
        also: str | None = None
        values: dict[str, Any] = {}
        remove: tuple[str, ...] = schema.DUE_INDEX.keys  # a released batch leaves the due index once dispatched
        if batch.status == BatchStatus.QUEUED:
            also, values = "(attribute_not_exists(lease_until) OR lease_until <= :now)", {":now": iso(now)}
            remove = ("lease_owner", "lease_until", "released_at", *remove)
        self.table.update(versioned_update(
            schema.batch_key(batch.transaction_id, batch.batch_id), batch.status, batch.version, set=sets,
            add={"dispatches": 1}, remove=remove, also=also, values=values,
        ))
        return Batch.model_validate({**batch.model_dump(), "status": BatchStatus.QUEUED,
                                     "version": batch.version + 1, "queued_at": now,
                                     "redispatch_at": redispatch_at, "dispatches": batch.dispatches + 1})

    def dispatch_state(self, batch: Batch) -> dict[str, Any]:
        """The send-lease fields of a batch (not part of the entity): who claimed it, until when,
        and whether a sender handed it back (``released_at``)."""
        item = self.table.get(schema.batch_key(batch.transaction_id, batch.batch_id)) or {}
        return {k: item.get(k) for k in ("lease_owner", "lease_until", "released_at", "version", "status")}

    def postpone_redispatch(self, batch: Batch, when: datetime) -> None:
        """Look at an unclaimed QUEUED batch again at ``when`` (its queue message still waits)."""
        try:
            self.table.update(versioned_update(
                schema.batch_key(batch.transaction_id, batch.batch_id), BatchStatus.QUEUED, batch.version,
                set={"redispatch_at": iso(when)}, also="attribute_not_exists(lease_owner)",
            ))
        except StaleWrite:
            pass

    def snooze_due(self, batch: Batch, until: datetime) -> bool:
        """Move a SCHEDULED (or released, READY) batch's ``due`` entry to ``until`` (its campaign is
        paused, or cancelled and left to settle): due items that cannot act must not fill the page
        every pass reads first. Version unchanged."""
        try:
            self.table.update(Update(
                schema.batch_key(batch.transaction_id, batch.batch_id), set={schema.DUE_INDEX.range_key: iso(until)},
                condition="#st IN (:s, :r) AND attribute_exists(due_pk)",
                values={":s": BatchStatus.SCHEDULED, ":r": BatchStatus.READY},
                names={"#st": "status"},
            ))
            return True
        except StaleWrite:
            return False

    def due(self, kind: str, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
        """Items of ``kind`` (``schema.DUE_*``: BATCH, CALLBACK, MSGEVENTS) due at or before ``now``, via the ``due`` index."""
        return self.due_page(kind, now, limit).items

    def due_page(self, kind: str, now: datetime, limit: int = 100, cursor: str | None = None) -> Page:
        """One page of due items and the cursor of the next (None at the end)."""
        return self.table.query(kind, **_on(schema.DUE_INDEX), sk_upto=iso(now), limit=limit, cursor=cursor)
