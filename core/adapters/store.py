"""The campaign store: entities ⇄ items of the single table (keys from ``core.schema``).

Methods are named after what the services need. Writes that change a status are conditional
on the status and version read before; a transaction status change writes its callback (the
outbox entry) in the same DynamoDB transaction, so a change never exists without its callback.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from core import schema
from core.adapters.dynamodb import DynamoTable, Page, Update, expect_status
from core.domain.errors import IllegalTransition, NotFound, StaleWrite, TemporaryError
from core.domain.models import (
    MESSAGE_EVENTS,
    MESSAGE_EVENTS_DUE,
    ApiKey,
    Attachment,
    Batch,
    CallbackRecord,
    Message,
    Recorded,
    Rejection,
    Summary,
    TemplateVersion,
    Transaction,
    Upload,
    iso,
    parse_iso,
    utcnow,
)
from core.domain.statuses import (
    BATCH_TRANSITIONS,
    TRANSACTION_TRANSITIONS,
    BatchStatus,
    MessageStatus,
    TransactionStatus,
)
from core.domain.tracking import APPLIED, DUPLICATE, TrackedEvent, Tracking

_STRIP = {"PK", "SK", "active_pk", "active_sk", "due_pk", "due_at", "tenant_pk", "tenant_sk", "fence", "expiration"}


def _fields(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in _STRIP}


def _message(item: dict[str, Any]) -> Message:
    """A message item: its fields, and its status times from the ts_<status> attributes."""
    fields = _fields(item)
    fields["timestamps"] = {k[3:].upper(): v for k, v in item.items() if k.startswith("ts_")}
    return Message.model_validate(fields)


def _transaction(item: dict[str, Any]) -> Transaction:
    """A transaction item: its fields, and its live counts from the n_<counter> attributes."""
    fields = _fields(item)
    fields["counts"] = {k[2:]: int(v) for k, v in item.items() if k.startswith("n_")}
    return Transaction.model_validate(fields)


class DynamoStore:
    def __init__(self, table: DynamoTable, address_hasher: Any = None):
        self.table = table
        # core.domain.privacy.AddressHasher: erased people are suppressed by a keyed hash only
        self.address_hasher = address_hasher

    def fenced(self, epoch: int) -> DynamoStore:
        return DynamoStore(self.table.fenced(epoch), self.address_hasher)

    # ---------------------------------------------------------------- transactions
    def create_transaction(self, tx: Transaction) -> Transaction:
        item = {
            **schema.transaction_key(tx.transaction_id),
            **tx.model_dump(),
            "active_pk": "ACTIVE",
            "active_sk": f"{iso(tx.created_at)}#{tx.transaction_id}",
            "tenant_pk": f"TENANT#{tx.tenant_id}#CAMPAIGNS",
            "tenant_sk": f"{iso(tx.created_at)}#{tx.transaction_id}",
        }
        if not self.table.put_new(item):
            raise StaleWrite(f"transaction {tx.transaction_id} already exists")
        return tx

    def get_transaction(self, tx_id: str, tenant_id: str | None = None) -> Transaction:
        item = self.table.get(schema.transaction_key(tx_id))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"campaign {tx_id} not found")
        return _transaction(item)

    def transaction_status(self, tx_id: str) -> TransactionStatus:
        """A campaign's status alone (strongly consistent): what a sender checks before each SES call."""
        item = self.table.get(schema.transaction_key(tx_id), attributes=("status",))
        if not item:
            raise NotFound(f"campaign {tx_id} not found")
        return TransactionStatus(item["status"])

    def list_transactions(self, tenant_id: str, limit: int, cursor: str | None) -> tuple[list[Transaction], str | None]:
        page = self.table.query(
            f"TENANT#{tenant_id}#CAMPAIGNS", index="tenant", pk_name="tenant_pk", sk_name="tenant_sk",
            limit=limit, cursor=cursor, forward=False,
        )
        return [_transaction(i) for i in page.items], page.cursor

    def active_transactions(self) -> Iterator[Transaction]:
        """Transactions needing controller attention, via the sparse ``active`` index."""
        for item in self.table.query_all("ACTIVE", index="active", pk_name="active_pk", sk_name="active_sk"):
            yield self.get_transaction(item["transaction_id"])

    def change_transaction_status(
        self,
        tx: Transaction,
        target: TransactionStatus,
        *,
        fields: dict[str, Any] | None = None,
        callback: CallbackRecord | None = None,
        guard: tuple[dict[str, str], str, dict[str, Any]] | None = None,
    ) -> Transaction:
        """Move ``tx`` to ``target`` if it is still at the status and version we read.

        Writes the callback outbox entry in the same DynamoDB transaction. ``guard`` adds a
        condition on another item (the controller's lease) to the same transaction.
        """
        if target not in TRANSACTION_TRANSITIONS[tx.status]:
            raise IllegalTransition(f"campaign {tx.transaction_id} cannot go from {tx.status} to {target}")
        now = utcnow()
        sets = {"status": target, "version": tx.version + 1, "updated_at": now, **(fields or {})}
        update = Update(
            schema.transaction_key(tx.transaction_id),
            set=sets,
            condition="#st = :cur AND #ver = :ver",
            values={":cur": tx.status, ":ver": tx.version},
            names={"#st": "status", "#ver": "version"},
        )
        puts: list[tuple[dict[str, Any], str | None]] = []
        if callback is not None:
            puts.append(({**schema.callback_key(tx.transaction_id, callback.seq), **callback.model_dump(),
                          "due_pk": "CALLBACK", "due_at": iso(callback.next_attempt_at or now)},
                         "attribute_not_exists(PK)"))
        checks = [guard] if guard else []
        if puts or checks:
            self.table.transact([update], puts, checks)
        else:
            self.table.update(update)
        return Transaction.model_validate({**tx.model_dump(), **{k: v for k, v in sets.items() if k in Transaction.model_fields}})

    def update_transaction(self, tx: Transaction, fields: dict[str, Any]) -> Transaction:
        """Change non-status fields, conditional on the version we read."""
        sets = {**fields, "version": tx.version + 1, "updated_at": utcnow()}
        self.table.update(Update(
            schema.transaction_key(tx.transaction_id), set=sets,
            condition="#st = :cur AND #ver = :ver", values={":cur": tx.status, ":ver": tx.version},
            names={"#st": "status", "#ver": "version"},
        ))
        return Transaction.model_validate({**tx.model_dump(), **{k: v for k, v in sets.items() if k in Transaction.model_fields}})

    def request_failure(self, tx_id: str, reason: str) -> bool:
        """A worker found the campaign cannot be sent (e.g. its template is gone): record why on
        the READY_TO_SEND transaction for the controller, which moves it to FAILED with its
        callback. No version bump and no status change here: the sender may only UpdateItem,
        and a user's pause or cancel in the meantime still wins. False if it was not READY_TO_SEND."""
        try:
            self.table.update(Update(
                schema.transaction_key(tx_id), set={"failure_reason": reason},
                condition="#st = :r AND attribute_not_exists(failure_reason)",
                values={":r": TransactionStatus.READY_TO_SEND}, names={"#st": "status"},
            ))
            return True
        except StaleWrite:
            return False

    def deactivate(self, tx: Transaction) -> None:
        """Drop a settled transaction from the active index: the controller stops reading it."""
        self.table.update(Update(schema.transaction_key(tx.transaction_id), set={},
                                 remove=("active_pk", "active_sk"),
                                 condition="#st = :cur", values={":cur": tx.status}, names={"#st": "status"}))

    def reactivate(self, tx: Transaction) -> None:
        """Put a non-terminal transaction back in the active index (runbook nudge; idempotent)."""
        self.table.update(Update(schema.transaction_key(tx.transaction_id),
                                 set={"active_pk": "ACTIVE", "active_sk": f"{iso(tx.created_at)}#{tx.transaction_id}"}))

    # ---------------------------------------------------------------- batches
    def put_batch(self, batch: Batch) -> bool:
        return self.table.put_new({**schema.batch_key(batch.transaction_id, batch.batch_id), **batch.model_dump()})

    def batches(self, tx_id: str) -> list[Batch]:
        return [Batch.model_validate(_fields(i)) for i in self.table.query_all(f"TRANSACTION#{tx_id}", "BATCH#")]

    def batches_page(self, tx_id: str, limit: int, cursor: str | None) -> tuple[list[Batch], str | None]:
        page = self.table.query(f"TRANSACTION#{tx_id}", "BATCH#", limit=limit, cursor=cursor)
        return [Batch.model_validate(_fields(i)) for i in page.items], page.cursor

    def get_batch(self, batch_id: str, tx_id: str) -> Batch:
        item = self.table.get(schema.batch_key(tx_id, batch_id))
        if not item:
            raise NotFound(f"batch {batch_id} not found")
        return Batch.model_validate(_fields(item))

    def change_batch_status(self, batch: Batch, target: BatchStatus, fields: dict[str, Any] | None = None,
                            *, due_at: datetime | None = None, clear_due: bool = False) -> Batch:
        if target not in BATCH_TRANSITIONS[batch.status]:
            raise IllegalTransition(f"batch {batch.batch_id} cannot go from {batch.status} to {target}")
        sets = {"status": target, "version": batch.version + 1, **(fields or {})}
        if due_at is not None:
            sets.update(due_pk="BATCH", due_at=iso(due_at))
        self.table.update(Update(
            schema.batch_key(batch.transaction_id, batch.batch_id), set=sets,
            remove=("due_pk", "due_at") if clear_due else (),
            condition="#st = :cur AND #ver = :ver", values={":cur": batch.status, ":ver": batch.version},
            names={"#st": "status", "#ver": "version"},
        ))
        return Batch.model_validate({**batch.model_dump(), **{k: v for k, v in sets.items() if k in Batch.model_fields}})

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
        from datetime import timedelta

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
        cond = "#st = :cur AND #ver = :ver"
        values: dict[str, Any] = {":cur": batch.status, ":ver": batch.version}
        remove: tuple[str, ...] = ("due_pk", "due_at")  # a released batch leaves the due index once dispatched
        if batch.status == BatchStatus.QUEUED:
            cond += " AND (attribute_not_exists(lease_until) OR lease_until <= :now)"
            values[":now"] = iso(now)
            remove = ("lease_owner", "lease_until", "released_at", *remove)
        self.table.update(Update(
            schema.batch_key(batch.transaction_id, batch.batch_id), set=sets, add={"dispatches": 1},
            remove=remove, condition=cond, values=values, names={"#st": "status", "#ver": "version"},
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
            self.table.update(Update(
                schema.batch_key(batch.transaction_id, batch.batch_id), set={"redispatch_at": iso(when)},
                condition="#st = :q AND #ver = :ver AND attribute_not_exists(lease_owner)",
                values={":q": BatchStatus.QUEUED, ":ver": batch.version}, names={"#st": "status", "#ver": "version"},
            ))
        except StaleWrite:
            pass

    def snooze_due(self, batch: Batch, until: datetime) -> bool:
        """Move a SCHEDULED (or released, READY) batch's ``due`` entry to ``until`` (its campaign is
        paused, or cancelled and left to settle): due items that cannot act must not fill the page
        every pass reads first. Version unchanged."""
        try:
            self.table.update(Update(
                schema.batch_key(batch.transaction_id, batch.batch_id), set={"due_at": iso(until)},
                condition="#st IN (:s, :r) AND attribute_exists(due_pk)",
                values={":s": BatchStatus.SCHEDULED, ":r": BatchStatus.READY},
                names={"#st": "status"},
            ))
            return True
        except StaleWrite:
            return False

    def due(self, kind: str, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
        """Items of ``kind`` (BATCH, CALLBACK) due at or before ``now``, via the ``due`` index."""
        return self.due_page(kind, now, limit).items

    def due_page(self, kind: str, now: datetime, limit: int = 100, cursor: str | None = None) -> Page:
        """One page of due items and the cursor of the next (None at the end)."""
        return self.table.query(kind, index="due", pk_name="due_pk", sk_name="due_at",
                                sk_upto=iso(now), limit=limit, cursor=cursor)

    # ---------------------------------------------------------------- messages
    def put_messages(self, messages: Iterable[Message], expiration: int | None = None) -> int:
        """Idempotent bulk write (deterministic ids); returns the number of write calls.
        ``expiration`` (epoch seconds) is the TTL that ends the tenant's message retention."""
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        return self.table.batch_put(
            {**schema.message_key(m.batch_id, m.message_id), **m.model_dump(exclude_defaults=False), **ttl}
            for m in messages
        )

    def batch_partition(self, batch_id: str) -> tuple[list[Message], list[dict[str, Any]]]:
        """Every message of a batch and its send-log entries, in one paginated query."""
        messages, logs = [], []
        for item in self.table.query_all(f"BATCH#{batch_id}"):
            if item["SK"].startswith("MESSAGE#"):
                messages.append(_message(item))
            elif item["SK"].startswith("SENDLOG#"):
                logs.append(item)
        return messages, logs

    def message_statuses(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Just what counting needs (status, statuses seen), not the placeholder data."""
        yield from self.table.query_all(f"BATCH#{batch_id}", "MESSAGE#", projection="#status, seen, message_id")

    def get_message(self, batch_id: str, message_id: str, tenant_id: str | None = None) -> Message:
        item = self.table.get(schema.message_key(batch_id, message_id))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"message {message_id} not found")
        return _message(item)

    def messages_page(self, batch_id: str, status: str | None, limit: int, cursor: str | None) -> Page:
        kw: dict[str, Any] = {}
        if status:
            kw = {"filter_expr": "#status = :fs", "filter_values": {":fs": status}}
        return self.table.query(f"BATCH#{batch_id}", "MESSAGE#", limit=limit, cursor=cursor, **kw)

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
        """Write what events changed on a message, conditional on the state they were applied to
        (its status and the events path's write generation; never an erased message). None when
        written; else the item as it is now, to apply the events to again ({} when it is gone)."""
        cond = "attribute_exists(PK) AND attribute_not_exists(erased) AND "
        cond += "#st = :st" if before.status is not None else "attribute_not_exists(#st)"
        cond += " AND ev_gen = :g" if before.gen else " AND attribute_not_exists(ev_gen)"
        values: dict[str, Any] = {":st": before.status} if before.status is not None else {}
        if before.gen:
            values[":g"] = before.gen
        try:
            self.table.update(Update(schema.message_key(batch_id, message_id), set=after.changed(before),
                                     condition=cond, values=values, names={"#st": "status"}),
                              return_old_on_fail=True, returns="NONE")
            return None
        except StaleWrite as exc:
            return getattr(exc, "current", None) or {}

    def add_counts(self, tx_id: str, delta: dict[str, int], now: datetime) -> None:
        """Add to a campaign's live counts (one write for many messages; never bumps ``version``,
        so it cannot make a status write lose).

        A delta with sent mail also stamps ``first_sent_at`` (first writer wins) and ``last_sent_at``
        (last writer wins) with ``now``. Both are approximate: ``now`` is when the writer recorded the
        counts (a chunk's flush, or a late in-doubt resolution, possibly long after the SES call),
        and ``last_sent_at`` is set unconditionally, so a writer that recorded earlier but lands
        later moves it back (by that writer's lag or its host's clock skew). A monotonic stamp would
        need a condition that could refuse the count itself; the compliance report, their one
        reader, says they are approximate."""
        delta = {k: v for k, v in delta.items() if v}
        if not delta:
            return
        sets, first = {"counts_at": iso(now)}, None
        if delta.get("sent", 0) > 0:  # when the campaign's mail reached SES (the compliance report's period)
            sets["last_sent_at"], first = iso(now), {"first_sent_at": iso(now)}
        self.table.update(Update(
            schema.transaction_key(tx_id), set=sets, set_if_absent=first,
            add={**{f"n_{k}": v for k, v in delta.items()}, "count_gen": 1},
            condition="attribute_exists(PK)"), returns="NONE")

    def start_recount(self, tx: Transaction, truth: dict[str, int], now: datetime) -> None:
        """First half of the final recount: remember the truth and the counts generation it saw."""
        self.table.update(Update(
            schema.transaction_key(tx.transaction_id),
            set={"recount": {"gen": tx.count_gen, "at": iso(now), "truth": truth}},
            condition="attribute_not_exists(count_gen) OR count_gen = :g", values={":g": tx.count_gen}))

    def finish_recount(self, tx: Transaction, *, apply: bool) -> None:
        """Second half: write the recounted truth if no count was added since it was taken
        (``apply``), and mark the campaign recounted; or drop a stale recount to take it again."""
        rc = tx.recount or {}
        if apply:
            self.table.update(Update(
                schema.transaction_key(tx.transaction_id),
                set={**{f"n_{k}": int(v) for k, v in (rc.get("truth") or {}).items()}, "recounted": True},
                remove=("recount",),
                condition="attribute_not_exists(count_gen) OR count_gen = :g", values={":g": int(rc.get("gen", 0))}))
        else:
            self.table.update(Update(schema.transaction_key(tx.transaction_id), set={}, remove=("recount",)))

    def note_final_check(self, tx_id: str, check: dict[str, Any]) -> None:
        """Remember when a SENT campaign was last recounted for completion (no version bump)."""
        self.table.update(Update(schema.transaction_key(tx_id),
                                 set={"final_check": {**check, "at": iso(check["at"])}},
                                 condition="attribute_exists(PK)"))

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

    # ---------------------------------------------------------------- send log
    def send_log_intent(self, batch_id: str, chunk: int, attempt: int, message_ids: list[str], worker: str, *,
                        region: str, now: datetime, send_by: datetime, expiration: int | None = None) -> bool:
        """Write-ahead record before the SES calls of one chunk. False if it already exists.

        ``region`` names the event pipeline that will carry the chunk's Send events and
        ``send_by`` bounds its last SES call; an in-doubt resolution needs both. ``expiration``
        (epoch seconds): the tenant's message retention, as on the messages it names (its
        outcomes may quote an SES error text that holds the address).
        """
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        return self.table.put_new({
            **schema.send_log_key(batch_id, chunk, attempt), "state": "INTENT", "chunk": chunk,
            "attempt": attempt, "message_ids": message_ids, "worker": worker, "region": region,
            "created_at": iso(now), "send_by": iso(send_by), **ttl,
        })

    def extend_send_by(self, batch_id: str, chunk: int, attempt: int, send_by: datetime) -> None:
        """Push an INTENT's send-by time out (before its first SES call: its slots start late)."""
        self.table.update(Update(
            schema.send_log_key(batch_id, chunk, attempt), set={"send_by": iso(send_by)},
            condition="#st = :i", values={":i": "INTENT"}, names={"#st": "state"},
        ))

    def send_log_done(self, batch_id: str, chunk: int, attempt: int, results: dict[str, dict[str, str]],
                      in_doubt_at: datetime | None = None) -> None:
        """Close a chunk's INTENT with each message's outcome. ``in_doubt_at`` (with IN_DOUBT
        outcomes) bounds when SES may have accepted the message whose call did not complete."""
        self.table.update(Update(
            schema.send_log_key(batch_id, chunk, attempt),
            set={"state": "DONE", "results": results, "done_at": iso(utcnow()),
                 "in_doubt_at": iso(in_doubt_at) if in_doubt_at else None},
            condition="#st = :i", values={":i": "INTENT"}, names={"#st": "state"},
        ))

    def advance_send_evidence(self, region: str, newest: datetime, now: datetime) -> None:
        """Move the region's Send-evidence mark forward (never back: concurrent recorders race)."""
        try:
            self.table.update(Update(
                schema.send_evidence_key(region), set={"newest_send": iso(newest), "recorded_at": iso(now)},
                condition="attribute_not_exists(newest_send) OR newest_send < :n", values={":n": iso(newest)},
            ))
        except StaleWrite:
            pass

    def send_evidence(self, region: str) -> tuple[datetime, datetime] | None:
        """(newest Send event recorded, when) for a region's event pipeline; None if it never recorded one."""
        item = self.table.get(schema.send_evidence_key(region))
        if not item:
            return None
        return parse_iso(item["newest_send"]), parse_iso(item["recorded_at"])

    # ---------------------------------------------------------------- rejections
    def put_rejections(self, tx_id: str, rejections: Iterable[Rejection], expiration: int | None = None) -> int:
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        return self.table.batch_put({**schema.rejection_key(tx_id, r.line), **r.model_dump(), **ttl}
                                    for r in rejections)

    def set_ingest_watermark(self, tx_id: str, line: int, expiration: int | None = None) -> None:
        """Every row up to ``line`` is decided and its rejection written (ingest, before a batch)."""
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        self.table.put({**schema.ingest_watermark_key(tx_id), "line": line, **ttl})

    def ingest_watermark(self, tx_id: str) -> int:
        item = self.table.get(schema.ingest_watermark_key(tx_id))
        return int(item["line"]) if item else 0

    def rejections_page(self, tx_id: str, limit: int, cursor: str | None) -> tuple[list[Rejection], str | None]:
        page = self.table.query(f"TRANSACTION#{tx_id}", "REJECTION#", limit=limit, cursor=cursor)
        return [Rejection.model_validate(_fields(i)) for i in page.items], page.cursor

    # ---------------------------------------------------------------- callbacks
    def callbacks(self, tx_id: str) -> list[CallbackRecord]:
        return [CallbackRecord.model_validate(_fields(i)) for i in self.table.query_all(f"TRANSACTION#{tx_id}", "CALLBACK#")]

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
            sets.update(due_pk=MESSAGE_EVENTS_DUE if events else "CALLBACK", due_at=iso(cb.next_attempt_at))
        else:
            remove = ("due_pk", "due_at")
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
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        return self.table.put_new({**schema.message_events_key(cb.transaction_id, cb.ref or ""), **cb.model_dump(),
                                   "due_pk": MESSAGE_EVENTS_DUE, "due_at": iso(cb.next_attempt_at or utcnow()), **ttl})

    def message_events(self, tx_id: str, ref: str) -> CallbackRecord | None:
        item = self.table.get(schema.message_events_key(tx_id, ref))
        return CallbackRecord.model_validate(_fields(item)) if item else None

    def message_event_batches(self, tx_id: str, limit: int, cursor: str | None) -> tuple[list[CallbackRecord], str | None]:
        page = self.table.query(f"TRANSACTION#{tx_id}", "MSGEVENTS#", limit=limit, cursor=cursor)
        return [CallbackRecord.model_validate(_fields(i)) for i in page.items], page.cursor

    # ---------------------------------------------------------------- templates
    def put_template_version(self, tv: TemplateVersion) -> None:
        head = schema.template_head_key(tv.template_id)
        self.table.transact(
            [Update(head, set={"tenant_id": tv.tenant_id, "latest_version": tv.version, "name": tv.name,
                               "template_id": tv.template_id,
                               "tenant_pk": f"TENANT#{tv.tenant_id}#TEMPLATES", "tenant_sk": tv.template_id},
                    condition="attribute_not_exists(PK) OR (tenant_id = :t AND latest_version = :prev)",
                    values={":t": tv.tenant_id, ":prev": tv.version - 1})],
            [({**schema.template_key(tv.template_id, tv.version), **tv.model_dump()}, "attribute_not_exists(PK)")],
        )

    def template_head(self, template_id: str, tenant_id: str) -> dict[str, Any]:
        item = self.table.get(schema.template_head_key(template_id))
        if not item or item.get("tenant_id") != tenant_id:
            raise NotFound(f"template {template_id} not found")
        return _fields(item)

    def get_template_version(self, template_id: str, version: int, tenant_id: str | None = None) -> TemplateVersion:
        item = self.table.get(schema.template_key(template_id, version))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"template {template_id} version {version} not found")
        return TemplateVersion.model_validate(_fields(item))

    def template_versions(self, template_id: str) -> list[TemplateVersion]:
        return [TemplateVersion.model_validate(_fields(i))
                for i in self.table.query_all(f"TEMPLATE#{template_id}", "VERSION#")]

    def set_template_version_status(self, tv: TemplateVersion, status: str, fields: dict[str, Any]) -> TemplateVersion:
        self.table.update(Update(
            schema.template_key(tv.template_id, tv.version), set={"status": status, **fields},
            condition="#st = :cur", values={":cur": tv.status}, names={"#st": "status"},
        ))
        if status == "ACTIVE":
            try:  # the newest confirmed version becomes the default for new campaigns
                self.table.update(Update(
                    schema.template_head_key(tv.template_id), set={"active_version": tv.version},
                    condition="attribute_not_exists(active_version) OR active_version < :v",
                    values={":v": tv.version}))
            except StaleWrite:
                pass  # a newer version is already active
        return tv.model_copy(update={"status": status, **{k: v for k, v in fields.items() if k in TemplateVersion.model_fields}})

    # ---------------------------------------------------------------- uploads
    def put_upload(self, up: Upload) -> None:
        self.table.put_new({**schema.upload_key(up.upload_id), **up.model_dump()})

    def get_upload(self, upload_id: str, tenant_id: str) -> Upload:
        item = self.table.get(schema.upload_key(upload_id))
        if not item or item.get("tenant_id") != tenant_id:
            raise NotFound(f"upload {upload_id} not found")
        return Upload.model_validate(_fields(item))

    # ---------------------------------------------------------------- attachments
    def put_attachment(self, att: Attachment) -> None:
        self.table.put_new({**schema.attachment_key(att.attachment_id), **att.model_dump()})

    def get_attachment(self, attachment_id: str, tenant_id: str | None = None) -> Attachment:
        item = self.table.get(schema.attachment_key(attachment_id))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"attachment {attachment_id} not found")
        return Attachment.model_validate(_fields(item))

    def set_attachment_status(self, att: Attachment, status: str, fields: dict[str, Any]) -> Attachment:
        """Conditional on the status read: a confirm racing another one cannot undo it."""
        self.table.update(Update(
            schema.attachment_key(att.attachment_id), set={"status": status, **fields},
            condition="#st = :cur", values={":cur": att.status}, names={"#st": "status"},
        ))
        return att.model_copy(update={"status": status, **{k: v for k, v in fields.items() if k in Attachment.model_fields}})

    # ---------------------------------------------------------------- suppressions
    def suppress(self, tenant_id: str, email: str, reason: str, source: str | None = None,
                 requested_at: datetime | None = None) -> bool:
        """Suppress an address (idempotent). An address erased for this tenant is suppressed by its
        keyed hash already and is never written out again (a late bounce, an old unsubscribe link).
        One transaction: the plain item is written only while the hash item does not exist, so an
        erasure that writes the hash meanwhile cannot be undone by this write. ``requested_at``:
        when the request that asked for it arrived (an unsubscribe), kept beside ``created_at``."""
        item = {**schema.suppression_key(tenant_id, email), "tenant_id": tenant_id, "email": email,
                "reason": reason, "source": source, "created_at": iso(utcnow()),
                **({"requested_at": iso(requested_at)} if requested_at else {})}
        if self.address_hasher is None:
            return self.table.put_new(item)
        from core.adapters.dynamodb import serialize

        hashed = schema.suppression_hash_key(tenant_id, self.address_hasher(tenant_id, email))
        for attempt in range(5):
            try:
                self.table.client.transact_write_items(TransactItems=[
                    {"ConditionCheck": {"TableName": self.table.name, "Key": serialize(hashed),
                                        "ConditionExpression": "attribute_not_exists(PK)"}},
                    {"Put": {"TableName": self.table.name, "Item": serialize(item),
                             "ConditionExpression": "attribute_not_exists(PK)"}}])
                return True
            except self.table.client.exceptions.TransactionCanceledException as exc:
                codes = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
                if "ConditionalCheckFailed" in codes:
                    return False  # erased (hash exists) or already suppressed
                if attempt == 4:
                    raise TemporaryError("suppression write kept conflicting; retry", delay=0.2) from None
                time.sleep(0.05 * (attempt + 1))  # TransactionConflict: another write to these items
        return False

    def unsuppress(self, tenant_id: str, email: str) -> bool:
        return self.table.delete(schema.suppression_key(tenant_id, email), "attribute_exists(PK)")

    def get_suppression(self, tenant_id: str, email: str) -> dict[str, Any] | None:
        item = self.table.get(schema.suppression_key(tenant_id, email))
        return _fields(item) if item else None

    def suppressions_page(self, tenant_id: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(f"SUPPRESSION#{tenant_id}", "EMAIL#", limit=limit, cursor=cursor)

    def suppressed_emails(self, tenant_id: str) -> Iterator[str]:
        for item in self.table.query_all(f"SUPPRESSION#{tenant_id}", "EMAIL#", projection="email"):
            yield item["email"]

    def suppression_hashes(self, tenant_id: str) -> Iterator[str]:
        """The keyed hashes erased addresses are suppressed by (ingest refuses their rows)."""
        for item in self.table.query_all(f"SUPPRESSION#{tenant_id}", "HASH#", projection="address_hash"):
            yield item["address_hash"]

    def compliance_identity(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's postal address and sender name (CAN-SPAM footer), or None if not set."""
        item = self.table.get(schema.compliance_key(tenant_id), consistent=False)
        return _fields(item) if item else None

    def retention_overrides(self, tenant_id: str) -> dict[str, int]:
        """The tenant's own retention days per kind (core.services.privacy adds the defaults)."""
        item = self.table.get(schema.retention_key(tenant_id), consistent=False) or {}
        return {k: int(v) for k, v in (item.get("days") or {}).items()}

    def hash_suppressed(self, tenant_id: str, email: str) -> bool:
        """Whether the address is suppressed by its keyed hash (an erased person)."""
        if self.address_hasher is None:
            return False
        return self.table.get(schema.suppression_hash_key(tenant_id, self.address_hasher(tenant_id, email)),
                              consistent=False) is not None

    def are_suppressed(self, tenant_id: str, emails: list[str]) -> set[str]:
        """Batch lookup used by the sender just before sending a chunk: by address, and by the
        keyed hash an erased address is kept as."""
        found: set[str] = set()
        keys = [schema.suppression_key(tenant_id, e) for e in dict.fromkeys(emails)]
        by_hash: dict[str, str] = {}
        if self.address_hasher is not None:
            by_hash = {self.address_hasher(tenant_id, e): e for e in dict.fromkeys(emails)}
            keys += [schema.suppression_hash_key(tenant_id, h) for h in by_hash]
        from core.adapters.dynamodb import serialize

        delay = 0.05
        for i in range(0, len(keys), 100):
            pending: dict[str, Any] = {self.table.name: {
                "Keys": [serialize(k) for k in keys[i:i + 100]], "ProjectionExpression": "email, address_hash"}}
            while pending:
                resp = self.table.client.batch_get_item(RequestItems=pending)
                for raw in resp.get("Responses", {}).get(self.table.name, []):
                    if "email" in raw:
                        found.add(raw["email"]["S"])
                    elif raw.get("address_hash", {}).get("S") in by_hash:
                        found.add(by_hash[raw["address_hash"]["S"]])
                pending = resp.get("UnprocessedKeys") or {}
                if pending:  # throttled: back off before asking for the rest (AWS's advice)
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        return found

    # ---------------------------------------------------------------- tenants and keys
    def put_api_key(self, key_hash: str, key: ApiKey) -> None:
        self.table.put({**schema.api_key_key(key_hash), **key.model_dump(),
                        "tenant_pk": f"TENANT#{key.tenant_id}#KEYS", "tenant_sk": key.key_id})

    def api_key(self, key_hash: str) -> ApiKey | None:
        item = self.table.get(schema.api_key_key(key_hash), consistent=False)
        return ApiKey.model_validate(_fields(item)) if item else None

    def api_keys(self, tenant_id: str) -> list[tuple[str, ApiKey]]:
        return [(i["PK"].split("#", 1)[1], ApiKey.model_validate(_fields(i)))
                for i in self.table.query_all(f"TENANT#{tenant_id}#KEYS", index="tenant",
                                              pk_name="tenant_pk", sk_name="tenant_sk")]

    def revoke_api_key(self, key_hash: str) -> None:
        self.table.update(Update(schema.api_key_key(key_hash), set={"revoked": True},
                                 condition="attribute_exists(PK)"))

    def put_tenant(self, tenant_id: str, fields: dict[str, Any]) -> None:
        self.table.put({**schema.tenant_key(tenant_id), "tenant_id": tenant_id, **fields})

    def set_tenant_senders(self, tenant_id: str, senders: list[str]) -> None:
        """The From addresses (or ``@domain`` entries) this tenant may send as."""
        self.table.update(Update(schema.tenant_key(tenant_id), set={"senders": sorted(set(senders))},
                                 condition="attribute_exists(PK)"))

    def get_tenant(self, tenant_id: str) -> dict[str, Any] | None:
        item = self.table.get(schema.tenant_key(tenant_id), consistent=False)
        return _fields(item) if item else None

    # ---------------------------------------------------------------- platform switches
    # One item holds two kinds of switch. The operator's (``paused``, ``paused_tenants``: the
    # runbooks) and the automatic holds the sender trips on SES account/configuration errors
    # (``auto_paused``, ``auto_paused_tenants``). Only a successful probe lifts an automatic hold,
    # and it never touches the operator's switch.
    def sending_paused(self, tenant_id: str) -> str | None:
        """Why sending is paused for this tenant (platform-wide or tenant kill switch), or None."""
        holds = self.sending_holds(tenant_id)
        if holds["operator"]:
            return holds["operator"]
        if holds["automatic"]:
            return f"{'platform' if 'platform' in holds['automatic'] else 'tenant'} (automatic): {holds['reason']}"
        return None

    def sending_holds(self, tenant_id: str) -> dict[str, Any]:
        """``operator``: why an operator switch holds this tenant (or None); ``automatic``: the
        automatic holds that apply (``platform``, ``tenant``) and their ``reason``."""
        item = self.table.get(schema.SENDING_SWITCH_KEY, consistent=False) or {}
        operator = None
        if item.get("paused"):
            operator = f"platform: {item.get('reason', 'paused')}"
        elif tenant_id in (item.get("paused_tenants") or set()):
            operator = f"tenant: {item.get('reason', 'paused')}"
        automatic = []
        if item.get("auto_paused"):
            automatic.append("platform")
        if tenant_id in (item.get("auto_paused_tenants") or set()):
            automatic.append("tenant")
        return {"operator": operator, "automatic": automatic, "reason": item.get("auto_reason")}

    def set_sending_switch(self, *, paused: bool | None = None, tenant_id: str | None = None,
                           tenant_paused: bool | None = None, reason: str = "",
                           source: str = "operator") -> dict[str, Any]:
        """Set the platform-wide and/or a tenant's kill switch. ``source="automatic"`` sets the
        sender's automatic hold instead, which lives apart from the operator's switch."""
        auto = source == "automatic"
        flag, tenants, why = ("auto_paused", "auto_paused_tenants", "auto_reason") if auto else (
            "paused", "paused_tenants", "reason")
        add = delete = None
        sets: dict[str, Any] = {"updated_at": iso(utcnow()), why: reason or None}
        if auto:
            sets = {"auto_updated_at": iso(utcnow()), why: reason or None}
        if paused is not None:
            sets[flag] = paused
        if tenant_id is not None:
            if tenant_paused:
                add = {tenants: {tenant_id}}
            else:
                delete = tenant_id
        self.table.update(Update(schema.SENDING_SWITCH_KEY, set=sets, add=add))
        if delete is not None:
            self.table.client.update_item(
                TableName=self.table.name, Key={"PK": {"S": schema.SENDING_SWITCH_KEY["PK"]},
                                                "SK": {"S": schema.SENDING_SWITCH_KEY["SK"]}},
                UpdateExpression="DELETE #t :t", ExpressionAttributeNames={"#t": tenants},
                ExpressionAttributeValues={":t": {"SS": [delete]}})
        return _fields(self.table.get(schema.SENDING_SWITCH_KEY) or {})

    def lift_automatic_hold(self, tenant_id: str, scopes: Iterable[str]) -> None:
        """A probe send succeeded: lift the automatic holds in ``scopes`` (never the operator's)."""
        scopes = set(scopes)
        if "platform" in scopes:
            self.table.update(Update(schema.SENDING_SWITCH_KEY, set={"auto_paused": False,
                                                                     "auto_updated_at": iso(utcnow())}))
        if "tenant" in scopes:
            self.set_sending_switch(tenant_id=tenant_id, tenant_paused=False, source="automatic")

    def claim_sending_probe(self, scope: str, now: datetime, every_seconds: float) -> bool:
        """Half-open breaker: at most one probe send per ``scope`` every ``every_seconds``."""
        from datetime import timedelta

        try:
            self.table.update(Update(
                {"PK": schema.SENDING_SWITCH_KEY["PK"], "SK": f"SENDING_PROBE#{scope}"},
                set={"next_probe_at": iso(now + timedelta(seconds=every_seconds))},
                condition="attribute_not_exists(next_probe_at) OR next_probe_at <= :now", values={":now": iso(now)},
            ))
            return True
        except StaleWrite:
            return False

    def delay_sending_probe(self, scope: str, until: datetime) -> None:
        """No probe for ``scope`` before ``until`` (a hold was just tripped)."""
        self.table.update(Update({"PK": schema.SENDING_SWITCH_KEY["PK"], "SK": f"SENDING_PROBE#{scope}"},
                                 set={"next_probe_at": iso(until)}))

    def get_flag(self, key: dict[str, str]) -> dict[str, Any] | None:
        return self.table.get(key)

