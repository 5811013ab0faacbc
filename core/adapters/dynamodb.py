"""DynamoDB single-table store.

Every state change is a conditional write on the expected status and version; a lost
condition becomes ``StaleWrite``/``IllegalTransition``, never a silent overwrite. Reads take a
tenant id and answer ``NotFound`` for another tenant's item. When the store carries a fencing
epoch (the controller's), every conditional write also requires ``fence <= epoch`` and stamps
the epoch, so a deposed leader cannot overwrite what its successor wrote. The epoch is a
fencing token from one replicated counter (``FENCING_COUNTER_KEY``) that every leader election in
any region bumps, so tokens order leaderships across regions: after a failover the new region's
leader outranks every item the old region stamped. A fenced store's bulk puts are create-only
(PartiQL INSERTs, 25 to a BatchExecuteStatement call), a chunk at a time after a read of the
counter (BatchWriteItem takes no condition; ``DynamoTable._fenced_puts`` says why this fences them).
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
from core.domain.models import Page, iso

_ser, _deser = TypeSerializer(), TypeDeserializer()

# The replicated fencing counter: its ``epoch`` is the token of the newest leader elected in any
# region (controller/lease.py bumps it with a conditional write on every election).
FENCING_COUNTER_KEY = {schema.PK: "PLATFORM", schema.SK: "EPOCH"}
# A fenced bulk put checks the fencing counter once per this many create-only puts (see _fenced_puts).
FENCED_PUTS_PER_CHECK = 25
# PartiQL BatchExecuteStatement (AWS API reference): at most 25 statements a call, each statement's
# text at most 8,192 characters (the values travel apart, as Parameters). An INSERT or UPDATE
# that would be longer (very many attribute names) is written alone, conditionally.
STATEMENTS_PER_CALL = 25
MAX_STATEMENT_LENGTH = 8192
# BatchStatementError codes a retry may cure; any other code fails the bulk put (DuplicateItem is
# no error there: the item exists and is kept) or that one update.
RETRIED_STATEMENT_ERRORS = {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded",
                            "InternalServerError", "TransactionConflict"}
STATEMENT_ATTEMPTS = 8
RETRY_DELAY = 0.05  # seconds before the first retry of throttled statements, doubled each time (≤ 2 s)
# The API error a statement's error code stands for, so callers classify it as they classify a
# single write's (ingest: a ValidationException is permanent, anything else temporary).
_STATEMENT_ERROR_CODES = {
    "ValidationError": "ValidationException", "ResourceNotFound": "ResourceNotFoundException",
    "AccessDenied": "AccessDeniedException", "ConditionalCheckFailed": "ConditionalCheckFailedException",
    "ItemCollectionSizeLimitExceeded": "ItemCollectionSizeLimitExceededException",
    "ProvisionedThroughputExceeded": "ProvisionedThroughputExceededException",
    "ThrottlingError": "ThrottlingException", "TransactionConflict": "TransactionConflictException",
}


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
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


def decode_cursor(cursor: str | None, query: CursorScope | None = None) -> dict[str, Any] | None:
    """A client's cursor back to the key to start after. Anything but a key of the page's own
    query (``query``: its key attributes, partition and sort-key range) is refused with a 422:
    DynamoDB answers a foreign, short or out-of-range start key with a ValidationException,
    which would otherwise be a 500."""
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is not valid") from exc
    if not isinstance(key, dict) or not key or not all(isinstance(v, str) for v in key.values()) \
            or (query is not None and not query.admits(key)):
        raise InvalidInput("cursor is not valid")
    return serialize(key)


@dataclass(frozen=True)
class CursorScope:
    """What a start key of one query must be: exactly the table's and the index's key
    attributes, in the queried partition, with a sort key inside the query's range."""

    pk_name: str
    sk_name: str
    pk_value: str
    sk_prefix: str | None = None
    sk_upto: str | None = None

    def admits(self, key: dict[str, str]) -> bool:
        sk = key.get(self.sk_name)
        return (set(key) == {schema.PK, schema.SK, self.pk_name, self.sk_name}
                and key.get(self.pk_name) == self.pk_value and sk is not None
                and (self.sk_prefix is None or sk.startswith(self.sk_prefix))
                and (self.sk_upto is None or sk <= self.sk_upto))


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


@dataclass
class Guarded:
    """An update of an existing item whose condition is only equalities and absences: the shape
    ``DynamoTable.update_each`` sends as PartiQL, 25 to a call (a ``None`` value in ``set`` removes)."""

    key: dict[str, str]
    set: dict[str, Any]
    equals: dict[str, Any]
    missing: tuple[str, ...] = ()

    def as_update(self) -> Update:
        """The same write as one UpdateItem (the item must exist, as a PartiQL UPDATE requires)."""
        names = {f"#c{i}": k for i, k in enumerate([*self.equals, *self.missing])}
        conds = ["attribute_exists(PK)"]
        conds += [f"#c{i} = :c{i}" for i in range(len(self.equals))]
        conds += [f"attribute_not_exists(#c{i})" for i in range(len(self.equals), len(names))]
        return Update(self.key, set=dict(self.set), condition=" AND ".join(conds), names=names,
                      values={f":c{i}": v for i, v in enumerate(self.equals.values())})


class DynamoTable:
    """Thin typed wrapper over the low-level client: expressions, pagination, retries, fencing."""

    def __init__(self, client: Any, table_name: str, fence_epoch: int | None = None):
        self.client = client
        self.name = table_name
        self.fence_epoch = fence_epoch

    def fenced(self, epoch: int) -> DynamoTable:
        return DynamoTable(self.client, self.name, epoch)

    # -- reads -------------------------------------------------------------------------
    def get(self, key: dict[str, str], consistent: bool = True, attributes: tuple[str, ...] = ()
            ) -> dict[str, Any] | None:
        """The item (only ``attributes`` of it when given: a smaller answer; the read costs the same)."""
        kw: dict[str, Any] = {}
        if attributes:
            names = {f"#a{i}": a for i, a in enumerate(attributes)}
            kw = {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
        resp = self.client.get_item(TableName=self.name, Key=serialize(key), ConsistentRead=consistent, **kw)
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
        start = decode_cursor(cursor, CursorScope(pk_name, sk_name, pk_value, sk_prefix, sk_upto))
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

    def batch_get(self, keys: list[dict[str, str]], consistent: bool = False) -> list[dict[str, Any]]:
        """The items found for ``keys`` (any order; a key with no item is left out): BatchGetItem,
        100 keys a call, asking again for ``UnprocessedKeys`` after a growing pause."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(keys), 100):
            pending: dict[str, Any] = {self.name: {"Keys": [serialize(k) for k in keys[i:i + 100]],
                                                   "ConsistentRead": consistent}}
            delay = 0.05
            while pending:
                resp = self.client.batch_get_item(RequestItems=pending)
                out += [deserialize(item) for item in (resp.get("Responses") or {}).get(self.name, [])]
                pending = resp.get("UnprocessedKeys") or {}
                if pending:  # throttled: back off before asking for the rest (AWS's advice)
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        return out

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
            if exc.response["Error"]["Code"] == "TransactionConflictException":
                # the item is in a transaction in flight (a guarded status move): nothing was
                # written, and botocore does not retry this code; the caller may, shortly
                raise TemporaryError("the item is in another write's transaction; retry", delay=0.1) from exc
            raise

    def update_each(self, updates: list[Guarded]) -> list[dict[str, Any] | None | Exception]:
        """Apply independent conditional updates, 25 to a PartiQL ``BatchExecuteStatement`` call
        (one signed request instead of 25: the events Lambda's CPU is mostly per request). Each
        statement is billed and conditioned like its own UpdateItem. Returns, per update: None
        (written), the item as it is now when it lost its condition (``{}``: no such item), or the
        exception that says it was not written (``TemporaryError`` once DynamoDB still throttles it
        after ``STATEMENT_ATTEMPTS``; a ``ClientError`` for a statement it refuses).

        A fenced table (the controller's) updates one at a time instead: ``update`` fences each."""
        keys = {json.dumps([g.key.get(schema.PK), g.key.get(schema.SK)]) for g in updates}
        if len(keys) != len(updates):  # DynamoDB refuses a whole request that names an item twice
            raise ValueError("update_each takes one update per item")
        if self.fence_epoch is not None:
            return [self._update_one(g) for g in updates]
        out: list[dict[str, Any] | None | Exception] = [None] * len(updates)
        statements: list[tuple[int, dict[str, Any]]] = []
        for i, g in enumerate(updates):
            statement = self._update_statement(g)
            if statement is None:
                out[i] = self._update_one(g)
            else:
                statements.append((i, statement))
        for start in range(0, len(statements), STATEMENTS_PER_CALL):
            self._execute_updates(statements[start:start + STATEMENTS_PER_CALL], out)
        return out

    def _update_one(self, g: Guarded) -> dict[str, Any] | None | Exception:
        try:
            self.update(g.as_update(), return_old_on_fail=True, returns="NONE")
            return None
        except StaleWrite as exc:
            return getattr(exc, "current", None) or {}
        except (ClientError, TemporaryError) as exc:
            return exc

    def _update_statement(self, g: Guarded) -> dict[str, Any] | None:
        """``UPDATE "t" SET "a"=? … REMOVE "b" … WHERE "PK"=? AND "SK"=? AND "c"=? AND "d" IS MISSING``
        (names quoted, values as parameters), or None when the text would exceed ``MAX_STATEMENT_LENGTH``."""
        def q(name: str) -> str:
            return '"' + name.replace('"', '""') + '"'

        sets = {k: v for k, v in g.set.items() if v is not None}
        removes = [k for k, v in g.set.items() if v is None]
        where = {schema.PK: g.key[schema.PK], schema.SK: g.key[schema.SK], **g.equals}
        text = " ".join([f"UPDATE {q(self.name)}", *(f"SET {q(k)}=?" for k in sets), *(f"REMOVE {q(k)}" for k in removes),
                         "WHERE " + " AND ".join([*(f"{q(k)}=?" for k in where), *(f"{q(k)} IS MISSING" for k in g.missing)])])
        if len(text.encode()) > MAX_STATEMENT_LENGTH:
            return None
        return {"Statement": text, "Parameters": [_ser.serialize(_plain(v)) for v in [*sets.values(), *where.values()]],
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}

    def _execute_updates(self, batch: list[tuple[int, dict[str, Any]]], out: list[dict[str, Any] | None | Exception]) -> None:
        """Run one call's UPDATE statements; those DynamoDB throttled or found in a transaction
        go again after a growing pause, the rest settle now."""
        delay, pending = RETRY_DELAY, batch
        for attempt in range(STATEMENT_ATTEMPTS):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            try:
                responses = self.client.batch_execute_statement(Statements=[s for _, s in pending])["Responses"]
            except Exception as exc:  # noqa: BLE001 - refused, or no answer after botocore's retries: this
                for i, _ in pending:  # request's updates are not known written; other requests' stand
                    out[i] = exc
                return
            retry = []
            for (i, statement), response in zip(pending, responses, strict=True):
                error = response.get("Error")
                if not error:
                    out[i] = None
                elif error.get("Code") == "ConditionalCheckFailed":
                    out[i] = deserialize(error["Item"]) if error.get("Item") else {}
                elif error.get("Code") in RETRIED_STATEMENT_ERRORS:
                    retry.append((i, statement))
                    out[i] = TemporaryError(f"DynamoDB answered {error.get('Code')}; retry", delay=0.1)
                else:
                    out[i] = _statement_error(error)
            if not retry:
                return
            pending = retry

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
        """Bulk puts a deposed leader cannot turn into overwrites, at one write unit per item.

        Each chunk of ``FENCED_PUTS_PER_CHECK`` items first checks the fencing counter (a strongly
        consistent read: ``Fenced`` when a newer leader was elected in any region), then creates
        the items with PartiQL ``INSERT`` statements, 25 to a ``BatchExecuteStatement`` call (an
        INSERT is create-only: on an existing key DynamoDB answers that statement ``DuplicateItem``
        and writes nothing; each statement is billed as one write). Why that is enough (a
        transaction of the check and the puts costs two write units per item):

        * A put only ever creates: an item that exists is never replaced, whoever wrote it. So a
          message the successor already wrote, moved, sent or erased stays as it is, even if a
          deposed leader's put lands after the successor's election (C9).
        * What a late put can create is an item nobody has written yet, and ids are deterministic
          (transaction, batch number, row number in the batch): it is the item the successor's own
          ingest writes for that id, which then finds it and keeps it; and as the successor moves
          a batch on only after writing all its messages, a late put cannot add one to a batch
          already dispatched. This rests on what a resumed ingest already rests on after a crash:
          the same file gives the same rows for the same ids.
        * The window is one chunk: a leader deposed before a check is ``Fenced`` there and stops;
          its later conditional writes (the checkpoint) are fenced as ever. Statements DynamoDB
          throttled are retried with backoff, each round after a new check.

        Raises a ``ClientError`` for a statement DynamoDB refuses (``ValidationException`` for a
        ``ValidationError``, e.g. an item over 400 KB: permanent) or still throttles after
        ``STATEMENT_ATTEMPTS`` (temporary); the chunk's other items may be written by then, which a
        resumed ingest keeps. Returns the write calls (the checks are reads)."""
        calls, chunk = 0, []
        for item in items:
            chunk.append(serialize(item))
            if len(chunk) == FENCED_PUTS_PER_CHECK:
                calls += self._fenced_put_chunk(chunk)
                chunk = []
        if chunk:
            calls += self._fenced_put_chunk(chunk)
        return calls

    def _fenced_put_chunk(self, chunk: list[dict[str, Any]]) -> int:
        self._check_fence()
        calls, statements, seen = 0, [], set[str]()
        for item in chunk:
            key = json.dumps([item.get(schema.PK), item.get(schema.SK)], sort_keys=True)
            if key in seen:  # create-only: the first of two puts of one key is the one kept
                continue
            seen.add(key)
            statement = self._insert(item)
            if statement is None:
                self._put_if_absent(item)
                calls += 1
            else:
                statements.append(statement)
        for i in range(0, len(statements), STATEMENTS_PER_CALL):
            calls += self._execute_inserts(statements[i:i + STATEMENTS_PER_CALL])
        return calls

    def _insert(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """The PartiQL INSERT of a serialized item (names quoted, values as parameters), or None
        when its text would exceed ``MAX_STATEMENT_LENGTH``."""
        names = list(item)
        table = self.name.replace('"', '""')
        fields = ", ".join("'" + name.replace("'", "''") + "': ?" for name in names)
        text = f'INSERT INTO "{table}" VALUE {{{fields}}}'
        if len(text.encode()) > MAX_STATEMENT_LENGTH:  # characters; bytes are never fewer
            return None
        return {"Statement": text, "Parameters": [item[name] for name in names]}

    def _execute_inserts(self, statements: list[dict[str, Any]]) -> int:
        """Run INSERT statements in one call, then again those DynamoDB throttled. Returns the calls."""
        calls, delay, pending = 0, RETRY_DELAY, statements
        for attempt in range(STATEMENT_ATTEMPTS):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._check_fence()
            responses = self.client.batch_execute_statement(Statements=pending)["Responses"]
            calls += 1
            retry, last = [], {}
            for statement, response in zip(pending, responses, strict=True):
                error = response.get("Error")
                if not error or error.get("Code") == "DuplicateItem":
                    continue
                if error.get("Code") not in RETRIED_STATEMENT_ERRORS:
                    raise _statement_error(error)
                retry.append(statement)
                last = error
            if not retry:
                return calls
            pending = retry
        raise _statement_error(last)

    def _put_if_absent(self, item: dict[str, Any]) -> None:
        try:
            self.client.put_item(TableName=self.name, Item=item, ConditionExpression="attribute_not_exists(PK)")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def _check_fence(self) -> None:
        """Raise ``Fenced`` when a leader newer than our epoch was elected in any region."""
        counter = self.get(FENCING_COUNTER_KEY) or {}
        if self.fence_epoch is not None and int(counter.get("epoch", 0)) > self.fence_epoch:
            raise Fenced(f"fenced by epoch {counter['epoch']} (ours {self.fence_epoch})")

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


def _statement_error(error: dict[str, Any]) -> ClientError:
    """A PartiQL batch statement's error as the ``ClientError`` a single write would raise."""
    code = str(error.get("Code"))
    return ClientError({"Error": {"Code": _STATEMENT_ERROR_CODES.get(code, code), "Message": error.get("Message", "")},
                        "BatchStatementError": error}, "BatchExecuteStatement")


def expect_status(expected: Iterable[str]) -> tuple[str, dict[str, Any], dict[str, str]]:
    exp = list(expected)
    placeholders = {f":e{i}": s for i, s in enumerate(exp)}
    cond = "#st IN (" + ", ".join(placeholders) + ")"
    return cond, placeholders, {"#st": "status"}


__all__ = ["DynamoTable", "Update", "Guarded", "Page", "expect_status", "NotFound", "IllegalTransition"]
