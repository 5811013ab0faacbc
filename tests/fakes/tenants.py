"""``TenantRepository`` in memory: tenants, their senders, API keys (found by hash, listed by
tenant), compliance identity and retention overrides."""

from __future__ import annotations

from typing import Any

from core import schema
from core.domain.models import ApiKey
from tests.fakes.base import FakeRepository
from tests.fakes.table import FakeUpdate, fields_of


class FakeTenants(FakeRepository):
    def compliance_identity(self, tenant_id: str) -> dict[str, Any] | None:
        item = self.table.get(schema.compliance_key(tenant_id), consistent=False)
        return fields_of(item) if item else None

    def retention_overrides(self, tenant_id: str) -> dict[str, int]:
        item = self.table.get(schema.retention_key(tenant_id), consistent=False) or {}
        return {k: int(v) for k, v in (item.get("days") or {}).items()}

    def put_api_key(self, key_hash: str, key: ApiKey) -> None:
        self.table.put({**schema.api_key_key(key_hash), **key.model_dump(),
                        **schema.api_key_listing(key.tenant_id, key.key_id)})

    def api_key(self, key_hash: str) -> ApiKey | None:
        item = self.table.get(schema.api_key_key(key_hash), consistent=False)
        return ApiKey.model_validate(fields_of(item)) if item else None

    def api_keys(self, tenant_id: str) -> list[tuple[str, ApiKey]]:
        return [(schema.api_key_hash(i), ApiKey.model_validate(fields_of(i)))
                for i in self.table.query_all(schema.tenant_api_keys(tenant_id), index=schema.TENANT_INDEX.name)]

    def revoke_api_key(self, key_hash: str) -> None:
        self.table.update(FakeUpdate(schema.api_key_key(key_hash), set={"revoked": True},
                                     condition=lambda i: i is not None))

    def put_tenant(self, tenant_id: str, fields: dict[str, Any]) -> None:
        self.table.put({**schema.tenant_key(tenant_id), "tenant_id": tenant_id, **fields})

    def set_tenant_senders(self, tenant_id: str, senders: list[str]) -> None:
        self.table.update(FakeUpdate(schema.tenant_key(tenant_id), set={"senders": sorted(set(senders))},
                                     condition=lambda i: i is not None))

    def get_tenant(self, tenant_id: str) -> dict[str, Any] | None:
        item = self.table.get(schema.tenant_key(tenant_id), consistent=False)
        return fields_of(item) if item else None
