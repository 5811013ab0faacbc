"""Tenants: their settings (allowed senders, CAN-SPAM identity, retention) and their API keys."""

from __future__ import annotations

from typing import Any

from core import schema
from core.adapters.dynamodb import Update
from core.adapters.repositories._base import TableRepository, _fields, _on
from core.domain.models import ApiKey


class DynamoTenants(TableRepository):
    """The tenant aggregate: ``TENANT#<tenant>``/``METADATA``, ``COMPLIANCE``, ``RETENTION`` items and ``APIKEY#<hash>`` keys (listed as ``TENANT#<t>#KEYS``)."""

    def compliance_identity(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's postal address and sender name (CAN-SPAM footer), or None if not set."""
        item = self.table.get(schema.compliance_key(tenant_id), consistent=False)
        return _fields(item) if item else None

    def retention_overrides(self, tenant_id: str) -> dict[str, int]:
        """The tenant's own retention days per kind (core.services.privacy adds the defaults)."""
        item = self.table.get(schema.retention_key(tenant_id), consistent=False) or {}
        return {k: int(v) for k, v in (item.get("days") or {}).items()}

    def put_api_key(self, key_hash: str, key: ApiKey) -> None:
        self.table.put({**schema.api_key_key(key_hash), **key.model_dump(),
                        **schema.api_key_listing(key.tenant_id, key.key_id)})

    def api_key(self, key_hash: str) -> ApiKey | None:
        item = self.table.get(schema.api_key_key(key_hash), consistent=False)
        return ApiKey.model_validate(_fields(item)) if item else None

    def api_keys(self, tenant_id: str) -> list[tuple[str, ApiKey]]:
        return [(schema.api_key_hash(i), ApiKey.model_validate(_fields(i)))
                for i in self.table.query_all(schema.tenant_api_keys(tenant_id), **_on(schema.TENANT_INDEX))]

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
