"""``CallbackRepository`` in memory: the campaign's ordered outbox (written by a status change, see
FakeTransactions), attempts recorded conditional on the number of attempts read, and the
message-event batches (create-only, due at once)."""

from __future__ import annotations

from typing import Any

from core import schema
from core.domain.errors import NotFound
from core.domain.models import MESSAGE_EVENTS, CallbackRecord, iso, utcnow
from tests.fakes.base import FakeRepository
from tests.fakes.table import FakeUpdate, fields_of


class FakeCallbacks(FakeRepository):
    def callbacks(self, tx_id: str) -> list[CallbackRecord]:
        return [CallbackRecord.model_validate(fields_of(i))
                for i in self.table.query_all(schema.transaction_partition(tx_id), schema.CALLBACK_PREFIX)]

    def get_callback(self, tx_id: str, seq: int) -> CallbackRecord:
        item = self.table.get(schema.callback_key(tx_id, seq))
        if not item:
            raise NotFound(f"callback {seq} of {tx_id} not found")
        return CallbackRecord.model_validate(fields_of(item))

    def save_callback_attempt(self, cb: CallbackRecord, expected_attempts: int) -> None:
        sets: dict[str, Any] = {"state": cb.state, "attempts": list(cb.attempts), "next_attempt_at": cb.next_attempt_at}
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
        self.table.update(FakeUpdate(  # size(attempts) = :n (a missing item or list never matches)
            key, set=sets, remove=remove,
            condition=lambda i: i is not None and "attempts" in i and len(i["attempts"]) == expected_attempts))

    def put_message_events(self, cb: CallbackRecord, expiration: int | None = None) -> bool:
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        return self.table.put_new({**schema.message_events_key(cb.transaction_id, cb.ref or ""), **cb.model_dump(),
                                   **schema.due_entry(schema.DUE_MESSAGE_EVENTS, iso(cb.next_attempt_at or utcnow())),
                                   **ttl})

    def message_events(self, tx_id: str, ref: str) -> CallbackRecord | None:
        item = self.table.get(schema.message_events_key(tx_id, ref))
        return CallbackRecord.model_validate(fields_of(item)) if item else None

    def message_event_batches(self, tx_id: str, limit: int, cursor: str | None) -> tuple[list[CallbackRecord], str | None]:
        page = self.table.query(schema.transaction_partition(tx_id), schema.MESSAGE_EVENTS_PREFIX, limit=limit,
                                cursor=cursor)
        return [CallbackRecord.model_validate(fields_of(i)) for i in page.items], page.cursor
