"""The callback outbox: one entry per campaign status change (written with the change, by
``DynamoTransactions.change_transaction_status``) and batches of message events, each with its attempts."""

from __future__ import annotations

from typing import Any

from core import schema
from core.adapters.dynamodb import Update
from core.adapters.repositories._base import TableRepository, _expires, _fields
from core.domain.errors import NotFound
from core.domain.models import MESSAGE_EVENTS, CallbackRecord, iso, utcnow


class DynamoCallbacks(TableRepository):
    """The callback outbox: ``TRANSACTION#<id>``/``CALLBACK#<seq>`` and ``MSGEVENTS#<ref>`` items, due as ``CALLBACK`` / ``MSGEVENTS``."""

    def callbacks(self, tx_id: str) -> list[CallbackRecord]:
        return [CallbackRecord.model_validate(_fields(i))
                for i in self.table.query_all(schema.transaction_partition(tx_id), schema.CALLBACK_PREFIX)]

    def get_callback(self, tx_id: str, seq: int) -> CallbackRecord:
        item = self.table.get(schema.callback_key(tx_id, seq))
        if not item:
            raise NotFound(f"callback {seq} of {tx_id} not found")
        return CallbackRecord.model_validate(_fields(item))

    def save_callback_attempt(self, cb: CallbackRecord, expected_attempts: int) -> None:
        """Record an attempt; conditional on the attempt count we read so two deliverers can't both log."""
        sets: dict[str, Any] = {"state": cb.state, "attempts": [a for a in cb.attempts],
                                "next_attempt_at": cb.next_attempt_at}
        remove: tuple[str, ...] = ()
        events = cb.kind == MESSAGE_EVENTS
        if cb.state == "PENDING" and cb.next_attempt_at:
            sets.update(schema.due_entry(schema.DUE_MESSAGE_EVENTS if events else schema.DUE_CALLBACKS,
                                         iso(cb.next_attempt_at)))
        else:
            remove = schema.DUE_INDEX.keys
            sets.pop("next_attempt_at")
        key = (schema.message_events_key(cb.transaction_id, cb.ref or "") if events
               else schema.callback_key(cb.transaction_id, cb.seq))
        self.table.update(Update(
            key, set=sets, remove=remove,
            condition="size(attempts) = :n", values={":n": expected_attempts},
        ))

    # ------------------------------------------------- message-event batches (core/services/message_events.py)
    def put_message_events(self, cb: CallbackRecord, expiration: int | None = None) -> bool:
        """Write one batch of message events to the outbox, due now; create-only, so a retried
        flush never resets one already attempted. False when it exists. ``expiration`` (epoch
        seconds): the tenant's message retention, as on the messages it describes."""
        return self.table.put_new({**schema.message_events_key(cb.transaction_id, cb.ref or ""), **cb.model_dump(),
                                   **schema.due_entry(schema.DUE_MESSAGE_EVENTS, iso(cb.next_attempt_at or utcnow())),
                                   **_expires(expiration)})

    def message_events(self, tx_id: str, ref: str) -> CallbackRecord | None:
        item = self.table.get(schema.message_events_key(tx_id, ref))
        return CallbackRecord.model_validate(_fields(item)) if item else None

    def message_event_batches(self, tx_id: str, limit: int, cursor: str | None) -> tuple[list[CallbackRecord], str | None]:
        page = self.table.query(schema.transaction_partition(tx_id), schema.MESSAGE_EVENTS_PREFIX,
                                limit=limit, cursor=cursor)
        return [CallbackRecord.model_validate(_fields(i)) for i in page.items], page.cursor
