"""What every aggregate's repository shares: items → entities, the version-conditional update,
the TTL attribute and index queries. Keys themselves come from ``core.schema``."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from core import schema
from core.adapters.dynamodb import DynamoTable, Update
from core.domain.models import Message, Transaction

# Attributes of an item that are not the entity's: its keys, its index entries, the fencing stamp, the TTL.
_STRIP = {*schema.MAIN_TABLE.string_attributes, "fence", schema.TTL_ATTRIBUTE}

M = TypeVar("M", bound=BaseModel)


class TableRepository:
    """One aggregate's repository over the shared table helper (``core.adapters.dynamodb``)."""

    table: DynamoTable

    def __init__(self, table: DynamoTable):
        self.table = table


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


def _written(entity: M, sets: dict[str, Any]) -> M:
    """``entity`` as a write of ``sets`` left it (attributes that are not its fields are ignored)."""
    fields = type(entity).model_fields
    return type(entity).model_validate({**entity.model_dump(), **{k: v for k, v in sets.items() if k in fields}})


def versioned_update(key: dict[str, str], status: str, version: int, *, set: dict[str, Any],
                     also: str | None = None, values: dict[str, Any] | None = None,
                     remove: tuple[str, ...] = (), add: dict[str, Any] | None = None) -> Update:
    """An update that applies only while the item is still at ``status`` and ``version`` (what was
    read), else ``StaleWrite``: how a transaction or batch changes status or versioned fields.
    ``also`` adds a condition (its placeholders in ``values``). Usable alone or in a transaction."""
    return Update(
        key, set=set, remove=remove, add=add,
        condition="#st = :cur AND #ver = :ver" + (f" AND {also}" if also else ""),
        values={":cur": status, ":ver": version, **(values or {})},
        names={"#st": "status", "#ver": "version"},
    )


def _expires(expiration: int | None) -> dict[str, int]:
    """The TTL attribute of an item that ends with the tenant's retention (epoch seconds), if any."""
    return {schema.TTL_ATTRIBUTE: expiration} if expiration else {}


def _on(index: schema.Index) -> dict[str, Any]:
    """Query arguments that read ``index`` (``DynamoTable.query(partition, **_on(index), ...)``)."""
    return {"index": index.name, "pk_name": index.hash_key, "sk_name": index.range_key}
