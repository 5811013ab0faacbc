"""The store over a real moto server: round trips, conditional transitions, tenant scoping."""

import pytest
from botocore.exceptions import EndpointConnectionError

from core.adapters import dynamodb
from core.adapters.dynamodb import DynamoTable, Guarded
from core.domain.errors import IllegalTransition, NotFound, StaleWrite, TemporaryError
from core.domain.models import Batch, Message, Rejection, Transaction, batch_id_for, message_id_for
from core.domain.statuses import BatchStatus, MessageStatus, TransactionStatus


def _tx(tenant="tenant-a", tx_id="tx_1"):
    return Transaction(transaction_id=tx_id, tenant_id=tenant, template_id="tpl", template_version=1, csv_s3_key="k")


def test_transaction_round_trip_and_tenant_scoping(deps):
    store = deps.store
    store.create_transaction(_tx())
    got = store.get_transaction("tx_1", "tenant-a")
    assert got.status == TransactionStatus.ACCEPT and got.template_id == "tpl"
    with pytest.raises(NotFound):
        store.get_transaction("tx_1", "tenant-b")  # another tenant's id is simply not found
    with pytest.raises(NotFound):
        store.get_transaction("tx_missing", "tenant-a")


def test_creating_twice_is_refused(deps):
    deps.store.create_transaction(_tx())
    with pytest.raises(StaleWrite):
        deps.store.create_transaction(_tx())


def test_illegal_and_stale_transitions_are_refused(deps):
    store = deps.store
    tx = store.create_transaction(_tx())
    with pytest.raises(IllegalTransition):
        store.change_transaction_status(tx, TransactionStatus.SENT)
    moved = store.change_transaction_status(tx, TransactionStatus.PROCESSING)
    assert moved.version == 1
    with pytest.raises(StaleWrite):  # we still hold the version-0 copy
        store.change_transaction_status(tx, TransactionStatus.PROCESSING)
    assert store.get_transaction("tx_1").status == TransactionStatus.PROCESSING


def test_status_change_writes_its_callback_atomically(deps):
    from core.domain.models import Summary

    store = deps.store
    tx = store.create_transaction(_tx().model_copy(update={"callback_url": "https://h.example.com/"}))
    cb = tx.status_callback(TransactionStatus.PROCESSING, Summary(), deps.clock.now())
    store.change_transaction_status(tx, TransactionStatus.PROCESSING, callback=cb)
    with pytest.raises(StaleWrite):  # lost condition: neither the change nor a second callback lands
        store.change_transaction_status(tx, TransactionStatus.PROCESSING, callback=cb.model_copy(update={"seq": 9}))
    assert [c.seq for c in store.callbacks("tx_1")] == [1]


def test_batches_messages_rejections_round_trip_with_pagination(deps):
    store = deps.store
    store.create_transaction(_tx())
    b = Batch(batch_id=batch_id_for("tx_1", 1), transaction_id="tx_1", tenant_id="tenant-a", index=1, message_count=60)
    assert store.put_batch(b) and not store.put_batch(b)
    msgs = [Message(message_id=message_id_for(b.batch_id, i), batch_id=b.batch_id, transaction_id="tx_1",
                    tenant_id="tenant-a", recipient_email=f"u{i}@example.org", placeholder_data={"n": str(i)})
            for i in range(1, 61)]
    calls = store.put_messages(msgs)
    assert calls == 3  # 25 per BatchWriteItem
    store.put_rejections("tx_1", [Rejection(line=i, reason="invalid_email") for i in range(2, 7)])
    page1 = store.messages_page(b.batch_id, None, 25, None)
    page2 = store.messages_page(b.batch_id, None, 50, page1.cursor)
    assert len(page1.items) == 25 and len(page2.items) == 35 and page2.cursor is None
    got = store.get_message(b.batch_id, msgs[0].message_id, "tenant-a")
    assert got.placeholder_data == {"n": "1"} and got.status == MessageStatus.READY_TO_SEND
    with pytest.raises(NotFound):
        store.get_message(b.batch_id, msgs[0].message_id, "tenant-b")
    rows, _ = store.rejections_page("tx_1", 10, None)
    assert [r.line for r in rows] == [2, 3, 4, 5, 6]
    moved = store.change_batch_status(b, BatchStatus.READY)
    with pytest.raises(IllegalTransition):
        store.change_batch_status(moved, BatchStatus.COMPLETED)


def test_message_events_apply_by_precedence_and_replays_are_recognised(deps):
    store = deps.store
    b = "tx_1-b00001"
    m = Message(message_id=f"{b}-00001", batch_id=b, transaction_id="tx_1", tenant_id="t", recipient_email="a@x.org")
    store.put_messages([m])
    click = {"id": "e-click", "type": "Click", "at": "2026-01-01T10:04:00Z"}
    delivery = {"id": "e-del", "type": "Delivery", "at": "2026-01-01T10:01:00Z"}
    first = store.record_message_event(b, m.message_id, MessageStatus.CLICKED, click)
    assert first.moved is True
    assert first.delta == {"sent": 1, "delivered": 1, "opened": 1, "clicked": 1, "final": 1}
    late = store.record_message_event(b, m.message_id, MessageStatus.DELIVERED, delivery)
    assert late.moved is False and late.delta == {}  # a click already implied the delivery
    assert store.record_message_event(b, m.message_id, MessageStatus.CLICKED, click).moved is None  # replay
    assert store.record_message_event(b, "tx_1-b00001-09999", MessageStatus.SENT, {"id": "x", "at": "t"}).moved is None
    item = store.table.get({"PK": f"BATCH#{b}", "SK": f"MESSAGE#{m.message_id}"})
    assert item["status"] == "CLICKED"
    assert [e["id"] for e in item["events"]] == ["e-click", "e-del"]  # every event kept, once
    assert item["seen"] == {"CLICKED", "DELIVERED"}


def test_live_counts_add_up_without_touching_the_version(deps):
    store = deps.store
    tx = store.create_transaction(_tx())
    store.add_counts("tx_1", {"sent": 3, "delivered": 2}, deps.clock.now())
    store.add_counts("tx_1", {"sent": 1, "cancelled": 4}, deps.clock.now())
    got = store.get_transaction("tx_1")
    assert got.counts == {"sent": 4, "delivered": 2, "cancelled": 4} and got.count_gen == 2
    assert got.version == tx.version and got.live_summary().cancelled == 4
    store.change_transaction_status(tx, TransactionStatus.PROCESSING)  # the status write still wins


def test_fenced_writes_refuse_an_older_epoch(deps):
    from core.domain.errors import Fenced

    tx = deps.store.create_transaction(_tx())
    new_leader, old_leader = deps.store.fenced(2), deps.store.fenced(1)
    tx = new_leader.change_transaction_status(tx, TransactionStatus.PROCESSING)
    with pytest.raises(Fenced):
        old_leader.update_transaction(tx, {"refused_rows": 1})


def test_a_recount_does_not_make_a_status_write_lose(deps):
    """The controller's summary recount and the sender's QUEUED → SENT race all the time."""
    from core.domain.models import Summary

    store = deps.store
    store.create_transaction(_tx())
    b = Batch(batch_id=batch_id_for("tx_1", 1), transaction_id="tx_1", tenant_id="tenant-a", index=1, message_count=3)
    store.put_batch(b)
    senders_copy = store.get_batch(b.batch_id, "tx_1")
    store.update_batch_summary(store.get_batch(b.batch_id, "tx_1"), Summary(total_messages=3, sent=2))
    moved = store.change_batch_status(senders_copy, BatchStatus.READY)  # read before the recount: still wins
    assert moved.status == BatchStatus.READY
    got = store.get_batch(b.batch_id, "tx_1")
    assert got.summary.sent == 2 and got.version == senders_copy.version + 1


class _CancellingClient:
    """A DynamoDB client whose TransactWriteItems is cancelled with the given reasons."""

    def __init__(self, real, codes):
        self.real, self.codes = real, codes

    def transact_write_items(self, **kw):
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                           "CancellationReasons": [{"Code": c, "Message": c} for c in self.codes]},
                          "TransactWriteItems")

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.parametrize(("codes", "expected"), [
    (["None", "ConditionalCheckFailed"], "stale"),
    (["TransactionConflict", "None"], "temporary"),
    (["ThrottlingError"], "temporary"),
    (["None", "ValidationError"], "bug"),
])
def test_a_cancelled_transaction_is_read_from_its_reasons(deps, codes, expected):
    from botocore.exceptions import ClientError

    from core.adapters.dynamodb import DynamoTable, Update
    from core.domain.errors import TemporaryError

    table = DynamoTable(_CancellingClient(deps.store.table.client, codes), deps.store.table.name)
    raises = {"stale": StaleWrite, "temporary": TemporaryError, "bug": ClientError}[expected]
    with pytest.raises(raises) as err:
        table.transact([Update({"PK": "X", "SK": "Y"}, set={"a": 1}, condition="attribute_exists(PK)")])
    if expected != "stale":
        assert not isinstance(err.value, StaleWrite)


def test_a_real_lost_condition_in_a_transaction_is_stale(deps):
    """The moto server's own cancellation (with its reasons) still reads as a lost condition."""
    from core.adapters.dynamodb import Update

    with pytest.raises(StaleWrite):
        deps.store.table.transact([Update({"PK": "X", "SK": "Y"}, set={"a": 1}, condition="attribute_exists(PK)")])


def test_repeated_opens_cost_no_write_and_never_grow_the_message(deps):
    """A message opened hundreds of times must stay small (a write is billed per KB of the item,
    C15): the first open is kept, the others change nothing on the item (analytics has each)."""
    from core.adapters.aws import item_bytes
    from core.adapters.dynamodb import serialize

    store = deps.store
    b = "tx_1-b00001"
    m = Message(message_id=f"{b}-00001", batch_id=b, transaction_id="tx_1", tenant_id="t", recipient_email="a@x.org")
    store.put_messages([m])
    deps.counter.reset()
    for i in range(60):
        store.record_message_event(b, m.message_id, MessageStatus.OPENED, {"id": f"open-{i}", "type": "Open",
                                                                           "at": "2026-01-01T10:04:00Z"})
    assert deps.counter.items_written == 1  # the first open; the other 59 were reads only
    item = store.table.get({"PK": f"BATCH#{b}", "SK": f"MESSAGE#{m.message_id}"})
    assert item["status"] == "OPENED" and len(item["events"]) == 1 and "event_ids" not in item
    assert item_bytes(serialize(item)) < 1024  # one write unit per write


def test_a_message_read_carries_its_status_times_and_a_transaction_its_ingest_progress(deps):
    """Services read these from the models; none spells a key to get them (issue 16)."""
    from core.services import campaigns

    store = deps.store
    tx = store.create_transaction(_tx())
    b = Batch(batch_id=batch_id_for("tx_1", 1), transaction_id="tx_1", tenant_id="tenant-a", index=1, message_count=1)
    store.put_batch(b)
    m = Message(message_id=message_id_for(b.batch_id, 1), batch_id=b.batch_id, transaction_id="tx_1",
                tenant_id="tenant-a", recipient_email="u1@example.org")
    store.put_messages([m])
    store.record_message_event(b.batch_id, m.message_id, MessageStatus.SENT,
                               {"id": "e1", "type": "Send", "at": "2026-01-01T00:00:01Z"})
    assert store.get_message(b.batch_id, m.message_id).timestamps["SENT"] == "2026-01-01T00:00:01Z"
    view = campaigns.get_message(store, "tenant-a", m.message_id)
    assert view["timestamps"]["SENT"] == "2026-01-01T00:00:01Z" and view["status"] == "SENT"
    assert (tx.ingest_line, tx.ingest_done) == (0, False)
    store.update_transaction(tx, {"ingest_checkpoint": 1, "ingest_line": 42, "ingest_done": True})
    got = store.get_transaction("tx_1")
    assert (got.ingest_checkpoint, got.ingest_line, got.ingest_done) == (1, 42, True)


def test_a_suppression_added_by_the_api_for_an_idn_address_stops_what_is_sent_to_it(deps):
    """Ingest and the sender use the punycode form (what SES is given); the API stored the Unicode
    domain, so the address was still mailed."""
    from core.services import suppressions

    out = suppressions.add_suppression(deps.store, "tenant-a", "User@Bücher.example", "manual")
    assert out["email"] == "user@xn--bcher-kva.example"
    assert deps.store.are_suppressed("tenant-a", ["user@xn--bcher-kva.example"]) == {"user@xn--bcher-kva.example"}
    assert suppressions.get_suppression(deps.store, "tenant-a", "user@bücher.example")["reason"] == "manual"


def test_a_cancel_that_loses_a_race_with_the_controller_reads_again_and_cancels(deps, monkeypatch):
    """The controller moved the campaign (ingest, a release) between the user's read and write: the
    API answered 409 stale_write (seen in the e2e run); now the cancel is tried again on what is there."""
    from core.services import campaigns

    store = deps.store
    tx = store.create_transaction(_tx())
    real = store.change_transaction_status
    raced = []

    def controller_first(t, target, **kw):
        if not raced:  # the controller's write lands first: ACCEPT → PROCESSING
            raced.append(real(store.get_transaction(t.transaction_id), TransactionStatus.PROCESSING))
        return real(t, target, **kw)

    monkeypatch.setattr(store, "change_transaction_status", controller_first)
    out = campaigns.cancel_campaign(store, deps.clock, "tenant-a", tx.transaction_id)
    assert out["status"] == "CANCELLED" and raced
    assert store.get_transaction(tx.transaction_id).status == TransactionStatus.CANCELLED


class _ConflictingClient:
    """A DynamoDB client whose UpdateItem meets a transaction in flight on the item (real AWS
    answers TransactionConflictException; moto never does)."""

    def __init__(self, real):
        self.real = real

    def update_item(self, **kw):
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "TransactionConflictException", "Message": "in a transaction"}},
                          "UpdateItem")

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_an_update_meeting_a_transaction_in_flight_is_temporary_not_stale(deps):
    from core.adapters.dynamodb import DynamoTable, Update
    from core.domain.errors import TemporaryError

    table = DynamoTable(_ConflictingClient(deps.store.table.client), deps.store.table.name)
    with pytest.raises(TemporaryError):
        table.update(Update({"PK": "X", "SK": "Y"}, set={"a": 1}, condition="attribute_exists(PK)"))


class _ThrottlingUpdates:
    """The real client, except that DynamoDB throttles the first statement of the first ``times`` batches."""

    def __init__(self, client, times: int) -> None:
        self.client, self.times, self.batches = client, times, []

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def batch_execute_statement(self, Statements):  # noqa: N803 (boto3's keyword)
        self.batches.append(len(Statements))
        if len(self.batches) > self.times:
            return self.client.batch_execute_statement(Statements=Statements)
        rest = self.client.batch_execute_statement(Statements=Statements[1:])["Responses"] if Statements[1:] else []
        return {"Responses": [{"Error": {"Code": "ThrottlingError", "Message": "slow down"}}, *rest]}


@pytest.mark.parametrize("times, written", [(1, True), (99, False)])
def test_a_throttled_tracking_statement_is_retried_then_left_to_the_caller(deps, monkeypatch, times, written):
    """update_each: a statement DynamoDB throttles goes again after a pause; one it still throttles
    after every attempt comes back as a TemporaryError (its SQS records are retried), the rest stand."""
    monkeypatch.setattr(dynamodb, "RETRY_DELAY", 0.0)
    throttling = _ThrottlingUpdates(deps.store.table.client, times)
    table = DynamoTable(throttling, deps.store.table.name)
    for k in ("a", "b"):
        table.put({"PK": k, "SK": "1", "status": "SENT"})

    outcomes = table.update_each([Guarded({"PK": k, "SK": "1"}, {"status": "DELIVERED"}, {"status": "SENT"})
                                  for k in ("a", "b")])

    assert outcomes[1] is None and table.get({"PK": "b", "SK": "1"})["status"] == "DELIVERED"
    if written:
        assert outcomes[0] is None and throttling.batches == [2, 1]
    else:
        assert isinstance(outcomes[0], TemporaryError) and len(throttling.batches) == dynamodb.STATEMENT_ATTEMPTS
    assert table.get({"PK": "a", "SK": "1"})["status"] == ("DELIVERED" if written else "SENT")


class _DroppingSecondRequest:
    """The real client, except that the second request of PartiQL statements gets no answer."""

    def __init__(self, client) -> None:
        self.client, self.requests = client, 0

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def batch_execute_statement(self, Statements):  # noqa: N803 (boto3's keyword)
        self.requests += 1
        if self.requests == 2:
            raise EndpointConnectionError(endpoint_url="http://dynamodb")
        return self.client.batch_execute_statement(Statements=Statements)


def test_a_request_without_an_answer_fails_only_its_own_updates(deps):
    """Thirty updates go in two requests; the second gets no answer (botocore gave up): the first
    request's 25 stand as written (their counts are added), only the other 5 come back as errors."""
    table = DynamoTable(_DroppingSecondRequest(deps.store.table.client), deps.store.table.name)
    keys = [{"PK": f"k{i:02d}", "SK": "1"} for i in range(30)]
    for k in keys:
        table.put({**k, "status": "SENT"})

    outcomes = table.update_each([Guarded(k, {"status": "DELIVERED"}, {"status": "SENT"}) for k in keys])

    assert outcomes[:25] == [None] * 25
    assert all(isinstance(o, EndpointConnectionError) for o in outcomes[25:])
    assert [table.get(k)["status"] for k in keys] == ["DELIVERED"] * 25 + ["SENT"] * 5


def test_update_each_takes_one_update_per_item(deps):
    g = Guarded({"PK": "k", "SK": "1"}, {"status": "DELIVERED"}, {"status": "SENT"})
    with pytest.raises(ValueError, match="one update per item"):
        deps.store.table.update_each([g, g])
