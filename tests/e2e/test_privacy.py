"""Erasure, subject access, retention and the audit log over HTTP, as Message Centre would use
them, on the embedded stack with its DR side (replicated table and buckets, DR analytics store):
after the erasure the address is nowhere in either region but as the suppression's keyed hash."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest
import structlog

from core import schema
from core.adapters.analytics import SqliteAnalytics
from core.adapters.aws import client
from core.observability import configure_logging
from local.bootstrap import create_resources
from local.replication import BucketReplicator, EchoRegistry, TableReplicator
from ops.client import ApiError
from tests.e2e.test_api import HTML

PERSON = "Forget.Me@example.org"
PLACEHOLDER = "Quuxly"



@pytest.fixture(scope="module")
def stack(moto_server, aws_calls):
    """A stack of its own: the erasure test searches every item and object version in both
    regions, which on the tier's shared stack (thousands of messages by now) outlasts its waits."""
    from tests.e2e.conftest import start_e2e_stack

    s = start_e2e_stack(moto_server, aws_calls)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api(stack):
    from ops.client import Client

    return Client(f"http://127.0.0.1:{stack.settings.api_port}/api/v1/email", stack.tenant["api_key"])

@pytest.fixture(scope="module")
def dr_side(stack):
    p = stack.settings
    create_resources(p.model_copy(update={"region": p.dr_region, "dr_region": p.region}))
    echoes = EchoRegistry()
    table = TableReplicator(p, p.region, p.dr_region, lag=0.1, echoes=echoes)
    buckets = BucketReplicator(p, p.region, p.dr_region, interval=0.3)
    table.start()
    buckets.start()
    stack.deps.peer_analytics[p.dr_region] = SqliteAnalytics()
    yield {"table": table, "buckets": buckets, "analytics": stack.deps.peer_analytics[p.dr_region]}
    stack.deps.peer_analytics.pop(p.dr_region, None)
    table.stop()
    buckets.stop()


def _wait(predicate, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)
    return value


def everywhere(stack, needles):
    """Every table item, object version and analytics event in both regions mentioning a needle."""
    s = stack.settings
    hits = []
    for region in (s.region, s.dr_region):
        ddb = client(s, "dynamodb", region)
        kw: dict = {}
        while True:
            resp = ddb.scan(TableName=s.table_name, **kw)
            hits += [f"{region} {i['PK']['S']} {i['SK']['S']}" for i in resp["Items"]
                     if any(n in repr(i).lower() for n in needles)]
            if "LastEvaluatedKey" not in resp:
                break
            kw["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        s3 = client(s, "s3", region)
        for b in schema.BUCKETS:
            bucket = s.bucket(b.purpose, region)
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                for v in page.get("Versions", []):
                    body = s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read().lower()
                    if any(n.encode() in body for n in needles):
                        hits.append(f"{region} s3://{bucket}/{v['Key']}@{v['VersionId']}")
    for region, store in ((s.region, stack.deps.analytics), *stack.deps.peer_analytics.items()):
        hits += [f"{region} analytics" for (doc,) in store._q("SELECT doc FROM events", ())
                 if any(n in doc.lower() for n in needles)]
    return hits


def test_erasure_over_http_leaves_the_address_only_as_a_keyed_hash(stack, api, dr_side):
    needles = {PERSON.lower(), PLACEHOLDER.lower()}
    tid = api.create_template("Privacy", "Hi {{ first_name }}", HTML)
    up = api.upload_csv(f"email,first_name\nsuccess@simulator.amazonses.com,Keep\n{PERSON},{PLACEHOLDER}\n"
                        f"forget.me@example.org,{PLACEHOLDER}Twice\n")
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})["transaction_id"]
    api.wait_for(tx, {"SENT", "COMPLETED"}, timeout=180)
    _wait(lambda: stack.deps.analytics.recipient_events("local-tenant", {PERSON.lower()}), what="SES events indexed")
    dr_side["analytics"].index_event({  # what DR's own pipeline would hold after sending to them
        "event_id": "dr-e2e-1", "tenant_id": "local-tenant", "transaction_id": tx, "message_id": f"{tx}-b00001-00002",
        "event_type": "Delivery", "timestamp": "2026-01-01T10:00:00Z", "recipient_email": PERSON.lower(),
        "metadata": {"link_url": None, "bounce_type": None, "bounce_subtype": None, "diagnostic": None}})
    _wait(lambda: dr_side["buckets"].backlog() == 0, what="S3 replica")
    _wait(lambda: any(h.startswith(stack.settings.dr_region + " BATCH#") for h in everywhere(stack, needles)),
          what="table replica")

    # GIVEN subject access shows what is held
    held = api.call("GET", f"/privacy/subjects/{quote(PERSON)}")
    assert held["messages"][0]["placeholder_data"] == {"first_name": PLACEHOLDER}
    assert held["rejections"] and held["stored_files"] and held["analytics_events"]

    # WHEN the person is erased
    job = api.call("POST", "/privacy/erasures", json={"email": PERSON}, expect=(202,))
    assert PERSON.lower() not in json.dumps(job).lower()
    done = _wait(lambda: (j := api.call("GET", f"/privacy/erasures/{job['erasure_id']}"))["status"] == "COMPLETED"
                 and j, timeout=180, what="erasure completed")

    # THEN the receipt says what went where, and nothing in either region mentions them
    r = done["receipt"]
    assert r["messages_pseudonymised"] == 1 and r["rejections_redacted"] == 1
    assert r["replica"] == {stack.settings.dr_region: "verified"}
    assert r["analytics_events_deleted"][stack.settings.dr_region] == 1
    assert {o.split(":")[0] for o in r["objects_rewritten"]} == {stack.settings.region, stack.settings.dr_region}
    _wait(lambda: not everywhere(stack, needles), timeout=30, what=f"nothing left: {everywhere(stack, needles)}")
    after = api.call("GET", f"/privacy/subjects/{quote(PERSON)}")
    assert after["messages"] == [] and after["rejections"] == [] and after["stored_files"] == []
    assert [s["reason"] for s in after["suppressions"]] == ["erasure"] and "email" not in after["suppressions"][0]

    # and they are never mailed again: a new campaign refuses the row without writing the address
    up2 = api.upload_csv(f"email,first_name\n{PERSON},Again\nsuccess@simulator.amazonses.com,K\n")
    tx2 = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up2["upload_id"]})["transaction_id"]
    api.wait_for(tx2, {"SENT", "COMPLETED"}, timeout=180)
    rejected = api.call("GET", f"/campaigns/{tx2}/rejections")["items"]
    assert [x["reason"].split(":")[0] for x in rejected] == ["suppressed"] and rejected[0].get("email") is None

    # the audit log recorded the erasure and the subject access, without the address
    entries = api.call("GET", "/audit?limit=200")["items"]
    actions = {e["action"] for e in entries}
    assert {"POST /privacy/erasures", "GET /privacy/subjects/{email}"} <= actions
    erasure_entry = next(e for e in entries if e["action"] == "POST /privacy/erasures")
    assert erasure_entry["target"] == {"erasure_id": job["erasure_id"]} and erasure_entry["status"] == 202
    assert erasure_entry["source_ip"] and erasure_entry["request_id"] and erasure_entry["actor"].startswith("key_")
    assert PERSON.lower() not in json.dumps(entries).lower()


def test_audit_log_pages_with_sealed_cursors_and_needs_its_scope(stack, api):
    api.call("PUT", "/suppressions/audited%40example.org", json={})
    api.call("DELETE", "/suppressions/audited%40example.org")
    first = api.call("GET", "/audit?limit=1")
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = api.call("GET", f"/audit?limit=1&cursor={quote(first['next_cursor'])}")
    assert second["items"][0]["entry_id"] != first["items"][0]["entry_id"]
    with pytest.raises(ApiError) as bad:
        api.call("GET", "/audit?cursor=forged.cursor")
    assert bad.value.status == 400
    entries = api.call("GET", "/audit?limit=50")["items"]
    sup = [e for e in entries if e["action"] == "PUT /suppressions/{email}"]
    assert sup and sup[0]["target"]["email"].startswith("hmac:")
    assert "audited@example.org" not in json.dumps(entries)
    # a key without audit:read gets 403
    from core.services.auth import create_key

    raw, _ = create_key(stack.deps.store, "local-tenant", ["campaigns:read"])
    from ops.client import Client

    reader = Client(api.base, raw)
    with pytest.raises(ApiError) as denied:
        reader.call("GET", "/audit")
    assert denied.value.status == 403


def test_retention_settings_over_http(api):
    got = api.call("GET", "/privacy/retention")
    assert got["retention_days"]["messages"] == 90 and got["bounds"]["uploads"]["max"] == 30
    changed = api.call("PUT", "/privacy/retention", json={"messages": 60})
    assert changed["retention_days"]["messages"] == 60
    with pytest.raises(ApiError) as bad:
        api.call("PUT", "/privacy/retention", json={"uploads": 365})
    assert bad.value.status == 422
    api.call("PUT", "/privacy/retention", json={"messages": 90})


def test_compliance_report_for_a_period_as_json_and_html(stack, api):
    from datetime import UTC, datetime, timedelta

    from core.domain.unsubscribe import sign_unsubscribe_token as unsubscribe_token

    token = unsubscribe_token(stack.settings.unsubscribe_secret, "local-tenant", "leaving@example.org", "m-1")
    api.call("POST", f"/unsubscribe/{token}")  # public, one-click
    # mail sent and an erasure completed in the period by this test itself, whatever ran before it
    tid = api.create_template("Report", "Hi {{ email }}", "<p>Hi {{ email }}</p>")
    up = api.upload_csv("email\nsuccess@simulator.amazonses.com\n")
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})["transaction_id"]
    api.wait_for(tx, {"COMPLETED"}, timeout=180)
    # and an erasure completed in the period, also its own
    job = api.call("POST", "/privacy/erasures", json={"email": "report.erased@example.org"}, expect=(202,))
    _wait(lambda: api.call("GET", f"/privacy/erasures/{job['erasure_id']}")["status"] == "COMPLETED", timeout=180,
          what="erasure")
    today = datetime.now(UTC).date()
    period = f"start={today - timedelta(days=1)}&end={today + timedelta(days=1)}"
    r = api.call("GET", f"/compliance/report?{period}")
    assert r["mail"]["sent"] >= 1 and r["mail"]["campaigns"] >= 1
    assert r["unsubscribes"]["honoured"] >= 1 and r["suppressions"]["by_reason"]["unsubscribe"] >= 1
    assert r["erasures"]["completed"] >= 1 and r["erasures"]["max_seconds"] is not None
    assert set(r["reputation"]) >= {"bounce_rate", "complaint_rate", "ses_limits", "within_ses_limits"}
    page = api.call("GET", f"/compliance/report?{period}&format=html")
    assert "<h1>Compliance report</h1>" in page and "local-tenant" in page
    with pytest.raises(ApiError) as bad:
        api.call("GET", f"/compliance/report?start={today}&end={today}")
    assert bad.value.status == 422


def test_the_logs_of_an_e2e_run_hold_no_address_or_placeholder_value(stack, api, capsys):
    """Everything the embedded stack logged while a campaign ran (sends, SES events with a bounce
    and a complaint, a suppression over the API, an erasure) is scanned for the addresses and a
    placeholder value."""
    value = "Snorkelwhistle"
    people = ["log.scan@example.org", "bounce@simulator.amazonses.com", "complaint@simulator.amazonses.com"]
    capsys.readouterr()  # what was logged before this test is not this run's
    # the platform's own logging, writing to this test's captured stderr: a configure_logging by an
    # earlier test in this process bound the stderr of that test's capture, and this one saw nothing
    saved = structlog.get_config()
    configure_logging("INFO")
    try:
        captured = _run_and_capture_logs(stack, api, capsys, people, value)
    finally:
        structlog.configure(**saved)
    logged = (captured.out + captured.err).lower()
    assert "batch sent" in logged  # the run did log
    assert "@masked" in logged  # and lines that named someone (the suppression's audit line) are masked
    for needle in [*people, "manual.log@example.org", value.lower()]:
        assert needle not in logged, f"{needle} in the logs"


def _run_and_capture_logs(stack, api, capsys, people: list[str], value: str):
    tid = api.create_template("Logs", "Hi {{ first_name }}", HTML)
    up = api.upload_csv("email,first_name\n" + "".join(f"{p},{value}\n" for p in people) + "not-an-address,x\n")
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})["transaction_id"]
    api.wait_for(tx, {"SENT", "COMPLETED"}, timeout=180)
    _wait(lambda: stack.deps.store.get_suppression("local-tenant", "complaint@simulator.amazonses.com"),
          what="the complaint's suppression")
    api.call("PUT", f"/suppressions/{quote('manual.log@example.org')}", json={})
    job = api.call("POST", "/privacy/erasures", json={"email": people[0]}, expect=(202,))
    _wait(lambda: api.call("GET", f"/privacy/erasures/{job['erasure_id']}")["status"] == "COMPLETED", timeout=180,
          what="erasure")
    return capsys.readouterr()


def test_compliance_identity_over_http(api):
    assert set(api.call("GET", "/compliance/identity")) >= {"postal_address", "sender_name"}
    out = api.call("PUT", "/compliance/identity", json={"postal_address": "1 Main Street, Springfield 12345, US",
                                                         "sender_name": "Local"})
    assert out["postal_address"].startswith("1 Main Street")
    assert api.call("GET", "/compliance/identity")["sender_name"] == "Local"
    with pytest.raises(ApiError) as bad:
        api.call("PUT", "/compliance/identity", json={"postal_address": "short", "sender_name": "Local"})
    assert bad.value.status == 422
    for body in ({"postal_address": "1 Main Street, Springfield 12345, US"},  # a sender name is required
                 {"postal_address": "1 Main Street, Springfield 12345, US", "sender_name": "   "}):
        with pytest.raises(ApiError) as bad:
            api.call("PUT", "/compliance/identity", json=body)
        assert bad.value.status == 422 and "sender_name" in bad.value.body["error"]["message"]
        assert ["sender_name"] == [loc[-1] for loc in (d["loc"] for d in bad.value.body["error"]["details"])]
    assert api.call("GET", "/compliance/identity")["sender_name"] == "Local"  # unchanged
