"""``TemplateRepository`` in memory: a version is created with its head in one transaction (the
next version number only, same tenant), and the newest ACTIVE version becomes the default."""

from __future__ import annotations

from typing import Any

from core import schema
from core.domain.errors import NotFound, StaleWrite
from core.domain.models import TemplateVersion
from tests.fakes.base import FakeRepository
from tests.fakes.table import FakeUpdate, fields_of


class FakeTemplates(FakeRepository):
    def put_template_version(self, tv: TemplateVersion) -> None:
        head = schema.template_head_key(tv.template_id)
        self.table.transact(
            [FakeUpdate(head, set={"tenant_id": tv.tenant_id, "latest_version": tv.version, "name": tv.name,
                                   "template_id": tv.template_id, **schema.template_listing(tv.tenant_id, tv.template_id)},
                        condition=lambda i: i is None or (i.get("tenant_id") == tv.tenant_id
                                                          and i.get("latest_version") == tv.version - 1))],
            [({**schema.template_key(tv.template_id, tv.version), **tv.model_dump()}, lambda i: i is None)],
        )

    def template_head(self, template_id: str, tenant_id: str) -> dict[str, Any]:
        item = self.table.get(schema.template_head_key(template_id))
        if not item or item.get("tenant_id") != tenant_id:
            raise NotFound(f"template {template_id} not found")
        return fields_of(item)

    def get_template_version(self, template_id: str, version: int, tenant_id: str | None = None) -> TemplateVersion:
        item = self.table.get(schema.template_key(template_id, version))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"template {template_id} version {version} not found")
        return TemplateVersion.model_validate(fields_of(item))

    def template_versions(self, template_id: str) -> list[TemplateVersion]:
        return [TemplateVersion.model_validate(fields_of(i))
                for i in self.table.query_all(schema.template_partition(template_id), schema.TEMPLATE_VERSION_PREFIX)]

    def set_template_version_status(self, tv: TemplateVersion, status: str, fields: dict[str, Any]) -> TemplateVersion:
        self.table.update(FakeUpdate(schema.template_key(tv.template_id, tv.version), set={"status": status, **fields},
                                     condition=lambda i: i is not None and i.get("status") == tv.status))
        if status == "ACTIVE":
            try:
                self.table.update(FakeUpdate(
                    schema.template_head_key(tv.template_id), set={"active_version": tv.version},
                    condition=lambda i: i is None or "active_version" not in i or i["active_version"] < tv.version))
            except StaleWrite:
                pass
        return tv.model_copy(update={"status": status, **{k: v for k, v in fields.items()
                                                          if k in TemplateVersion.model_fields}})
