"""The embedded SES's mailbox: every message it accepted, as the MIME message SES would deliver.

moto keeps an SES v2 Simple message as subject and one body (it drops the text part and the
headers) and a Raw message as its data. Inside the moto process ``keep`` (called by the patched
SendEmail in ``local.moto``) gives moto's record the MIME message SES builds from Simple
content (multipart/alternative of the text and HTML parts, the custom headers), or the raw data
as sent, built when first read, with the request's tags and configuration set. The moto server
serves them at ``PATH`` (``records``: moto's own dashboard dump walks every model while other
threads change them, and answered 500 under load); ``received`` reads them back in the test or
platform process.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from email import message_from_string, policy
from email.message import EmailMessage
from typing import Any


def simple_to_mime(request: dict[str, Any]) -> str:
    """The MIME message SES makes of a SendEmail request with Simple content."""
    simple = request["Content"]["Simple"]
    msg = EmailMessage(policy=policy.SMTP.clone(cte_type="7bit"))
    msg["From"] = request.get("FromEmailAddress") or ""
    dest = request.get("Destination") or {}
    if dest.get("ToAddresses"):
        msg["To"] = ", ".join(dest["ToAddresses"])
    if request.get("ReplyToAddresses"):
        msg["Reply-To"] = ", ".join(request["ReplyToAddresses"])
    msg["Subject"] = (simple.get("Subject") or {}).get("Data", "")
    for h in simple.get("Headers") or []:
        msg[h["Name"]] = h["Value"]
    body = simple.get("Body") or {}
    text, html = (body.get("Text") or {}).get("Data"), (body.get("Html") or {}).get("Data")
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    return msg.as_string(policy=policy.SMTP.clone(max_line_length=998))  # SES folds no URL into encoded words


PATH = "/_emailplatform/ses-mailbox"


def records() -> list[dict[str, Any]]:
    """Every message the embedded SES accepted, every account and region (in the moto process)."""
    from moto.ses.models import ses_backends

    out = []
    for account in list(ses_backends):
        for region in list(ses_backends[account]):
            for m in list(ses_backends[account][region].sent_messages):
                try:
                    mime = m.mime
                except (AttributeError, ValueError):  # not sent by us, or not buildable
                    continue
                destinations = getattr(m, "destinations", None)
                out.append({"id": getattr(m, "id", None), "mime": mime, "email_tags": getattr(m, "email_tags", {}),
                            "destinations": destinations if isinstance(destinations, dict) else {}})
    return out


def keep(message: Any, request: dict[str, Any]) -> None:
    """Store what SES accepted on moto's record of it (``message``), in the moto process. The MIME
    message is built when it is read (``received``), not on the send path: the ``email`` package
    took a quarter of the moto server's CPU in a campaign building MIME nobody read."""
    if "mime" not in vars(type(message)):
        type(message).mime = property(_mime)  # type: ignore[attr-defined]
    message._ses_request = request
    message.email_tags = {t["Name"]: t["Value"] for t in request.get("EmailTags") or []}
    message.configuration_set = request.get("ConfigurationSetName")


def _mime(message: Any) -> str:
    """moto's record's ``mime``, built once from the request, which is then dropped (moto's
    ``/moto-api/data.json`` reads every record's attributes; one without a request of ours has
    none, like moto's own). A message the ``email`` package cannot build (a header with a line
    break, which the platform refuses at submit) has none either: data.json skips what raises
    ``ValueError``, and any other error becomes that too rather than failing every record."""
    built = getattr(message, "_ses_mime", None)
    if built is None:
        request = getattr(message, "_ses_request", None)
        content = (request or {}).get("Content") or {}
        try:
            if "Simple" in content:
                built = simple_to_mime(request or {})
            elif "Raw" in content:
                built = base64.b64decode(content["Raw"]["Data"]).decode("utf-8", "replace")
        except Exception as exc:  # noqa: BLE001 - one unbuildable record must not hide the others
            raise ValueError(f"no MIME message: {exc}") from exc
        if built is None:
            raise AttributeError("mime")
        message._ses_mime, message._ses_request = built, None
    return built


def received(moto_url: str, **tags: str) -> list[EmailMessage]:
    """Every message the embedded SES at ``moto_url`` accepted whose tags include ``tags``,
    oldest first, parsed (``msg["X-Header"]``, ``msg.get_body(("plain",))``, attachments)."""
    with urllib.request.urlopen(f"{moto_url}{PATH}", timeout=30) as r:
        data = json.load(r)
    out = []
    for rec in data:
        if any((rec.get("email_tags") or {}).get(k) != v for k, v in tags.items()):
            continue
        msg = message_from_string(rec["mime"].replace("\r\n", "\n"), policy=policy.default)
        msg.ses_message_id = rec.get("id")  # type: ignore[attr-defined]
        msg.email_tags = rec.get("email_tags") or {}  # type: ignore[attr-defined]
        out.append(msg)
    return out
