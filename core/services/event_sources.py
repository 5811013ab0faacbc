"""Where the SES events of one SQS record come from: the record itself (an SNS notification of one
event), or the objects an S3 notification names (a Firehose delivery of many events).

SES publishes through its configuration set's event destination. Through SNS each event is its own
SQS record (a notification, $0.50 per million); through Amazon Data Firehose the events of a
buffering interval land in one S3 object, and S3 notifies the queue of it: one record for thousands
of events, and the events of one message in one interval meet in one invocation, where they make
one write. Both kinds of record are read, so a queue still holding SNS records while the
destination changes loses nothing.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from core.domain.errors import NotFound
from core.observability import log
from core.services.ports import BlobStore

# A Firehose object holds at most its buffering size (≤ 128 MiB on AWS; infra sets far less).
MAX_OBJECT_BYTES = 64 * 1024 * 1024
_decoder = json.JSONDecoder()


def event_bodies(body: str, blobs: BlobStore, *, max_bytes: int = MAX_OBJECT_BYTES) -> list[str]:
    """The SES events one SQS record carries, each as the JSON text ``parse_sns_envelope`` reads.

    An S3 notification yields every event of the objects it names (read whole; raises what the
    read raises, so the record is retried); S3's ``s3:TestEvent`` yields none; anything else is
    one event (an SNS notification, or malformed: the parser says which)."""
    objects = s3_objects(body)
    if objects is None:
        return [body]
    events: list[str] = []
    for bucket, key in objects:
        try:
            events += split_events(blobs.read_bytes(bucket, key, max_bytes))
        except NotFound:  # recorded and deleted by an earlier delivery of this notification
            continue
    return events


def objects_recorded(body: str, blobs: BlobStore) -> None:
    """Every event of this record is recorded (or malformed: never recordable): delete the objects
    it named, so the events bucket holds only what is in flight (addresses included: an erasure
    has nothing to find there). A delete that fails is left to the bucket's expiry; a later
    delivery of the notification finds the object gone and has nothing to do."""
    for bucket, key in s3_objects(body) or []:
        try:
            blobs.delete(bucket, key)
        except Exception as exc:  # noqa: BLE001 - the lifecycle rule removes it in days
            log.warning("ses events object not deleted", bucket=bucket, key=key, error=str(exc)[:200])


def s3_objects(body: str) -> list[tuple[str, str]] | None:
    """(bucket, key) of each object an S3 event notification names; None when ``body`` is no
    S3 notification. Keys arrive URL-encoded (a space as ``+``)."""
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get("Event") == "s3:TestEvent" and message.get("Service") == "Amazon S3":
        return []  # sent once when the notification is configured
    records = message.get("Records")
    if not isinstance(records, list) or not records or not all(_is_s3_record(r) for r in records):
        return None
    return [(r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"])) for r in records
            if str(r.get("eventName", "")).startswith("ObjectCreated:")]


def _is_s3_record(record: Any) -> bool:
    return (isinstance(record, dict) and record.get("eventSource") == "aws:s3"
            and isinstance((record.get("s3") or {}).get("bucket"), dict)
            and isinstance((record.get("s3") or {}).get("object"), dict))


def split_events(data: bytes) -> list[str]:
    """The JSON values of a Firehose object, each event's own text: Firehose concatenates the
    records SES puts (one event each, newline-terminated). A stretch that is not JSON, up to the
    next line, is kept as one malformed text (counted and dropped) and reading goes on after it."""
    text = data.decode("utf-8", errors="replace")
    events: list[str] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return events
        try:
            _, stop = _decoder.raw_decode(text, pos)
        except ValueError:
            stop = text.find("\n", pos)
            stop = end if stop < 0 else stop
        events.append(text[pos:stop])
        pos = stop
