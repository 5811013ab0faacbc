"""Erasure against moto where it meets other work: a send chunk under way, a controller that dies
between a deletion and its receipt entry, message-event batches in the outbox, a DR replica that
is behind, an events handler writing the message, a bounce writing a plain suppression, an
ingest that never ends. The receipt must say what happened, exactly, whatever the interleaving."""

from __future__ import annotations

import pytest

from core import schema
from core.adapters.analytics import SqliteAnalytics
from core.bootstrap import privacy_ports
from core.domain.models import batch_of_message
from core.domain.statuses import MessageStatus, TransactionStatus
from core.services import privacy
from core.services.message_events import MessageEventBuffer, message_event
from tests.helpers import RecordingMailer, batch_sender, leader, submit

TARGET = "Erase.Me@Example.org"
CSV = ("email,first_name,crm_id\n"
       "keep1@example.org,Kim,CRM-1\n"
       f"{TARGET},Zorblax,CRM-ZORBLAX-7\n"
       "keep2@example.org,Lee,CRM-2\n")


def _queued(deps):
    tx_id = submit(deps, "tenant-a", CSV, metadata_columns=["crm_id"])
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    (batch,) = deps.store.batches(tx_id)
    return tx_id, batch


def _receipt(ports, erasure_id):
    return privacy.get_erasure(ports.jobs, "tenant-a", erasure_id)["receipt"]


# --- H1: a send chunk under way ---------------------------------------------------------------


def test_an_erasure_waits_for_a_chunk_under_way_and_reports_the_mail_it_could_not_stop(deps, tenant):
    tx_id, batch = _queued(deps)
    ports = privacy_ports(deps, peer_table=False)
    jobs: list[dict] = []
    during: list[dict] = []

    def erase_while_the_chunk_runs(kw, before):
        # the chunk has written its INTENT and read the suppressions; the person asks to be erased now
        if before and kw["to"] == "keep1@example.org" and not jobs:
            jobs.append(privacy.request_erasure(ports, "tenant-a", TARGET, "key_test"))
            during.append(privacy.run_erasure(ports, jobs[0]["erasure_id"]))

    mailer = RecordingMailer(deps.mailer, erase_while_the_chunk_runs)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)

    # while the chunk could still mail them, the erasure neither completed nor claimed to stop it
    assert during[0]["status"] == privacy.RUNNING and during[0]["step"] == "messages"
    assert "send chunk" in during[0]["waiting"]
    assert TARGET.lower() in [s["to"].lower() for s in mailer.sent]  # it was read before the erasure

    done = privacy.run_erasure(ports, jobs[0]["erasure_id"])  # the chunk has closed
    assert done["status"] == privacy.COMPLETED
    r = _receipt(ports, jobs[0]["erasure_id"])
    assert r["messages_sent_before_the_erasure_could_stop_them"] == 1
    assert r["messages_stopped_before_sending"] == 0 and r["messages_pseudonymised"] == 1


def test_a_chunk_that_reads_the_suppressions_after_the_erasure_began_does_not_mail_the_person(deps, tenant):
    tx_id, batch = _queued(deps)
    ports = privacy_ports(deps, peer_table=False)
    jobs: list[dict] = []
    real = deps.store.are_suppressed

    def erasure_between_intent_and_suppression_read(tenant_id, emails):
        if not jobs:  # the INTENT is written; the erasure starts and must wait for this chunk
            jobs.append(privacy.request_erasure(ports, "tenant-a", TARGET, "key_test"))
            assert privacy.run_erasure(ports, jobs[0]["erasure_id"])["status"] == privacy.RUNNING
        return real(tenant_id, emails)

    deps.store.are_suppressed = erasure_between_intent_and_suppression_read
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert sorted(s["to"] for s in mailer.sent) == ["keep1@example.org", "keep2@example.org"]

    assert privacy.run_erasure(ports, jobs[0]["erasure_id"])["status"] == privacy.COMPLETED
    r = _receipt(ports, jobs[0]["erasure_id"])
    assert r["messages_stopped_before_sending"] == 1
    assert r["messages_sent_before_the_erasure_could_stop_them"] == 0


def test_a_chunk_whose_worker_died_is_waited_for_until_its_send_by_and_reported_in_doubt(deps, tenant):
    tx_id, batch = _queued(deps)
    msgs, _ = deps.store.batch_partition(batch.batch_id)
    now = deps.clock.now()
    from datetime import timedelta

    # a worker wrote its INTENT for the whole chunk and died: which calls SES took is unknown
    assert deps.store.send_log_intent(batch.batch_id, 0, 1, [m.message_id for m in msgs], "dead:1",
                                      region=deps.settings.region, now=now, send_by=now + timedelta(seconds=60))
    ports = privacy_ports(deps, peer_table=False)
    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")
    assert privacy.run_erasure(ports, job["erasure_id"])["status"] == privacy.RUNNING
    deps.clock.advance(61)
    assert privacy.run_erasure(ports, job["erasure_id"])["status"] == privacy.COMPLETED
    r = _receipt(ports, job["erasure_id"])
    assert r["messages_send_in_doubt"] == 1 and r["messages_stopped_before_sending"] == 0
    target = next(m for m in deps.store.batch_partition(batch.batch_id)[0] if m.recipient_email == "erased@invalid")
    assert target.status == MessageStatus.SUPPRESSED  # never tried again by the chunk's next attempt


# --- M2: exact receipts across a crash ----------------------------------------------------------


def test_the_receipt_counts_every_version_and_row_removed_across_a_crash(deps, tenant):
    _queued(deps)
    ports = privacy_ports(deps, peer_table=False)
    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")
    blobs = ports.regions[0].blobs
    deleted: list[str] = []
    real_delete = blobs.delete

    def counting_delete(bucket, v):
        real_delete(bucket, v)
        deleted.append(f"{bucket}/{v.key}@{v.version_id}")

    blobs.delete = counting_delete
    # the controller dies in the objects step, right after deleting its first version
    with pytest.raises(privacy.Interrupted):
        privacy.run_erasure(ports, job["erasure_id"], lambda: bool(deleted))
    assert len(deleted) == 1
    done = privacy.run_erasure(ports, job["erasure_id"])  # the next controller finishes it
    assert done["status"] == privacy.COMPLETED
    receipt = _receipt(ports, job["erasure_id"])
    region = deps.settings.region
    assert receipt["object_versions_deleted"][region] == len(deleted), (receipt, deleted)
    assert receipt["csv_rows_removed"][region] == 2, receipt  # the upload's row and the batch file's row


def test_the_receipt_counts_stopped_messages_and_analytics_events_across_a_crash(deps, tenant):
    _queued(deps)
    store = SqliteAnalytics()
    for i in range(3):
        store.index_event({"event_id": f"e{i}", "tenant_id": "tenant-a", "transaction_id": "tx", "message_id": "m",
                           "event_type": "Open", "timestamp": f"2026-01-01T10:00:0{i}Z", "recipient_email": TARGET,
                           "metadata": {"link_url": None, "bounce_type": None, "bounce_subtype": None,
                                        "diagnostic": None}})
    ports = privacy_ports(deps, peer_table=False)
    ports.regions[0].analytics = store
    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")

    class Crash(Exception):
        pass

    real_fail, real_erase = ports.store.fail_message, store.erase_recipient

    def fail_then_die(*a, **kw):  # the message is stopped; the controller dies before noting anything else
        real_fail(*a, **kw)
        raise Crash

    def erase_then_die(*a, **kw):
        real_erase(*a, **kw)
        raise Crash

    ports.store.fail_message = fail_then_die
    with pytest.raises(Crash):
        privacy.run_erasure(ports, job["erasure_id"])
    ports.store.fail_message = real_fail
    store.erase_recipient = erase_then_die
    with pytest.raises(Crash):
        privacy.run_erasure(ports, job["erasure_id"])
    store.erase_recipient = real_erase
    assert privacy.run_erasure(ports, job["erasure_id"])["status"] == privacy.COMPLETED
    r = _receipt(ports, job["erasure_id"])
    assert r["messages_stopped_before_sending"] == 1
    assert r["analytics_events_deleted"] == {deps.settings.region: 3}


# --- M3: message-event batches ------------------------------------------------------------------


def test_message_event_batches_lose_the_persons_metadata_and_subject_access_lists_them(deps, tenant):
    tx_id, batch = _queued(deps)
    msgs, _ = deps.store.batch_partition(batch.batch_id)
    target = next(m for m in msgs if m.recipient_email.lower() == TARGET.lower())
    other = next(m for m in msgs if m.recipient_email == "keep1@example.org")
    assert target.metadata == {"crm_id": "CRM-ZORBLAX-7"}
    # an opted-in campaign's message events waiting in the outbox (e.g. a Delivery, not yet POSTed)
    buf = MessageEventBuffer(deps.store, deps.clock)
    for m in (target, other):
        buf.add("tenant-a", message_event(event_id=f"e-{m.message_id}", status="DELIVERED",
                                          at="2026-01-01T10:00:00Z", message_id=m.message_id, transaction_id=tx_id,
                                          metadata=m.metadata, source="Delivery"))
    assert buf.flush() == 1

    ports = privacy_ports(deps, peer_table=False)
    held = privacy.subject_access(ports, "tenant-a", TARGET)["message_events"]
    assert [(e["message_id"], e["metadata"]) for e in held] == [(target.message_id, {"crm_id": "CRM-ZORBLAX-7"})]

    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")
    assert privacy.run_erasure(ports, job["erasure_id"])["status"] == privacy.COMPLETED

    erased = next(m for m in deps.store.batch_partition(batch_of_message(target.message_id))[0]
                  if m.message_id == target.message_id)
    assert erased.metadata == {}
    (outbox,) = deps.store.table.query_all(f"TRANSACTION#{tx_id}", "MSGEVENTS#")
    events = {e["message_id"]: e for e in outbox["payload"]["events"]}
    assert events[target.message_id]["metadata"] == {} and events[target.message_id]["status"] == "DELIVERED"
    assert events[other.message_id]["metadata"] == {"crm_id": "CRM-1"}  # another person's stays
    assert _receipt(ports, job["erasure_id"])["message_event_batches_redacted"] == 1


# --- M4 and L2: the DR replica ---------------------------------------------------------------------


@pytest.fixture
def dr_without_replication(deps, settings):
    """The DR region's resources with no replication running: the test plays the replicator."""
    from core.adapters.aws import client
    from local.bootstrap import create_resources

    create_resources(settings.model_copy(update={"region": settings.dr_region, "dr_region": settings.region}))
    return client(settings, "s3", settings.dr_region), client(settings, "dynamodb", settings.dr_region)


def _replicate_table_items(deps, dynamodb, items):
    from core.adapters.dynamodb import serialize

    for item in items:
        dynamodb.put_item(TableName=deps.settings.table_name, Item=serialize(item))


def test_the_replica_step_verifies_the_dr_buckets_and_erases_a_late_replica(deps, tenant, settings,
                                                                          dr_without_replication):
    s3_dr, ddb_dr = dr_without_replication
    tx_id, batch = _queued(deps)
    s3 = deps.clients["s3"]
    bucket = settings.bucket("uploads")
    (obj,) = s3.list_objects_v2(Bucket=bucket, Prefix="tenant-a/")["Contents"]
    original = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()  # in flight to DR, not landed yet

    ports = privacy_ports(deps)
    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")
    deps.clock.advance(2 * privacy.REPLICA_PATIENCE_SECONDS)  # patience counts from the replica step, not the request
    state = privacy.run_erasure(ports, job["erasure_id"])
    assert state["step"] == "replica" and state["status"] == privacy.RUNNING
    # the table replica catches up; the buckets do not yet: not verified
    home = deps.store.table
    mids = privacy.get_erasure(ports.jobs, "tenant-a", job["erasure_id"])["receipt"]["messages_pseudonymised"]
    assert mids == 1
    _replicate_table_items(deps, ddb_dr, [
        *home.query_all("SUPPRESSION#tenant-a", "HASH#"),
        *(i for i in home.query_all(f"BATCH#{batch.batch_id}", "MESSAGE#"))])
    assert privacy.run_erasure(ports, job["erasure_id"])["step"] == "replica"
    # then the pre-erasure upload lands in DR after the objects step had looked there
    s3_dr.put_object(Bucket=settings.bucket("uploads", settings.dr_region), Key=obj["Key"], Body=original)
    for b in ("uploads", "batches"):
        for o in s3.list_objects_v2(Bucket=settings.bucket(b), Prefix="tenant-a/").get("Contents", []):
            if b != "uploads" or o["Key"] != obj["Key"]:
                body = s3.get_object(Bucket=settings.bucket(b), Key=o["Key"])["Body"].read()
                s3_dr.put_object(Bucket=settings.bucket(b, settings.dr_region), Key=o["Key"], Body=body)
    assert privacy.run_erasure(ports, job["erasure_id"])["step"] == "replica"  # erased it; looks once more
    done = privacy.run_erasure(ports, job["erasure_id"])
    assert done["status"] == privacy.COMPLETED
    r = _receipt(ports, job["erasure_id"])
    assert r["replica"] == {settings.dr_region: "verified"}
    assert r["object_versions_deleted"][settings.dr_region] == 1
    dr_bucket = settings.bucket("uploads", settings.dr_region)
    for v in s3_dr.list_object_versions(Bucket=dr_bucket, Prefix="tenant-a/").get("Versions", []):
        body = s3_dr.get_object(Bucket=dr_bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        assert b"erase.me@example.org" not in body.lower()


# --- L1: a plain suppression racing the erasure ---------------------------------------------------


def test_a_plain_suppression_written_while_the_erasure_ran_is_gone_when_it_completes(deps, tenant):
    ports = privacy_ports(deps, peer_table=False)
    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")
    raced: list[bool] = []

    def bounce_slips_in():
        # a bounce handler that checked the hash before step 1 wrote it, and writes the address now
        if ports.jobs.get(job["erasure_id"])["step"] == "analytics" and not raced:
            deps.store.table.put({**schema.suppression_key("tenant-a", TARGET.lower()), "tenant_id": "tenant-a",
                                  "email": TARGET.lower(), "reason": "bounce"})
            raced.append(True)
        return False

    assert privacy.run_erasure(ports, job["erasure_id"], bounce_slips_in)["status"] == privacy.COMPLETED
    assert raced and deps.store.get_suppression("tenant-a", TARGET.lower()) is None
    # and the transactional write refuses the address once the hash exists
    assert deps.store.suppress("tenant-a", TARGET.lower(), "bounce") is False
    assert deps.store.get_suppression("tenant-a", TARGET.lower()) is None
    assert deps.store.suppress("tenant-a", "keep1@example.org", "bounce") is True


# --- L2: the events handler writing the message; an ingest that never ends ---------------------------


def test_an_event_recorded_while_the_message_is_pseudonymised_is_kept_scrubbed(deps, tenant):
    _, batch = _queued(deps)
    target = next(m for m in deps.store.batch_partition(batch.batch_id)[0]
                  if m.recipient_email.lower() == TARGET.lower())
    ports = privacy_ports(deps, peer_table=False)
    table = ports.finder.table
    real_get = table.get
    landed: list[bool] = []

    def get_then_event_lands(key, consistent=True):
        item = real_get(key, consistent)
        if key.get("SK", "").startswith("MESSAGE#") and not landed:
            landed.append(True)  # the events handler records a Delivery between our read and our write
            deps.store.record_message_event(batch.batch_id, target.message_id, MessageStatus.DELIVERED,
                                            {"id": "ev-late", "type": "Delivery", "at": "2026-01-01T10:00:00Z",
                                             "diagnostic": f"250 ok {TARGET}"})
        return item

    table.get = get_then_event_lands
    assert ports.finder.pseudonymise_message(batch.batch_id, target.message_id, "tenant-a", "erased@invalid",
                                             privacy.scrub_event)
    item = real_get(schema.message_key(batch.batch_id, target.message_id))
    assert [e["id"] for e in item["events"]] == ["ev-late"]  # not lost
    assert TARGET.lower() not in repr(item).lower() and item["erased"] is True


def test_an_erasure_stops_waiting_for_a_stuck_ingest_and_says_so(deps, tenant):
    tx_id = submit(deps, "tenant-a", CSV)  # accepted, never ingested (no controller pass runs)
    assert deps.store.get_transaction(tx_id).status == TransactionStatus.ACCEPT
    ports = privacy_ports(deps, peer_table=False)
    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")
    assert privacy.run_erasure(ports, job["erasure_id"])["step"] == "wait_ingest"
    deps.clock.advance(privacy.INGEST_PATIENCE_SECONDS + 1)
    assert privacy.run_erasure(ports, job["erasure_id"])["status"] == privacy.COMPLETED
    assert tx_id in _receipt(ports, job["erasure_id"])["ingest_not_confirmed"]
