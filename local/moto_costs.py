"""What one call costs the embedded AWS: patches of the moto server's per-request work.

moto is built for unit tests; served to a whole platform it spent most of its CPU on work that
has nothing to do with the call (measured with py-spy during a 3,000-recipient demo, and by
``bench/embedded_aws.py``):

* **DynamoDB, DynamoDB Streams and SQS answers** went through moto's shape-driven response serializer: 4 ms of the
  server's CPU per GetItem, 65 ms per Query of 100 items, a quarter of the server's CPU for SQS
  receives in a campaign. moto's results for the data operations are already the wire format
  (``DynamoResult`` converts every value to ``{"S": …}``, SQS builds plain dicts), so those answer
  with ``json.dumps`` of the result. ``EMAILPLATFORM_MOTO_CHECK_ANSWERS=1`` serializes each answer
  both ways and fails the call when they differ (a test runs with it).
* **SQS ReceiveMessage** asked, per message received, for *all* the queue's attributes (which count
  every message in the queue) to read its retention period: a receive from a backed-up queue cost
  what the queue held, per message.
* **Finding the action** listed the handler class's methods with ``inspect.getmembers`` per request.
* **SQS SendMessage and GetQueueAttributes** computed a queue's attributes, which count all its
  messages, several times per call (per message sent, per attribute asked for).
* **SNS to SQS** built and signed a new X.509 certificate for every notification (and kept each
  one's PEM for ever). One certificate per subscription signs them all, as on AWS, where the
  certificate changes rarely.
"""

from __future__ import annotations

import base64
import calendar
import functools
import json
import os
from datetime import datetime
from typing import Any

# The operations whose answers are moto's result as it is, as JSON: item data, keys, counts and
# consumed capacity; message ids, bodies and receipt handles. No timestamps or shapes the
# serializer would convert (GetQueueAttributes, say, turns numbers into strings: not here).
JSON_OPERATIONS = {
    "dynamodb": frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem",
                           "BatchWriteItem", "TransactWriteItems", "TransactGetItems", "BatchExecuteStatement",
                           "ExecuteStatement"}),
    "sqs": frozenset({"ReceiveMessage", "SendMessage", "SendMessageBatch", "DeleteMessage", "DeleteMessageBatch",
                      "ChangeMessageVisibility", "ChangeMessageVisibilityBatch", "GetQueueUrl"}),
    # stream records: item images, and a creation time (epoch seconds, milliseconds kept)
    "dynamodbstreams": frozenset({"GetRecords"}),
}


def _blob(value: Any) -> Any:
    """Binary attribute values (``B``, ``BS``) are base64 on the wire; times are epoch seconds."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        seconds = calendar.timegm(value.timetuple())
        return seconds + (value.microsecond // 1000) / 1000.0 if value.microsecond else seconds
    raise TypeError(f"{type(value).__name__} is not part of a DynamoDB answer")


def _units(capacity: Any) -> Any:
    """Capacity units are doubles on the wire (``2.0``): moto's results hold some as ints."""
    if isinstance(capacity, list):
        return [_units(c) for c in capacity]
    if isinstance(capacity, dict):
        return {k: float(v) if k.endswith("CapacityUnits") and isinstance(v, int) else _units(v)
                for k, v in capacity.items()}
    return capacity


def patch_json_answers() -> None:
    """Those operations answer with ``json.dumps`` of moto's result (idempotent)."""
    from moto.core.responses import ActionResult, get_service_model
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
    from moto.sqs.responses import SQSResponse

    check = os.environ.get("EMAILPLATFORM_MOTO_CHECK_ANSWERS") == "1"

    @functools.cache
    def members(service: str, action: str) -> frozenset[str]:
        """What the operation's answer may hold: moto's results carry a few extra keys (a legacy
        ``ConsumedCapacityUnits``) that its serializer drops, as AWS never sends them."""
        return frozenset(get_service_model(service).operation_model(action).output_shape.members)

    def patch(handler: Any, service: str) -> None:
        if getattr(handler, "_emailplatform_answers_patched", False):
            return
        original, operations = handler.serialized, JSON_OPERATIONS[service]

        def serialized(self: Any, action_result: ActionResult) -> Any:
            result, action = action_result.result, self._get_action()
            if (isinstance(result, Exception) or not isinstance(result, dict) or action not in operations
                    or self.determine_response_protocol(get_service_model(service)) != "json"):
                return original(self, action_result)
            answer = {k: v for k, v in result.items() if k in members(service, action)}
            if "ConsumedCapacity" in answer:
                answer["ConsumedCapacity"] = _units(answer["ConsumedCapacity"])
            body = json.dumps(answer, default=_blob)
            if check:  # compared as written: 2 and 2.0 are one number to Python, not to a JSON parser
                status, headers, expected = original(self, action_result)
                if json.dumps(json.loads(expected), sort_keys=True) != json.dumps(json.loads(body), sort_keys=True):
                    raise AssertionError(f"{service} {action}: moto would answer {expected!r}, the fast path {body}")
                return status, headers, body
            return 200, {"Content-Type": "application/x-amz-json-1.0"}, body

        handler.serialized = serialized
        handler._emailplatform_answers_patched = True

    patch(DynamoHandler, "dynamodb")
    patch(SQSResponse, "sqs")
    patch(DynamoDBStreamsHandler, "dynamodbstreams")


def patch_sqs_retention() -> None:
    """A received message's retention is read from its queue, not from all its attributes."""
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    if getattr(SQSBackend, "_emailplatform_retention_patched", False):
        return

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        period = int(self.get_queue(queue_name).message_retention_period)
        return period + message.sent_timestamp / 1000 > unix_time()

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
    SQSBackend._emailplatform_retention_patched = True  # type: ignore[attr-defined]


def patch_sqs_attributes() -> None:
    """A queue's attributes count its messages (three passes over all of them) each time they are
    read. ``SendMessage`` read them for one flag (``ContentBasedDeduplication``) two or three times
    per message, ``GetQueueAttributes`` twice per attribute asked for. Here a send reads them
    without the counts, and one GetQueueAttributes call counts once."""
    import threading

    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.models import Queue, SQSBackend

    if getattr(Queue, "_emailplatform_attributes_patched", False):
        return
    counts = {"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed",
              "ApproximateNumberOfMessagesNotVisible"}
    call = threading.local()  # per request thread: which read this is

    def compute(self: Any, with_counts: bool) -> dict[str, Any]:  # moto's ``Queue.attributes``, counts optional
        names = [a for a in self.BASE_ATTRIBUTES if with_counts or a not in counts]
        if self.fifo_queue:
            names += self.FIFO_ATTRIBUTES
        if self.kms_master_key_id:
            names += self.KMS_ATTRIBUTES
        result: dict[str, Any] = {a: getattr(self, camelcase_to_underscores(a)) for a in names}
        if self.policy:
            result["Policy"] = self.policy
        if self.redrive_policy:
            result["RedrivePolicy"] = json.dumps(self.redrive_policy)
        return {k: str(v).lower() if isinstance(v, bool) else v for k, v in result.items()}

    def attributes(self: Any) -> dict[str, Any]:
        memo = getattr(call, "memo", None)
        if memo is None:
            return compute(self, not getattr(call, "sending", False))
        if id(self) not in memo:
            memo[id(self)] = compute(self, True)
        return dict(memo[id(self)])

    def within(flag: str, value: Any, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            setattr(call, flag, value())  # a new value per call: one call's memo is never another's
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(call, flag, None)
        return wrapped

    Queue.attributes = property(attributes)  # type: ignore[assignment, method-assign]
    SQSBackend.send_message = within("sending", lambda: True, SQSBackend.send_message)  # type: ignore[method-assign]
    SQSBackend.get_queue_attributes = within("memo", dict, SQSBackend.get_queue_attributes)  # type: ignore[method-assign]
    Queue._emailplatform_attributes_patched = True  # type: ignore[attr-defined]


def patch_sns_signing() -> None:
    """One signing certificate per subscription instead of one per notification; each message is
    still signed (SignatureVersion 2, SHA256 with the subscription's key), as moto signs it."""
    import base64
    import threading
    from datetime import timedelta

    import cryptography.x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.x509 import Name, NameAttribute
    from cryptography.x509.oid import NameOID
    from moto.core.utils import iso_8601_datetime_with_milliseconds, utcnow
    from moto.sns import models

    if getattr(models.Subscription, "_emailplatform_signing_patched", False):
        return
    lock = threading.Lock()

    def signing(sub: Any) -> tuple[Any, str]:
        """The subscription's key and the URL of its certificate, made and published (its PEM)
        once. The key is kept with it: moto's ``private_key`` is an LRU cache shared by all
        subscriptions (128 entries), so a later call may make a new key."""
        with lock:
            kept = sub.__dict__.get("_emailplatform_signing")
            if kept is None:
                key = sub.private_key()
                cert = (cryptography.x509.CertificateBuilder()
                        .subject_name(Name([NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")]))
                        .issuer_name(Name([NameAttribute(NameOID.COUNTRY_NAME, "US"),
                                           NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
                                           NameAttribute(NameOID.COMMON_NAME, "Amazon RSA 2048 M01")]))
                        .public_key(key.public_key()).serial_number(cryptography.x509.random_serial_number())
                        .not_valid_before(utcnow()).not_valid_after(utcnow() + timedelta(days=365))
                        .sign(key, hashes.SHA256()))
                name = f"SimpleNotificationService-{models.mock_random.uuid4().hex}.pem"
                region = sub.topic.sns_backend.region_name
                keys = models.sns_backends[models.DEFAULT_ACCOUNT_ID][region]._message_public_keys
                keys[name] = cert.public_bytes(serialization.Encoding.PEM)
                kept = sub.__dict__["_emailplatform_signing"] = (key, f"https://sns.{region}.amazonaws.com/{name}")
            return kept

    def get_post_data(self: Any, message: str, message_id: str, subject: str | None,
                      message_attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        key, url = signing(self)
        timestamp = iso_8601_datetime_with_milliseconds()
        signed = (f"Message\n{message}\nMessageId\n{message_id}\nTimestamp\n{timestamp}\n"
                  f"TopicArn\n{self.topic.arn}\nType\nNotification\n")
        signature = key.sign(signed.encode("UTF-8"), padding.PKCS1v15(), hashes.SHA256())
        data: dict[str, Any] = {
            "Type": "Notification", "MessageId": message_id, "TopicArn": self.topic.arn, "Message": message,
            "Timestamp": timestamp, "SignatureVersion": "2", "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": url,
            "UnsubscribeURL": f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={self.arn}",
        }
        if subject:
            data["Subject"] = subject
        if message_attributes:
            data["MessageAttributes"] = message_attributes
        return data

    models.Subscription.get_post_data = get_post_data  # type: ignore[method-assign]
    models.Subscription._emailplatform_signing_patched = True  # type: ignore[attr-defined]


def patch_action_lookup() -> None:
    """moto lists a handler class's methods (``inspect.getmembers``) on every request to find the
    action's; a class's methods are fixed once the server serves (every patch runs before)."""
    from moto.core import responses

    if getattr(responses, "_emailplatform_lookup_patched", False):
        return
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)  # type: ignore[assignment]
    responses._emailplatform_lookup_patched = True  # type: ignore[attr-defined]


def patch_expression_parsing() -> None:
    """An expression's text is parsed once, not twice per call. UpdateItem parsed its update
    expression twice (the handler checks the placeholders, the backend applies it) and lexed its
    condition twice: a fifth of the server's CPU in a campaign, most of it for the same dozen
    texts. Parsed update expressions are kept by text: moto's validator works on a deep copy of
    the tree, so the kept one is never changed. A condition's tokens are kept by text (they are
    immutable tuples) and handed out as a fresh queue, which the parser consumes."""
    from collections import deque

    from moto.dynamodb.comparisons import ConditionExpressionParser
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    if getattr(UpdateExpressionParser, "_emailplatform_cached", False):
        return
    make = UpdateExpressionParser.make.__func__  # type: ignore[attr-defined]
    lex = ConditionExpressionParser._lex_condition_expression

    @functools.lru_cache(maxsize=4096)
    def parsed(expression: str) -> Any:
        return make(UpdateExpressionParser, expression)

    @functools.lru_cache(maxsize=4096)
    def tokens(expression: str) -> tuple[Any, ...]:
        return tuple(lex(ConditionExpressionParser(expression, None, None)))

    def cached_make(cls: Any, expression_str: str) -> Any:
        return parsed(expression_str) if cls is UpdateExpressionParser else make(cls, expression_str)

    def cached_lex(self: Any) -> deque[Any]:
        return deque(tokens(self.condition_expression)) if self.condition_expression else lex(self)

    UpdateExpressionParser.make = classmethod(cached_make)  # type: ignore[assignment]
    ConditionExpressionParser._lex_condition_expression = cached_lex  # type: ignore[method-assign]
    UpdateExpressionParser._emailplatform_cached = True  # type: ignore[attr-defined]


def patch_costs() -> None:
    patch_expression_parsing()
    patch_action_lookup()
    patch_json_answers()
    patch_sqs_retention()
    patch_sqs_attributes()
    patch_sns_signing()
