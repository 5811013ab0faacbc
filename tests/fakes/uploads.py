"""``UploadRepository`` in memory: uploads and attachments (create-only, tenant-scoped reads),
an attachment's status moved only from the status read."""

from __future__ import annotations

from typing import Any

from core import schema
from core.domain.errors import NotFound
from core.domain.models import Attachment, Upload
from tests.fakes.base import FakeRepository
from tests.fakes.table import FakeUpdate, fields_of


class FakeUploads(FakeRepository):
    def put_upload(self, up: Upload) -> None:
        self.table.put_new({**schema.upload_key(up.upload_id), **up.model_dump()})

    def get_upload(self, upload_id: str, tenant_id: str) -> Upload:
        item = self.table.get(schema.upload_key(upload_id))
        if not item or item.get("tenant_id") != tenant_id:
            raise NotFound(f"upload {upload_id} not found")
        return Upload.model_validate(fields_of(item))

    def put_attachment(self, att: Attachment) -> None:
        self.table.put_new({**schema.attachment_key(att.attachment_id), **att.model_dump()})

    def get_attachment(self, attachment_id: str, tenant_id: str | None = None) -> Attachment:
        item = self.table.get(schema.attachment_key(attachment_id))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"attachment {attachment_id} not found")
        return Attachment.model_validate(fields_of(item))

    def set_attachment_status(self, att: Attachment, status: str, fields: dict[str, Any]) -> Attachment:
        self.table.update(FakeUpdate(schema.attachment_key(att.attachment_id), set={"status": status, **fields},
                                     condition=lambda i: i is not None and i.get("status") == att.status))
        return att.model_copy(update={"status": status, **{k: v for k, v in fields.items()
                                                           if k in Attachment.model_fields}})
