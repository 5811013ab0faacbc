"""Attachments: presigned upload, content checked on confirm, attached to every mail of a campaign
or to one recipient's (a CSV column naming an attachment id).

Files live in the templates bucket (``<tenant>/attachments/<id>``): like templates they are
content the sender reads while a campaign sends, and they are kept as long as templates are.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from config.settings import Settings
from core.domain.attachments import AttachedFile, check_content, check_declared
from core.domain.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from core.domain.models import Attachment, TemplateStatus, iso, new_id
from core.services.ports import BlobStore, CampaignStore, UploadRepository

ACTIVE, INVALID = TemplateStatus.ACTIVE, TemplateStatus.INVALID
MAX_CAMPAIGN_ATTACHMENTS = 10


def create_attachment(store: CampaignStore, blobs: BlobStore, settings: Settings, tenant_id: str, filename: str,
                      content_type: str) -> dict[str, Any]:
    """Register a file (name and type checked now) and presign its upload: the form fixes the
    Content-Type and refuses bodies over ``max_attachment_bytes``."""
    check_declared(filename, content_type)
    att_id = new_id("att_")
    att = Attachment(attachment_id=att_id, tenant_id=tenant_id, filename=filename.strip(), content_type=content_type,
                     s3_key=f"{tenant_id}/attachments/{att_id}")
    store.put_attachment(att)
    upload = blobs.presign_post(settings.bucket("templates"), att.s3_key, settings.max_attachment_bytes,
                                settings.presign_expiry_seconds, content_type)
    return {**attachment_view(att), "upload": upload}


def confirm_attachment(store: CampaignStore, blobs: BlobStore, settings: Settings, tenant_id: str, attachment_id: str) -> dict[str, Any]:
    """Check the uploaded bytes (size, the declared type's magic bytes, no macros or executables
    inside Office files) and make the attachment usable. Idempotent for an ACTIVE attachment;
    a refused one turns INVALID with the reason (register the file again)."""
    att = store.get_attachment(attachment_id, tenant_id)
    if att.status == ACTIVE:
        return attachment_view(att)
    if att.status == INVALID:
        raise Conflict(f"attachment {attachment_id} was refused: {att.error}; register the file again")
    bucket = settings.bucket("templates")
    try:
        size = blobs.size(bucket, att.s3_key)
    except NotFound:
        raise Conflict("attachment not uploaded yet: upload it to the presigned form first") from None
    if size > settings.max_attachment_bytes:  # S3 enforces the form's policy; moto and other writers may not
        store.set_attachment_status(att, INVALID, {"error": "too large", "size_bytes": size})
        raise PayloadTooLarge(f"attachment is {size} bytes; the limit is {settings.max_attachment_bytes}")
    data = blobs.read_bytes(bucket, att.s3_key, settings.max_attachment_bytes)
    try:
        check_content(att.content_type, data)
    except InvalidInput as exc:
        store.set_attachment_status(att, INVALID, {"error": exc.message[:300], "size_bytes": size})
        raise
    return attachment_view(store.set_attachment_status(att, ACTIVE, {"size_bytes": size}))


def get_attachment(store: CampaignStore, tenant_id: str, attachment_id: str) -> dict[str, Any]:
    return attachment_view(store.get_attachment(attachment_id, tenant_id))


def attachment_view(att: Attachment) -> dict[str, Any]:
    return {"attachment_id": att.attachment_id, "filename": att.filename, "content_type": att.content_type,
            "status": att.status, "size_bytes": att.size_bytes, "error": att.error, "created_at": iso(att.created_at)}


def usable(store: UploadRepository, tenant_id: str, attachment_id: str) -> Attachment | None:
    """The tenant's ACTIVE attachment with this id, or None."""
    try:
        att = store.get_attachment(attachment_id, tenant_id)
    except NotFound:
        return None
    return att if att.status == ACTIVE else None


def check_campaign_attachments(store: UploadRepository, settings: Settings, tenant_id: str, ids: list[str] | None) -> int:
    """At submit: the attachments for every mail exist, are confirmed and fit in one message.
    Returns their total size (each recipient's own attachment must fit beside it)."""
    ids = ids or []
    if len(ids) > MAX_CAMPAIGN_ATTACHMENTS:
        raise InvalidInput(f"at most {MAX_CAMPAIGN_ATTACHMENTS} attachments per campaign")
    if len(set(ids)) != len(ids):
        raise InvalidInput("an attachment is named twice")
    total = 0
    for att_id in ids:
        where = [{"loc": ["body", "attachments", att_id]}]
        try:
            att = store.get_attachment(att_id, tenant_id)
        except NotFound:
            raise InvalidInput(f"attachment {att_id} not found", where) from None
        if att.status != ACTIVE:
            raise InvalidInput(f"attachment {att_id} is {att.status}: upload and confirm it first", where)
        total += att.size_bytes or 0
    if total > settings.max_message_attachment_bytes:
        raise PayloadTooLarge(f"the attachments add up to {total} bytes; a message may carry at most "
                              f"{settings.max_message_attachment_bytes} (SES takes messages up to 40 MB)")
    return total


class AttachmentFiles:
    """Attachment bytes by id for the sender: read once and kept (LRU, at most ``max_bytes``), so a
    campaign-wide file is read from S3 once per process, not once per mail."""

    def __init__(self, store: CampaignStore, blobs: BlobStore, settings: Settings, max_bytes: int = 64 * 1024 * 1024):
        self.store, self.blobs, self.settings, self.max_bytes = store, blobs, settings, max_bytes
        self._files: OrderedDict[str, AttachedFile] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, attachment_id: str) -> AttachedFile:
        """Raises NotFound for an attachment that is gone (the mail cannot be sent as submitted)."""
        with self._lock:
            if attachment_id in self._files:
                self._files.move_to_end(attachment_id)
                return self._files[attachment_id]
        att = self.store.get_attachment(attachment_id)
        data = self.blobs.read_bytes(self.settings.bucket("templates"), att.s3_key, self.settings.max_attachment_bytes)
        f = AttachedFile(att.filename, att.content_type, data)
        with self._lock:
            self._files[attachment_id] = f
            self._size += len(data)
            while self._size > self.max_bytes and len(self._files) > 1:
                _, old = self._files.popitem(last=False)
                self._size -= len(old.data)
        return f
