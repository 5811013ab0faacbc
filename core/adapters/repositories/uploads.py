"""Uploads: recipient CSVs and attachment files, each uploaded through a presigned form."""

from __future__ import annotations

from typing import Any

from core import schema
from core.adapters.dynamodb import Update
from core.adapters.repositories._base import TableRepository, _fields
from core.domain.errors import NotFound
from core.domain.models import Attachment, Upload


class DynamoUploads(TableRepository):
    """Uploaded files: ``UPLOAD#<id>``/``METADATA`` (recipient CSVs) and ``ATTACHMENT#<id>``/``METADATA`` items."""

    def put_upload(self, up: Upload) -> None:
        self.table.put_new({**schema.upload_key(up.upload_id), **up.model_dump()})

    def get_upload(self, upload_id: str, tenant_id: str) -> Upload:
        item = self.table.get(schema.upload_key(upload_id))
        if not item or item.get("tenant_id") != tenant_id:
            raise NotFound(f"upload {upload_id} not found")
        return Upload.model_validate(_fields(item))

    # ---------------------------------------------------------------- attachments
    def put_attachment(self, att: Attachment) -> None:
        self.table.put_new({**schema.attachment_key(att.attachment_id), **att.model_dump()})

    def get_attachment(self, attachment_id: str, tenant_id: str | None = None) -> Attachment:
        item = self.table.get(schema.attachment_key(attachment_id))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"attachment {attachment_id} not found")
        return Attachment.model_validate(_fields(item))

    def set_attachment_status(self, att: Attachment, status: str, fields: dict[str, Any]) -> Attachment:
        """Conditional on the status read: a confirm racing another one cannot undo it."""
        self.table.update(Update(
            schema.attachment_key(att.attachment_id), set={"status": status, **fields},
            condition="#st = :cur", values={":cur": att.status}, names={"#st": "status"},
        ))
        return att.model_copy(update={"status": status, **{k: v for k, v in fields.items() if k in Attachment.model_fields}})
