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

from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)
from prometheus_client import Counter

from core.domain.errors import MessageRefused, SendInDoubt, SendingHeld, TemporaryError
from core.domain.ids import ses_tag_value

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
# Phrases of a MessageRejected that are about identities / the sandbox, not the message.
_NOT_VERIFIED = ("not verified", "sandbox", "pending verification", "failed the check", "not authorized")

SES_CONFIG_ERRORS = Counter("emailplatform_ses_config_errors_total",
                            "SES errors about the account or its configuration (sending held)", ["code"])


def _mentions(text: str, address: str) -> bool:
    text, address = text.lower(), address.lower()
    bare = address.split("<")[-1].rstrip(">").strip()
    domain = bare.rpartition("@")[2]
    return bool(bare) and (bare in text or (domain and domain in text))


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


class SesMailer:
    def __init__(self, client: Any, configuration_set: str):
        self.client = client
        self.configuration_set = configuration_set

    def send(self, *, sender: str, to: str, subject: str, html: str, reply_to: str | None,
             headers: dict[str, str], tags: dict[str, str]) -> str:
        """One SendEmail call. Raises MessageRefused, TemporaryError, SendingHeld or SendInDoubt."""
        content: dict[str, Any] = {
            "Simple": {
                "Subject": {"Data": subject, "Charset": "UTF-8"},
                "Body": {"Html": {"Data": html, "Charset": "UTF-8"}},
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
        except ClientError as exc:
            err = classify(exc, sender)
            if isinstance(err, SendingHeld):
                SES_CONFIG_ERRORS.labels(err.ses_code).inc()
            raise err from None
        except (ConnectTimeoutError, EndpointConnectionError) as exc:
            raise SendInDoubt(f"SES unreachable: {type(exc).__name__}") from None
        except (ReadTimeoutError, ConnectionClosedError, HTTPClientError, ConnectionError) as exc:
            raise SendInDoubt(f"SES call did not complete: {type(exc).__name__}") from None
