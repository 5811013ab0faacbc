"""CSV ingestion against moto: edge cases, whole-file failures, crash and resume."""

import pytest

from core.domain.statuses import BatchStatus, TransactionStatus
from core.services import campaigns
from core.services.ingest import ingest_transaction
from tests.helpers import active_template, leader, recipients, submit


def run_ingest(deps, tx_id, **kw):
    tx = deps.store.get_transaction(tx_id)
    return ingest_transaction(tx, store=deps.store, blobs=deps.blobs, settings=deps.settings, clock=deps.clock, **kw)


def rejections(deps, tx_id):
    rows, _ = deps.store.rejections_page(tx_id, 500, None)
    return {r.line: r.reason.split(":")[0] for r in rows}


def test_messy_csv_is_ingested_with_reasons_per_row(deps, tenant):
    deps.store.suppress("tenant-a", "blocked@example.org", "manual")
    csv_text = (
        "\ufeffEmail,first_name,company\r\n"          # BOM, CRLF, header case
        "a@example.org,Ann,\"ACME, Inc.\"\r\n"        # quoted comma
        "b@example.org,\"Bo\nb\",Corp\r\n"            # quoted newline (2 physical lines)
        "not-an-email,X,Y\r\n"                         # invalid address
        "A@example.org,Dup,Z\r\n"                      # duplicate (case-insensitive)
        "blocked@example.org,S,Z\r\n"                  # suppressed
        "c@example.org,Short\r\n"                      # missing field
        "d@example.org,Long,Z,extra\r\n"               # extra non-empty field
        "e@example.org,Trailing,Z,,\r\n"               # extra empty fields: fine
        "\r\n"                                         # blank line: skipped
    )
    tx_id = submit(deps, "tenant-a", csv_text)
    tx = run_ingest(deps, tx_id)
    assert tx.status == TransactionStatus.READY_TO_SEND
    assert tx.total_messages == 3 and tx.refused_rows == 5
    assert rejections(deps, tx_id) == {5: "invalid_email", 6: "duplicate", 7: "suppressed",
                                       8: "missing_fields", 9: "extra_fields"}
    (batch,) = deps.store.batches(tx_id)
    msgs, _ = deps.store.batch_partition(batch.batch_id)
    by_email = {m.recipient_email: m.placeholder_data for m in msgs}
    assert by_email["a@example.org"] == {"first_name": "Ann", "company": "ACME, Inc."}
    assert by_email["b@example.org"]["first_name"] == "Bo\nb"
    assert batch.status == BatchStatus.READY


@pytest.mark.parametrize("content,reason", [
    (b"name,first\nx,y\n", "missing column 'email'"),
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
    (b"email,first_name\nnot-an-email,x\n", "no valid recipient"),
    (b"email,email\na@x.org,b@x.org\n", "duplicate column"),
])
def test_unusable_files_fail_the_campaign_with_a_reason_and_a_callback(deps, tenant, content, reason):
    tx_id = submit(deps, "tenant-a", content, callback_url="http://127.0.0.1:9/hook")
    tx = run_ingest(deps, tx_id)
    assert tx.status == TransactionStatus.FAILED
    assert reason in tx.failure_reason
    assert deps.store.batches(tx_id) == []
    statuses = [c.payload["status"] for c in deps.store.callbacks(tx_id)]
    assert statuses == ["PROCESSING", "FAILED"]


def test_a_file_without_a_valid_recipient_fails_with_its_refused_rows_counted(deps, tenant):
    """The failed campaign's summary agrees with its /rejections (it said 0 refused)."""
    tx_id = submit(deps, "tenant-a", b"email,first_name\nnot-an-email,x\nalso bad,y\n")
    tx = run_ingest(deps, tx_id)
    assert tx.status == TransactionStatus.FAILED
    assert tx.refused_rows == 2 and tx.live_summary().refused_at_ingest == 2
    assert rejections(deps, tx_id) == {2: "invalid_email", 3: "invalid_email"}
    assert tx.summary.refused_at_ingest == 2  # the summary written with FAILED (the campaign list)


def test_batches_follow_the_configured_size(deps, tenant):
    tx_id = submit(deps, "tenant-a", recipients(120))  # batch_size=50 in tests
    tx = run_ingest(deps, tx_id)
    assert [b.message_count for b in deps.store.batches(tx_id)] == [50, 50, 20]
    assert tx.batch_count == 3 and tx.total_messages == 120


class Crash(Exception):
    pass


def test_crash_mid_file_resumes_without_duplicates_or_loss(deps, tenant, monkeypatch):
    from core.services import ingest

    tx_id = submit(deps, "tenant-a", recipients(180) + "bad-row,x\n" + recipients(40, start=180).split("\n", 1)[1])
    real = ingest._write_batch
    calls = {"n": 0}

    def dies_on_third_batch(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            real(*a, **kw)  # the batch's writes land ...
            raise Crash("killed before the checkpoint")  # ... but the process dies before its checkpoint
        return real(*a, **kw)

    monkeypatch.setattr(ingest, "_write_batch", dies_on_third_batch)
    with pytest.raises(Crash):
        run_ingest(deps, tx_id)
    mid = deps.store.get_transaction(tx_id)
    assert mid.status == TransactionStatus.PROCESSING and mid.ingest_checkpoint == 2
    monkeypatch.setattr(ingest, "_write_batch", real)
    deps.counter.reset()
    tx = run_ingest(deps, tx_id)
    assert tx.status == TransactionStatus.READY_TO_SEND
    batches = deps.store.batches(tx_id)
    assert [b.message_count for b in batches] == [50, 50, 50, 50, 20]
    emails = [m.recipient_email for b in batches for m in deps.store.batch_partition(b.batch_id)[0]]
    assert len(emails) == len(set(emails)) == 220
    assert tx.refused_rows == 1 and len(rejections(deps, tx_id)) == 1
    # the resumed run rewrote nothing before the checkpoint: batches 3-5 only (+ S3 files)
    assert deps.counter.calls["s3.PutObject"] == 3


def test_cancel_during_ingest_stops_it(deps, tenant, monkeypatch):
    from core.services import ingest

    tx_id = submit(deps, "tenant-a", recipients(200))
    real = ingest._write_batch

    def cancel_after_first(*a, **kw):
        real(*a, **kw)
        if a[2] == 1:
            campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)

    monkeypatch.setattr(ingest, "_write_batch", cancel_after_first)
    tx = run_ingest(deps, tx_id)
    assert tx.status == TransactionStatus.CANCELLED
    assert len(deps.store.batches(tx_id)) <= 2


def test_scheduled_campaign_batches_wait_on_the_due_index(deps, tenant):
    from datetime import timedelta

    send_at = deps.clock.now() + timedelta(hours=2)
    tx_id = submit(deps, "tenant-a", recipients(60), schedule={"send_at": send_at})
    tx = run_ingest(deps, tx_id)
    assert tx.status == TransactionStatus.SCHEDULED
    assert {b.status for b in deps.store.batches(tx_id)} == {BatchStatus.SCHEDULED}
    assert deps.store.due("BATCH", deps.clock.now()) == []
    assert len(deps.store.due("BATCH", send_at)) == 2


def test_a_csv_without_a_column_the_template_uses_fails_before_sending(deps, tenant):
    from core.domain.statuses import TransactionStatus

    tid = active_template(deps, "tenant-a", html="<p>{{ first_name }} on {{ plan }}</p>")
    tx_id = submit(deps, "tenant-a", "email,first_name\na@example.org,A\n", template_id=tid)
    leader(deps).ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.FAILED and "['plan']" in tx.failure_reason
    assert deps.store.batches(tx_id) == []


def test_a_bad_byte_late_in_the_file_names_its_line(deps, tenant):
    from core.domain.statuses import TransactionStatus

    rows = "".join(f"user{i}@example.org,U{i}\n" for i in range(120)).encode()  # two batches of 50 before it
    data = b"email,first_name\n" + rows + b"late@example.org,Ren\xe9e\n" + rows.replace(b"user", b"more")
    tx_id = submit(deps, "tenant-a", data)
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.status == TransactionStatus.FAILED and tx.failure_reason.startswith("line 122 is not UTF-8")
    batches = deps.store.batches(tx_id)
    assert len(batches) >= 2 and {b.status.value for b in batches} == {"CANCELLED"}


def test_semicolon_csv_unicode_local_parts_and_idn_domains(deps, tenant):
    csv_text = "email;first_name\nann@example.org;Ann\nüser@example.org;U\nbob@bücher.example;Bob\n"
    tx_id = submit(deps, "tenant-a", csv_text)
    leader(deps).ingest_pass()
    tx = deps.store.get_transaction(tx_id)
    assert tx.total_messages == 2 and tx.refused_rows == 1
    (batch,) = deps.store.batches(tx_id)
    emails = sorted(m.recipient_email for m in deps.store.batch_partition(batch.batch_id)[0])
    assert emails == ["ann@example.org", "bob@xn--bcher-kva.example"]
    rejected, _ = deps.store.rejections_page(tx_id, 10, None)
    assert rejected[0].line == 3 and "invalid_email" in rejected[0].reason
