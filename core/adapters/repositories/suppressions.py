"""Suppressions: the addresses a tenant never mails again, and the keyed hashes of erased people."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from core import schema
from core.adapters.dynamodb import DynamoTable, Page, serialize
from core.adapters.repositories._base import TableRepository, _fields
from core.domain.errors import TemporaryError
from core.domain.models import iso, utcnow


class DynamoSuppressions(TableRepository):
    """The suppression aggregate: ``SUPPRESSION#<tenant>``/``EMAIL#<address>`` and ``HASH#<hmac>`` (an erased address) items."""

    # core.domain.privacy.AddressHasher: erased people are suppressed by a keyed hash only (None: no pepper configured)
    address_hasher: Any

    def __init__(self, table: DynamoTable, address_hasher: Any = None):
        super().__init__(table)
        self.address_hasher = address_hasher

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
        return self.table.query(schema.suppression_partition(tenant_id), schema.SUPPRESSED_EMAIL_PREFIX,
                                limit=limit, cursor=cursor)

    def suppressed_emails(self, tenant_id: str) -> Iterator[str]:
        for item in self.table.query_all(schema.suppression_partition(tenant_id), schema.SUPPRESSED_EMAIL_PREFIX,
                                         projection="email"):
            yield item["email"]

    def suppression_hashes(self, tenant_id: str) -> Iterator[str]:
        """The keyed hashes erased addresses are suppressed by (ingest refuses their rows)."""
        for item in self.table.query_all(schema.suppression_partition(tenant_id), schema.SUPPRESSED_HASH_PREFIX,
                                         projection="address_hash"):
            yield item["address_hash"]

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
