"""Messages: written by ingest, moved by SES events in precedence order, cancelled or failed before a send;
and what ingest leaves beside them (refused rows, its watermark)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from core import schema
from core.adapters.dynamodb import Guarded, Page, Update, expect_status
from core.adapters.repositories._base import TableRepository, _expires, _fields, _message
from core.domain.errors import NotFound, StaleWrite, TemporaryError
from core.domain.models import Message, Recorded, Rejection, iso, utcnow
from core.domain.statuses import MessageStatus
from core.domain.tracking import APPLIED, DUPLICATE, TrackedEvent, Tracking, TrackingWrite


class DynamoMessages(TableRepository):
    """The message aggregate: ``BATCH#<batch id>``/``MESSAGE#<id>`` items, and ingest's ``TRANSACTION#<id>``/``REJECTION#`` and ``INGEST#WATERMARK`` items."""

    def put_messages(self, messages: Iterable[Message], expiration: int | None = None) -> int:
        """Idempotent bulk write (deterministic ids); returns the number of write calls.
        ``expiration`` (epoch seconds) is the TTL that ends the tenant's message retention."""
        ttl = _expires(expiration)
        return self.table.batch_put(
            {**schema.message_key(m.batch_id, m.message_id), **m.model_dump(exclude_defaults=False), **ttl}
            for m in messages
        )

    def batch_partition(self, batch_id: str) -> tuple[list[Message], list[dict[str, Any]]]:
        """Every message of a batch and its send-log entries, in one paginated query."""
        messages, logs = [], []
        for item in self.table.query_all(schema.batch_partition(batch_id)):
            if item[schema.SK].startswith(schema.MESSAGE_PREFIX):
                messages.append(_message(item))
            elif item[schema.SK].startswith(schema.SEND_LOG_PREFIX):
                logs.append(item)
        return messages, logs

    def message_statuses(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Just what counting needs (status, statuses seen), not the placeholder data."""
        yield from self.table.query_all(schema.batch_partition(batch_id), schema.MESSAGE_PREFIX,
                                        projection="#status, seen, message_id")

    def get_message(self, batch_id: str, message_id: str, tenant_id: str | None = None) -> Message:
        item = self.table.get(schema.message_key(batch_id, message_id))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"message {message_id} not found")
        return _message(item)

    def messages_page(self, batch_id: str, status: str | None, limit: int, cursor: str | None) -> Page:
        kw: dict[str, Any] = {}
        if status:
            kw = {"filter_expr": "#status = :fs", "filter_values": {":fs": status}}
        return self.table.query(schema.batch_partition(batch_id), schema.MESSAGE_PREFIX, limit=limit, cursor=cursor, **kw)

    def record_message_event(self, batch_id: str, message_id: str, new: MessageStatus, event: dict[str, Any],
                             extra: dict[str, Any] | None = None) -> Recorded:
        """Record one SES event on its message (a read and at most one write; the events Lambda
        reads a whole SQS batch's messages at once instead: ``message_items``, ``save_tracking``).
        ``moved``: True (status moved), False (kept, late), None (nothing changed, or unknown)."""
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
        """Message items by message id, for (batch id, message id) keys: eventually consistent
        BatchGetItem, 100 keys a call (half a read unit per item under 4 KB: a tenth of the
        replicated write it may spare). A key not found is read again strongly consistent before
        it counts as missing (a message written a moment ago)."""
        keys = list(dict.fromkeys(keys))
        found = {i["message_id"]: i for i in self.table.batch_get([schema.message_key(b, m) for b, m in keys])
                 if "message_id" in i}
        missing = [(b, m) for b, m in keys if m not in found]
        if missing:
            found.update({i["message_id"]: i for i in self.table.batch_get(
                [schema.message_key(b, m) for b, m in missing], consistent=True) if "message_id" in i})
        return found

    def save_tracking(self, batch_id: str, message_id: str, before: Tracking, after: Tracking) -> dict[str, Any] | None:
        """``save_trackings`` for one message; raises what kept it from being written."""
        (outcome,) = self.save_trackings([TrackingWrite(batch_id, message_id, before, after)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def save_trackings(self, writes: Sequence[TrackingWrite]) -> list[dict[str, Any] | None | Exception]:
        """Write what events changed on messages, each conditional on the state they were applied
        to (its status and the events path's write generation; never an erased message), 25 to a
        request. Per message: None when written; else the item as it is now, to apply the events
        to again ({} when it is gone); or the exception that kept it from being written."""
        return self.table.update_each([_tracking_update(w) for w in writes])

    def cancel_message(self, batch_id: str, message_id: str, now: datetime) -> bool:
        """Mark a never-sent message CANCELLED (only from a sendable status)."""
        cond, vals, names = expect_status(["CREATED", "SCHEDULED", "READY_TO_SEND", "SENDING"])
        try:
            self.table.update(Update(
                schema.message_key(batch_id, message_id),
                set={"status": MessageStatus.CANCELLED, "ts_cancelled": iso(now)},
                condition=cond, values=vals, names=names, add={"seen": {MessageStatus.CANCELLED.value}},
            ), returns="NONE")
            return True
        except StaleWrite:
            return False

    def fail_message(self, batch_id: str, message_id: str, status: MessageStatus, reason: str) -> bool:
        """Mark a message FAILED/SUPPRESSED before any send; only from a sendable status."""
        cond, vals, names = expect_status(["CREATED", "SCHEDULED", "READY_TO_SEND", "SENDING"])
        try:
            self.table.update(Update(
                schema.message_key(batch_id, message_id),
                set={"status": status, "failure_reason": reason, f"ts_{status.value.lower()}": iso(utcnow())},
                condition=cond, values=vals, names=names, add={"seen": {status.value}},
            ))
            return True
        except StaleWrite:
            return False

    # ---------------------------------------------------------------- what ingest leaves beside the messages
    def put_rejections(self, tx_id: str, rejections: Iterable[Rejection], expiration: int | None = None) -> int:
        ttl = _expires(expiration)
        return self.table.batch_put({**schema.rejection_key(tx_id, r.line), **r.model_dump(), **ttl}
                                    for r in rejections)

    def set_ingest_watermark(self, tx_id: str, line: int, expiration: int | None = None) -> None:
        """Every row up to ``line`` is decided and its rejection written (ingest, before a batch)."""
        self.table.put({**schema.ingest_watermark_key(tx_id), "line": line, **_expires(expiration)})

    def ingest_watermark(self, tx_id: str) -> int:
        item = self.table.get(schema.ingest_watermark_key(tx_id))
        return int(item["line"]) if item else 0

    def rejections_page(self, tx_id: str, limit: int, cursor: str | None) -> tuple[list[Rejection], str | None]:
        page = self.table.query(schema.transaction_partition(tx_id), schema.REJECTION_PREFIX, limit=limit, cursor=cursor)
        return [Rejection.model_validate(_fields(i)) for i in page.items], page.cursor


def _tracking_update(w: TrackingWrite) -> Guarded:
    """The write of ``w``, guarded by the state its events were applied to."""
    equals: dict[str, Any] = {}
    missing = ["erased"]
    if w.before.status is not None:
        equals["status"] = w.before.status
    else:
        missing.append("status")
    if w.before.gen:
        equals["ev_gen"] = w.before.gen
    else:
        missing.append("ev_gen")
    return Guarded(schema.message_key(w.batch_id, w.message_id), set=w.after.changed(w.before), equals=equals,
                   missing=tuple(missing))
