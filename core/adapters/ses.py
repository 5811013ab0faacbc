"""SES v2 mailer. Errors are classified: throttling is temporary, a rejection is per message."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from core.domain.errors import MessageRefused, TemporaryError

THROTTLED = {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
             "ServiceUnavailable", "InternalFailure"}
PAUSED = {"SendingPausedException", "AccountSuspendedException"}


class SesMailer:
    def __init__(self, client: Any, configuration_set: str):
        self.client = client
        self.configuration_set = configuration_set

    def send(self, *, sender: str, to: str, subject: str, html: str, reply_to: str | None,
             headers: dict[str, str], tags: dict[str, str]) -> str:
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
            "EmailTags": [{"Name": k, "Value": v} for k, v in tags.items()],
        }
        if reply_to:
            kw["ReplyToAddresses"] = [reply_to]
        try:
            return self.client.send_email(**kw)["MessageId"]
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in THROTTLED:
                raise TemporaryError(f"SES throttled: {code}", delay=1.0) from None
            if code in PAUSED:
                raise TemporaryError(f"SES sending paused: {code}", delay=60.0) from None
            raise MessageRefused(f"{code}: {exc.response['Error'].get('Message', '')}") from None
