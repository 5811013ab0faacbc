"""``MessageRepository`` in memory, with DynamoStore's semantics: idempotent bulk puts (create-only
on a fenced store), SES events folded onto a message by precedence (``core.domain.tracking``) and
written conditional on the state they were applied to, cancels and failures only from a
sendable status, rejections and the ingest watermark (``message_items`` and ``save_tracking``
are what the events path reads a whole SQS batch's messages with and writes each one back)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from core import schema
from core.domain.errors import NotFound, StaleWrite, TemporaryError
from core.domain.models import Message, Page, Recorded, Rejection, iso, utcnow
from core.domain.statuses import MessageStatus
from core.domain.tracking import APPLIED, DUPLICATE, TrackedEvent, Tracking, TrackingWrite
from tests.fakes.base import FakeRepository
from tests.fakes.table import FakeUpdate, Item, fields_of, message_of

SENDABLE = ("CREATED", "SCHEDULED", "READY_TO_SEND", "SENDING")  # what cancel_message / fail_message move from


def _sendable(item: Item | None) -> bool:
    return item is not None and item.get("status") in SENDABLE


class FakeMessages(FakeRepository):
    def put_messages(self, messages: Iterable[Message], expiration: int | None = None) -> int:
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        return self.table.batch_put(
            {**schema.message_key(m.batch_id, m.message_id), **m.model_dump(exclude_defaults=False), **ttl}
            for m in messages)

    def batch_partition(self, batch_id: str) -> tuple[list[Message], list[dict[str, Any]]]:
        messages, logs = [], []
        for item in self.table.query_all(schema.batch_partition(batch_id)):
            if item[schema.SK].startswith(schema.MESSAGE_PREFIX):
                messages.append(message_of(item))
            elif item[schema.SK].startswith(schema.SEND_LOG_PREFIX):
                logs.append(item)
        return messages, logs

    def message_statuses(self, batch_id: str) -> Iterator[dict[str, Any]]:
        yield from self.table.query_all(schema.batch_partition(batch_id), schema.MESSAGE_PREFIX,
                                        projection=("status", "seen", "message_id"))

    def get_message(self, batch_id: str, message_id: str, tenant_id: str | None = None) -> Message:
        item = self.table.get(schema.message_key(batch_id, message_id))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"message {message_id} not found")
        return message_of(item)

    def messages_page(self, batch_id: str, status: str | None, limit: int, cursor: str | None) -> Page:
        wanted = (lambda i: i.get("status") == status) if status else None
        return self.table.query(schema.batch_partition(batch_id), schema.MESSAGE_PREFIX, limit=limit, cursor=cursor,
                                item_filter=wanted)

    def record_message_event(self, batch_id: str, message_id: str, new: MessageStatus, event: dict[str, Any],
                             extra: dict[str, Any] | None = None) -> Recorded:
        ev = TrackedEvent(event["id"], str(event.get("type") or new.value), new, event["at"],
                          (extra or {}).get("ses_message_id"),
                          {k: v for k, v in event.items() if k not in ("id", "type", "at")})
        item = self.message_items([(batch_id, message_id)]).get(message_id)
        for _ in range(5):
            if not item or item.get("erased"):
                return Recorded(None, {})
            before = Tracking.of(item)
            after, outcome = before.apply(ev)
            if outcome == DUPLICATE:
                return Recorded(None, {})
            current = self.save_tracking(batch_id, message_id, before, after)
            if current is None:
                return Recorded(outcome == APPLIED, after.delta(before), dict(item.get("metadata") or {}))
            item = current
        raise TemporaryError("message kept changing while its event was recorded; retry", delay=0.1)

    def message_items(self, keys: Iterable[tuple[str, str]]) -> dict[str, dict[str, Any]]:
        """Message items by message id (the raw items, as the events path folds them)."""
        keys = list(dict.fromkeys(keys))
        return {i["message_id"]: i for i in self.table.batch_get([schema.message_key(b, m) for b, m in keys])
                if "message_id" in i}

    def save_tracking(self, batch_id: str, message_id: str, before: Tracking, after: Tracking) -> dict[str, Any] | None:
        """None when written; else the item as it is now ({} when it is gone)."""
        def unchanged(i: Item | None) -> bool:
            if i is None or "erased" in i:
                return False
            if (i.get("status") != before.status) if before.status is not None else ("status" in i):
                return False
            return i.get("ev_gen") == before.gen if before.gen else "ev_gen" not in i

        try:
            self.table.update(FakeUpdate(schema.message_key(batch_id, message_id), set=after.changed(before),
                                         condition=unchanged), return_old_on_fail=True)
            return None
        except StaleWrite as exc:
            return getattr(exc, "current", None) or {}

    def save_trackings(self, writes: Sequence[TrackingWrite]) -> list[dict[str, Any] | None | Exception]:
        """Each write on its own, as the batched statements are (one may win, the next lose)."""
        return [self.save_tracking(w.batch_id, w.message_id, w.before, w.after) for w in writes]

    def cancel_message(self, batch_id: str, message_id: str, now: datetime) -> bool:
        try:
            self.table.update(FakeUpdate(
                schema.message_key(batch_id, message_id),
                set={"status": MessageStatus.CANCELLED, "ts_cancelled": iso(now)},
                add={"seen": {MessageStatus.CANCELLED.value}}, condition=_sendable))
            return True
        except StaleWrite:
            return False

    def fail_message(self, batch_id: str, message_id: str, status: MessageStatus, reason: str) -> bool:
        try:
            self.table.update(FakeUpdate(
                schema.message_key(batch_id, message_id),
                set={"status": status, "failure_reason": reason, f"ts_{status.value.lower()}": iso(utcnow())},
                add={"seen": {status.value}}, condition=_sendable))
            return True
        except StaleWrite:
            return False

    def put_rejections(self, tx_id: str, rejections: Iterable[Rejection], expiration: int | None = None) -> int:
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        return self.table.batch_put({**schema.rejection_key(tx_id, r.line), **r.model_dump(), **ttl}
                                    for r in rejections)

    def rejections_page(self, tx_id: str, limit: int, cursor: str | None) -> tuple[list[Rejection], str | None]:
        page = self.table.query(schema.transaction_partition(tx_id), schema.REJECTION_PREFIX, limit=limit, cursor=cursor)
        return [Rejection.model_validate(fields_of(i)) for i in page.items], page.cursor

    def set_ingest_watermark(self, tx_id: str, line: int, expiration: int | None = None) -> None:
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        self.table.put({**schema.ingest_watermark_key(tx_id), "line": line, **ttl})

    def ingest_watermark(self, tx_id: str) -> int:
        item = self.table.get(schema.ingest_watermark_key(tx_id))
        return int(item["line"]) if item else 0
