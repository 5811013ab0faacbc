"""SES v2 mailer. Every SendEmail failure is classified by what it says about the next send:

* per message (``MessageRefused``): a recipient- or content-level rejection. Only this one message
  fails; the rest of the batch goes on.
* temporary (``TemporaryError``): throttling. The call was not accepted, so retrying it is safe.
* account or configuration (``SendingHeld``): permissions, a missing configuration set, an
  unverified identity or from domain, sandbox, a suspended or paused account, a tag SES refuses.
  Every further send would fail the same way, so sending is held (``scope`` says whether for the
  tenant — its identity or from address — or platform-wide) until a probe succeeds.
* in doubt (``SendInDoubt``): a timeout, a connection error, a 5xx or an error we do not know.
  SES may have accepted the message; it must not be sent again before the Send-evidence policy
  has decided. The client is built without SDK retries (``core.adapters.aws``) for this reason.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ParamValidationError,
    ReadTimeoutError,
)

from core.domain.attachments import AttachedFile
from core.domain.errors import MessageRefused, SendInDoubt, SendingHeld, TemporaryError
from core.domain.ids import ses_tag_value
from core.observability import SES_CONFIG_ERRORS  # the sender publishes it as EMF

THROTTLED = {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException"}
# About the tenant's identity / from address: hold that tenant.
TENANT_CONFIG = {"MailFromDomainNotVerifiedException"}
# About the account, its permissions or the configuration set: hold the platform.
PLATFORM_CONFIG = {"AccessDeniedException", "NotFoundException", "AccountSuspendedException",
                   "SendingPausedException", "ConfigurationSetDoesNotExistException",
                   "ConfigurationSetSendingPausedException", "AccountSendingPausedException",
                   "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
                   "ExpiredTokenException", "MissingAuthenticationTokenException"}
# Per-message unless their text says otherwise (see ``classify``).
PER_MESSAGE = {"MessageRejected", "BadRequestException", "InvalidParameterValue"}
# An AccessDenied names the resource IAM refused: "… not authorized to perform `ses:SendEmail' on
# resource `arn:aws:ses:<region>:<account>:identity/<address or domain>'". When that identity is the
# tenant's own from address or domain, it is the tenant's sender that lacks the grant (or the
# identity), not the platform's.
_DENIED_IDENTITY = re.compile(r":identity/([^\s'`\"]+)", re.IGNORECASE)
# Phrases of a MessageRejected that are about identities / the sandbox, not the message.
_NOT_VERIFIED = ("not verified", "sandbox", "pending verification", "failed the check", "not authorized")


def _mentions(text: str, address: str) -> bool:
    text, address = text.lower(), address.lower()
    bare = address.split("<")[-1].rstrip(">").strip()
    domain = bare.rpartition("@")[2]
    return bool(bare) and (bare in text or (bool(domain) and domain in text))


def _denied_tenant_identity(message: str, sender: str) -> bool:
    """An AccessDenied whose refused resource is the sender's own address or domain identity."""
    bare = sender.lower().split("<")[-1].rstrip(">").strip()
    mine = {bare, bare.rpartition("@")[2]} - {""}
    return any(m.group(1).lower().rstrip(".") in mine for m in _DENIED_IDENTITY.finditer(message))


def classify(exc: ClientError, sender: str) -> Exception:
    """The domain error a ClientError from SendEmail stands for (see the module docstring)."""
    err = exc.response.get("Error", {})
    code = err.get("Code", "")
    message = err.get("Message", "") or ""
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    text = f"{code}: {message}".strip()
    if code in THROTTLED:
        return TemporaryError(f"SES throttled: {code}", delay=1.0)
    if code in TENANT_CONFIG:
        return SendingHeld(text, ses_code=code, scope="tenant")
    if code in ("AccessDeniedException", "AccessDenied") and _denied_tenant_identity(message, sender):
        return SendingHeld(text, ses_code=code, scope="tenant")
    if code in PLATFORM_CONFIG:
        return SendingHeld(text, ses_code=code, scope="platform")
    if code == "MessageRejected" and any(p in message.lower() for p in _NOT_VERIFIED):
        # "Email address is not verified. The following identities failed the check …": the
        # tenant's from address, or (sandbox) a recipient, which no other message fixes either.
        return SendingHeld(text, ses_code=code, scope="tenant" if _mentions(message, sender) else "platform")
    if code == "BadRequestException" and any(w in message.lower() for w in ("tag", "configuration set")):
        return SendingHeld(text, ses_code=code, scope="platform")  # our request shape, not the message
    if code in PER_MESSAGE and status < 500:
        return MessageRefused(text)
    return SendInDoubt(f"SES answered {code or status}: {message}".strip())


# The request fields a message's own content fills (its address, subject, body, headers): a
# request botocore refuses in one of them is that message's fault; in any other, ours.
_MESSAGE_FIELDS = ("Content.", "Destination.", "ReplyToAddresses", "FromEmailAddress")


def _invalid_request(exc: ParamValidationError) -> Exception:
    """A message botocore refuses (an empty header value, say) fails alone; a request the platform
    builds wrongly for every message (the configuration set, the tags) holds the platform."""
    text = f"request refused before the call: {exc}"[:500]
    if any(f in str(exc) for f in _MESSAGE_FIELDS):
        return MessageRefused(text)
    return SendingHeld(text, ses_code="ParamValidation", scope="platform")


MAX_MESSAGE_BYTES = 40 * 1024 * 1024  # SES v2: the whole message, attachments and encoding included
# Bodies are encoded for 7-bit transport with 76-character lines (RFC 2045); headers are written
# unfolded up to RFC 5322's 998 characters, so a long List-Unsubscribe URL stays a plain URL.
_BUILD = policy.SMTP.clone(cte_type="7bit")
_WRITE = policy.SMTP.clone(max_line_length=998)


def raw_message(*, sender: str, to: str, subject: str, html: str, text: str | None, reply_to: str | None,
                headers: dict[str, str], attachments: list[AttachedFile]) -> bytes:
    """The MIME message of a mail with attachments, built with the standard library: a
    multipart/mixed of the multipart/alternative (text, HTML) and each file. Inline images
    (``content_id``) go with the HTML part in a multipart/related, as ``Content-ID: <id>``."""
    msg = EmailMessage(policy=_BUILD)
    msg["From"] = sender
    msg["To"] = to
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name] = value
    if text is not None:
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html, subtype="html")
    for f in attachments:
        maintype, _, subtype = f.content_type.partition("/")
        if f.content_id:
            # looked up each time: the first inline image makes the HTML part multipart/related
            html_part = msg.get_body(("html",))
            assert html_part is not None  # set just above
            html_part.add_related(f.data, maintype=maintype, subtype=subtype, cid=f"<{f.content_id}>",
                                  filename=f.filename, disposition="inline")
    for f in attachments:
        if not f.content_id:
            maintype, _, subtype = f.content_type.partition("/")
            msg.add_attachment(f.data, maintype=maintype, subtype=subtype, filename=f.filename)
    return msg.as_bytes(policy=_WRITE)


class SesMailer:
    def __init__(self, client: Any, configuration_set: str):
        self.client = client
        self.configuration_set = configuration_set

    def send(self, *, sender: str, to: str, subject: str, html: str, reply_to: str | None,
             headers: dict[str, str], tags: dict[str, str], text: str | None = None,
             attachments: list[AttachedFile] | None = None) -> str:
        """One SendEmail call. Without attachments: Simple content (with ``text`` SES builds a
        multipart/alternative message of both parts). With attachments: Raw content, the MIME
        message built here (``raw_message``); the tags and the configuration set go with it alike.
        Raises MessageRefused (also for a message over SES's 40 MB), TemporaryError, SendingHeld or
        SendInDoubt."""
        if attachments:
            raw = raw_message(sender=sender, to=to, subject=subject, html=html, text=text, reply_to=reply_to,
                              headers=headers, attachments=attachments)
            if len(raw) > MAX_MESSAGE_BYTES:
                raise MessageRefused(f"the message is {len(raw)} bytes with its attachments; SES takes at most "
                                     f"{MAX_MESSAGE_BYTES}")
            content: dict[str, Any] = {"Raw": {"Data": raw}}
            reply_to = None  # in the message's own headers
        else:
            body: dict[str, Any] = {"Html": {"Data": html, "Charset": "UTF-8"}}
            if text is not None:
                body["Text"] = {"Data": text, "Charset": "UTF-8"}
            content = {
                "Simple": {
                    "Subject": {"Data": subject, "Charset": "UTF-8"},
                    "Body": body,
                    "Headers": [{"Name": k, "Value": v} for k, v in headers.items()],
                }
            }
        kw: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": {"ToAddresses": [to]},
            "Content": content,
            "ConfigurationSetName": self.configuration_set,
            "EmailTags": [{"Name": ses_tag_value(k), "Value": ses_tag_value(v)} for k, v in tags.items()],
        }
        if reply_to:
            kw["ReplyToAddresses"] = [reply_to]
        try:
            return self.client.send_email(**kw)["MessageId"]
        except ParamValidationError as exc:  # botocore refused the request before any call
            raise _invalid_request(exc) from None
        except ClientError as exc:
            err = classify(exc, sender)
            if isinstance(err, SendingHeld):
                SES_CONFIG_ERRORS.labels(err.ses_code).inc()
            raise err from None
        except (ConnectTimeoutError, EndpointConnectionError) as exc:
            raise SendInDoubt(f"SES unreachable: {type(exc).__name__}") from None
        except (ReadTimeoutError, ConnectionClosedError, HTTPClientError, ConnectionError) as exc:
            raise SendInDoubt(f"SES call did not complete: {type(exc).__name__}") from None
