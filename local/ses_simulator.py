"""Plays SES event publishing, which moto does not do.

Wraps the real mailer: every message moto's SES accepted gets real-format SES event
notifications (the shapes in tests/events/) published to the SNS topic, following the SES
mailbox simulator addresses and configurable rates for other addresses. Events go out from a
background thread after small delays, so they arrive after the send like on AWS.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from core.observability import log


@dataclass
class Rates:
    delivery: float = 0.97
    open: float = 0.45
    click: float = 0.15
    complaint: float = 0.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _roll(seed: str, what: str) -> float:
    return int(hashlib.sha256(f"{seed}:{what}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def plan_events(to: str, ses_id: str, rates: Rates) -> list[str]:
    """Which events SES would publish for this recipient (the simulator addresses first)."""
    local, _, domain = to.lower().partition("@")
    local = local.split("+")[0]
    if domain == "simulator.amazonses.com":
        return {"success": ["Send", "Delivery"], "bounce": ["Send", "Bounce"], "ooto": ["Send", "Delivery"],
                "complaint": ["Send", "Delivery", "Complaint"],
                "suppressionlist": ["Send", "BounceSuppressed"]}.get(local, ["Send", "Delivery"])
    events = ["Send"]
    if _roll(ses_id, "delivery") >= rates.delivery:
        return events + ["Bounce"]
    events.append("Delivery")
    if _roll(ses_id, "open") < rates.open:
        events.append("Open")
        if _roll(ses_id, "click") < rates.click / max(rates.open, 1e-9):
            events.append("Click")
    if _roll(ses_id, "complaint") < rates.complaint:
        events.append("Complaint")
    return events


def ses_event(kind: str, *, ses_id: str, sender: str, to: str, subject: str, tags: dict[str, str]) -> dict[str, Any]:
    ts = _now()
    mail = {
        "timestamp": ts, "source": sender, "sendingAccountId": "123456789012", "messageId": ses_id,
        "destination": [to], "headersTruncated": False,
        "headers": [{"name": "From", "value": sender}, {"name": "To", "value": to}, {"name": "Subject", "value": subject}],
        "commonHeaders": {"from": [sender], "to": [to], "messageId": ses_id, "subject": subject},
        "tags": {"ses:configuration-set": ["emailplatform"], "ses:source-ip": ["192.0.2.0"],
                 **{k: [v] for k, v in tags.items()}},
    }
    if kind == "Send":
        return {"eventType": "Send", "mail": mail, "send": {}}
    if kind == "Delivery":
        return {"eventType": "Delivery", "mail": mail, "delivery": {
            "timestamp": ts, "processingTimeMillis": 546, "recipients": [to],
            "smtpResponse": "250 2.6.0 Message received", "reportingMTA": "a8-70.smtp-out.amazonses.com"}}
    if kind in ("Bounce", "BounceSuppressed"):
        sub = "OnAccountSuppressionList" if kind == "BounceSuppressed" else "General"
        return {"eventType": "Bounce", "mail": mail, "bounce": {
            "bounceType": "Permanent", "bounceSubType": sub, "timestamp": ts,
            "feedbackId": f"0102{ses_id}-bounce", "reportingMTA": "dsn; e3-35.smtp-out.amazonses.com",
            "bouncedRecipients": [{"emailAddress": to, "action": "failed", "status": "5.1.1",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}}
    if kind == "Complaint":
        return {"eventType": "Complaint", "mail": mail, "complaint": {
            "complainedRecipients": [{"emailAddress": to}], "timestamp": ts, "feedbackId": f"0102{ses_id}-complaint",
            "userAgent": "Mozilla/5.0", "complaintFeedbackType": "abuse", "arrivalDate": ts}}
    if kind == "Open":
        return {"eventType": "Open", "mail": mail, "open": {
            "ipAddress": "192.0.2.1", "timestamp": ts, "userAgent": "Mozilla/5.0 (Macintosh)"}}
    if kind == "Click":
        return {"eventType": "Click", "mail": mail, "click": {
            "ipAddress": "192.0.2.1", "timestamp": ts, "userAgent": "Mozilla/5.0 (Macintosh)",
            "link": "https://example.com/offer", "linkTags": {"campaign": ["demo"]}}}
    raise ValueError(kind)


# The SES v2 errors the moto server never returns, with their HTTP status and a real message.
SES_ERRORS: dict[str, tuple[int, str]] = {
    "TooManyRequestsException": (429, "Too many requests."),
    "LimitExceededException": (429, "Maximum sending rate exceeded."),
    "AccessDeniedException": (403, "User is not authorized to perform: ses:SendEmail on resource: "
                                   "arn:aws:ses:eu-west-1:123456789012:configuration-set/emailplatform"),
    "NotFoundException": (404, "Configuration set <emailplatform> does not exist."),
    "MailFromDomainNotVerifiedException": (400, "The MAIL FROM domain is not verified."),
    "MessageRejected": (400, "Email address is not verified. The following identities failed the check "
                             "in region EU-WEST-1: {sender}"),
    "AccountSuspendedException": (400, "Your account has been suspended."),
    "SendingPausedException": (400, "Sending is paused for this account."),
    "BadRequestException": (400, "Invalid tag value: tags may contain only letters, digits, '_' and '-'."),
    "InternalFailure": (500, "An internal failure occurred."),
    "ServiceUnavailable": (503, "Service unavailable."),
}
# Transport failures (no SES answer at all) by name.
TRANSPORT_ERRORS = {
    "ReadTimeout": lambda url: ReadTimeoutError(endpoint_url=url),
    "ConnectionClosed": lambda url: ConnectionClosedError(endpoint_url=url),
    "EndpointConnection": lambda url: EndpointConnectionError(endpoint_url=url),
}


@dataclass
class Fault:
    code: str
    times: int | None = None  # None: until cleared
    to: str | None = None  # only sends to this recipient
    sender: str | None = None  # only sends from this address (or domain: "@example.com")
    message: str | None = None
    accepted: bool = False  # a transport error *after* SES accepted the mail (the response was lost)
    hits: int = field(default=0)


class SesFaults:
    """Makes a real SES v2 client fail on demand, the way SES does and moto never does.

    Hooks the client's ``before-call.sesv2.SendEmail`` event: a matching fault answers the call
    with an error response (parsed by botocore into the same ``ClientError`` subclass the real
    service produces) or raises a transport error (a timeout, a dropped connection), so the code
    under test — ``SesMailer``'s classification included — runs unchanged.
    """

    def __init__(self, client: Any):
        self.client = client
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        client.meta.events.register("before-call.sesv2.SendEmail", self._before_call, unique_id=f"faults-{id(self)}")
        client.meta.events.register("after-call.sesv2.SendEmail", self._after_call, unique_id=f"faults-a-{id(self)}")

    def inject(self, code: str, *, times: int | None = 1, to: str | None = None, sender: str | None = None,
               message: str | None = None, accepted: bool = False) -> Fault:
        """Fail the next ``times`` matching sends (``None``: every one until ``clear``) with ``code``:
        an SES error code from ``SES_ERRORS`` (or any other, as a 400) or one of ``TRANSPORT_ERRORS``.
        ``accepted=True`` (transport errors only) lets SES accept the mail and then loses the answer."""
        fault = Fault(code, times, to.lower() if to else None, sender.lower() if sender else None, message,
                      accepted)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def detach(self) -> None:
        self.client.meta.events.unregister("before-call.sesv2.SendEmail", unique_id=f"faults-{id(self)}")
        self.client.meta.events.unregister("after-call.sesv2.SendEmail", unique_id=f"faults-a-{id(self)}")

    def _match(self, to: list[str], sender: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.to and f.to not in to:
                    continue
                if f.sender and not (sender == f.sender or (f.sender.startswith("@") and sender.endswith(f.sender))):
                    continue
                f.hits += 1
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        self._faults.remove(f)
                return f
        return None

    def _before_call(self, params: dict[str, Any], model: Any, context: dict[str, Any] | None = None,
                     **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        body = json.loads(params.get("body") or b"{}")
        to = [a.lower() for a in body.get("Destination", {}).get("ToAddresses", [])]
        sender = (body.get("FromEmailAddress") or "").lower()
        fault = self._match(to, sender)
        if fault is None:
            return None
        if fault.accepted and context is not None:
            context["ses_fault_after"] = fault  # SES takes it; the answer is lost on the way back
            return None
        if fault.code in TRANSPORT_ERRORS:
            raise TRANSPORT_ERRORS[fault.code](params.get("url", "https://email.eu-west-1.amazonaws.com"))
        status, text = SES_ERRORS.get(fault.code, (400, fault.code))
        text = (fault.message or text).replace("{sender}", sender)
        parsed = {"Error": {"Code": fault.code, "Message": text},
                  "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {"x-amzn-errortype": fault.code}}}
        return AWSResponse(params.get("url", ""), status, {"x-amzn-errortype": fault.code}, None), parsed

    def _after_call(self, context: dict[str, Any] | None = None, **_: Any) -> None:
        fault = (context or {}).pop("ses_fault_after", None)
        if fault is not None:
            raise TRANSPORT_ERRORS.get(fault.code, TRANSPORT_ERRORS["ReadTimeout"])("https://email.amazonaws.com")


class SimulatingMailer:
    """The real SES adapter plus SES's event publishing, for the embedded stack only."""

    def __init__(self, mailer: Any, sns: Any, topic_arn: str, rates: Rates | None = None, delay: float = 0.05):
        self.mailer, self.sns, self.topic_arn = mailer, sns, topic_arn
        self.rates = rates or Rates()
        self.delay = delay
        self.sent: list[dict[str, str]] = []  # every accepted send, for tests and the drill
        # SES errors on demand (AWS returns them, moto never does): ``simulator.faults.inject(...)``
        self.faults = SesFaults(mailer.client) if hasattr(mailer, "client") else None
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_loop, name="ses-simulator", daemon=True)
        self._thread.start()

    def inject(self, code: str, **kw: Any) -> Fault:
        """See ``SesFaults.inject``."""
        assert self.faults is not None, "the wrapped mailer has no SES client"
        return self.faults.inject(code, **kw)

    def cut(self) -> None:
        """The region's compute is gone: its SES calls fail from now on (drills)."""
        self._cut = True

    def send(self, **kw: Any) -> str:
        if getattr(self, "_cut", False):
            raise ConnectionError("SES endpoint unreachable from a killed region")
        ses_id = self.mailer.send(**kw)
        self.sent.append({"to": kw["to"], "ses_id": ses_id, "message_id": kw["tags"].get("message_id", "")})
        for i, kind in enumerate(plan_events(kw["to"], ses_id, self.rates)):
            self._q.put((time.monotonic() + self.delay * (i + 1), kind, ses_id, kw))
        return ses_id

    def _publish_loop(self) -> None:
        pending: list[tuple[float, str, str, dict[str, Any]]] = []
        while not self._stop.is_set() or pending or not self._q.empty():
            try:
                pending.append(self._q.get(timeout=0.05))
                while len(pending) < 1000:
                    pending.append(self._q.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            due = [p for p in pending if p[0] <= now]
            pending = [p for p in pending if p[0] > now]
            due.sort(key=lambda p: (p[1] != "Send", p[0]))  # SES emits Send at acceptance, ahead of the rest
            for i in range(0, len(due), 10):
                self._publish([ses_event(kind, ses_id=ses_id, sender=kw["sender"], to=kw["to"], subject=kw["subject"],
                                         tags=kw["tags"]) for _, kind, ses_id, kw in due[i:i + 10]])
            if self._stop.is_set() and not due and self._q.empty():
                break

    def _publish(self, events: list[dict[str, Any]]) -> None:
        try:
            resp = self.sns.publish_batch(TopicArn=self.topic_arn, PublishBatchRequestEntries=[
                {"Id": str(i), "Message": json.dumps(ev)} for i, ev in enumerate(events)])
            for failed in resp.get("Failed", []):
                log.warning("simulator publish failed", error=str(failed)[:200])
        except Exception as exc:
            log.warning("simulator publish failed", error=str(exc)[:200])

    def idle(self) -> bool:
        return self._q.empty()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
