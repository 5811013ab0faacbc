"""``TransactionRepository`` in memory, with DynamoStore's semantics: a status change is
conditional on the status and version read and writes its callback in the same transaction,
counts add up without bumping the version, a missing campaign is ``NotFound``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from core import schema
from core.domain.errors import NotFound, StaleWrite
from core.domain.models import CallbackRecord, Transaction, iso, utcnow
from core.domain.statuses import TransactionStatus
from tests.fakes.base import FakeRepository
from tests.fakes.table import Condition, FakeUpdate, Item, expression_condition, transaction_of


def _at(status: str, version: int) -> Condition:
    """``#st = :cur AND #ver = :ver``"""
    return lambda item: item is not None and item.get("status") == status and item.get("version") == version


def _count_gen_is(gen: int) -> Condition:
    """``attribute_not_exists(count_gen) OR count_gen = :g``"""
    return lambda item: item is None or "count_gen" not in item or item["count_gen"] == gen


def _exists(item: Item | None) -> bool:
    return item is not None


class FakeTransactions(FakeRepository):
    def create_transaction(self, tx: Transaction) -> Transaction:
        created = iso(tx.created_at)
        item = {**schema.transaction_key(tx.transaction_id), **tx.model_dump(),
                **schema.active_entry(created, tx.transaction_id),
                **schema.campaign_listing(tx.tenant_id, created, tx.transaction_id)}
        if not self.table.put_new(item):
            raise StaleWrite(f"transaction {tx.transaction_id} already exists")
        return tx

    def get_transaction(self, tx_id: str, tenant_id: str | None = None) -> Transaction:
        item = self.table.get(schema.transaction_key(tx_id))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"campaign {tx_id} not found")
        return transaction_of(item)

    def transaction_status(self, tx_id: str) -> TransactionStatus:
        item = self.table.get(schema.transaction_key(tx_id), attributes=("status",))
        if not item:
            raise NotFound(f"campaign {tx_id} not found")
        return TransactionStatus(item["status"])

    def list_transactions(self, tenant_id: str, limit: int, cursor: str | None) -> tuple[list[Transaction], str | None]:
        page = self.table.query(schema.tenant_campaigns(tenant_id), index=schema.TENANT_INDEX.name, limit=limit,
                                cursor=cursor, forward=False)
        return [transaction_of(i) for i in page.items], page.cursor

    def active_transactions(self) -> Iterator[Transaction]:
        for item in self.table.query_all(schema.ACTIVE_CAMPAIGNS, index=schema.ACTIVE_INDEX.name):
            yield transaction_of(item)

    def due_transactions(self, now: datetime) -> Iterator[Transaction]:
        upto = schema.active_due_upto(iso(now))
        for entry in self.table.query_all(schema.ACTIVE_CAMPAIGNS, index=schema.ACTIVE_INDEX.name, sk_upto=upto):
            item = self.table.get(schema.transaction_key(entry["transaction_id"]))
            if item and str(item.get(schema.ACTIVE_INDEX.range_key, "~")) <= upto:
                yield transaction_of(item)

    def look_again(self, tx: Transaction, at: datetime) -> None:
        self.table.update(FakeUpdate(
            schema.transaction_key(tx.transaction_id), set=schema.active_entry(iso(at), tx.transaction_id),
            condition=lambda item: (_at(tx.status, tx.version)(item) and item is not None
                                    and schema.ACTIVE_INDEX.hash_key in item and _count_gen_is(tx.count_gen)(item))))

    def _look_now(self, tx_id: str) -> None:
        try:
            self.table.update(FakeUpdate(schema.transaction_key(tx_id), set=schema.active_entry(schema.LOOK_NOW, tx_id),
                                         condition=lambda item: item is not None
                                         and schema.ACTIVE_INDEX.hash_key in item))
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
        now = utcnow()
        sets = {**tx.move_to(target, now), **(fields or {})}  # the model says whether it may (IllegalTransition)
        update = FakeUpdate(schema.transaction_key(tx.transaction_id),
                            set={**sets, **schema.active_entry(schema.LOOK_NOW, tx.transaction_id)},
                            condition=_at(tx.status, tx.version))
        puts: list[tuple[dict[str, Any], Condition | None]] = []
        if callback is not None:
            puts.append(({**schema.callback_key(tx.transaction_id, callback.seq), **callback.model_dump(),
                          **schema.due_entry(schema.DUE_CALLBACKS, iso(callback.next_attempt_at or now))},
                         lambda item: item is None))
        checks = [(guard[0], expression_condition(guard[1], guard[2]))] if guard else []
        if puts or checks:
            self.table.transact([update], puts, checks)
        else:
            self.table.update(update)
        return Transaction.model_validate({**tx.model_dump(), **{k: v for k, v in sets.items()
                                                                 if k in Transaction.model_fields}})

    def update_transaction(self, tx: Transaction, fields: dict[str, Any]) -> Transaction:
        sets = {**fields, "version": tx.version + 1, "updated_at": utcnow()}
        self.table.update(FakeUpdate(schema.transaction_key(tx.transaction_id), set=sets,
                                     condition=_at(tx.status, tx.version)))
        return Transaction.model_validate({**tx.model_dump(), **{k: v for k, v in sets.items()
                                                                 if k in Transaction.model_fields}})

    def request_failure(self, tx_id: str, reason: str) -> bool:
        try:
            self.table.update(FakeUpdate(
                schema.transaction_key(tx_id), set={"failure_reason": reason},
                condition=lambda item: (item is not None and item.get("status") == TransactionStatus.READY_TO_SEND
                                        and "failure_reason" not in item)))
            return True
        except StaleWrite:
            return False

    def deactivate(self, tx: Transaction) -> None:
        self.table.update(FakeUpdate(schema.transaction_key(tx.transaction_id), remove=schema.ACTIVE_INDEX.keys,
                                     condition=lambda item: item is not None and item.get("status") == tx.status))

    def reactivate(self, tx: Transaction) -> None:
        self.table.update(FakeUpdate(schema.transaction_key(tx.transaction_id),
                                     set=schema.active_entry(schema.LOOK_NOW, tx.transaction_id)))

    def add_counts(self, tx_id: str, delta: dict[str, int], now: datetime) -> None:
        delta = {k: v for k, v in delta.items() if v}
        if not delta:
            return
        sets: dict[str, Any] = {"counts_at": iso(now)}
        first = None
        if delta.get("sent", 0) > 0:
            sets["last_sent_at"], first = iso(now), {"first_sent_at": iso(now)}
        after = self.table.update(FakeUpdate(schema.transaction_key(tx_id), set=sets, set_if_absent=first,
                                             add={**{f"n_{k}": v for k, v in delta.items()}, "count_gen": 1},
                                             condition=_exists))
        if delta.get("final", 0) > 0 and transaction_of(after).all_final \
                and after.get("status") == TransactionStatus.SENT:
            self._look_now(tx_id)

    def start_recount(self, tx: Transaction, truth: dict[str, int], now: datetime) -> None:
        self.table.update(FakeUpdate(schema.transaction_key(tx.transaction_id),
                                     set={"recount": {"gen": tx.count_gen, "at": iso(now), "truth": truth}},
                                     condition=_count_gen_is(tx.count_gen)))

    def finish_recount(self, tx: Transaction, *, apply: bool) -> None:
        rc = tx.recount or {}
        if apply:
            self.table.update(FakeUpdate(
                schema.transaction_key(tx.transaction_id),
                set={**{f"n_{k}": int(v) for k, v in (rc.get("truth") or {}).items()}, "recounted": True},
                remove=("recount",), condition=_count_gen_is(int(rc.get("gen", 0)))))
        else:
            self.table.update(FakeUpdate(schema.transaction_key(tx.transaction_id), remove=("recount",)))

    def note_final_check(self, tx_id: str, check: dict[str, Any]) -> None:
        self.table.update(FakeUpdate(schema.transaction_key(tx_id), set={"final_check": {**check, "at": iso(check["at"])}},
                                     condition=_exists))
