"""Retention, erasure and subject access against moto, with the emulated DR replica (table and
buckets) and a DR analytics store: after an erasure (interrupted mid-way and resumed) the address
is nowhere in either region but as the suppression's keyed hash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import schema
from core.adapters.analytics import SqliteAnalytics
from core.bootstrap import privacy_ports
from core.domain.statuses import MessageStatus, TransactionStatus
from core.services import privacy
from core.services.events import record_ses_event
from local.bootstrap import create_resources
from local.replication import BucketReplicator, EchoRegistry, TableReplicator
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import RecordingMailer, batch_sender, leader, send_single_batch, submit

TARGET = "Erase.Me@Example.org"
PLACEHOLDER = "Zorblax"  # a placeholder value only the target's rows carry


def csv_with_target(extra: str = "") -> str:
    return ("email,first_name\n"
            f"keep1@example.org,Kim\n{TARGET},{PLACEHOLDER}\nkeep2@example.org,Lee\n"
            f"erase.me@example.org,{PLACEHOLDER}Again\n"  # a duplicate: a rejection naming the address
            + extra)


# --- retention -------------------------------------------------------------------------------------


def test_message_and_rejection_items_carry_the_tenants_retention_as_ttl(deps, tenant):
    repo = privacy_ports(deps, peer_table=False).retention
    privacy.set_retention(repo, "tenant-a", {"messages": 30, "rejections": 7, "batches": 14}, deps.clock.now())
    tx_id = submit(deps, "tenant-a", csv_with_target())
    leader(deps).ingest_pass()
    now = deps.clock.now().timestamp()
    (batch,) = deps.store.batches(tx_id)
    items = list(deps.store.table.query_all(f"BATCH#{batch.batch_id}", "MESSAGE#"))
    assert items and all(abs(i[schema.TTL_ATTRIBUTE] - (now + 30 * 86400)) < 5 for i in items)
    rejections = list(deps.store.table.query_all(f"TRANSACTION#{tx_id}", "REJECTION#"))
    assert rejections and all(abs(i[schema.TTL_ATTRIBUTE] - (now + 7 * 86400)) < 5 for i in rejections)
    # the campaign summary outlives message detail: no TTL on the transaction
    assert schema.TTL_ATTRIBUTE not in deps.store.table.get(schema.transaction_key(tx_id))
    s3 = deps.clients["s3"]
    key = batch.s3_file_path.split("/", 3)[3]
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=deps.settings.bucket("batches"),
                                                                 Key=key)["TagSet"]}
    assert tags == {schema.RETENTION_TAG: "14"}


def test_send_log_items_expire_with_the_tenants_message_retention(deps, tenant):
    """A send-log entry's outcomes may quote an SES error text naming the recipient: it lives as
    long as the message detail it describes, not for ever."""
    privacy.set_retention(privacy_ports(deps, peer_table=False).retention, "tenant-a", {"messages": 30},
                          deps.clock.now())
    tx_id = submit(deps, "tenant-a", csv_with_target())
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    (batch,) = deps.store.batches(tx_id)
    batch_sender(deps, RecordingMailer(deps.mailer)).send_batch(tx_id, batch.batch_id)
    now = deps.clock.now().timestamp()
    logs = list(deps.store.table.query_all(f"BATCH#{batch.batch_id}", "SENDLOG#"))
    assert logs and all(i["state"] == "DONE" for i in logs)
    assert all(abs(i[schema.TTL_ATTRIBUTE] - (now + 30 * 86400)) < 5 for i in logs)


def test_retention_outside_its_bounds_is_refused_naming_the_kind(deps, tenant):
    repo = privacy_ports(deps, peer_table=False).retention
    with pytest.raises(Exception, match="messages must be 7..400"):
        privacy.set_retention(repo, "tenant-a", {"messages": 1000}, deps.clock.now())
    with pytest.raises(Exception, match="unknown retention kind"):
        privacy.set_retention(repo, "tenant-a", {"forever": 1}, deps.clock.now())
    assert privacy.retention_for(repo, "tenant-a")["messages"] == 90  # unchanged default


# --- erasure ---------------------------------------------------------------------------------------


@pytest.fixture
def dr(deps, settings):
    """The DR region: resources, table and bucket replication (emulated), its own analytics."""
    d = settings.model_copy(update={"region": settings.dr_region, "dr_region": settings.region})
    create_resources(d)
    echoes = EchoRegistry()
    table = TableReplicator(settings, settings.region, settings.dr_region, lag=0.1, echoes=echoes)
    buckets = BucketReplicator(settings, settings.region, settings.dr_region, interval=0.2)
    table.start()
    buckets.start()
    deps.peer_analytics[settings.dr_region] = SqliteAnalytics()
    yield {"settings": d, "table": table, "buckets": buckets}
    table.stop()
    buckets.stop()


def _sent_campaign_with_events(deps):
    tx_id = submit(deps, "tenant-a", csv_with_target())
    batch, mailer = send_single_batch(deps, tx_id)
    target = next(s for s in mailer.sent if s["to"].lower() == TARGET.lower())
    for name in ("ses_send.json", "ses_delivery.json", "ses_open.json", "ses_click.json"):
        record_ses_event(sns_envelope(ses_event_for(name, tenant="tenant-a", message_id=target["tags"]["message_id"],
                                                    recipient=target["to"], ses_id=target["ses_id"])),
                         store=deps.store, analytics=deps.analytics)
    return tx_id, target


def _wait(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _scan(client, table_name):
    items, kw = [], {}
    while True:
        resp = client.scan(TableName=table_name, **kw)
        items += resp["Items"]
        if "LastEvaluatedKey" not in resp:
            return items
        kw["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def find_everywhere(deps, settings, needles: set[str]) -> list[str]:
    """Every place in both regions (every table item, every object version in every bucket,
    every analytics store) whose content mentions one of ``needles`` (lower-case)."""
    from core.adapters.aws import client

    hits = []
    for region in (settings.region, settings.dr_region):
        for item in _scan(client(settings, "dynamodb", region), settings.table_name):
            text = repr(item).lower()
            if any(n in text for n in needles):
                hits.append(f"{region} table {item['PK']['S']} {item['SK']['S']}")
        s3 = client(settings, "s3", region)
        for b in schema.BUCKETS:
            if b.purpose == schema.SES_EVENTS_STREAM.bucket:
                continue  # SES events in flight, like a queue's messages: deleted once recorded (no consumer runs here)
            bucket = settings.bucket(b.purpose, region)
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                for v in page.get("Versions", []):
                    body = s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read().lower()
                    if any(n.encode() in body for n in needles):
                        hits.append(f"{region} s3 {bucket}/{v['Key']}@{v['VersionId']}")
    for region, store in ((settings.region, deps.analytics), *deps.peer_analytics.items()):
        rows = store._q("SELECT doc FROM events", ())
        hits += [f"{region} analytics" for (doc,) in rows if any(n in doc.lower() for n in needles)]
    return hits


def test_erasure_interrupted_mid_way_resumes_and_leaves_only_the_suppression_hash(deps, tenant, settings, dr):
    tx_id, target = _sent_campaign_with_events(deps)
    # an SES error text that names the recipient, kept in a send-log entry (an earlier attempt)
    batch_id = target["tags"]["message_id"].rsplit("-", 1)[0]
    deps.store.table.put({**schema.send_log_key(batch_id, 99, 1), "state": "DONE", "results": {
        target["tags"]["message_id"]: {"outcome": "FAILED", "reason": f"MessageRejected: {TARGET} not verified"}}})
    # the DR pipeline recorded an event of the person too (mail DR sent after a failover)
    deps.peer_analytics[settings.dr_region].index_event({
        "event_id": "dr-1", "tenant_id": "tenant-a", "transaction_id": tx_id, "message_id": target["tags"]["message_id"],
        "event_type": "Delivery", "timestamp": "2026-01-01T10:00:00Z", "recipient_email": target["to"],
        "metadata": {"link_url": None, "bounce_type": None, "bounce_subtype": None, "diagnostic": None}})
    needles = {TARGET.lower(), PLACEHOLDER.lower()}
    _wait(lambda: dr["buckets"].backlog() == 0, what="S3 replica")
    _wait(lambda: any("eu-central-1 table" in h for h in find_everywhere(deps, settings, needles)), what="table replica")
    before = find_everywhere(deps, settings, needles)
    assert any("s3" in h and settings.dr_region in h for h in before)  # the DR copy holds the person too

    ports = privacy_ports(deps)
    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")
    assert "address" not in job and TARGET.lower() not in repr(job).lower()

    # GIVEN a controller that dies in the middle (after the suppression, inside the objects step)
    calls = {"n": 0}

    def crash_in_objects():
        calls["n"] += 1
        return ports.jobs.get(job["erasure_id"])["step"] == "objects" and calls["n"] > 1

    with pytest.raises(privacy.Interrupted):
        privacy.run_erasure(ports, job["erasure_id"], crash_in_objects)
    mid = privacy.get_erasure(ports.jobs, "tenant-a", job["erasure_id"])
    assert mid["step"] == "objects" and mid["status"] == privacy.RUNNING
    # the person can no longer be mailed from the first step on
    assert deps.store.are_suppressed("tenant-a", [target["to"].lower()]) == {target["to"].lower()}

    # WHEN a new controller runs the job again (to completion, waiting for the replica if behind)
    deadline = time.monotonic() + 60
    while (state := privacy.run_erasure(ports, job["erasure_id"]))["status"] != privacy.COMPLETED:
        assert time.monotonic() < deadline, state
        time.sleep(0.2)

    # THEN nothing in either region mentions the person any more
    _wait(lambda: not find_everywhere(deps, settings, needles), timeout=30,
          what=f"erasure everywhere: {find_everywhere(deps, settings, needles)}")
    done = privacy.get_erasure(ports.jobs, "tenant-a", job["erasure_id"])
    r = done["receipt"]
    assert r["messages_pseudonymised"] == 1 and r["rejections_redacted"] == 1
    assert r["send_log_entries_redacted"] == 1
    assert r["replica"] == {settings.dr_region: "verified"}
    assert r["analytics_events_deleted"][settings.dr_region] == 1
    assert r["analytics_events_deleted"][settings.region] >= 4
    assert {o.split(":")[0] for o in r["objects_rewritten"]} == {settings.region, settings.dr_region}
    assert sum(r["csv_rows_removed"].values()) >= 4  # upload (2 rows) and batch file, in both regions
    # the only trace is the keyed hash (no address in it), in both regions
    hashed = deps.store.table.get(schema.suppression_hash_key("tenant-a", done["receipt"]["suppression"]["address_hash"]))
    assert hashed and hashed["reason"] == "erasure" and "email" not in hashed
    # the campaign summary outlives the detail
    assert deps.store.get_transaction(tx_id).total_messages == 3
    # other recipients are untouched
    assert find_everywhere(deps, settings, {"keep1@example.org"})

    # running it again is a no-op
    again = privacy.run_erasure(ports, job["erasure_id"])
    assert again["status"] == privacy.COMPLETED and again["version"] == ports.jobs.get(job["erasure_id"])["version"]


def _erasure_process(settings, erasure_id: str, tmp_path, kill_after: str | None, run: int) -> subprocess.Popen:
    """tests/integration/erasure_process.py: a controller process of its own on the same moto server,
    table, buckets and analytics files; ``kill_after`` makes it SIGKILL itself inside a step."""
    env = {**os.environ, "EMAILPLATFORM_ENVIRONMENT": "test", "EMAILPLATFORM_AWS_ENDPOINT_URL": settings.aws_endpoint_url,
           "EMAILPLATFORM_NAME_PREFIX": settings.name_prefix, "EMAILPLATFORM_LEASE_SECONDS": "1.5",
           "EMAILPLATFORM_ANALYTICS_DB_PATH": str(tmp_path / "home.db"),
           "ERASURE_TEST_PEER_ANALYTICS": str(tmp_path / "dr.db")}
    env.pop("ERASURE_TEST_KILL_AFTER", None)
    if kill_after:
        env["ERASURE_TEST_KILL_AFTER"] = kill_after
    with open(tmp_path / f"erasure-{run}.log", "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.integration.erasure_process", erasure_id], env=env,
                                cwd=Path(__file__).parents[2], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def test_erasure_killed_inside_the_messages_and_objects_steps_resumes_in_a_fresh_process(
        deps, tenant, settings, dr, tmp_path):
    """kill -9 of the process running the erasure in the middle of a step (one of the person's two
    messages pseudonymised; one object rewritten, its old version not yet deleted), twice, then a
    fresh process finishes it: nothing in either region mentions the person but the keyed hash,
    and the receipt counts every action once, those of the killed processes included. The message
    the first kill falls after quotes the address in its failure_reason: once its address is
    replaced no resumed erasure finds it again, so that text must go in the same write."""
    # analytics in files the erasure processes open too
    deps.analytics = SqliteAnalytics(str(tmp_path / "home.db"))
    deps.peer_analytics[settings.dr_region] = SqliteAnalytics(str(tmp_path / "dr.db"))
    tx_id, target = _sent_campaign_with_events(deps)
    batch_id = target["tags"]["message_id"].rsplit("-", 1)[0]
    rejected = f"MessageRejected: {TARGET} not verified"  # an earlier attempt's SES rejection names the recipient
    deps.store.table.put({**schema.send_log_key(batch_id, 99, 1), "state": "DONE", "results": {
        target["tags"]["message_id"]: {"outcome": "FAILED", "reason": rejected}}})
    first_message = schema.message_key(batch_id, target["tags"]["message_id"])
    deps.store.table.put({**deps.store.table.get(first_message), "failure_reason": f"SES refused: {rejected}"})
    deps.peer_analytics[settings.dr_region].index_event({
        "event_id": "dr-1", "tenant_id": "tenant-a", "transaction_id": tx_id, "message_id": target["tags"]["message_id"],
        "event_type": "Delivery", "timestamp": "2026-01-01T10:00:00Z", "recipient_email": target["to"],
        "metadata": {"link_url": None, "bounce_type": None, "bounce_subtype": None, "diagnostic": None}})
    # a second campaign to the person, ingested, not sent yet: two messages, four objects per region
    submit(deps, "tenant-a", f"email,first_name\n{TARGET},{PLACEHOLDER}\nkeep3@example.org,Ann\n")
    leader(deps).ingest_pass()
    needles = {TARGET.lower(), PLACEHOLDER.lower()}
    _wait(lambda: dr["buckets"].backlog() == 0, what="S3 replica")
    _wait(lambda: sum(" s3 " in h and settings.dr_region in h for h in find_everywhere(deps, settings, needles)) == 4,
          what="both campaigns' objects replicated")
    ports = privacy_ports(deps)
    eid = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")["erasure_id"]
    leader(deps).lease.release()  # the erasure processes elect themselves

    def receipt():
        return privacy.get_erasure(ports.jobs, "tenant-a", eid)

    # GIVEN a process killed right after the first of the person's messages was pseudonymised
    first = _erasure_process(settings, eid, tmp_path, "messages:1", 1)
    assert first.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "erasure-1.log").read_text()
    mid = receipt()
    assert mid["step"] == "messages" and mid["receipt"]["messages_pseudonymised"] == 1
    assert any(" table BATCH#" in h for h in find_everywhere(deps, settings, needles))  # the other message
    # the message quoting the address: pseudonymised, its failure_reason with it, by the one write
    hit = deps.store.table.get(first_message)
    assert hit["recipient_email"] == privacy.ERASED_ADDRESS, "the kill at messages:1 must fall after this message"
    assert TARGET.lower() not in repr(hit).lower() and hit["failure_reason"] == "[erased]"

    # AND its successor killed right after its first object rewrite, before the old version went
    second = _erasure_process(settings, eid, tmp_path, "objects:1", 2)
    assert second.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "erasure-2.log").read_text()
    mid = receipt()
    assert mid["step"] == "objects" and len(mid["receipt"]["objects_rewritten"]) == 1
    assert any(f"{settings.region} s3 " in h for h in find_everywhere(deps, settings, needles))

    # WHEN a fresh process resumes the erasure
    third = _erasure_process(settings, eid, tmp_path, None, 3)
    assert third.wait(timeout=60) == 0, (tmp_path / "erasure-3.log").read_text()

    # THEN no table item, object version or analytics event in either region mentions the person
    _wait(lambda: not find_everywhere(deps, settings, needles), timeout=15,
          what=f"erasure everywhere: {find_everywhere(deps, settings, needles)}")
    done = receipt()
    r = done["receipt"]
    assert done["status"] == privacy.COMPLETED
    # AND the receipt holds what the killed processes did, once
    assert r["messages_pseudonymised"] == 2 and r["messages_stopped_before_sending"] == 1
    assert r["rejections_redacted"] == 1 and r["send_log_entries_redacted"] == 1
    home = settings.region
    assert len([o for o in r["objects_rewritten"] if o.startswith(f"{home}:")]) == 4
    assert r["object_versions_deleted"][home] == 4
    assert r["csv_rows_removed"][home] == 5  # upload 1 (2 rows), its batch file, upload 2, its batch file
    assert r["object_versions_deleted"][settings.dr_region] >= 4
    assert r["analytics_events_deleted"][settings.dr_region] == 1 and r["analytics_events_deleted"][home] == 4
    assert r["replica"] == {settings.dr_region: "verified"}
    hashed = deps.store.table.get(schema.suppression_hash_key("tenant-a", r["suppression"]["address_hash"]))
    assert hashed and hashed["reason"] == "erasure" and "email" not in hashed
    assert "address" not in ports.jobs.get(eid)
    assert find_everywhere(deps, settings, {"keep1@example.org", "keep3@example.org"})  # the others stay


def test_an_erased_address_is_refused_at_ingest_and_never_sent(deps, tenant, settings):
    ports = privacy_ports(deps, peer_table=False)
    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")
    privacy.run_erasure(ports, job["erasure_id"])
    # a late event or an old unsubscribe link never writes the address down again
    assert deps.store.suppress("tenant-a", TARGET.lower(), "unsubscribe") is False
    assert deps.store.get_suppression("tenant-a", TARGET.lower()) is None
    tx_id = submit(deps, "tenant-a", csv_with_target())
    leader(deps).ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.READY_TO_SEND and tx.total_messages == 2
    rows, _ = deps.store.rejections_page(tx_id, 50, None)
    refused = {r.line: r for r in rows}
    assert refused[3].reason.startswith("suppressed") and refused[3].email is None


def test_a_message_not_yet_sent_is_stopped_by_the_erasure(deps, tenant, settings):
    tx_id = submit(deps, "tenant-a", csv_with_target())
    leader(deps).ingest_pass()
    ports = privacy_ports(deps, peer_table=False)
    job = privacy.request_erasure(ports, "tenant-a", TARGET, "key_test")
    privacy.run_erasure(ports, job["erasure_id"])
    (batch,) = deps.store.batches(tx_id)
    msgs, _ = deps.store.batch_partition(batch.batch_id)
    erased = [m for m in msgs if m.recipient_email == "erased@invalid"]
    assert len(erased) == 1 and erased[0].status == MessageStatus.SUPPRESSED and erased[0].placeholder_data == {}
    mailer = RecordingMailer(deps.mailer)
    c = leader(deps)
    c.advance_pass()
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert sorted(s["to"] for s in mailer.sent) == ["keep1@example.org", "keep2@example.org"]


def test_subject_access_returns_what_is_held_for_the_address(deps, tenant, settings):
    tx_id, target = _sent_campaign_with_events(deps)
    ports = privacy_ports(deps, peer_table=False)
    out = privacy.subject_access(ports, "tenant-a", TARGET)
    assert out["address"] == TARGET.lower()
    (m,) = out["messages"]
    assert m["placeholder_data"] == {"first_name": PLACEHOLDER} and m["transaction_id"] == tx_id
    assert {e["type"] for e in m["events"]} >= {"Send", "Delivery"}
    assert [r["line"] for r in out["rejections"]] == [5]
    assert {f["store"] for f in out["stored_files"]} == {"uploads", "batches"}
    assert len(out["analytics_events"]) >= 4
    assert out["retention_days"]["messages"] == 90
    with pytest.raises(Exception, match="nothing is held"):
        privacy.subject_access(ports, "tenant-a", "stranger@example.org")


def test_the_embedded_ttl_sweeper_deletes_expired_items_only(deps, tenant, settings):
    from local.retention import TtlSweeper

    now = deps.clock.now().timestamp()
    deps.store.table.put({"PK": "T#1", "SK": "old", schema.TTL_ATTRIBUTE: int(now) - 10})
    deps.store.table.put({"PK": "T#1", "SK": "young", schema.TTL_ATTRIBUTE: int(now) + 3600})
    deps.store.table.put({"PK": "T#1", "SK": "forever"})
    assert TtlSweeper(settings, now=lambda: now).sweep_once() == 1
    assert [i["SK"] for i in deps.store.table.query_all("T#1")] == ["forever", "young"]


def _admin_env(settings, monkeypatch) -> None:
    for name, value in (("AWS_ENDPOINT_URL", settings.aws_endpoint_url), ("NAME_PREFIX", settings.name_prefix),
                        ("ENVIRONMENT", "test")):
        monkeypatch.setenv(f"EMAILPLATFORM_{name}", value)


def test_operator_actions_from_the_cli_are_in_the_tenants_audit_log(deps, settings, monkeypatch, capsys):
    from core.adapters.privacy import AuditRepository
    from ops import cli

    _admin_env(settings, monkeypatch)
    assert cli.main(["keys", "create", "--tenant", "acme", "--scope", "campaigns:read"]) == 0
    key_id = json.loads(capsys.readouterr().out)["key_id"]
    assert cli.main(["keys", "revoke", "--tenant", "acme", "--key-id", key_id]) == 0
    entries = AuditRepository(deps.store.table).page("acme", 10, None).items
    assert [e["action"] for e in entries] == ["CLI keys revoke", "CLI keys create"]
    assert all(e["actor"].startswith("operator:") and e["target"] == {"key_id": key_id} for e in entries)
    assert all(schema.TTL_ATTRIBUTE in i for i in deps.store.table.query_all("AUDIT#acme"))


def test_the_admin_cli_creates_a_tenant_with_its_signing_secret_and_senders(deps, settings, monkeypatch, capsys):
    """A production tenant needs no embedded stack: `emailplatform-admin tenant create`."""
    from ops import cli

    _admin_env(settings, monkeypatch)
    assert cli.main(["tenant", "show", "--tenant", "globex"]) == 1
    capsys.readouterr()
    assert cli.main(["tenant", "create", "--tenant", "globex", "--sender", "news@globex.example",
                     "--sender", "@mail.globex.example"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["senders"] == ["@mail.globex.example", "news@globex.example"]
    assert len(made["webhook_secrets"]) == 1 and made["webhook_secrets"] == deps.secrets.signing_secrets("globex")
    assert cli.main(["tenant", "create", "--tenant", "globex"]) == 0  # idempotent: the secret stays
    assert json.loads(capsys.readouterr().out)["webhook_secrets"] == made["webhook_secrets"]
    with pytest.raises(SystemExit):
        cli.main(["tenant", "create", "--tenant", "bad tenant!"])


def test_analytics_older_than_the_tenants_retention_are_purged(deps, tenant):
    ports = privacy_ports(deps, peer_table=False)
    privacy.set_retention(ports.retention, "tenant-a", {"analytics": 30}, deps.clock.now())
    store = SqliteAnalytics()
    for eid, ts, tenant_id in (("old", "2020-01-01T00:00:00Z", "tenant-a"), ("new", "2999-01-01T00:00:00Z", "tenant-a"),
                               ("other", "2020-01-01T00:00:00Z", "tenant-b")):
        store.index_event({"event_id": eid, "tenant_id": tenant_id, "transaction_id": "tx", "message_id": "m",
                           "event_type": "Open", "timestamp": ts, "recipient_email": "x@example.org",
                           "metadata": {"link_url": None, "bounce_type": None, "bounce_subtype": None,
                                        "diagnostic": None}})
    assert privacy.purge_analytics(ports.retention, store, deps.clock.now()) == 1
    assert sorted(e for (e,) in store._q("SELECT event_id FROM events", ())) == ["new", "other"]  # b: platform ISM


def test_the_leaders_retention_purge_reaches_the_standby_regions_analytics_too(deps, tenant, settings):
    """The DR region's controller is a standby (the active-region flag names this region): it runs
    no pass, so the leader's hourly purge is what keeps that region's store within retention."""
    from controller.jobs import Controller

    privacy.set_retention(privacy_ports(deps, peer_table=False).retention, "tenant-a", {"analytics": 30},
                          deps.clock.now())
    dr_store = deps.peer_analytics[settings.dr_region] = SqliteAnalytics()  # e.g. indexed before a failback
    for store in (deps.analytics, dr_store):
        for eid, ts in (("old", "2020-01-01T00:00:00Z"), ("new", "2999-01-01T00:00:00Z")):
            store.index_event({"event_id": eid, "tenant_id": "tenant-a", "transaction_id": "tx", "message_id": "m",
                               "event_type": "Open", "timestamp": ts, "recipient_email": "x@example.org",
                               "metadata": {"link_url": None, "bounce_type": None, "bounce_subtype": None,
                                            "diagnostic": None}})
    deps.store.table.put({**schema.ACTIVE_REGION_KEY, "region": settings.region})

    def held(store):
        return sorted(e for (e,) in store._q("SELECT event_id FROM events", ()))

    # GIVEN the DR region's controller, a standby: it takes no lease and its privacy pass does nothing
    standby = Controller(deps, "dr-controller", region=settings.dr_region)
    assert standby.heartbeat() is False
    standby.privacy_pass()
    assert held(dr_store) == ["new", "old"]

    # WHEN the active region's leader runs its privacy pass
    leader(deps).privacy_pass()

    # THEN old events are gone from both regions' stores
    assert held(deps.analytics) == ["new"] and held(dr_store) == ["new"]


class _Unreachable:
    """An analytics store whose domain does not answer (no grant, network down) while ``down``."""

    def __init__(self, real):
        self.real, self.down, self.calls = real, True, 0

    def purge_before(self, tenant_id, cutoff):
        self.calls += 1
        if self.down:
            raise ConnectionError("OpenSearch domain unreachable")
        return self.real.purge_before(tenant_id, cutoff)


def test_a_failed_analytics_purge_is_counted_and_tried_again_at_the_next_pass(deps, tenant, settings):
    """A region whose store fails is counted in the pass errors (job privacy), the other region is
    still purged, and the purge is tried again at the next pass, not an hour later; once every
    region succeeded, the next purge waits the hour."""
    from prometheus_client import REGISTRY

    def errors():
        return REGISTRY.get_sample_value("emailplatform_controller_pass_errors_total",
                                         {"job": "privacy", "kind": "ConnectionError"}) or 0

    privacy.set_retention(privacy_ports(deps, peer_table=False).retention, "tenant-a", {"analytics": 30},
                          deps.clock.now())
    home_db, dr_db = deps.analytics, SqliteAnalytics()
    for store in (home_db, dr_db):
        store.index_event({"event_id": "old", "tenant_id": "tenant-a", "transaction_id": "tx", "message_id": "m",
                           "event_type": "Open", "timestamp": "2020-01-01T00:00:00Z", "recipient_email": "x@example.org",
                           "metadata": {"link_url": None, "bounce_type": None, "bounce_subtype": None,
                                        "diagnostic": None}})
    home = deps.analytics = _Unreachable(home_db)
    home.down = False
    dr_store = deps.peer_analytics[settings.dr_region] = _Unreachable(dr_db)
    c = leader(deps)

    def held(store):
        return [e for (e,) in store._q("SELECT event_id FROM events", ())]

    # GIVEN the DR region's store unreachable: this region's is purged, the failure counted
    before = errors()
    c.privacy_pass()
    assert held(home_db) == [] and held(dr_db) == ["old"] and errors() == before + 1

    # WHEN both regions' stores fail a minute later: both are tried again, each failure counted
    home.down = True
    deps.clock.advance(60)
    assert c.heartbeat()
    c.privacy_pass()
    assert (home.calls, dr_store.calls) == (2, 2) and errors() == before + 3

    # AND they answer again at the next pass: the DR store is purged
    home.down = dr_store.down = False
    deps.clock.advance(60)
    assert c.heartbeat()
    c.privacy_pass()
    assert held(dr_db) == [] and (home.calls, dr_store.calls) == (3, 3) and errors() == before + 3

    # THEN with every region purged, the next purge waits the hour
    deps.clock.advance(60)
    assert c.heartbeat()
    c.privacy_pass()
    assert (home.calls, dr_store.calls) == (3, 3)


def test_suppression_calls_for_an_erased_address_answer_without_writing_it(deps, tenant):
    from core.services import suppressions

    ports = privacy_ports(deps, peer_table=False)
    privacy.run_erasure(ports, privacy.request_erasure(ports, "tenant-a", TARGET, "k")["erasure_id"])
    out = suppressions.add_suppression(deps.store, "tenant-a", TARGET, "manual")
    assert out["reason"] == "erasure" and out["kept_as"] == "keyed hash"
    assert suppressions.get_suppression(deps.store, "tenant-a", TARGET)["reason"] == "erasure"
    assert deps.store.get_suppression("tenant-a", TARGET.lower()) is None  # no plain-text copy came back
