"""Fencing tokens across regions (C4) and fenced bulk puts (C9), against moto.

One moto table stands for the global table (replication with no lag): both regions' lease items,
the active-region flag and the fencing counter live in it, as they do on AWS."""

from __future__ import annotations

import pytest

from controller.jobs import Controller
from core import schema
from core.adapters.dynamodb import Update
from core.domain.errors import Fenced
from core.domain.statuses import BatchStatus, MessageStatus, TransactionStatus
from runbooks.regions import _set_flag
from tests.helpers import recipients, submit


def _restarting_primary(deps, clock, restarts: int) -> Controller:
    """The primary's controller restarts ``restarts`` times (each restart is a new election)."""
    for i in range(restarts):
        c = Controller(deps, f"primary-{i}")
        assert c.heartbeat()
        c.lease.release()
        clock.advance(1)
    c = Controller(deps, f"primary-{restarts}")
    assert c.heartbeat()
    return c


def test_after_a_failover_the_dr_leader_outranks_the_primary_and_the_deposed_primary_is_fenced(deps, tenant, clock):
    s = deps.settings
    # GIVEN a primary whose leader restarted several times and stamped its items
    primary = _restarting_primary(deps, clock, restarts=4)
    tx_id = submit(deps, "tenant-a", recipients(120))
    primary.ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.READY_TO_SEND
    stamped = deps.store.table.get(schema.transaction_key(tx_id))["fence"]
    assert stamped == primary.lease.epoch
    stale = primary.store  # the primary's store, kept by a process that is paused, not dead

    # WHEN the active region switches to DR (runbooks/regions.py) and DR elects its first leader
    _set_flag(s, s.region, s.dr_region)
    assert primary.heartbeat() is False  # the primary stands down
    clock.advance(s.lease_seconds + 1)  # its lease lapses
    dr = Controller(deps, "dr-0", region=s.dr_region)
    assert dr.heartbeat() is True

    # THEN its first writes are not fenced by the primary's higher regional epochs
    dr.advance_pass()
    assert dr.lease.epoch is not None, "the DR leader was fenced out by the primary's items"
    assert dr.lease.epoch > stamped  # tokens order leaderships across regions
    assert {b.status for b in deps.store.batches(tx_id)} == {BatchStatus.QUEUED}
    tx = dr.store.update_transaction(deps.store.get_transaction(tx_id), {"refused_rows": 0})
    assert deps.store.table.get(schema.transaction_key(tx_id))["fence"] == dr.lease.epoch
    counter = deps.store.table.get({"PK": "PLATFORM", "SK": "EPOCH"})  # the fencing counter
    assert (counter["epoch"], counter["region"]) == (dr.lease.epoch, s.dr_region)

    # AND the deposed primary's writes are still refused
    with pytest.raises(Fenced):
        stale.update_transaction(tx, {"refused_rows": 99})
    assert deps.store.get_transaction(tx_id).refused_rows == 0


def test_the_first_election_after_an_upgrade_starts_above_both_regions_epochs(deps, clock):
    """Deployments from before the counter have only regional epochs (and items stamped with them)."""
    s = deps.settings
    deps.store.table.put({**schema.lease_key(s.region), "holder": "old", "epoch": 41, "expires_at": "2000-01-01T00:00:00Z"})
    deps.store.table.put({**schema.lease_key(s.dr_region), "holder": "old", "epoch": 3, "expires_at": "2000-01-01T00:00:00Z"})
    _set_flag(s, s.region, s.dr_region)
    dr = Controller(deps, "dr-0", region=s.dr_region)
    assert dr.heartbeat() is True and dr.lease.epoch == 42


def _message_items(deps, tx_id):
    (batch, *_) = deps.store.batches(tx_id)
    msgs, _ = deps.store.batch_partition(batch.batch_id)
    return batch, msgs


def test_a_deposed_leaders_ingest_re_put_does_not_overwrite_a_sent_message(deps, tenant, clock):
    # GIVEN leader a ingested a campaign, then paused (GC, partition) holding its fenced store
    a = Controller(deps, "a")
    assert a.heartbeat()
    tx_id = submit(deps, "tenant-a", recipients(30))
    a.ingest_pass()
    stale = a.store
    batch, msgs = _message_items(deps, tx_id)
    # AND b took over and the messages were sent meanwhile
    clock.advance(deps.settings.lease_seconds + 1)
    b = Controller(deps, "b")
    assert b.heartbeat()
    for m in msgs:
        deps.store.table.update(Update(schema.message_key(batch.batch_id, m.message_id),
                                       set={"status": MessageStatus.SENT.value}))

    # WHEN a wakes up and its ingest re-puts the batch's messages (deterministic ids, READY_TO_SEND)
    with pytest.raises(Fenced):
        stale.put_messages(msgs)

    # THEN nothing was overwritten
    _, now = _message_items(deps, tx_id)
    assert {m.status for m in now} == {MessageStatus.SENT}


def test_the_current_leaders_re_put_keeps_existing_items_and_writes_missing_ones(deps, tenant, clock):
    """A resumed ingest re-puts the batch it crashed in: existing messages are kept as they are."""
    c = Controller(deps, "c")
    assert c.heartbeat()
    tx_id = submit(deps, "tenant-a", recipients(120))
    c.ingest_pass()
    batch, msgs = _message_items(deps, tx_id)
    first = msgs[0]
    deps.store.table.update(Update(schema.message_key(batch.batch_id, first.message_id),
                                   set={"status": MessageStatus.SENT.value}))
    deps.store.table.delete(schema.message_key(batch.batch_id, msgs[1].message_id))

    deps.counter.reset()
    c.store.put_messages(msgs)

    _, now = _message_items(deps, tx_id)
    by_id = {m.message_id: m for m in now}
    assert len(now) == len(msgs) == 50
    assert by_id[first.message_id].status == MessageStatus.SENT
    assert by_id[msgs[1].message_id].status == MessageStatus.READY_TO_SEND
    # one conditional put per message (a kept one is billed too), no transaction at two units each
    assert deps.counter.calls["dynamodb.TransactWriteItems"] == 0
    assert deps.counter.write_units == len(msgs)


def test_a_fenced_bulk_put_costs_one_write_unit_per_message(deps, tenant, clock):
    """Ingest wrote every message in a fenced transaction: two write units per message instead of
    one (issue 15's cost budget). The fencing counter is read once per chunk instead."""
    from core.adapters.dynamodb import FENCED_PUTS_PER_CHECK

    c = Controller(deps, "c")
    assert c.heartbeat()
    tx_id = submit(deps, "tenant-a", recipients(50))
    c.ingest_pass()
    batch, msgs = _message_items(deps, tx_id)
    for m in msgs:  # as before the ingest wrote them
        deps.store.table.delete(schema.message_key(batch.batch_id, m.message_id))
    deps.counter.reset()

    c.store.put_messages(msgs)

    assert len(_message_items(deps, tx_id)[1]) == 50
    assert deps.counter.calls["dynamodb.TransactWriteItems"] == 0
    assert deps.counter.write_units == 50
    assert deps.counter.calls["dynamodb.BatchExecuteStatement"] == 2  # 25 INSERTs a call
    assert deps.counter.calls["dynamodb.GetItem"] == -(-50 // FENCED_PUTS_PER_CHECK)  # the fence, once a chunk


def test_a_put_that_lands_after_a_newer_election_only_creates_what_nobody_wrote(deps, tenant, clock):
    """The argument of DynamoTable._fenced_puts: a deposed leader whose fence check passed just
    before its successor's election may still land puts, but only as creations. What the
    successor wrote (and sent) meanwhile is never replaced; a message nobody wrote yet is
    created, the same item the successor's own ingest then keeps."""
    a = Controller(deps, "a")
    assert a.heartbeat()
    tx_id = submit(deps, "tenant-a", recipients(30))
    a.ingest_pass()
    stale = a.store
    batch, msgs = _message_items(deps, tx_id)
    clock.advance(deps.settings.lease_seconds + 1)
    b = Controller(deps, "b")
    assert b.heartbeat()  # a newer epoch: a's next fence check raises Fenced
    for m in msgs[:-1]:
        deps.store.table.update(Update(schema.message_key(batch.batch_id, m.message_id),
                                       set={"status": MessageStatus.SENT.value}))
    deps.store.table.delete(schema.message_key(batch.batch_id, msgs[-1].message_id))
    with pytest.raises(Fenced):
        stale.put_messages(msgs)

    # WHEN a's puts land anyway (its check had passed before b's election)
    stale.table._check_fence = lambda: None  # type: ignore[method-assign]
    stale.put_messages(msgs)

    # THEN nothing b's side wrote was replaced; only the missing message was created, as it was
    _, now = _message_items(deps, tx_id)
    by_id = {m.message_id: m for m in now}
    assert {by_id[m.message_id].status for m in msgs[:-1]} == {MessageStatus.SENT}
    assert by_id[msgs[-1].message_id].model_dump() == msgs[-1].model_dump()


# -- fenced bulk puts as PartiQL INSERT batches: 25 items a call, one write unit each -----------
def _fenced_table(deps, client=None):
    from core.adapters.dynamodb import DynamoTable

    leader = Controller(deps, "bulk")
    assert leader.heartbeat()
    return DynamoTable(client or deps.store.table.client, deps.store.table.name, leader.store.table.fence_epoch)


def _rows(n: int, batch: str = "BATCH#bulk", **extra) -> list[dict]:
    return [{schema.PK: batch, schema.SK: f"MESSAGE#{i:04d}", "status": "READY_TO_SEND", **extra} for i in range(n)]


def _stored(deps, rows) -> list[dict | None]:
    return [deps.store.table.get({schema.PK: r[schema.PK], schema.SK: r[schema.SK]}) for r in rows]


def test_a_fenced_batch_put_of_60_items_makes_at_most_3_write_calls(deps):
    table = _fenced_table(deps)
    rows = _rows(60)
    deps.counter.reset()

    calls = table.batch_put(rows)

    assert calls <= 3 and deps.counter.calls["dynamodb.BatchExecuteStatement"] == calls
    assert deps.counter.calls["dynamodb.PutItem"] == deps.counter.calls["dynamodb.TransactWriteItems"] == 0
    assert deps.counter.calls["dynamodb.GetItem"] == 3  # the fence, once per 25
    assert deps.counter.write_units == 60
    assert _stored(deps, rows) == rows


def test_a_fenced_batch_put_keeps_an_existing_item_as_it_is(deps):
    table = _fenced_table(deps)
    rows = _rows(30)
    sent = {**rows[7], "status": "SENT"}
    deps.store.table.put(sent)
    deps.counter.reset()

    table.batch_put(rows)  # the existing item's INSERT is answered DuplicateItem: kept, no error

    assert _stored(deps, rows) == rows[:7] + [sent] + rows[8:]
    assert deps.counter.write_units == 30  # the kept one is billed like a lost condition
    assert deps.counter.lost_condition_units == 1


class _ThrottlingFirstStatement:
    """The real client, except that DynamoDB throttles the first statement of the first batch."""

    def __init__(self, client) -> None:
        self.client, self.batches = client, []

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def batch_execute_statement(self, Statements):  # noqa: N803 (boto3's keyword)
        self.batches.append(Statements)
        if len(self.batches) > 1:
            return self.client.batch_execute_statement(Statements=Statements)
        rest = self.client.batch_execute_statement(Statements=Statements[1:])["Responses"]
        throttled = {"Error": {"Code": "ProvisionedThroughputExceeded", "Message": "throughput exceeded"}}
        return {"Responses": [throttled, *rest]}


def test_a_throttled_statement_is_retried(deps, monkeypatch):
    from core.adapters import dynamodb

    monkeypatch.setattr(dynamodb, "RETRY_DELAY", 0.0)
    throttling = _ThrottlingFirstStatement(deps.store.table.client)
    table = _fenced_table(deps, throttling)
    rows = _rows(10)

    assert table.batch_put(rows) == 2

    assert [len(b) for b in throttling.batches] == [10, 1]
    assert throttling.batches[1] == throttling.batches[0][:1]  # only the throttled statement again
    assert _stored(deps, rows) == rows


def test_a_statement_dynamodb_refuses_raises_a_permanent_write_error(deps):
    from botocore.exceptions import ClientError

    from core.services.ingest import _permanent_write_error

    table = _fenced_table(deps)
    rows = _rows(3)
    rows[1]["body"] = "x" * 410_000  # over DynamoDB's 400 KB item limit: ValidationError

    with pytest.raises(ClientError) as exc:
        table.batch_put(rows)

    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert "400 KB" in (_permanent_write_error(exc.value) or "")
    assert _stored(deps, rows) == [rows[0], None, rows[2]]  # statements are independent


def test_an_item_whose_insert_would_exceed_8_kb_is_put_alone_and_create_only(deps):
    table = _fenced_table(deps)
    wide = {f"merge_field_with_a_long_name_{i:03d}": "v" for i in range(300)}  # ~10 KB of names
    rows = _rows(3)
    rows[0].update(wide)
    kept = {**_rows(3)[2], "status": "SENT"}
    deps.store.table.put(kept)
    deps.counter.reset()

    table.batch_put(rows)

    assert deps.counter.calls["dynamodb.PutItem"] == 1 and deps.counter.calls["dynamodb.BatchExecuteStatement"] == 1
    assert _stored(deps, rows) == [rows[0], rows[1], kept]


# -- M5: in-doubt chunks of the old region after a failover: never a duplicate ------------------
def _dr_sender(deps, mailer, worker="dr-w1"):
    from core.services.attachments import AttachmentFiles
    from core.services.sending import BatchSender
    from core.services.templates import load_mail_source

    dr = deps.settings.model_copy(update={"region": deps.settings.dr_region})
    return BatchSender(store=deps.store, mailer=mailer, limiter=deps.limiter, clock=deps.clock, settings=dr,
                       template_loader=lambda t, v: load_mail_source(deps.store, deps.blobs, deps.settings, t, v),
                       worker=worker, attachment_files=AttachmentFiles(deps.store, deps.blobs, deps.settings))


def test_after_a_failover_the_old_regions_in_doubt_chunk_is_never_re_sent_without_its_evidence(deps, tenant, clock):
    """The primary's worker died mid-chunk (SES accepted 4 of 10), then the primary went away with
    its event pipeline: no Send event of the chunk will ever be recorded. DR must not re-send."""
    from core.services.failover_doubt import NOT_RESENT_REASON
    from tests.integration.test_sending import _crash_after

    tx_id, batch, mailer = _crash_after(deps, clock)
    clock.advance(deps.settings.lease_seconds * 4 + deps.settings.send_evidence_window_seconds + 1)
    out = _dr_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert len(mailer.sent) == 4  # nothing sent twice
    assert (out.state, out.sent) == ("sent", 0)
    msgs, _ = deps.store.batch_partition(batch.batch_id)
    assert {m.status for m in msgs} == {MessageStatus.FAILED}
    assert {m.failure_reason for m in msgs} == {NOT_RESENT_REASON}
    assert deps.store.get_transaction(tx_id).live_summary().failed == 10  # counted in the campaign
    assert deps.store.get_batch(batch.batch_id, tx_id).status == BatchStatus.SENT


def test_after_a_failover_a_chunk_whose_evidence_is_complete_is_finished_once(deps, tenant, clock):
    """The old region's pipeline is alive and past the chunk: its evidence is in, the rest go once."""
    from core.domain.models import iso
    from tests.integration.test_sending import _crash_after, _pipeline_records

    crashed_at = clock.now()
    tx_id, batch, mailer = _crash_after(deps, clock)
    for s in mailer.sent:
        s["sent_at"] = iso(crashed_at)
    clock.advance(deps.settings.lease_seconds * 4 + deps.settings.send_evidence_window_seconds + 1)
    _pipeline_records(deps, mailer.sent)  # the primary's events Lambda, still alive
    deps.evidence.saw(iso(clock.now()))
    deps.evidence.flush()
    out = _dr_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and out.sent == 6
    assert set(mailer.per_recipient().values()) == {1} and len(mailer.per_recipient()) == 10


def test_an_operator_re_sends_the_messages_left_in_doubt_once_and_only_knowingly(deps, tenant, clock):
    from runbooks.common import Runbook, RunbookFailed
    from runbooks.failover import resend_in_doubt
    from tests.integration.test_sending import _crash_after

    tx_id, batch, mailer = _crash_after(deps, clock)
    clock.advance(deps.settings.lease_seconds * 4 + deps.settings.send_evidence_window_seconds + 1)
    _dr_sender(deps, mailer).send_batch(tx_id, batch.batch_id)

    refused = Runbook("resend", True, lambda line: None)
    with pytest.raises(RunbookFailed, match="accept-duplicate-risk"):
        resend_in_doubt(refused, deps, tx_id, accept_risk=False)
    book = Runbook("resend", True, lambda line: None)
    resend_in_doubt(book, deps, tx_id, accept_risk=True)
    marker = deps.store.table.get({"PK": f"TRANSACTION#{tx_id}", "SK": "RESENT_IN_DOUBT"})
    assert marker["state"] == "submitted"
    resent = deps.store.get_transaction(marker["resent_as"])
    assert resent.tags["resent_from"] == tx_id and resent.template_id == deps.store.get_transaction(tx_id).template_id
    again = Runbook("resend", True, lambda line: None)
    resend_in_doubt(again, deps, tx_id, accept_risk=True)  # a re-run re-sends nothing more
    assert [s["outcome"] for s in again.steps if s["kind"] == "act"] == ["already done"]
