"""Transactions (campaigns): their status moves with the callback outbox entry, and their live counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from core import schema
from core.adapters.dynamodb import Update
from core.adapters.repositories._base import (
    TableRepository,
    _on,
    _transaction,
    _written,
    versioned_update,
)
from core.domain.errors import NotFound, StaleWrite
from core.domain.models import CallbackRecord, Transaction, iso, utcnow
from core.domain.statuses import TransactionStatus


class DynamoTransactions(TableRepository):
    """The transaction aggregate: ``TRANSACTION#<id>``/``METADATA`` items, in the ``active`` and ``tenant`` (``TENANT#<t>#CAMPAIGNS``) indexes."""

    def create_transaction(self, tx: Transaction) -> Transaction:
        created = iso(tx.created_at)
        item = {
            **schema.transaction_key(tx.transaction_id),
            **tx.model_dump(),
            **schema.active_entry(created, tx.transaction_id),
            **schema.campaign_listing(tx.tenant_id, created, tx.transaction_id),
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
        page = self.table.query(schema.tenant_campaigns(tenant_id), **_on(schema.TENANT_INDEX),
                                limit=limit, cursor=cursor, forward=False)
        return [_transaction(i) for i in page.items], page.cursor

    def active_transactions(self) -> Iterator[Transaction]:
        """Every campaign still in the sparse ``active`` index, as the index has them: eventually
        consistent (DynamoDB's indexes are), for counting and rates, never for acting."""
        for item in self.table.query_all(schema.ACTIVE_CAMPAIGNS, **_on(schema.ACTIVE_INDEX)):
            yield _transaction(item)

    def due_transactions(self, now: datetime) -> Iterator[Transaction]:
        """The active campaigns due for the controller at ``now``, each read again from the table
        (strongly consistent): the index may still show a campaign another write pushed on."""
        upto = schema.active_due_upto(iso(now))
        for entry in self.table.query_all(schema.ACTIVE_CAMPAIGNS, **_on(schema.ACTIVE_INDEX), sk_upto=upto):
            item = self.table.get(schema.transaction_key(entry["transaction_id"]))
            if item and str(item.get(schema.ACTIVE_INDEX.range_key, "~")) <= upto:
                yield _transaction(item)

    def look_again(self, tx: Transaction, at: datetime) -> None:
        """Nothing is due for ``tx`` before ``at``: move it there in the ``active`` index, so passes
        until then do not read it. Conditional on what was read (status, version, counts): a
        change meanwhile keeps it due (``StaleWrite``), and the next pass decides again."""
        self.table.update(Update(
            schema.transaction_key(tx.transaction_id), set=schema.active_entry(iso(at), tx.transaction_id),
            condition="#st = :st AND #ver = :ver AND attribute_exists(active_pk) "
                      "AND (attribute_not_exists(count_gen) OR count_gen = :g)",
            values={":st": tx.status, ":ver": tx.version, ":g": tx.count_gen},
            names={"#st": "status", "#ver": "version"}), returns="NONE")

    def _look_now(self, tx_id: str) -> None:
        """Make a still active campaign due at once (it is left out of the index if it was settled)."""
        try:
            self.table.update(Update(schema.transaction_key(tx_id), set=schema.active_entry(schema.LOOK_NOW, tx_id),
                                     condition="attribute_exists(active_pk)"), returns="NONE")
        except StaleWrite:
            return

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

        The move itself is the model's (``Transaction.move_to``: allowed or ``IllegalTransition``,
        and what it writes). Writes the callback outbox entry in the same DynamoDB transaction.
        ``guard`` adds a condition on another item (the controller's lease) to the same transaction.
        """
        now = utcnow()
        sets = {**tx.move_to(target, now), **(fields or {})}
        # a campaign that changed status is due for the controller now (settled ones never move again)
        update = versioned_update(schema.transaction_key(tx.transaction_id), tx.status, tx.version,
                                  set={**sets, **schema.active_entry(schema.LOOK_NOW, tx.transaction_id)})
        puts: list[tuple[dict[str, Any], str | None]] = []
        if callback is not None:
            puts.append(({**schema.callback_key(tx.transaction_id, callback.seq), **callback.model_dump(),
                          **schema.due_entry(schema.DUE_CALLBACKS, iso(callback.next_attempt_at or now))},
                         "attribute_not_exists(PK)"))
        checks = [guard] if guard else []
        if puts or checks:
            self.table.transact([update], puts, checks)
        else:
            self.table.update(update)
        return _written(tx, sets)

    def update_transaction(self, tx: Transaction, fields: dict[str, Any]) -> Transaction:
        """Change non-status fields, conditional on the version we read."""
        sets = {**fields, "version": tx.version + 1, "updated_at": utcnow()}
        self.table.update(versioned_update(schema.transaction_key(tx.transaction_id), tx.status, tx.version, set=sets))
        return _written(tx, sets)

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
                                 remove=schema.ACTIVE_INDEX.keys,
                                 condition="#st = :cur", values={":cur": tx.status}, names={"#st": "status"}))

    def reactivate(self, tx: Transaction) -> None:
        """Put a non-terminal transaction back in the active index, due now (runbook nudge; idempotent)."""
        self.table.update(Update(schema.transaction_key(tx.transaction_id),
                                 set=schema.active_entry(schema.LOOK_NOW, tx.transaction_id)))

    def add_counts(self, tx_id: str, delta: dict[str, int], now: datetime) -> None:
        """Add to a campaign's live counts (one write for many messages; never bumps ``version``,
        so it cannot make a status write lose).

        A delta with sent mail also stamps ``first_sent_at`` (first writer wins) and ``last_sent_at``
        (last writer wins) with ``now``. Both are approximate: ``now`` is when the writer recorded the
        counts (a chunk's flush, or a late in-doubt resolution, possibly long after the SES call),
        and ``last_sent_at`` is set unconditionally, so a writer that recorded earlier but lands
        later moves it back (by that writer's lag or its host's clock skew). A monotonic stamp would
        need a condition that could refuse the count itself; the compliance report, their one
        reader, says they are approximate.

        An addition that makes every message of a SENT campaign final makes it due for the
        controller at once (it completes it): the controller does not read waiting campaigns."""
        delta = {k: v for k, v in delta.items() if v}
        if not delta:
            return
        sets, first = {"counts_at": iso(now)}, None
        if delta.get("sent", 0) > 0:  # when the campaign's mail reached SES (the compliance report's period)
            sets["last_sent_at"], first = iso(now), {"first_sent_at": iso(now)}
        after = self.table.update(Update(
            schema.transaction_key(tx_id), set=sets, set_if_absent=first,
            add={**{f"n_{k}": v for k, v in delta.items()}, "count_gen": 1},
            condition="attribute_exists(PK)"), returns="ALL_NEW" if delta.get("final", 0) > 0 else "NONE")
        if after and _transaction(after).all_final and after.get("status") == TransactionStatus.SENT:
            self._look_now(tx_id)

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
