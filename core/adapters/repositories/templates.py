"""Templates: a head item per template (latest and active version) and one item per version."""

from __future__ import annotations

from typing import Any

from core import schema
from core.adapters.dynamodb import Update
from core.adapters.repositories._base import TableRepository, _fields
from core.domain.errors import NotFound, StaleWrite
from core.domain.models import TemplateVersion


class DynamoTemplates(TableRepository):
    """The template aggregate: ``TEMPLATE#<id>``/``METADATA`` (head, listed as ``TENANT#<t>#TEMPLATES``) and ``VERSION#<n>`` items."""

    def put_template_version(self, tv: TemplateVersion) -> None:
        head = schema.template_head_key(tv.template_id)
        self.table.transact(
            [Update(head, set={"tenant_id": tv.tenant_id, "latest_version": tv.version, "name": tv.name,
                               "template_id": tv.template_id,
                               **schema.template_listing(tv.tenant_id, tv.template_id)},
                    condition="attribute_not_exists(PK) OR (tenant_id = :t AND latest_version = :prev)",
                    values={":t": tv.tenant_id, ":prev": tv.version - 1})],
            [({**schema.template_key(tv.template_id, tv.version), **tv.model_dump()}, "attribute_not_exists(PK)")],
        )

    def template_head(self, template_id: str, tenant_id: str) -> dict[str, Any]:
        item = self.table.get(schema.template_head_key(template_id))
        if not item or item.get("tenant_id") != tenant_id:
            raise NotFound(f"template {template_id} not found")
        return _fields(item)

    def get_template_version(self, template_id: str, version: int, tenant_id: str | None = None) -> TemplateVersion:
        item = self.table.get(schema.template_key(template_id, version))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"template {template_id} version {version} not found")
        return TemplateVersion.model_validate(_fields(item))

    def template_versions(self, template_id: str) -> list[TemplateVersion]:
        return [TemplateVersion.model_validate(_fields(i))
                for i in self.table.query_all(schema.template_partition(template_id), schema.TEMPLATE_VERSION_PREFIX)]

    def set_template_version_status(self, tv: TemplateVersion, status: str, fields: dict[str, Any]) -> TemplateVersion:
        self.table.update(Update(
            schema.template_key(tv.template_id, tv.version), set={"status": status, **fields},
            condition="#st = :cur", values={":cur": tv.status}, names={"#st": "status"},
        ))
        if status == "ACTIVE":
            try:  # the newest confirmed version becomes the default for new campaigns
                self.table.update(Update(
                    schema.template_head_key(tv.template_id), set={"active_version": tv.version},
                    condition="attribute_not_exists(active_version) OR active_version < :v",
                    values={":v": tv.version}))
            except StaleWrite:
                pass  # a newer version is already active
        return tv.model_copy(update={"status": status, **{k: v for k, v in fields.items() if k in TemplateVersion.model_fields}})
