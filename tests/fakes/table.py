"""The in-memory table the fake repositories share: items keyed like the DynamoDB table (PK, SK),
stored as the table returns them, behind one lock.

It keeps the DynamoDB semantics the repositories rely on, not its API: a write is conditional on
the item as it is (a Python predicate instead of a ConditionExpression string), a lost condition
raises ``StaleWrite`` (``Fenced`` when a fenced view lost it to a newer epoch), an update creates
a missing item unless its condition says otherwise, ``None`` in a SET removes the attribute, a
transaction is all or nothing, and a query pages by ``Limit`` *evaluated* items (a filter is
applied after the limit, and a full page always comes with a cursor, even when nothing follows:
what DynamoDB does; moto leaves the cursor out when no item follows in the partition).

What is stored is what DynamoDB would give back: datetimes as ``iso`` strings, enums as their
values, ``None`` dropped from maps, integral floats as ints, tuples as lists. Reads return copies.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from core import schema
from core.adapters.dynamodb import FENCING_COUNTER_KEY, CursorScope
from core.domain.errors import Fenced, InvalidInput, StaleWrite
from core.domain.models import Message, Page, Transaction, iso

Item = dict[str, Any]
Condition = Callable[[Item | None], bool]  # the item as it is now (None: absent) -> may the write go?

PUTS_PER_CALL = 25  # BatchWriteItem (and PartiQL BatchExecuteStatement) take 25 items a call

# attributes of an item that are not the entity's: keys, index entries, the fencing stamp, the TTL
STRIP = {*schema.MAIN_TABLE.string_attributes, "fence", schema.TTL_ATTRIBUTE}

# index name -> (partition attribute, sort attribute, projected non-key attributes or None for all)
INDEXES: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    ix.name: (ix.hash_key, ix.range_key, ix.include) for ix in schema.INDEXES
}


def normalize(value: Any) -> Any:
    """A value as DynamoDB stores and returns it (core.adapters.dynamodb's serialize + deserialize)."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return int(value) if value == int(value) else value
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    if isinstance(value, set | frozenset):
        if not value:
            raise ValueError("DynamoDB refuses an empty set")
        return {normalize(v) for v in value}
    return value


def to_item(values: dict[str, Any]) -> Item:
    """A whole item: top-level ``None`` attributes are not written."""
    return {k: normalize(v) for k, v in values.items() if v is not None}


def fields_of(item: Item) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in STRIP}


def message_of(item: Item) -> Message:
    """A message item: its fields, and its status times from the ts_<status> attributes."""
    fields = fields_of(item)
    fields["timestamps"] = {k[3:].upper(): v for k, v in item.items() if k.startswith("ts_")}
    return Message.model_validate(fields)


def transaction_of(item: Item) -> Transaction:
    """A transaction item: its fields, and its live counts from the n_<counter> attributes."""
    fields = fields_of(item)
    fields["counts"] = {k[2:]: int(v) for k, v in item.items() if k.startswith("n_")}
    return Transaction.model_validate(fields)


def key_of(item: dict[str, Any]) -> tuple[str, str]:
    return item[schema.PK], item[schema.SK]


def encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is not valid") from exc
    if not isinstance(key, dict):
        raise InvalidInput("cursor is not valid")
    return key


@dataclass
class FakeUpdate:
    """One update (core.adapters.dynamodb.Update with a predicate for its condition)."""

    key: dict[str, str]
    set: dict[str, Any] = field(default_factory=dict)
    condition: Condition | None = None
    remove: tuple[str, ...] = ()
    add: dict[str, Any] | None = None  # numbers are added, sets united (the attribute created if absent)
    delete: dict[str, Any] | None = None  # elements taken out of a set (gone when it empties)
    set_if_absent: dict[str, Any] | None = None  # first value wins


class FakeTable:
    """The shared state. ``fenced(epoch)`` is a view of the same items whose updates carry the
    epoch (``fence``) and lose to an item stamped by a newer one, like ``DynamoTable.fenced``."""

    def __init__(self, items: dict[tuple[str, str], Item] | None = None, lock: threading.Lock | None = None,
                 fence_epoch: int | None = None):
        self.items: dict[tuple[str, str], Item] = {} if items is None else items
        self.lock = lock or threading.Lock()
        self.fence_epoch = fence_epoch

    def fenced(self, epoch: int) -> FakeTable:
        return FakeTable(self.items, self.lock, epoch)

    def unfenced(self) -> FakeTable:
        return FakeTable(self.items, self.lock, None)

    # -- reads ------------------------------------------------------------------------------
    def get(self, key: dict[str, str], consistent: bool = True, attributes: tuple[str, ...] = ()) -> Item | None:
        with self.lock:
            item = self.items.get(key_of(key))
            if item is None:
                return None
            if attributes:
                return {a: copy.deepcopy(item[a]) for a in attributes if a in item}
            return copy.deepcopy(item)

    def batch_get(self, keys: list[dict[str, str]], consistent: bool = False) -> list[Item]:
        with self.lock:
            return [copy.deepcopy(self.items[key_of(k)]) for k in keys if key_of(k) in self.items]

    def query(self, pk_value: str, sk_prefix: str | None = None, *, index: str | None = None,
              sk_upto: str | None = None, limit: int | None = None, cursor: str | None = None,
              forward: bool = True, projection: Iterable[str] | None = None,
              item_filter: Callable[[Item], bool] | None = None) -> Page:
        """One page: at most ``limit`` items *evaluated* (``item_filter`` applies after the limit,
        like a FilterExpression); a cursor whenever the limit was reached."""
        pk_name, sk_name, include = (schema.PK, schema.SK, None) if index is None else INDEXES[index]
        start = decode_cursor(cursor)
        if start is not None and (not all(isinstance(v, str) for v in start.values()) or not CursorScope(
                pk_name, sk_name, pk_value, sk_prefix, sk_upto).admits(start)):
            # DynamoDB refuses such an ExclusiveStartKey (ValidationException); the store says so first
            raise InvalidInput("cursor is not valid")
        with self.lock:
            matching = [i for i in self.items.values() if i.get(pk_name) == pk_value and sk_name in i
                        and (sk_prefix is None or str(i[sk_name]).startswith(sk_prefix))
                        and (sk_upto is None or str(i[sk_name]) <= sk_upto)]
            order: Callable[[Item], tuple[str, ...]] = (
                (lambda i: (str(i[sk_name]), i[schema.PK], i[schema.SK])) if index else (lambda i: (i[schema.SK],)))
            matching.sort(key=order, reverse=not forward)
            if start is not None:
                mark = order(start)
                matching = [i for i in matching if (order(i) > mark if forward else order(i) < mark)]
            evaluated = matching[:limit] if limit else matching
            more = bool(limit) and len(evaluated) == limit
            out = [copy.deepcopy(i) for i in evaluated if item_filter is None or item_filter(i)]
        if include is not None:  # an INCLUDE projection: keys of table and index, and the listed attributes
            kept = {schema.PK, schema.SK, pk_name, sk_name, *include}
            out = [{k: v for k, v in i.items() if k in kept} for i in out]
        if projection is not None:
            names = set(projection)
            out = [{k: v for k, v in i.items() if k in names} for i in out]
        nxt = None
        if more:
            last = evaluated[-1]
            mark_key = {schema.PK: last[schema.PK], schema.SK: last[schema.SK]}
            if index:
                mark_key[sk_name] = last[sk_name]
                mark_key[pk_name] = last[pk_name]
            nxt = encode_cursor(mark_key)
        return Page(out, nxt)

    def query_all(self, pk_value: str, sk_prefix: str | None = None, **kw: Any) -> Iterator[Item]:
        cursor = None
        while True:
            page = self.query(pk_value, sk_prefix, cursor=cursor, **kw)
            yield from page.items
            if not page.cursor:
                return
            cursor = page.cursor

    # -- writes -----------------------------------------------------------------------------
    def put_new(self, item: dict[str, Any]) -> bool:
        """Create an item if its key is free; False when it exists (never fenced, like the real one)."""
        stored = to_item(item)
        with self.lock:
            if key_of(stored) in self.items:
                return False
            self.items[key_of(stored)] = stored
            return True

    def put(self, item: dict[str, Any]) -> None:
        stored = to_item(item)
        with self.lock:
            self.items[key_of(stored)] = stored

    def delete(self, key: dict[str, str], condition: Condition | None = None) -> bool:
        with self.lock:
            current = self.items.get(key_of(key))
            if condition is not None and not condition(current):
                return False
            self.items.pop(key_of(key), None)
            return True

    def batch_put(self, items: Iterable[dict[str, Any]]) -> int:
        """Bulk puts, 25 a call; returns the calls. Plain puts (overwrites) on an unfenced table;
        create-only after a check of the fencing counter on a fenced one (``_fenced_puts``)."""
        stored = [to_item(i) for i in items]
        with self.lock:
            for n in range(0, len(stored), PUTS_PER_CALL):
                chunk = stored[n:n + PUTS_PER_CALL]
                if self.fence_epoch is not None:
                    self._check_fence()
                    for item in chunk:
                        self.items.setdefault(key_of(item), item)
                else:
                    for item in chunk:
                        self.items[key_of(item)] = item
        return math.ceil(len(stored) / PUTS_PER_CALL)

    def update(self, u: FakeUpdate, *, return_old_on_fail: bool = False) -> Item:
        """Apply one update atomically; ``StaleWrite`` (with ``.current``: the item when asked
        for and present) when its condition fails, ``Fenced`` when a newer epoch stamped it."""
        with self.lock:
            current = self.items.get(key_of(u.key))
            if not self._allowed(u, current):
                err = StaleWrite("the item changed; re-read and retry")
                err.current = copy.deepcopy(current) if return_old_on_fail and current else None  # type: ignore[attr-defined]
                raise self._fenced_or(err, current) from None
            new = self._applied(u, current)
            self.items[key_of(u.key)] = new
            return copy.deepcopy(new)

    def transact(self, updates: list[FakeUpdate], puts: list[tuple[dict[str, Any], Condition | None]] | None = None,
                 checks: list[tuple[dict[str, str], Condition]] | None = None) -> None:
        """All or nothing: every condition holds, or nothing is written (``StaleWrite``)."""
        puts, checks = puts or [], checks or []
        with self.lock:
            ok = all(self._allowed(u, self.items.get(key_of(u.key))) for u in updates)
            ok = ok and all(cond is None or cond(self.items.get(key_of(to_item(item)))) for item, cond in puts)
            ok = ok and all(cond(self.items.get(key_of(key))) for key, cond in checks)
            if not ok:
                first = updates[0].key if updates else puts[0][0]
                raise self._fenced_or(StaleWrite("transaction lost a condition"), self.items.get(key_of(first)))
            for u in updates:
                self.items[key_of(u.key)] = self._applied(u, self.items.get(key_of(u.key)))
            for item, _ in puts:
                stored = to_item(item)
                self.items[key_of(stored)] = stored

    # -- helpers ----------------------------------------------------------------------------
    def _allowed(self, u: FakeUpdate, current: Item | None) -> bool:
        if u.condition is not None and not u.condition(copy.deepcopy(current) if current else None):
            return False
        if self.fence_epoch is not None and current is not None and int(current.get("fence", 0)) > self.fence_epoch:
            return False
        return True

    def _applied(self, u: FakeUpdate, current: Item | None) -> Item:
        new: Item = copy.deepcopy(current) if current is not None else dict(u.key)
        sets = dict(u.set)
        if self.fence_epoch is not None:
            sets["fence"] = self.fence_epoch
        for name, value in sets.items():
            if value is None:  # None clears (DynamoTable._update_params)
                new.pop(name, None)
            else:
                new[name] = normalize(value)
        for name, value in (u.set_if_absent or {}).items():
            new.setdefault(name, normalize(value))
        for name in u.remove:
            new.pop(name, None)
        for name, value in (u.add or {}).items():
            value = normalize(value)
            if isinstance(value, set):
                new[name] = set(new.get(name) or set()) | value
            else:
                new[name] = new.get(name, 0) + value
        for name, value in (u.delete or {}).items():
            left = set(new.get(name) or set()) - set(normalize(value))
            if left:
                new[name] = left
            else:
                new.pop(name, None)
        return new

    def _fenced_or(self, err: Exception, current: Item | None) -> Exception:
        if self.fence_epoch is not None and current and int(current.get("fence", 0)) > self.fence_epoch:
            return Fenced(f"fenced by epoch {current['fence']} (ours {self.fence_epoch})")
        return err

    def _check_fence(self) -> None:
        counter = self.items.get(key_of(FENCING_COUNTER_KEY)) or {}
        if self.fence_epoch is not None and int(counter.get("epoch", 0)) > self.fence_epoch:
            raise Fenced(f"fenced by epoch {counter['epoch']} (ours {self.fence_epoch})")


# ---- a DynamoDB condition expression, for the one port that takes one (a status change's guard) ----

_COMPARISON = re.compile(r"^\s*([#\w.]+)\s*(=|<>|<=|>=|<|>)\s*(:\w+)\s*$")
_FUNCTION = re.compile(r"^\s*(attribute_exists|attribute_not_exists)\s*\(\s*([#\w.]+)\s*\)\s*$")


def expression_condition(expression: str, values: dict[str, Any], names: dict[str, str] | None = None) -> Condition:
    """A predicate for a ConditionExpression made of comparisons and attribute_(not_)exists
    joined by AND (what a guard on the controller's lease looks like). Anything else raises
    NotImplementedError: the fake does not guess at a condition it cannot read."""
    names = names or {}
    checks = [_term(t, values, names) for t in re.split(r"\s+AND\s+", expression.strip(), flags=re.IGNORECASE)]
    return lambda item: all(check(item) for check in checks)


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "<>": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _term(term: str, values: dict[str, Any], names: dict[str, str]) -> Condition:
    fn = _FUNCTION.match(term)
    if fn:
        attr, wanted = names.get(fn.group(2), fn.group(2)), fn.group(1) == "attribute_exists"

        def exists(item: Item | None) -> bool:
            return (item is not None and attr in item) == wanted
        return exists
    cmp = _COMPARISON.match(term)
    if not cmp:
        raise NotImplementedError(f"condition not supported by the fake: {term}")
    name, compare, value = names.get(cmp.group(1), cmp.group(1)), _OPERATORS[cmp.group(2)], normalize(values[cmp.group(3)])

    def compared(item: Item | None) -> bool:
        return item is not None and name in item and compare(item[name], value)
    return compared
