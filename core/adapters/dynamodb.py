"""DynamoDB single-table store.

Every state change is a conditional write on the expected status and version; a lost
condition becomes ``StaleWrite``/``IllegalTransition``, never a silent overwrite. Reads take a
tenant id and answer ``NotFound`` for another tenant's item. When the store carries a fencing
epoch (the controller's), every conditional write also requires ``fence <= epoch`` and stamps
the epoch, so a deposed leader cannot overwrite what its successor wrote. The epoch is a
fencing token from one replicated counter (``FENCING_COUNTER_KEY``) that every leader election in
any region bumps, so tokens order leaderships across regions: after a failover the new region's
leader outranks every item the old region stamped. A fenced store's bulk puts are create-only
transactions that also check the counter (BatchWriteItem takes no condition).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from core import schema
from core.domain.errors import (
    Fenced,
    IllegalTransition,
    InvalidInput,
    NotFound,
    StaleWrite,
    TemporaryError,
)

_ser, _deser = TypeSerializer(), TypeDeserializer()

# The replicated fencing counter: its ``epoch`` is the token of the newest leader elected in any
# region (controller/lease.py bumps it with a conditional write on every election).
FENCING_COUNTER_KEY = {schema.PK: "PLATFORM", schema.SK: "EPOCH"}
# TransactWriteItems: at most 100 items and 4 MB; one item is the fencing check.
_FENCED_PUTS_PER_CALL = 99
_FENCED_BYTES_PER_CALL = 3 * 1024 * 1024


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        from core.domain.models import iso

        return iso(v)
    if isinstance(v, float):
        return Decimal(str(v))
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items() if x is not None}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if hasattr(v, "value") and isinstance(v.value, str):  # StrEnum
        return v.value
    return v


def _py(v: Any) -> Any:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: _py(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_py(x) for x in v]
    if isinstance(v, set):
        return {_py(x) for x in v}
    return v


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(_plain(v)) for k, v in item.items() if v is not None}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _py(_deser.deserialize(v)) for k, v in item.items()}


def encode_cursor(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(deserialize(key)).encode()).decode()


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        return serialize(json.loads(base64.urlsafe_b64decode(cursor.encode())))
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is not valid") from exc


def is_condition_failure(exc: ClientError) -> bool:
    """A lost condition, including a transaction cancelled only by failed conditions."""
    code = exc.response["Error"]["Code"]
    if code == "ConditionalCheckFailedException":
        return True
    if code != "TransactionCanceledException":
        return False
    codes = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
    codes = [c for c in codes if c and c != "None"]
    return not codes or all(c == "ConditionalCheckFailed" for c in codes)


# Cancellation reasons that are not a lost condition and go away on a retry.
CONDITION_OR_TEMPORARY = {"ConditionalCheckFailed", "TransactionConflict", "ThrottlingError",
                          "ProvisionedThroughputExceeded", "RequestLimitExceeded"}


@dataclass
class Page:
    items: list[dict[str, Any]]
    cursor: str | None


@dataclass
class Update:
    """One conditional update, usable alone or inside a transaction."""

    key: dict[str, str]
    set: dict[str, Any]
    condition: str | None = None
    values: dict[str, Any] | None = None
    remove: tuple[str, ...] = ()
    add: dict[str, Any] | None = None
    names: dict[str, str] | None = None
    append: dict[str, list[Any]] | None = None  # list attributes to extend (created if absent)
    set_if_absent: dict[str, Any] | None = None  # first value wins (e.g. the time a status was first seen)


class DynamoTable:
    """Thin typed wrapper over the low-level client: expressions, pagination, retries, fencing."""

    def __init__(self, client: Any, table_name: str, fence_epoch: int | None = None):
        self.client = client
        self.name = table_name
        self.fence_epoch = fence_epoch

    def fenced(self, epoch: int) -> DynamoTable:
        return DynamoTable(self.client, self.name, epoch)

    # -- reads -------------------------------------------------------------------------
    def get(self, key: dict[str, str], consistent: bool = True) -> dict[str, Any] | None:
        resp = self.client.get_item(TableName=self.name, Key=serialize(key), ConsistentRead=consistent)
        return deserialize(resp["Item"]) if "Item" in resp else None

    def query(
        self,
        pk_value: str,
        sk_prefix: str | None = None,
        *,
        index: str | None = None,
        pk_name: str = schema.PK,
        sk_name: str = schema.SK,
        sk_upto: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        forward: bool = True,
        projection: str | None = None,
        filter_expr: str | None = None,
        filter_values: dict[str, Any] | None = None,
    ) -> Page:
        names = {"#pk": pk_name}
        values: dict[str, Any] = {":pk": pk_value}
        cond = "#pk = :pk"
        if sk_prefix is not None:
            names["#sk"] = sk_name
            values[":skp"] = sk_prefix
            cond += " AND begins_with(#sk, :skp)"
        elif sk_upto is not None:
            names["#sk"] = sk_name
            values[":upto"] = sk_upto
            cond += " AND #sk <= :upto"
        kw: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": cond,
            "ScanIndexForward": forward,
        }
        if index:
            kw["IndexName"] = index
        else:
            kw["ConsistentRead"] = True
        if filter_expr:
            kw["FilterExpression"] = filter_expr
            values.update(filter_values or {})
            if "#status" in filter_expr:
                names["#status"] = "status"
        if projection:
            kw["ProjectionExpression"] = projection
            if "#status" in projection:
                names["#status"] = "status"
        kw["ExpressionAttributeNames"] = names
        kw["ExpressionAttributeValues"] = serialize(values)
        if limit:
            kw["Limit"] = limit
        start = decode_cursor(cursor)
        if start:
            kw["ExclusiveStartKey"] = start
        resp = self.client.query(**kw)
        return Page([deserialize(i) for i in resp.get("Items", [])], encode_cursor(resp.get("LastEvaluatedKey")))

    def query_all(self, pk_value: str, sk_prefix: str | None = None, **kw: Any) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.query(pk_value, sk_prefix, cursor=cursor, **kw)
            yield from page.items
            if not page.cursor:
                return
            cursor = page.cursor

    # -- writes ------------------------------------------------------------------------
    def _fence(self, cond: str | None, values: dict[str, Any], sets: dict[str, Any]) -> str | None:
        if self.fence_epoch is None:
            return cond
        values[":fence"] = self.fence_epoch
        sets["fence"] = self.fence_epoch
        fence = "(attribute_not_exists(fence) OR fence <= :fence)"
        return f"({cond}) AND {fence}" if cond else fence

    def _update_params(self, u: Update) -> dict[str, Any]:
        names = dict(u.names or {})
        values = dict(u.values or {})
        sets = {k: v for k, v in u.set.items() if v is not None}
        removes = tuple(dict.fromkeys([*u.remove, *(k for k, v in u.set.items() if v is None)]))  # None clears
        cond = self._fence(u.condition, values, sets)
        parts = []
        set_exprs = []
        for i, (k, v) in enumerate(sets.items()):
            names[f"#s{i}"] = k
            values[f":s{i}"] = v
            set_exprs.append(f"#s{i} = :s{i}")
        for i, (k, v) in enumerate((u.set_if_absent or {}).items()):
            names[f"#f{i}"] = k
            values[f":f{i}"] = v
            set_exprs.append(f"#f{i} = if_not_exists(#f{i}, :f{i})")
        for i, (k, v) in enumerate((u.append or {}).items()):
            names[f"#l{i}"] = k
            values[f":l{i}"] = v
            values[":emptylist"] = []
            set_exprs.append(f"#l{i} = list_append(if_not_exists(#l{i}, :emptylist), :l{i})")
        if set_exprs:
            parts.append("SET " + ", ".join(set_exprs))
        if removes:
            for i, k in enumerate(removes):
                names[f"#r{i}"] = k
            parts.append("REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes))))
        if u.add:
            adds = []
            for i, (k, v) in enumerate(u.add.items()):
                names[f"#a{i}"] = k
                values[f":a{i}"] = v
                adds.append(f"#a{i} :a{i}")
            parts.append("ADD " + ", ".join(adds))
        params: dict[str, Any] = {
            "TableName": self.name,
            "Key": serialize(u.key),
            "UpdateExpression": " ".join(parts),
        }
        if cond:
            params["ConditionExpression"] = cond
        used = " ".join([params["UpdateExpression"], cond or ""])
        names = {k: v for k, v in names.items() if k in used}
        if names:
            params["ExpressionAttributeNames"] = names
        if values:
            params["ExpressionAttributeValues"] = serialize(values)
        return params

    def update(self, u: Update, *, return_old_on_fail: bool = False, returns: str = "ALL_NEW") -> dict[str, Any]:
        """Apply a conditional update; raise ``StaleWrite`` (with ``.current``) when it loses.

        Returns the item after the update, or what ``returns`` asks for (``UPDATED_OLD``: the old
        values of the attributes the update changed)."""
        params = self._update_params(u)
        params["ReturnValues"] = returns
        if return_old_on_fail:
            params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            return deserialize(self.client.update_item(**params).get("Attributes") or {})
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                err = StaleWrite("the item changed; re-read and retry")
                item = exc.response.get("Item")
                err.current = deserialize(item) if item else None  # type: ignore[attr-defined]
                raise self._fenced_or(err, u.key) from None
            raise

    def _fenced_or(self, err: Exception, key: dict[str, str]) -> Exception:
        if self.fence_epoch is not None:
            item = self.get(key)
            if item and int(item.get("fence", 0)) > self.fence_epoch:
                return Fenced(f"fenced by epoch {item['fence']} (ours {self.fence_epoch})")
        return err

    def put_new(self, item: dict[str, Any]) -> bool:
        """Create an item if its key is free. Returns False (no error) when it already exists."""
        try:
            self.client.put_item(
                TableName=self.name,
                Item=serialize(item),
                ConditionExpression="attribute_not_exists(PK)",
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def put(self, item: dict[str, Any]) -> None:
        self.client.put_item(TableName=self.name, Item=serialize(item))

    def delete(self, key: dict[str, str], condition: str | None = None) -> bool:
        kw: dict[str, Any] = {"TableName": self.name, "Key": serialize(key)}
        if condition:
            kw["ConditionExpression"] = condition
        try:
            self.client.delete_item(**kw)
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def batch_put(self, items: Iterable[dict[str, Any]]) -> int:
        """Idempotent bulk puts, 25 per call, retrying unprocessed items with backoff.

        On a fenced store (the controller's) the puts are create-only and fenced instead (see
        ``_fenced_puts``): an item that already exists is kept as it is. Returns the write calls."""
        if self.fence_epoch is not None:
            return self._fenced_puts(items)
        calls = 0
        chunk: list[dict[str, Any]] = []
        for item in items:
            chunk.append({"PutRequest": {"Item": serialize(item)}})
            if len(chunk) == 25:
                calls += self._batch_write(chunk)
                chunk = []
        if chunk:
            calls += self._batch_write(chunk)
        return calls

    def _batch_write(self, requests: list[dict[str, Any]]) -> int:
        calls, delay = 0, 0.05
        pending = {self.name: requests}
        while pending:
            resp = self.client.batch_write_item(RequestItems=pending)
            calls += 1
            pending = resp.get("UnprocessedItems") or {}
            if pending:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        return calls

    def _fenced_puts(self, items: Iterable[dict[str, Any]]) -> int:
        """Bulk puts a deposed leader cannot land: BatchWriteItem takes no condition, so each chunk
        is a transaction of a check that no newer leader was elected anywhere (the fencing counter
        is at most our epoch) and up to 99 puts conditioned on ``attribute_not_exists(PK)``. Ids
        are deterministic, so an item that exists already is what an earlier attempt or our
        successor wrote (a message it may have sent since): it is left alone, never reset.
        Raises ``Fenced`` when the counter is newer than our epoch."""
        calls, size = 0, 0
        chunk: list[dict[str, Any]] = []
        for item in items:
            ser = serialize(item)
            n = len(json.dumps(ser, default=str))
            if chunk and (len(chunk) == _FENCED_PUTS_PER_CALL or size + n > _FENCED_BYTES_PER_CALL):
                calls += self._fenced_put_chunk(chunk)
                chunk, size = [], 0
            chunk.append(ser)
            size += n
        if chunk:
            calls += self._fenced_put_chunk(chunk)
        return calls

    def _fenced_put_chunk(self, chunk: list[dict[str, Any]]) -> int:
        check = {"ConditionCheck": {
            "TableName": self.name, "Key": serialize(FENCING_COUNTER_KEY),
            "ConditionExpression": "attribute_not_exists(epoch) OR epoch <= :fence",
            "ExpressionAttributeValues": serialize({":fence": self.fence_epoch})}}
        calls, delay, pending = 0, 0.05, chunk
        for _ in range(20):
            if not pending:
                return calls
            puts = [{"Put": {"TableName": self.name, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}
                    for item in pending]
            calls += 1
            try:
                self.client.transact_write_items(TransactItems=[check, *puts])
                return calls
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") or "None" for r in exc.response.get("CancellationReasons") or []]
                cancelled = exc
            if len(reasons) != len(puts) + 1:  # no reasons (an emulator): check, then put one by one
                return calls + self._fenced_puts_one_by_one(pending)
            if reasons[0] == "ConditionalCheckFailed":
                self._check_fence()
            if "ValidationError" in reasons:
                raise cancelled  # e.g. an item over 400 KB: the caller's to classify, never retried here
            others = [c for c in reasons if c not in ("None", "ConditionalCheckFailed")]
            if others and not all(c in CONDITION_OR_TEMPORARY for c in others):
                raise cancelled
            pending = [item for item, code in zip(pending, reasons[1:], strict=True) if code != "ConditionalCheckFailed"]
            if others:  # a conflicting transaction or throttling: the rest again after a pause
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise TemporaryError("fenced bulk put kept being cancelled; retry", delay=1.0)

    def _check_fence(self) -> None:
        """Raise ``Fenced`` when a leader newer than our epoch was elected in any region."""
        counter = self.get(FENCING_COUNTER_KEY) or {}
        if self.fence_epoch is not None and int(counter.get("epoch", 0)) > self.fence_epoch:
            raise Fenced(f"fenced by epoch {counter['epoch']} (ours {self.fence_epoch})")

    def _fenced_puts_one_by_one(self, items: list[dict[str, Any]]) -> int:
        self._check_fence()
        for item in items:
            try:
                self.client.put_item(TableName=self.name, Item=item, ConditionExpression="attribute_not_exists(PK)")
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
        return 1 + len(items)

    def transact(self, updates: list[Update], puts: list[tuple[dict[str, Any], str | None]] = (), checks: list[tuple[dict[str, str], str, dict[str, Any]]] = ()) -> None:  # type: ignore[assignment]
        """All-or-nothing: conditional updates + conditional puts + condition checks."""
        items: list[dict[str, Any]] = []
        for u in updates:
            p = self._update_params(u)
            p.pop("ReturnValues", None)
            items.append({"Update": p})
        for item, cond in puts:
            put: dict[str, Any] = {"TableName": self.name, "Item": serialize(item)}
            if cond:
                put["ConditionExpression"] = cond
            items.append({"Put": put})
        for key, cond, values in checks:
            items.append(
                {
                    "ConditionCheck": {
                        "TableName": self.name,
                        "Key": serialize(key),
                        "ConditionExpression": cond,
                        "ExpressionAttributeValues": serialize(values),
                    }
                }
            )
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "ConditionalCheckFailedException":
                raise self._fenced_or(StaleWrite("transaction lost a condition"),
                                      updates[0].key if updates else puts[0][0]) from None
            if code != "TransactionCanceledException":
                raise
            raise self._cancelled(exc, updates[0].key if updates else puts[0][0]) from None

    def _cancelled(self, exc: ClientError, key: dict[str, str]) -> Exception:
        """What a cancelled transaction means, from its ``CancellationReasons`` (one per item,
        ``None`` for items that were fine): only a lost condition is ``StaleWrite``; a conflict
        with another transaction or throttling is temporary; a validation error is our bug."""
        reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
        codes = [c for c in reasons if c and c != "None"]
        if "ValidationError" in codes:
            return exc  # a malformed request: a bug, never retried or mistaken for a lost race
        if codes and all(c in CONDITION_OR_TEMPORARY for c in codes):
            if "ConditionalCheckFailed" in codes:
                return self._fenced_or(StaleWrite(f"transaction lost a condition: {codes}"), key)
            return TemporaryError(f"transaction cancelled, retry: {codes}", delay=0.1)
        if not codes:  # no reasons given (an older SDK or an emulator): the cautious reading
            return self._fenced_or(StaleWrite("transaction cancelled without reasons"), key)
        return exc


def expect_status(expected: Iterable[str]) -> tuple[str, dict[str, Any], dict[str, str]]:
    exp = list(expected)
    placeholders = {f":e{i}": s for i, s in enumerate(exp)}
    cond = "#st IN (" + ", ".join(placeholders) + ")"
    return cond, placeholders, {"#st": "status"}


__all__ = ["DynamoTable", "Update", "Page", "expect_status", "NotFound", "IllegalTransition"]
