"""``SuppressionRepository`` in memory: an address suppressed once (create-only), never written out
again once erased (suppressed by its keyed hash instead), and looked up in bulk by both."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from core import schema
from core.domain.models import Page, iso, utcnow
from tests.fakes.base import FakeRepository
from tests.fakes.table import fields_of, key_of, to_item


class FakeSuppressions(FakeRepository):
    def suppress(self, tenant_id: str, email: str, reason: str, source: str | None = None,
                 requested_at: datetime | None = None) -> bool:
        item = {**schema.suppression_key(tenant_id, email), "tenant_id": tenant_id, "email": email,
                "reason": reason, "source": source, "created_at": iso(utcnow()),
                **({"requested_at": iso(requested_at)} if requested_at else {})}
        if self.address_hasher is None:
            return self.table.put_new(item)
        hashed = schema.suppression_hash_key(tenant_id, self.address_hasher(tenant_id, email))
        with self.table.lock:  # one transaction: the hash must not exist and the address must be new
            if key_of(hashed) in self.table.items or key_of(item) in self.table.items:
                return False
            stored = to_item(item)
            self.table.items[key_of(stored)] = stored
            return True

    def unsuppress(self, tenant_id: str, email: str) -> bool:
        return self.table.delete(schema.suppression_key(tenant_id, email), lambda i: i is not None)

    def get_suppression(self, tenant_id: str, email: str) -> dict[str, Any] | None:
        item = self.table.get(schema.suppression_key(tenant_id, email))
        return fields_of(item) if item else None

    def suppressions_page(self, tenant_id: str, limit: int, cursor: str | None) -> Page:
        return self.table.query(schema.suppression_partition(tenant_id), schema.SUPPRESSED_EMAIL_PREFIX, limit=limit,
                                cursor=cursor)

    def suppressed_emails(self, tenant_id: str) -> Iterator[str]:
        for item in self.table.query_all(schema.suppression_partition(tenant_id), schema.SUPPRESSED_EMAIL_PREFIX,
                                         projection=("email",)):
            yield item["email"]

    def suppression_hashes(self, tenant_id: str) -> Iterator[str]:
        for item in self.table.query_all(schema.suppression_partition(tenant_id), schema.SUPPRESSED_HASH_PREFIX,
                                         projection=("address_hash",)):
            yield item["address_hash"]

    def hash_suppressed(self, tenant_id: str, email: str) -> bool:
        if self.address_hasher is None:
            return False
        return self.table.get(schema.suppression_hash_key(tenant_id, self.address_hasher(tenant_id, email))) is not None

    def are_suppressed(self, tenant_id: str, emails: list[str]) -> set[str]:
        found: set[str] = set()
        keys = [schema.suppression_key(tenant_id, e) for e in dict.fromkeys(emails)]
        by_hash: dict[str, str] = {}
        if self.address_hasher is not None:
            by_hash = {self.address_hasher(tenant_id, e): e for e in dict.fromkeys(emails)}
            keys += [schema.suppression_hash_key(tenant_id, h) for h in by_hash]
        for item in self.table.batch_get(keys):
            if "email" in item:
                found.add(item["email"])
            elif item.get("address_hash") in by_hash:
                found.add(by_hash[item["address_hash"]])
        return found
