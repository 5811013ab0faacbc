"""Plays SES event publishing, which moto does not do, and SES errors, which moto never returns.

Event publishing runs where SES runs: inside the moto server process (``local.moto`` wires
``SesEventPublisher`` into moto's SendEmail). Like a configuration set's event destination on
AWS, every message SES accepted gets real-format events (the shapes in tests/events/) put to the
destination's Firehose stream (or SNS topic): the Send event before SendEmail returns, so it
survives a crash of the caller (it is the evidence ``core.services.sending`` relies on), the later events
(Delivery, Bounce, Complaint, Open, Click) after small delays from a worker thread. Which ones
follow the SES mailbox simulator addresses and, for other addresses, the rates carried in the
event destination's name (``event_destination_name``; local/bootstrap.py creates it).

In the platform process ``SimulatingMailer`` wraps the real mailer: it records accepted sends
(tests, the drill), cuts a region off (drills) and injects SES errors (``SesFaults``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import sys
import threading
import time
from collections.abc import Callable
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


# An event destination's name carries the rates of the stack that created it, in 1/10,000
# (AWS allows 64 letters, digits, '_' and '-'). The name also carries a digest of the
# configuration set, because moto wants destination names unique per SES region, not per
# configuration set as AWS does. A name without rates (infra's "to-firehose") means ``Rates()``.
_RATES_IN_NAME = re.compile(r"-d(\d{4})-o(\d{4})-c(\d{4})-x(\d{4})$")


def event_destination_name(configuration_set: str, rates: Rates) -> str:
    digest = hashlib.sha256(configuration_set.encode()).hexdigest()[:8]
    d, o, c, x = (min(9999, max(0, round(v * 10_000)))
                  for v in (rates.delivery, rates.open, rates.click, rates.complaint))
    return f"to-firehose-{digest}-d{d:04d}-o{o:04d}-c{c:04d}-x{x:04d}"


def rates_of(destination_name: str) -> Rates:
    m = _RATES_IN_NAME.search(destination_name or "")
    if not m:
        return Rates()
    d, o, c, x = (int(g) / 10_000 for g in m.groups())
    return Rates(delivery=d, open=o, click=c, complaint=x)


def v1_event_type(name: str) -> str:
    """SES v2 / schema spelling (``RENDERING_FAILURE``) → SES v1 MatchingEventTypes (``renderingFailure``)."""
    first, *rest = name.lower().split("_")
    return first + "".join(p.title() for p in rest)


# Which MatchingEventTypes entry lets each simulated event out.
_MATCHING_TYPE = {"Send": "send", "Delivery": "delivery", "Bounce": "bounce", "BounceSuppressed": "bounce",
                  "Complaint": "complaint", "Open": "open", "Click": "click"}


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


def ses_event(kind: str, *, ses_id: str, sender: str, to: str, subject: str, tags: dict[str, str],
              configuration_set: str = "emailplatform", sent_at: str | None = None) -> dict[str, Any]:
    """One SES event notification (``Message`` of the SNS envelope) as SES publishes it. ``sent_at``:
    when SES accepted the mail (``mail.timestamp``, the same in every event of a message); now if None."""
    ts = _now()
    mail = {
        "timestamp": sent_at or ts, "source": sender, "sendingAccountId": "123456789012", "messageId": ses_id,
        "destination": [to], "headersTruncated": False,
        "headers": [{"name": "From", "value": sender}, {"name": "To", "value": to}, {"name": "Subject", "value": subject}],
        "commonHeaders": {"from": [sender], "to": [to], "messageId": ses_id, "subject": subject},
        "tags": {"ses:configuration-set": [configuration_set], "ses:source-ip": ["192.0.2.0"],
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


EVENTS_HEADER = "x-emailplatform-ses-events"  # on SendEmail answers of an endpoint that publishes SES events


class FirehoseBuffer:
    """Amazon Data Firehose in front of S3, as SES's event destination sees it: records put to a
    stream are kept and written every ``interval`` seconds as one object of the records
    concatenated (``deliver(stream ARN, records)``: moto's Firehose, which writes the object to the
    stream's bucket; S3 then notifies the events queue). AWS buffers up to 60 s or 5 MB here
    (core/schema.py SES_EVENTS_STREAM); the embedded stack keeps its statuses quick with less."""

    BILLED_STEP = 5 * 1024  # Firehose bills Direct PUT ingestion per record rounded up to 5 KB

    def __init__(self, deliver: Callable[[str, list[bytes]], Any], interval: float):
        self._deliver, self.interval = deliver, interval
        self._records: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._usage = {"records": 0, "bytes": 0, "billed_bytes": 0}

    def usage(self) -> dict[str, int]:
        """What was put so far, as Firehose bills it (``bench.cost`` prices it)."""
        with self._lock:
            return dict(self._usage)

    def put(self, stream_arn: str, record: bytes) -> None:
        with self._lock:
            self._usage["records"] += 1
            self._usage["bytes"] += len(record)
            self._usage["billed_bytes"] += -(-len(record) // self.BILLED_STEP) * self.BILLED_STEP
            self._records.setdefault(stream_arn, []).append(record)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="firehose", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        with self._lock:
            due, self._records = self._records, {}
        for arn, records in due.items():
            try:
                self._deliver(arn, records)
            except Exception as exc:  # noqa: BLE001 - Firehose retries delivery; so do we, next interval
                print(f"firehose: {len(records)} records for {arn} not delivered, retried: {exc}"[:300],
                      file=sys.stderr)
                with self._lock:
                    self._records[arn] = records + self._records.get(arn, [])

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()


class SesEventPublisher:
    """SES's configuration-set event publishing, run inside the SES endpoint's process (local.moto).

    ``accepted`` is called by SendEmail once SES accepted a message and before it answers: the
    Send event is published at once, in the request's own thread, so a crash of the caller after
    the call cannot lose it. The later events go to a worker thread that publishes the n-th of a
    message ``n × delay`` after acceptance (they are outcomes, not evidence). Publishing never
    fails a send: on AWS a destination SES cannot write to loses events too (noted on stderr).
    One recipient per message, as the platform sends: the events name the first one.
    """

    def __init__(self, publish: Callable[[str, str], Any], delay: float = 0.05):
        self._publish_to = publish  # (topic ARN, message text) → publishes, raises on failure
        self.delay = delay
        self._due: list[tuple[float, int, str, str, dict[str, Any]]] = []  # (when, seq, kind, topic, event args)
        self._seq = 0
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def accepted(self, *, ses_id: str, request: dict[str, Any], destination: dict[str, Any] | None) -> int:
        """Publish the events of one accepted SendEmail (``request``: its JSON body) to
        ``destination`` (the configuration set's event destination; None: it has none, so no
        events). Returns how many Send events were published (0 or 1)."""
        if not destination or str(destination.get("Enabled", True)).lower() == "false":
            return 0
        # an SNS topic or a Firehose stream: the publish function given knows how to reach each
        topic = ((destination.get("SNSDestination") or {}).get("TopicARN")
                 or (destination.get("KinesisFirehoseDestination") or {}).get("DeliveryStreamARN"))
        if not topic:
            return 0
        matching = set(destination.get("MatchingEventTypes") or [])
        args = _mail_args(ses_id, request)
        published, now = 0, time.monotonic()
        for i, kind in enumerate(plan_events(args["to"], ses_id, rates_of(destination.get("Name", "")))):
            if _MATCHING_TYPE[kind] not in matching:
                continue
            if kind == "Send":
                published += self._publish(topic, kind, args)
                continue
            with self._cv:
                self._seq += 1
                heapq.heappush(self._due, (now + self.delay * i, self._seq, kind, topic, args))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._later, name="ses-events", daemon=True)
                    self._thread.start()
                self._cv.notify()
        return published

    def _publish(self, topic: str, kind: str, args: dict[str, Any]) -> int:
        try:
            self._publish_to(topic, json.dumps(ses_event(kind, **args)))
            return 1
        except Exception as exc:  # noqa: BLE001 - a lost event, not a failed send
            print(f"ses events: {kind} for {args['ses_id']} not published to {topic}: {exc}"[:300],
                  file=sys.stderr)
            return 0

    def _later(self) -> None:
        while True:
            with self._cv:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cv.wait(timeout=(self._due[0][0] - time.monotonic()) if self._due else None)
                due = []
                while self._due and self._due[0][0] <= time.monotonic():
                    due.append(heapq.heappop(self._due))
            for _, _, kind, topic, args in due:
                self._publish(topic, kind, args)


def _mail_args(ses_id: str, request: dict[str, Any]) -> dict[str, Any]:
    """``ses_event`` arguments from a SendEmail request body (SES v2 JSON)."""
    dest = request.get("Destination") or {}
    to = [*dest.get("ToAddresses", []), *dest.get("CcAddresses", []), *dest.get("BccAddresses", [])]
    simple = (request.get("Content") or {}).get("Simple") or {}
    return {"ses_id": ses_id, "sender": request.get("FromEmailAddress") or "", "to": to[0] if to else "",
            "subject": (simple.get("Subject") or {}).get("Data", ""),
            "tags": {t["Name"]: t["Value"] for t in request.get("EmailTags") or []},
            "configuration_set": request.get("ConfigurationSetName") or "", "sent_at": _now()}


class SimulatingMailer:
    """The real SES adapter as the embedded stack uses it, for the embedded stack only.

    Records every accepted send (``sent``: tests and the drill count them), cuts the region's SES
    off (``cut``, drills) and fails sends on demand (``faults``/``inject``). It publishes no SES
    events: the SES endpoint does (local.moto, see the module docstring), the Send event before
    SendEmail returns. An endpoint whose answers lack ``EVENTS_HEADER`` publishes none: that is
    logged once (its in-doubt sends will never find evidence).
    """

    def __init__(self, mailer: Any):
        self.mailer = mailer
        self.sent: list[dict[str, str]] = []  # every accepted send, for tests and the drill
        # SES errors on demand (AWS returns them, moto never does): ``simulator.faults.inject(...)``
        self.faults = SesFaults(mailer.client) if hasattr(mailer, "client") else None
        self.endpoint_publishes: bool | None = None  # None until the first accepted send
        self._cut = False
        if hasattr(mailer, "client"):
            mailer.client.meta.events.register("after-call.sesv2.SendEmail", self._after_call,
                                               unique_id=f"simulator-{id(self)}")

    def inject(self, code: str, **kw: Any) -> Fault:
        """See ``SesFaults.inject``."""
        assert self.faults is not None, "the wrapped mailer has no SES client"
        return self.faults.inject(code, **kw)

    def cut(self) -> None:
        """The region's compute is gone: its SES calls fail from now on (drills)."""
        self._cut = True

    def resume(self) -> None:
        """The region's compute is back (``cut`` undone)."""
        self._cut = False

    def send(self, **kw: Any) -> str:
        if self._cut:
            raise ConnectionError("SES endpoint unreachable from a killed region")
        ses_id = self.mailer.send(**kw)
        self.sent.append({"to": kw["to"], "ses_id": ses_id, "message_id": kw["tags"].get("message_id", "")})
        return ses_id

    def _after_call(self, http_response: Any = None, parsed: Any = None, **_: Any) -> None:
        if self.endpoint_publishes is not None or not isinstance(parsed, dict) or "MessageId" not in parsed:
            return
        self.endpoint_publishes = EVENTS_HEADER in (getattr(http_response, "headers", None) or {})
        if not self.endpoint_publishes:
            log.warning("the SES endpoint publishes no SES events: no Send evidence, no outcomes",
                        endpoint=self.mailer.client.meta.endpoint_url)

    def stop(self) -> None:
        if hasattr(self.mailer, "client"):
            self.mailer.client.meta.events.unregister("after-call.sesv2.SendEmail", unique_id=f"simulator-{id(self)}")
