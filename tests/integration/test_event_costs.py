"""What SES events cost in DynamoDB (issue 15: ≤ 1 write per event), and that the cheaper path
keeps every invariant: exact counts under concurrent writers, replays, suppression after a crash."""

from __future__ import annotations

import pytest

from core.adapters.aws import item_bytes
from core.adapters.dynamodb import Update, serialize
from core.domain.statuses import MessageStatus
from core.services.events import record_ses_events
from handlers import ses_events
from handlers.context import LocalContext, use
from tests.integration.test_ses_events import ev, sent_campaign, sqs_event


def _handle(deps, bodies):
    use(deps)
    try:
        return ses_events.handler(sqs_event(bodies), LocalContext())
    finally:
        use(None)


def test_one_sqs_batch_costs_one_read_and_at_most_one_write_per_message(deps, tenant):
    # GIVEN three sent messages and a batch of their Send, Delivery and Open events, some twice
    _, batch, sent = sent_campaign(deps, n=3)
    bodies = [ev(kind, s) for s in sent for kind in ("ses_send.json", "ses_delivery.json")]
    bodies += [ev("ses_open.json", sent[0]), ev("ses_delivery.json", sent[1])]  # an open; a redelivery
    deps.counter.reset()

    assert _handle(deps, bodies)["batchItemFailures"] == []

    # THEN the messages were read once and each written once, whatever its number of events: three
    # conditional writes in one request (the events Lambda's CPU is mostly per request)
    assert deps.counter.component_calls[("ses_events", "dynamodb.BatchGetItem")] == 1
    assert deps.counter.component_calls[("ses_events", "dynamodb.BatchExecuteStatement")] == 1
    assert deps.counter.items_written == 3 + 2
    # besides: one addition to the campaign's counts and one to the Send-evidence mark
    assert deps.counter.component_calls[("ses_events", "dynamodb.UpdateItem")] == 2
    statuses = [deps.store.get_message(batch.batch_id, s["tags"]["message_id"]).status for s in sent]
    assert statuses == [MessageStatus.OPENED, MessageStatus.DELIVERED, MessageStatus.DELIVERED]


def test_a_replayed_batch_writes_nothing_and_adds_no_count(deps, tenant):
    tx_id, _, sent = sent_campaign(deps, n=2)
    bodies = [ev(kind, s) for s in sent for kind in ("ses_send.json", "ses_delivery.json")]
    _handle(deps, bodies)
    counts = deps.store.get_transaction(tx_id).counts
    deps.counter.reset()

    _handle(deps, bodies)  # SQS delivers the batch again (a visibility timeout ran out)

    writes = [op for (comp, op) in deps.counter.component_calls if comp == "ses_events" and "Item" in op
              and op != "dynamodb.BatchGetItem"]
    assert writes == [] and deps.counter.write_units == 0
    assert deps.store.get_transaction(tx_id).counts == counts == {"sent": 2, "delivered": 2, "final": 2}


def test_a_message_item_written_by_events_stays_under_one_kilobyte(deps, tenant):
    """A write is billed per KB of the item: no IP address, user agent or per-event id list on it."""
    _, batch, sent = sent_campaign(deps, n=1)
    s = sent[0]
    _handle(deps, [ev(k, s) for k in ("ses_send.json", "ses_delivery.json", "ses_open.json", "ses_click.json")])
    for i in range(20):  # many more opens and clicks, each in its own batch
        _handle(deps, [ev("ses_open.json", s, sent_at=f"2026-01-01T10:{i:02d}:00.000Z")])
    item = deps.store.table.get({"PK": f"BATCH#{batch.batch_id}", "SK": f"MESSAGE#{s['tags']['message_id']}"})
    assert item["status"] == "CLICKED" and item_bytes(serialize(item)) < 1024


def test_a_write_that_loses_to_a_concurrent_one_applies_its_events_again_and_counts_stay_exact(deps, tenant):
    # GIVEN a message whose Delivery event is recorded by another invocation between our read and write
    tx_id, batch, sent = sent_campaign(deps, n=1)
    s = sent[0]
    real = deps.store

    class Racing:
        raced = False

        def __getattr__(self, name):
            return getattr(real, name)

        def save_trackings(self, writes):
            if not self.raced:
                self.raced = True
                record_ses_events([ev("ses_delivery.json", s)], store=real)  # the other invocation
            return real.save_trackings(writes)

    # WHEN our invocation records the Send and an Open of the same message
    outcomes = record_ses_events([ev("ses_send.json", s), ev("ses_open.json", s)], store=Racing())

    # THEN both are applied on top of the other's write (the Send is late now), each count added once
    assert outcomes == ["kept", "applied"]
    msg = deps.store.get_message(batch.batch_id, s["tags"]["message_id"])
    assert msg.status == MessageStatus.OPENED and [e["type"] for e in msg.events] == ["Delivery", "Send", "Open"]
    assert deps.store.get_transaction(tx_id).counts == {"sent": 1, "delivered": 1, "opened": 1, "final": 1}


def test_a_hard_bounce_whose_record_failed_half_way_still_suppresses_the_address_on_retry(deps, tenant):
    """SQS redelivers a record whose handling raised; the retried bounce must still suppress."""
    _, batch, sent = sent_campaign(deps, n=1)
    s = sent[0]
    real = deps.store

    class FlakySuppressions:
        failed = False

        def __getattr__(self, name):
            return getattr(real, name)

        def suppress(self, *a, **kw):
            if not self.failed:
                self.failed = True
                raise ConnectionError("DynamoDB went away")
            return real.suppress(*a, **kw)

    flaky = FlakySuppressions()
    body = ev("ses_bounce.json", s)
    (first,) = record_ses_events([body], store=flaky)
    assert isinstance(first, ConnectionError)  # the record goes back to SQS
    assert record_ses_events([body], store=flaky) == ["applied"]
    assert deps.store.get_suppression("tenant-a", s["to"])["reason"] == "hard_bounce"
    assert deps.store.get_message(batch.batch_id, s["tags"]["message_id"]).status == MessageStatus.BOUNCED


def test_an_erased_message_takes_no_event(deps, tenant):
    _, batch, sent = sent_campaign(deps, n=1)
    s = sent[0]
    deps.store.table.update(Update({"PK": f"BATCH#{batch.batch_id}", "SK": f"MESSAGE#{s['tags']['message_id']}"},
                                   set={"erased": True}))
    assert record_ses_events([ev("ses_complaint.json", s)], store=deps.store) == ["duplicate"]
    assert deps.store.get_suppression("tenant-a", s["to"]) is None
    assert deps.store.get_message(batch.batch_id, s["tags"]["message_id"]).status != MessageStatus.COMPLAINED


@pytest.mark.parametrize(("returns", "expected"), [("NONE", 2), ("ALL_OLD", 2), ("ALL_NEW", 2)])
def test_an_update_of_an_item_over_one_kilobyte_is_billed_two_write_units(deps, returns, expected):
    """Write units are sized from the item (before or after, the larger), not floored at one."""
    key = {"PK": "BATCH#b", "SK": "MESSAGE#m"}
    deps.store.table.put({**key, "placeholder_data": {"bio": "x" * 1100}, "status": "SENT"})
    deps.store.table.get(key)  # a read, as the events path makes one before its write
    deps.counter.reset()
    deps.store.table.update(Update(key, set={"status": "DELIVERED"}), returns=returns)
    assert deps.counter.write_units == expected


class _Analytics:
    """An analytics store that records its bulk calls (OpenSearch: one signed HTTP request each)."""

    def __init__(self, fail: bool = False):
        self.bulks: list[list[dict]] = []
        self.fail = fail

    def index_many(self, docs):
        self.bulks.append(list(docs))
        if self.fail:
            raise ConnectionError("analytics domain unreachable")


def test_one_sqs_batch_is_indexed_in_one_analytics_request(deps, tenant):
    _, _, sent = sent_campaign(deps, n=3)
    bodies = [ev(kind, s) for s in sent for kind in ("ses_send.json", "ses_delivery.json")]
    analytics = _Analytics()

    outcomes = record_ses_events(bodies, store=deps.store, analytics=analytics)

    assert outcomes == ["applied"] * 6
    assert len(analytics.bulks) == 1 and len(analytics.bulks[0]) == 6
    assert {d["event_type"] for d in analytics.bulks[0]} == {"Send", "Delivery"}


def test_an_analytics_outage_does_not_hold_up_status_updates(deps, tenant):
    _, batch, sent = sent_campaign(deps, n=2)
    bodies = [ev("ses_delivery.json", s) for s in sent]

    outcomes = record_ses_events(bodies, store=deps.store, analytics=_Analytics(fail=True))

    assert outcomes == ["applied", "applied"]
    assert {deps.store.get_message(batch.batch_id, s["tags"]["message_id"]).status for s in sent} == \
        {MessageStatus.DELIVERED}


def test_a_batch_redelivered_after_a_kill_before_its_bulk_index_still_reaches_analytics(deps, tenant):
    _, _, sent = sent_campaign(deps, n=2)
    bodies = [ev("ses_delivery.json", s) for s in sent]
    record_ses_events(bodies, store=deps.store, analytics=_Analytics(fail=True))  # the process dies: nothing indexed
    analytics = _Analytics()

    outcomes = record_ses_events(bodies, store=deps.store, analytics=analytics)  # SQS delivers the batch again

    assert outcomes == ["duplicate", "duplicate"]
    assert len(analytics.bulks) == 1 and {d["event_type"] for d in analytics.bulks[0]} == {"Delivery"}
    assert len(analytics.bulks[0]) == 2
