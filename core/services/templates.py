"""Templates: presigned upload, validation on confirm, versions pinned by campaigns."""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from core.domain.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from core.domain.models import TemplateStatus, TemplateVersion, new_id
from core.services.compliance import check_template_footer
from core.services.ports import BlobStore, CampaignStore
from core.services.rendering import RenderError, check_header, template_variables


def create_template(store: CampaignStore, blobs: BlobStore, settings: Settings, tenant_id: str, name: str, subject: str,
                    template_id: str | None = None, *, text: bool = False) -> dict[str, Any]:
    """Register a new template (or a new version of ``template_id``) and presign its upload.

    ``text``: the version also has a plain-text source, uploaded with its own form (``text_upload``);
    without one the text part of every mail is derived from the rendered HTML."""
    try:
        check_header("subject", subject)
        subject_vars = template_variables(subject)
    except RenderError as exc:
        raise InvalidInput(str(exc)) from None
    if template_id is None:
        template_id, version = new_id("tpl_"), 1
    else:
        head = store.template_head(template_id, tenant_id)
        version = int(head["latest_version"]) + 1
    key = f"{tenant_id}/{template_id}/v{version}.html.j2"
    text_key = f"{tenant_id}/{template_id}/v{version}.txt.j2" if text else None
    tv = TemplateVersion(template_id=template_id, tenant_id=tenant_id, version=version, name=name,
                         subject=subject, s3_key=key, text_s3_key=text_key, variables=subject_vars)
    store.put_template_version(tv)
    upload = blobs.presign_post(settings.bucket("templates"), key, settings.max_template_bytes,
                                settings.presign_expiry_seconds, "text/html")
    out = {"template_id": template_id, "version": version, "status": tv.status, "upload": upload}
    if text_key:
        out["text_upload"] = blobs.presign_post(settings.bucket("templates"), text_key, settings.max_template_bytes,
                                                settings.presign_expiry_seconds, "text/plain")
    return out


def confirm_template(store: CampaignStore, blobs: BlobStore, settings: Settings, tenant_id: str, template_id: str,
                     version: int | None = None) -> TemplateVersion:
    """Validate the uploaded source (size, UTF-8, sandbox parse) and activate the version.

    Idempotent: confirming an ACTIVE version returns it unchanged.
    """
    head = store.template_head(template_id, tenant_id)
    tv = store.get_template_version(template_id, version or int(head["latest_version"]), tenant_id)
    if tv.status == TemplateStatus.ACTIVE:
        return tv
    try:
        size = blobs.size(settings.bucket("templates"), tv.s3_key)
    except NotFound:
        raise Conflict("template file not uploaded yet: upload it to the presigned URL first") from None
    if size > settings.max_template_bytes:
        store.set_template_version_status(tv, TemplateStatus.INVALID, {"error": "too large", "size_bytes": size})
        raise PayloadTooLarge(f"template is {size} bytes; the limit is {settings.max_template_bytes}")
    raw = blobs.read_bytes(settings.bucket("templates"), tv.s3_key, settings.max_template_bytes)
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"template is not UTF-8 (byte {exc.start})") from None
    variables = set(template_variables(source)) | set(tv.variables)
    if tv.text_s3_key:
        variables |= set(template_variables(_text_source(store, blobs, settings, tv), what="text version"))
    check_template_footer(settings, variables)  # CAN-SPAM, when required: unsubscribe link and postal address
    return store.set_template_version_status(tv, TemplateStatus.ACTIVE,
                                             {"variables": sorted(variables), "size_bytes": size})


def _text_source(store: CampaignStore, blobs: BlobStore, settings: Settings, tv: TemplateVersion) -> str:
    """The uploaded text version, checked like the HTML (present, size, UTF-8)."""
    bucket = settings.bucket("templates")
    if tv.text_s3_key is None:
        raise Conflict("this template version has no text version")
    try:
        size = blobs.size(bucket, tv.text_s3_key)
    except NotFound:
        raise Conflict("text version not uploaded yet: upload it to the text_upload form first") from None
    if size > settings.max_template_bytes:
        store.set_template_version_status(tv, TemplateStatus.INVALID, {"error": "text version too large"})
        raise PayloadTooLarge(f"text version is {size} bytes; the limit is {settings.max_template_bytes}")
    try:
        return blobs.read_bytes(bucket, tv.text_s3_key, settings.max_template_bytes).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"text version is not UTF-8 (byte {exc.start})") from None


def describe_template(store: CampaignStore, tenant_id: str, template_id: str) -> dict[str, Any]:
    head = store.template_head(template_id, tenant_id)
    versions = store.template_versions(template_id)
    return {
        "template_id": template_id,
        "name": head.get("name"),
        "latest_version": head.get("latest_version"),
        "active_version": head.get("active_version"),
        "versions": [v.model_dump(mode="json", exclude={"tenant_id"}) for v in versions],
    }


def load_source(store: CampaignStore, blobs: BlobStore, settings: Settings, template_id: str, version: int) -> tuple[TemplateVersion, str]:
    tv = store.get_template_version(template_id, version)
    raw = blobs.read_bytes(settings.bucket("templates"), tv.s3_key, settings.max_template_bytes)
    return tv, raw.decode("utf-8")


def load_text(blobs: BlobStore, settings: Settings, tv: TemplateVersion) -> str | None:
    """The version's plain-text source, or None when its text part is derived from the HTML."""
    if not tv.text_s3_key:
        return None
    return blobs.read_bytes(settings.bucket("templates"), tv.text_s3_key, settings.max_template_bytes).decode("utf-8")


def load_mail_source(store: CampaignStore, blobs: BlobStore, settings: Settings, template_id: str, version: int
                     ) -> tuple[str, str, str | None]:
    """(subject, HTML source, text source or None) of a version: what the sender renders."""
    tv, html = load_source(store, blobs, settings, template_id, version)
    return tv.subject, html, load_text(blobs, settings, tv)
