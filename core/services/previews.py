"""Seeing a mail before a campaign sends it: a template preview (nothing sent) and a test send of
one rendered mail of a campaign that is not released yet, to one address."""

from __future__ import annotations

from typing import Any

from email_validator import EmailNotValidError, validate_email

from config.settings import Settings
from core.domain.attachments import as_inline_if_shown
from core.domain.compliance import footer_variables
from core.domain.errors import AddressSuppressed, Conflict, InvalidInput, NotFound, TemporaryError
from core.domain.models import (
    TemplateStatus,
    TemplateVersion,
    Transaction,
    batch_id_for,
    iso,
    new_id,
)
from core.domain.statuses import NOT_RELEASED
from core.observability import log
from core.services.attachments import AttachmentFiles
from core.services.ports import BlobStore, CampaignStore, Clock, Mailer, RateLimiter
from core.services.rendering import RenderedMail, RenderError, render_mail
from core.services.sending import unsubscribe_link
from core.services.templates import load_text

MAX_SLOT_WAIT_SECONDS = 10.0  # a test send waits at most this long for its send slot (API Gateway: 29 s)
PREVIEW_EMAIL = "recipient@example.com"  # ``email`` in a preview when the data names none
# Not released yet: a test send is for checking a campaign before its recipients get it.
TEST_SENDABLE = NOT_RELEASED


def _sources(store: CampaignStore, blobs: BlobStore, settings: Settings, template_id: str, version: int, tenant_id: str
             ) -> tuple[TemplateVersion, str, str | None]:
    tv = store.get_template_version(template_id, version, tenant_id)
    if tv.status == TemplateStatus.INVALID:
        raise Conflict(f"template version {version} is INVALID: {tv.error or 'refused at confirm'}")
    bucket = settings.bucket("templates")
    try:
        html = blobs.read_bytes(bucket, tv.s3_key, settings.max_template_bytes).decode("utf-8")
    except NotFound:
        raise Conflict(f"template version {version} is not uploaded yet") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"template version {version} is not UTF-8 (byte {exc.start})") from None
    try:
        text = load_text(blobs, settings, tv)
    except NotFound:
        raise Conflict(f"the text version of template version {version} is not uploaded yet") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the text version of template version {version} is not UTF-8 (byte {exc.start})") from None
    return tv, html, text


def _render(cache_key: str, subject: str, html: str, text: str | None, data: dict[str, str]) -> RenderedMail:
    try:
        return render_mail(cache_key, subject, html, text, data)
    except RenderError as exc:
        raise InvalidInput(f"the template cannot be rendered with this data: {exc}") from None


def _view(mail: RenderedMail) -> dict[str, Any]:
    return {"subject": mail.subject, "html": mail.html, "text": mail.text, "text_derived": mail.text_derived}


def preview_template(store: CampaignStore, blobs: BlobStore, settings: Settings, tenant_id: str, template_id: str, *,
                     version: int | None = None, data: dict[str, str] | None = None,
                     subject: str | None = None) -> dict[str, Any]:
    """Subject, HTML and text of ``template_id`` rendered with ``data``; nothing is sent or stored.
    Default version: the active one, else the latest (so an upload can be checked before confirming).
    Raises NotFound, Conflict (not uploaded, INVALID) and InvalidInput (the data does not render)."""
    head = store.template_head(template_id, tenant_id)
    version = version or int(head.get("active_version") or head["latest_version"])
    tv, html, text = _sources(store, blobs, settings, template_id, version, tenant_id)
    if subject is not None and ("\r" in subject or "\n" in subject):
        raise InvalidInput("subject contains a line break")
    # the platform's footer variables as the sender sets them (the link goes nowhere in a preview)
    footer = footer_variables(store.compliance_identity(tenant_id),
                              f"{settings.public_base_url}/api/v1/email/unsubscribe/preview")
    data = {"email": PREVIEW_EMAIL, **footer, **(data or {})}
    # a preview may show a source not yet confirmed: its cache key must not be a confirmed one's
    mail = _render(f"preview:{template_id}:{version}:{tv.status}", subject or tv.subject, html, text, data)
    return {"template_id": template_id, "version": version, **_view(mail)}


def _first_recipient_data(store: CampaignStore, tx: Transaction) -> dict[str, str]:
    """The first accepted row's placeholder data, once ingest wrote a batch; else none."""
    if tx.ingest_checkpoint < 1 and tx.batch_count < 1:
        return {}
    page = store.messages_page(batch_id_for(tx.transaction_id, 1), None, 1, None)
    return dict(page.items[0].get("placeholder_data") or {}) if page.items else {}


def send_test_mail(store: CampaignStore, blobs: BlobStore, settings: Settings, mailer: Mailer, limiter: RateLimiter, clock: Clock, tenant_id: str,
              tx_id: str, to: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    """Send one rendered mail of a campaign that is not released yet (ACCEPT, PROCESSING, SCHEDULED,
    DRAFT) to ``to``, with the campaign's subject, from, reply-to and headers. ``data`` defaults to
    the campaign's first recipient's row. The mail is tagged as the campaign's, with a message id
    that names no batch, so its SES events change no message or count.

    Not idempotent (SES SendEmail is not): a retried request sends again. Raises NotFound, Conflict
    (released), InvalidInput (address, rendering), AddressSuppressed, TemporaryError/SendingHeld
    (sending held, throttled), MessageRefused and SendInDoubt."""
    tx = store.get_transaction(tx_id, tenant_id)
    if tx.status not in TEST_SENDABLE:
        raise Conflict(f"campaign is {tx.status.value}; test sends are for campaigns not released yet "
                       f"({', '.join(sorted(s.value for s in TEST_SENDABLE))})")
    try:
        checked = validate_email(to, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"to is not a valid address: {exc}", [{"loc": ["body", "to"]}]) from None
    to = checked.ascii_email or checked.normalized
    if store.get_suppression(tenant_id, to.lower()):
        raise AddressSuppressed(f"{to} is on the tenant's suppression list: nothing is sent to it",
                                [{"loc": ["body", "to"]}])
    held = store.sending_paused(tenant_id)
    if held:
        raise TemporaryError(f"sending is held ({held}); try again once it is lifted", delay=60)
    tv, html, text = _sources(store, blobs, settings, tx.template_id, tx.template_version, tenant_id)
    row = dict(data) if data is not None else _first_recipient_data(store, tx)
    message_id = new_id("test_")  # no "-b": events for it are not about any message of the campaign
    unsub = unsubscribe_link(settings, tenant_id, to, message_id)
    mail = _render(f"{tx.template_id}:{tx.template_version}", tx.subject or tv.subject, html, text,
                   {**row, "email": to, **footer_variables(store.compliance_identity(tenant_id), unsub)})
    try:  # the campaign's attachments for every mail (a recipient's own depend on the row)
        loaded = AttachmentFiles(store, blobs, settings)
        files = [as_inline_if_shown(i, loaded.get(i), mail.html) for i in tx.attachments]
    except NotFound as exc:
        raise Conflict(f"an attachment of the campaign is gone: {exc}") from None
    booking = limiter.book(1)  # within the shared SES rate, like every send
    if booking.start - clock.now().timestamp() > MAX_SLOT_WAIT_SECONDS:  # an API request cannot wait long
        raise TemporaryError("the SES send rate is taken by campaigns sending now; try again shortly", delay=10)
    booking.wait_turn()
    ses_id = mailer.send(
        **({"attachments": files} if files else {}),
        sender=tx.from_address or settings.default_from, to=to, subject=mail.subject, html=mail.html,
        text=mail.text, reply_to=tx.reply_to,
        headers={**tx.headers, "List-Unsubscribe": f"<{unsub}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        tags={"tenant_id": tenant_id, "transaction_id": tx.transaction_id, "message_id": message_id,
              "test_send": "true"},
    )
    log.info("test send", transaction_id=tx.transaction_id, tenant_id=tenant_id, ses_message_id=ses_id)
    return {"transaction_id": tx.transaction_id, "to": to, "ses_message_id": ses_id, "test_message_id": message_id,
            "subject": mail.subject, "sent_at": iso(clock.now())}
