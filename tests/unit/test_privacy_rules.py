"""Pure privacy rules: blanking a person's CSV rows, address forms, the keyed hash, audit entries."""

from datetime import UTC, datetime

from core import schema
from core.domain.privacy import (
    AddressHasher,
    address_forms,
    scrub_event,
    stream_mentions,
    text_mentions,
    without_rows_mentioning,
)
from core.services import audit, privacy
from core.services.privacy import _redacted, _rows_mentioning


def test_rows_mentioning_the_person_are_blanked_and_every_other_line_keeps_its_number_and_bytes():
    data = (b'email,first_name,note\r\n'
            b'a@example.org,Ann,"multi\r\nline"\r\n'
            b'Gone@Example.org,Zed,"also\nspans"\r\n'
            b'b@example.org,Bo,"mentions gone@example.org too"\r\n'
            b'c@example.org,Cy,x\r\n')
    clean, removed = without_rows_mentioning(data, {"gone@example.org"})
    assert removed == 2
    before, after = data.decode().splitlines(keepends=True), clean.decode().splitlines(keepends=True)
    assert len(before) == len(after)  # line numbers (rejections, ingest checkpoints) unchanged
    assert after[0] == before[0] and after[1:3] == before[1:3] and after[-1] == before[-1]
    assert "gone@example.org" not in clean.decode().lower() and "Zed" not in clean.decode()


def test_a_file_without_the_person_is_left_as_it_is():
    data = b"email\nx@example.org\n"
    assert without_rows_mentioning(data, {"y@example.org"}) == (data, 0)


def test_address_forms_include_the_punycode_form_and_the_hash_is_keyed_per_tenant():
    forms = address_forms("Someone@Bücher.example")
    assert "someone@bücher.example" in forms and "someone@xn--bcher-kva.example" in forms
    h = AddressHasher.from_secret("s" * 32)
    assert h("t1", "A@x.org") == h("t1", "a@x.org") != h("t2", "a@x.org")
    assert h("t1", "a@x.org") != AddressHasher.from_secret("k" * 32)("t1", "a@x.org")


def test_an_erased_message_keeps_what_happened_and_when_only():
    ev = {"id": "e1", "type": "Bounce", "at": "t", "bounce_type": "Permanent", "diagnostic": "550 gone@x.org",
          "user_agent": "UA", "ip": "1.2.3.4", "link": "https://x/?u=gone"}
    assert scrub_event(ev) == {"id": "e1", "type": "Bounce", "at": "t", "bounce_type": "Permanent"}


def test_retention_classes_never_keep_longer_than_the_setting():
    assert privacy.retention_class(45) == 30 and privacy.retention_class(90) == 90
    assert privacy.retention_class(3) == 1
    assert privacy.retention_tags(10) == {schema.RETENTION_TAG: "7"}


def test_an_audit_entry_never_holds_an_address_or_a_body():
    h = AddressHasher.from_secret("s" * 32)
    e = audit.entry(tenant_id="t", actor="key_1", method="PUT", route="/suppressions/{email}",
                    params={"email": "p@example.org"}, status=200, source_ip="10.0.0.1", request_id="r1",
                    at=datetime(2026, 1, 1, tzinfo=UTC), hasher=h, answer='{"email": "p@example.org"}')
    assert e["target"] == {"email": f"hmac:{h('t', 'p@example.org')}"} and "p@example.org" not in repr(e)
    created = audit.entry(tenant_id="t", actor="key_1", method="POST", route="/campaigns", params={}, status=202,
                          source_ip=None, request_id=None, at=datetime(2026, 1, 1, tzinfo=UTC), hasher=h,
                          answer='{"transaction_id": "tx_1", "from": "x@y.org"}')
    assert created["target"] == {"transaction_id": "tx_1"} and created["action"] == "POST /campaigns"
    assert audit.audited("GET", "privacy:read") and not audit.audited("GET", "campaigns:read")


def test_compliance_report_counts_the_period_only_and_compares_with_ses_limits():
    from types import SimpleNamespace

    from core.services.compliance import compliance_report, render_compliance

    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    campaigns = [
        # created before the period, scheduled into it: its mail was sent in the period
        {"created_at": "2025-12-20T00:00:00.000000Z", "first_sent_at": "2026-01-05T00:00:00.000000Z",
         "last_sent_at": "2026-01-05T01:00:00.000000Z", "n_sent": 1000, "n_delivered": 950, "n_bounced": 30,
         "n_hard_bounced": 20, "n_complained": 2},
        # created in the period, sent after it: not this period's mail
        {"created_at": "2026-01-30T00:00:00.000000Z", "first_sent_at": "2026-02-02T00:00:00.000000Z",
         "last_sent_at": "2026-02-02T00:10:00.000000Z", "n_sent": 99999},
        # sending crossed the period's start: reported apart, not guessed into it
        {"created_at": "2025-12-31T23:00:00.000000Z", "first_sent_at": "2025-12-31T23:59:00.000000Z",
         "last_sent_at": "2026-01-01T00:30:00.000000Z", "n_sent": 500},
        # sent before send times were recorded: listed by creation, not counted
        {"created_at": "2026-01-07T00:00:00.000000Z", "n_sent": 70}]
    sups = [{"reason": "unsubscribe", "created_at": "2026-01-10T00:00:00.250000Z",
             "requested_at": "2026-01-10T00:00:00.000000Z"},
            {"reason": "unsubscribe", "created_at": "2026-01-12T00:00:01.500000Z",
             "requested_at": "2026-01-12T00:00:00.000000Z"},
            {"reason": "unsubscribe", "created_at": "2026-01-13T00:00:00.000000Z"},  # stored before request times
            {"reason": "hard_bounce", "created_at": "2025-06-01T00:00:00.000000Z"}, {"reason": "erasure",
                                                                                      "created_at": "2026-01-11T00:00:00.000000Z"}]
    erasures = [{"status": "COMPLETED", "requested_at": "2026-01-11T00:00:00.000000Z",
                 "completed_at": "2026-01-11T00:00:30.000000Z"}]
    r = compliance_report(campaigns=campaigns, suppressions=sups, erasures=erasures, tenant_id="t", start=start,
                          end=end, settings=SimpleNamespace(bounce_rate_threshold=0.05, complaint_rate_threshold=0.001))
    assert r["mail"]["campaigns"] == 1 and r["mail"]["sent"] == 1000 and r["reputation"]["bounce_rate"] == 0.02
    assert r["mail_counted"]["spanning_period_boundary"] == {"campaigns": 1, "sent": 500}
    assert r["mail_counted"]["without_send_times_created_in_period"] == {"campaigns": 1, "sent": 70}
    assert r["reputation"]["complaint_rate"] == 0.002 and r["reputation"]["within_ses_limits"] is False
    assert r["unsubscribes"]["honoured"] == 3 and r["suppressions"]["total"] == 5
    assert r["unsubscribes"]["request_to_suppression"] == {"measured": 2, "not_measured": 1, "median_seconds": 0.875,
                                                           "max_seconds": 1.5}
    assert r["erasures"] == {"requested": 1, "completed": 1, "median_seconds": 30.0, "max_seconds": 30.0}
    page = " ".join(render_compliance(r).split())
    assert "Outside" in page and "median 0.875 s, longest 1.5 s over 2 measured (1 without" in page
    assert "first and last recorded send both fall in the period" in page
    assert "The send times are approximate" in page  # recorded times, last writer wins (store.add_counts)


# --- whole addresses, never substrings: ann@ is not joann@ nor ann@….uk (another person) ----------

CSV_WITH_NEIGHBOURS = (b"email,first_name\n"
                       b"joann@example.org,Joanna\n"     # another person whose address *contains* the target's
                       b"ann@example.org.uk,Annabel\n"   # another person: a domain that starts the same
                       b"ann@example.org,Ann\n")


def test_erasure_blanks_only_the_persons_own_rows_not_addresses_that_contain_theirs():
    clean, removed = without_rows_mentioning(CSV_WITH_NEIGHBOURS, address_forms("ann@example.org"))
    assert removed == 1, clean
    assert b"joann@example.org,Joanna" in clean and b"ann@example.org.uk,Annabel" in clean


def test_subject_access_returns_only_the_persons_rows():
    rows = _rows_mentioning(CSV_WITH_NEIGHBOURS, address_forms("ann@example.org"))
    assert [r["email"] for r in rows] == ["ann@example.org"], rows  # no other person's row or placeholders


def test_send_log_redaction_leaves_other_recipients_errors_alone():
    results = {"m1": {"outcome": "FAILED", "reason": "MessageRejected: joann@example.org not verified"}}
    assert _redacted(results, address_forms("ann@example.org")) == results
    mine = {"m2": {"outcome": "FAILED", "reason": "MessageRejected: <Ann@Example.org>. not verified"}}
    assert _redacted(mine, address_forms("ann@example.org")) == {"m2": {"outcome": "FAILED", "reason": "[erased]"}}


def test_an_object_is_matched_by_whole_address_whatever_the_read_size():
    forms = address_forms("ann@example.org")
    for text, theirs in (("x,joann@example.org\n", False), ("x,ann@example.org.uk\n", False),
                         ("x,ANN@example.org\n", True), ("note: ann@example.org.", True),
                         ("joann@example.org," * 50 + "ann@example.org", True), ("ann@example.organic", False)):
        assert text_mentions(text, forms) is theirs, text
        data = text.encode()
        for size in (1, 2, 3, 7, 1024):  # a match may straddle two reads
            assert stream_mentions((data[i:i + size] for i in range(0, len(data), size)), forms) is theirs, (text, size)


def test_the_opensearch_erasure_refreshes_first_and_retries_version_conflicts_instead_of_skipping():
    from core.adapters.analytics import OpenSearchAnalytics

    calls: list[str] = []

    class Indices:
        def refresh(self, index):
            calls.append("refresh")

    class Client:
        indices = Indices()
        answers = [{"deleted": 2, "version_conflicts": 1}, {"deleted": 1, "version_conflicts": 0}]

        def delete_by_query(self, **kw):
            calls.append("delete")
            return self.answers.pop(0)

    store = OpenSearchAnalytics(Client(), prefix="ep")
    assert store.erase_recipient("t", {"a@example.org"}) == 3  # the conflicting document was deleted next time
    assert calls == ["refresh", "delete", "refresh", "delete"]
