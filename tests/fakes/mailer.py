"""``Mailer`` in memory: records each accepted send and returns an SES-like message id; told to
fail, it raises what ``SesMailer`` raises for that SES error code (``core.adapters.ses.classify``
of the botocore ``ClientError``), so a service sees the same domain error as in production."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core.adapters.ses import classify


@dataclass
class _Failure:
    code: str
    message: str
    http_status: int
    times: int | None  # None: every send until cleared
    to: str | None  # only sends to this address


class FakeMailer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def fail_with(self, code: str, message: str = "", *, http_status: int = 400, times: int | None = 1,
                  to: str | None = None) -> None:
        """The next ``times`` sends (to ``to`` only, when given; every send when ``times`` is None)
        fail as SES would answer ``code``."""
        with self._lock:
            self._failures.append(_Failure(code, message, http_status, times, to))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def send(self, *, sender: str, to: str, subject: str, html: str, reply_to: str | None,
             headers: dict[str, str], tags: dict[str, str], text: str | None = None,
             attachments: list[Any] | None = None) -> str:
        mail = {"sender": sender, "to": to, "subject": subject, "html": html, "reply_to": reply_to,
                "headers": dict(headers), "tags": dict(tags), "text": text, "attachments": list(attachments or [])}
        with self._lock:
            failure = next((f for f in self._failures if f.to is None or f.to == to), None)
            if failure is not None:
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                self.refused.append({**mail, "code": failure.code})
            else:
                ses_id = f"fake-ses-{next(self._ids):08d}"
                self.sent.append({**mail, "ses_id": ses_id})
                return ses_id
        error = ClientError({"Error": {"Code": failure.code, "Message": failure.message},
                             "ResponseMetadata": {"HTTPStatusCode": failure.http_status}}, "SendEmail")
        raise classify(error, sender)

    def per_recipient(self) -> dict[str, int]:
        return dict(Counter(m["to"] for m in self.sent))
