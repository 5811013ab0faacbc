"""The SES-events Lambda on S3 notifications of Firehose objects (SES → Firehose → S3 → SQS):
every event of an object is recorded in one invocation, an object that cannot be read is retried,
S3's test event is ignored, and SNS notifications still in the queue are read as before."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest
from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from core import schema
from core.domain.errors import NotFound
from core.domain.statuses import MessageStatus
from core.services.event_sources import split_events
from core.services.events import SendEvidenceMark
from handlers import ses_events
from handlers.context import LocalContext, use
from tests.conftest import ses_event_for
from tests.integration.test_ses_events import ev, sent_campaign, sqs_event


def _event(name, s):
    return ses_event_for(name, tenant="tenant-a", message_id=s["tags"]["message_id"], recipient=s["to"],
                         ses_id=s["ses_id"])


def _delivered(deps, key: str, events: list[dict]) -> str:
    """Put ``events`` as Firehose writes them (one JSON record each, newline-terminated) and return
    the S3 notification of that object, as the events queue receives it."""
    bucket = deps.settings.bucket(schema.SES_EVENTS_STREAM.bucket)
    deps.blobs.put(bucket, key, b"".join(json.dumps(e).encode() + b"\n" for e in events))
    return _notification(bucket, key)


def _notification(bucket: str, key: str) -> str:
    return json.dumps({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
                                    "eventName": "ObjectCreated:Put",
                                    "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key), "size": 1}}}]})


def test_every_event_of_a_firehose_object_is_recorded_with_one_write_per_message(deps, tenant):
    use(deps)
    try:
        tx_id, batch, sent = sent_campaign(deps, n=3)
        body = _delivered(deps, "events/2026/12/03/14/stream 1", [
            _event(kind, s) for s in sent for kind in ("ses_send.json", "ses_delivery.json")])
        deps.counter.reset()

        resp = ses_events.handler(sqs_event([body]), LocalContext())

        assert resp["batchItemFailures"] == []
        assert {deps.store.get_message(batch.batch_id, s["tags"]["message_id"]).status for s in sent} == \
            {MessageStatus.DELIVERED}
        assert deps.counter.component_items_written["ses_events"] == 3 + 2  # + counts, evidence mark
        assert deps.store.get_transaction(tx_id).counts == {"sent": 3, "delivered": 3, "final": 3}
    finally:
        use(None)


def test_a_recorded_object_is_deleted_and_its_notification_again_finds_nothing_to_do(deps, tenant):
    """The events bucket holds only what is in flight (addresses included): an object goes once
    every event in it is recorded; a second delivery of its notification is no failure."""
    use(deps)
    try:
        _, batch, sent = sent_campaign(deps, n=1)
        key = "events/2026/12/03/14/stream 2"
        body = _delivered(deps, key, [_event("ses_send.json", sent[0])])

        assert ses_events.handler(sqs_event([body]), LocalContext())["batchItemFailures"] == []
        with pytest.raises(NotFound):
            deps.blobs.size(deps.settings.bucket(schema.SES_EVENTS_STREAM.bucket), key)
        assert ses_events.handler(sqs_event([body]), LocalContext())["batchItemFailures"] == []
        assert deps.store.get_message(batch.batch_id, sent[0]["tags"]["message_id"]).status == MessageStatus.SENT
    finally:
        use(None)


def test_an_object_that_cannot_be_read_is_kept_and_retried_and_the_other_records_stand(deps, tenant, monkeypatch):
    use(deps)
    try:
        _, batch, sent = sent_campaign(deps, n=2)
        key = "events/2026/12/03/14/stream 3"
        body = _delivered(deps, key, [_event("ses_send.json", sent[0])])
        test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})

        def denied(bucket, k, max_bytes):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "kms key disabled"}}, "GetObject")

        monkeypatch.setattr(deps.blobs, "read_bytes", denied)
        resp = ses_events.handler(sqs_event([body, test_event, ev("ses_send.json", sent[1])]), LocalContext())

        assert resp["batchItemFailures"] == [{"itemIdentifier": "m0"}]  # S3's test event is no failure
        assert deps.store.get_message(batch.batch_id, sent[1]["tags"]["message_id"]).status == MessageStatus.SENT
        assert deps.blobs.size(deps.settings.bucket(schema.SES_EVENTS_STREAM.bucket), key) > 0  # kept for the retry
    finally:
        use(None)


def test_a_firehose_object_is_split_into_its_events_whatever_separates_them():
    one, two = {"eventType": "Send", "a": "x\ny"}, {"eventType": "Delivery"}
    for data in (json.dumps(one).encode() + b"\n" + json.dumps(two).encode() + b"\n",
                 json.dumps(one).encode() + json.dumps(two).encode(), b"\n\n" + json.dumps(one).encode()):
        assert [json.loads(e) for e in split_events(data)] in ([one, two], [one])
    # a broken tail is one malformed text (dropped by the parser), not a lost object
    assert split_events(json.dumps(one).encode() + b"\n{broken") == [json.dumps(one), "{broken"]
    # a broken line in the middle is one malformed text too: the events after it are read
    assert split_events(json.dumps(one).encode() + b'\n{"eventType": "Send", "n": 2\n' + json.dumps(two).encode()
                        + b"\n") == [json.dumps(one), '{"eventType": "Send", "n": 2', json.dumps(two)]


def test_an_object_goes_only_once_its_counts_and_evidence_are_written(deps, tenant, monkeypatch):
    """A failed count addition fails the batch with its object still there: the retry (in another
    sandbox) records its events again, as replays, writes the Send-evidence mark, then deletes the
    object. (The replays add no count: the campaign's final recount restores it.)"""
    use(deps)
    try:
        _, batch, sent = sent_campaign(deps, n=1)
        key = "events/2026/12/03/14/stream 4"
        body = _delivered(deps, key, [_event("ses_send.json", sent[0]), _event("ses_delivery.json", sent[0])])
        add_counts = deps.store.add_counts

        def throttled(*args, **kwargs):
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                              "UpdateItem")

        monkeypatch.setattr(deps.store, "add_counts", throttled)
        with pytest.raises(ClientError):
            ses_events.handler(sqs_event([body]), LocalContext())
        bucket = deps.settings.bucket(schema.SES_EVENTS_STREAM.bucket)
        assert deps.blobs.size(bucket, key) > 0  # kept for the retry
        assert deps.store.send_evidence(deps.settings.region) is None
        monkeypatch.setattr(deps.store, "add_counts", add_counts)
        monkeypatch.setattr(deps, "evidence", SendEvidenceMark(deps.store, deps.clock, deps.settings.region))

        assert ses_events.handler(sqs_event([body]), LocalContext())["batchItemFailures"] == []
        assert deps.store.get_message(batch.batch_id, sent[0]["tags"]["message_id"]).status == MessageStatus.DELIVERED
        assert deps.store.send_evidence(deps.settings.region) is not None
        with pytest.raises(NotFound):
            deps.blobs.size(bucket, key)
    finally:
        use(None)


def test_an_object_with_a_malformed_event_has_its_other_events_recorded_and_goes(deps, tenant):
    """A malformed event can never be recorded: its object (other recipients' events too) is not
    kept; the log says which object held it."""
    use(deps)
    try:
        _, batch, sent = sent_campaign(deps, n=2)
        bucket, key = deps.settings.bucket(schema.SES_EVENTS_STREAM.bucket), "events/2026/12/03/14/stream 5"
        deps.blobs.put(bucket, key, json.dumps(_event("ses_send.json", sent[0])).encode() + b'\n{"eventType": "Se\n'
                       + json.dumps(_event("ses_send.json", sent[1])).encode() + b"\n")

        with capture_logs() as logged:
            assert ses_events.handler(sqs_event([_notification(bucket, key)]), LocalContext())["batchItemFailures"] == []
        assert {deps.store.get_message(batch.batch_id, s["tags"]["message_id"]).status for s in sent} == \
            {MessageStatus.SENT}
        with pytest.raises(NotFound):
            deps.blobs.size(bucket, key)
        (said,) = [e for e in logged if e["event"] == "ses events object held malformed events"]
        assert said["objects"] == [(bucket, key)] and said["malformed"] == 1
    finally:
        use(None)
