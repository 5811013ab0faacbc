"""The SES-events Lambda handler on SQS-shaped records: precedence, replays, suppression."""

from datetime import timedelta

from core.domain.models import parse_iso
from core.domain.statuses import MessageStatus
from handlers import ses_events
from handlers.context import LocalContext, use
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import RecordingMailer, batch_sender, queued_campaign, recipients


def sqs_event(bodies):
    return {"Records": [{"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": b, "attributes": {},
                         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                         "eventSourceARN": "arn:aws:sqs:eu-west-1:1:q", "awsRegion": "eu-west-1"}
                        for i, b in enumerate(bodies)]}


def sent_campaign(deps, n=3):
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(n))
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    return tx_id, batch, mailer.sent


def ev(name, s, **kw):
    return sns_envelope(ses_event_for(name, tenant="tenant-a", message_id=s["tags"]["message_id"],
                                      recipient=s["to"], ses_id=s["ses_id"], **kw))


def status_of(deps, batch, s):
    return deps.store.get_message(batch.batch_id, s["tags"]["message_id"]).status


def test_out_of_order_and_duplicate_events_never_move_a_message_backwards(deps, tenant):
    use(deps)
    try:
        _, batch, sent = sent_campaign(deps)
        s = sent[0]
        bodies = [ev("ses_click.json", s), ev("ses_open.json", s), ev("ses_delivery.json", s), ev("ses_send.json", s),
                  ev("ses_click.json", s), ev("ses_delivery.json", s)]
        resp = ses_events.handler(sqs_event(bodies), LocalContext())
        assert resp["batchItemFailures"] == []
        msg = deps.store.get_message(batch.batch_id, s["tags"]["message_id"])
        assert msg.status == MessageStatus.CLICKED
        # each kept once, in the order the events happened (one SQS batch is applied in time order)
        assert [e["type"] for e in msg.events] == ["Send", "Delivery", "Open", "Click"]
        item = deps.store.table.get({"PK": f"BATCH#{batch.batch_id}", "SK": f"MESSAGE#{s['tags']['message_id']}"})
        assert item["ses_message_id"] == s["ses_id"] and item["ts_delivered"]
    finally:
        use(None)


def test_hard_bounce_and_complaint_suppress_the_address(deps, tenant):
    use(deps)
    try:
        _, batch, sent = sent_campaign(deps)
        ses_events.handler(sqs_event([ev("ses_bounce.json", sent[0]), ev("ses_complaint.json", sent[1])]),
                           LocalContext())
        assert status_of(deps, batch, sent[0]) == MessageStatus.BOUNCED
        assert status_of(deps, batch, sent[1]) == MessageStatus.COMPLAINED
        assert deps.store.get_suppression("tenant-a", sent[0]["to"])["reason"] == "hard_bounce"
        assert deps.store.get_suppression("tenant-a", sent[1]["to"])["reason"] == "complaint"
        assert deps.store.get_suppression("tenant-a", sent[2]["to"]) is None
    finally:
        use(None)


def test_malformed_and_foreign_records_are_dropped_not_retried(deps, tenant):
    use(deps)
    try:
        foreign = ses_event_for("ses_delivery.json", tenant="tenant-a", message_id="tx_nope-b00001-00001")
        resp = ses_events.handler(sqs_event(["{not json", '{"Message": "{}"}', sns_envelope(foreign)]),
                                  LocalContext())
        assert resp["batchItemFailures"] == []
    finally:
        use(None)


def test_counts_follow_events_and_the_campaign_completes(deps, tenant):
    from tests.helpers import leader

    tx_id, batch, sent = sent_campaign(deps, n=4)
    use(deps)
    try:
        bodies = [ev("ses_send.json", s) for s in sent]
        bodies += [ev("ses_delivery.json", sent[0]), ev("ses_open.json", sent[0]), ev("ses_bounce.json", sent[1]),
                   ev("ses_delivery.json", sent[2]), ev("ses_complaint.json", sent[2]), ev("ses_reject.json", sent[3])]
        ses_events.handler(sqs_event(bodies), LocalContext())
    finally:
        use(None)
    c = leader(deps)
    c.advance_pass()
    c.advance_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status.value == "COMPLETED"
    s = tx.live_summary()  # live counts added by the events handler: no recount of messages
    assert (s.sent, s.delivered, s.opened, s.bounced, s.complained, s.rejected) == (4, 2, 1, 1, 1, 1)
    assert tx.counts["final"] == 4 and tx.counts["hard_bounced"] == 1
    statuses = [cb.payload["status"] for cb in deps.store.callbacks(tx_id)]
    assert statuses == [] or statuses[-1] == "COMPLETED"


def test_the_handler_marks_how_far_send_evidence_has_been_recorded(deps, tenant, clock):
    use(deps)
    try:
        _, batch, sent = sent_campaign(deps, n=2)
        newer, older = "2026-11-27T10:00:05.000Z", "2026-11-27T10:00:01.000Z"
        ses_events.handler(sqs_event([ev("ses_send.json", sent[0], sent_at=newer)]), LocalContext())
        assert deps.store.send_evidence(deps.settings.region) == (parse_iso(newer), clock.now())
        clock.advance(10)
        ses_events.handler(sqs_event([ev("ses_send.json", sent[1], sent_at=older)]), LocalContext())
        assert deps.store.send_evidence(deps.settings.region) == (parse_iso(newer), clock.now() - timedelta(seconds=10))
    finally:
        use(None)
