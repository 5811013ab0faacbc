"""Message features over HTTP (issue 18), reading back the mail the embedded SES accepted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from local.ses_mailbox import received
from ops.client import ApiError

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def text_template(api, html: str, text: str | None, subject: str = "Hi {{ first_name }}") -> str:
    t = api.call("POST", "/templates", json={"name": "Features", "subject": subject, "text": text is not None})
    api.upload(t["upload"], html.encode(), "template.html")
    if text is not None:
        api.upload(t["text_upload"], text.encode(), "template.txt")
    api.call("POST", f"/templates/{t['template_id']}/confirm")
    return t["template_id"]


def mails_of(stack, tx_id: str) -> dict[str, object]:
    return {m["To"]: m for m in received(stack.settings.aws_endpoint_url, transaction_id=tx_id)}


def attachment(api, filename: str, content_type: str, data: bytes) -> str:
    a = api.call("POST", "/attachments", json={"filename": filename, "content_type": content_type})
    api.upload(a["upload"], data, filename)
    assert api.call("POST", f"/attachments/{a['attachment_id']}/confirm")["status"] == "ACTIVE"
    return a["attachment_id"]


def test_a_campaign_with_a_text_version_attachments_custom_headers_and_metadata(api, stack):
    tid = text_template(api, "<p>Hello {{ first_name }}</p>", "Hello {{ first_name }}, plain")
    terms = attachment(api, "terms.pdf", "application/pdf", PDF)
    invoice = attachment(api, "invoice-7.csv", "text/csv", b"item,price\nbook,12\n")
    up = api.upload_csv("email,first_name,crm_id,invoice\n"
                        f"success@simulator.amazonses.com,Ann,C-7,{invoice}\n"
                        "success+2@simulator.amazonses.com,Bo,C-8,\n"
                        "success+3@simulator.amazonses.com,Cy,C-9,att_not_uploaded\n")
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"],
                                              "headers": {"X-Campaign-Ref": "spring-26"},
                                              "metadata_columns": ["crm_id"], "attachments": [terms],
                                              "attachment_column": "invoice"})
    assert tx["headers"] == {"X-Campaign-Ref": "spring-26"} and tx["metadata_columns"] == ["crm_id"]
    tx_id = tx["transaction_id"]
    final = api.wait_for(tx_id, {"COMPLETED", "FAILED"}, timeout=120)
    assert final["status"] == "COMPLETED" and final["summary"]["refused_at_ingest"] == 1
    (rejected,) = api.call("GET", f"/campaigns/{tx_id}/rejections")["items"]
    assert rejected["line"] == 4 and rejected["reason"].startswith("attachment_missing")

    mails = mails_of(stack, tx_id)
    assert set(mails) == {"success@simulator.amazonses.com", "success+2@simulator.amazonses.com"}
    ann, bo = mails["success@simulator.amazonses.com"], mails["success+2@simulator.amazonses.com"]
    assert ann.get_content_type() == "multipart/mixed"  # the parts and the files, sent as a raw message
    assert ann.get_body(("plain",)).get_content().strip() == "Hello Ann, plain"
    assert "<p>Hello Ann</p>" in ann.get_body(("html",)).get_content()
    assert {p.get_filename(): p.get_content() for p in ann.iter_attachments()} == {
        "terms.pdf": PDF, "invoice-7.csv": "item,price\nbook,12\n"}
    assert [p.get_filename() for p in bo.iter_attachments()] == ["terms.pdf"]
    for mail in (ann, bo):
        assert mail["X-Campaign-Ref"] == "spring-26" and mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # metadata: in every message read and in the SES event documents
    items = api.call("GET", f"/campaigns/{tx_id}/messages")["items"]
    assert sorted(m["metadata"]["crm_id"] for m in items) == ["C-7", "C-8"]
    one = api.call("GET", f"/messages/{items[0]['message_id']}")
    assert one["metadata"] == items[0]["metadata"] and one["events"]
    docs = [json.loads(d) for (d,) in stack.deps.analytics.db.execute(
        "SELECT doc FROM events WHERE transaction_id = ?", (tx_id,)).fetchall()]
    assert docs and all(d["message_metadata"]["crm_id"] in ("C-7", "C-8") for d in docs)


def test_disallowed_or_oversized_attachments_are_refused(api):
    with pytest.raises(ApiError) as e:
        api.call("POST", "/attachments", json={"filename": "setup.exe", "content_type": "application/pdf"})
    assert e.value.status == 422 and ".exe files are refused" in e.value.body["error"]["message"]
    a = api.call("POST", "/attachments", json={"filename": "report.pdf", "content_type": "application/pdf"})
    api.upload(a["upload"], b"MZ\x90\x00 not a pdf", "report.pdf")
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/attachments/{a['attachment_id']}/confirm")
    assert e.value.status == 422 and "executable" in e.value.body["error"]["message"]
    assert api.call("GET", f"/attachments/{a['attachment_id']}")["status"] == "INVALID"
    big = api.call("POST", "/attachments", json={"filename": "big.pdf", "content_type": "application/pdf"})
    assert big["upload"]["max_bytes"] == 10 * 1024 * 1024  # S3 refuses larger bodies; moto does not
    api.upload(big["upload"], PDF + b"0" * (10 * 1024 * 1024), "big.pdf")
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/attachments/{big['attachment_id']}/confirm")
    assert e.value.status == 413


def test_header_injection_and_platform_headers_are_refused_with_422(api):
    tid = text_template(api, "<p>{{ first_name }}</p>", None)
    up = api.upload_csv("email,first_name\na@example.org,A\n")
    base = {"template_id": tid, "upload_id": up["upload_id"]}
    for headers, why in (({"X-Ref": "a\r\nBcc: victim@example.org"}, "line break"),
                         ({"List-Unsubscribe": "<https://evil.example>"}, "cannot be overridden"),
                         ({"Bad Name": "x"}, "not a valid field name")):
        with pytest.raises(ApiError) as e:
            api.call("POST", "/campaigns", json={**base, "headers": headers})
        assert e.value.status == 422 and why in e.value.body["error"]["message"]
    with pytest.raises(ApiError) as e:
        api.call("POST", "/campaigns", json={**base, "metadata_columns": ["first_name"]})
    assert e.value.status == 422 and "not rendered" in e.value.body["error"]["message"]


def test_preview_and_a_test_send_before_release(api, stack):
    tid = text_template(api, "<p>Hello {{ first_name }}</p>", None)
    out = api.call("POST", f"/templates/{tid}/preview", json={"data": {"first_name": "Ann"}})
    assert out["subject"] == "Hi Ann" and out["html"] == "<p>Hello Ann</p>" and out["text"] == "Hello Ann\n"
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/templates/{tid}/preview", json={"data": {}})
    assert e.value.status == 422 and "missing placeholder" in e.value.body["error"]["message"]
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/templates/{tid}/preview", json={"data": {"first_name": "A"}, "dta": 1})
    assert e.value.status == 422  # strict: unknown fields are refused

    up = api.upload_csv("email,first_name\nsuccess@simulator.amazonses.com,Ann\n")
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    tx_id = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"],
                                                 "headers": {"X-Ref": "qa"},
                                                 "schedule": {"send_at": later}})["transaction_id"]
    sent = api.call("POST", f"/campaigns/{tx_id}/test-send",
                    json={"to": "qa@example.org", "data": {"first_name": "Tess"}})
    (mail,) = received(stack.settings.aws_endpoint_url, message_id=sent["test_message_id"])
    assert mail["To"] == "qa@example.org" and mail["Subject"] == "Hi Tess" and mail["X-Ref"] == "qa"
    assert mail.get_body(("plain",)).get_content().strip() == "Hello Tess"
    api.call("PUT", "/suppressions/blocked@example.org", json={})
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/campaigns/{tx_id}/test-send", json={"to": "blocked@example.org"})
    assert (e.value.status, e.value.body["error"]["code"]) == (422, "address_suppressed")
    api.call("POST", f"/campaigns/{tx_id}/cancel")
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/campaigns/{tx_id}/test-send", json={"to": "qa@example.org"})
    assert e.value.status == 409


def test_a_draft_shows_its_counts_and_sends_once_released(api, stack):
    tid = text_template(api, "<p>Hello {{ first_name }}</p>", None)
    up = api.upload_csv("email,first_name\nsuccess@simulator.amazonses.com,Ann\nnot-an-address,X\n")
    tx_id = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"],
                                                 "draft": True})["transaction_id"]
    draft = api.wait_for(tx_id, {"DRAFT", "FAILED"}, timeout=120)
    assert draft["status"] == "DRAFT" and draft["draft"]
    assert draft["summary"]["total_messages"] == 1 and draft["summary"]["refused_at_ingest"] == 1
    assert mails_of(stack, tx_id) == {}
    assert api.call("POST", f"/campaigns/{tx_id}/release")["status"] == "READY_TO_SEND"
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/campaigns/{tx_id}/release")
    assert e.value.status == 409 and "only DRAFT" in e.value.body["error"]["message"]
    assert api.wait_for(tx_id, {"COMPLETED", "FAILED"}, timeout=120)["status"] == "COMPLETED"
    assert list(mails_of(stack, tx_id)) == ["success@simulator.amazonses.com"]


def test_per_recipient_send_times_and_message_events_over_http(api, stack):
    """One recipient now, one at 9:00 (their zone) hours ahead, one unreadable time; the campaign
    opted in to message events: the receiver gets the sent mail's events with its metadata, and
    the waiting recipient's CANCELLED once the campaign is cancelled before their time."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from standardwebhooks.webhooks import Webhook

    got: list[tuple[dict, bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        tid = text_template(api, "<p>Hello {{ first_name }}</p>", None)
        tokyo_nine = (datetime.now(UTC) + timedelta(hours=6)).astimezone(timezone(timedelta(hours=9)))
        tokyo_nine = tokyo_nine.replace(minute=0, second=0, microsecond=0)
        up = api.upload_csv("email,first_name,crm_id,send_at\n"
                            "success@simulator.amazonses.com,Ann,C-1,\n"
                            f"success+2@simulator.amazonses.com,Bo,C-2,{tokyo_nine.isoformat()}\n"
                            "success+3@simulator.amazonses.com,Cy,C-3,9am\n")
        tx = api.call("POST", "/campaigns", json={
            "template_id": tid, "upload_id": up["upload_id"], "metadata_columns": ["crm_id"],
            "callback_url": f"http://127.0.0.1:{srv.server_port}/hook", "callback_message_events": True})
        assert tx["callback_message_events"] is True
        tx_id = tx["transaction_id"]
        # what was due is sent; the campaign waits SCHEDULED for the next recipient's time
        waiting = api.wait_for(tx_id, {"SCHEDULED", "FAILED"}, timeout=120)
        assert waiting["status"] == "SCHEDULED" and waiting["summary"]["refused_at_ingest"] == 1
        (rejected,) = api.call("GET", f"/campaigns/{tx_id}/rejections")["items"]
        assert rejected["line"] == 4 and rejected["reason"].startswith("send_at_invalid")
        now_batch, later_batch = api.call("GET", f"/campaigns/{tx_id}/batches")["items"]
        assert later_batch["status"] == "SCHEDULED"
        assert datetime.fromisoformat(later_batch["send_at"].replace("Z", "+00:00")) == tokyo_nine
        assert list(mails_of(stack, tx_id)) == ["success@simulator.amazonses.com"]

        def events() -> list[dict]:
            secrets = stack.deps.secrets.signing_secrets(stack.tenant["tenant_id"])
            out = []
            for headers, body in list(got):
                payload = json.loads(body)
                if payload.get("type") != "message.events":
                    continue
                Webhook(secrets[0]).verify(body, headers)  # signed like every callback
                out += payload["events"]
            return out

        def wait_events(status: str, crm_id: str) -> dict:
            deadline = datetime.now(UTC) + timedelta(seconds=90)
            while datetime.now(UTC) < deadline:
                found = [e for e in events() if e["status"] == status and e["metadata"].get("crm_id") == crm_id]
                if found:
                    return found[0]
                threading.Event().wait(0.5)
            raise AssertionError(f"no {status} message event for {crm_id}: {events()}")

        sent = wait_events("SENT", "C-1")
        assert sent["transaction_id"] == tx_id and sent["batch_id"] == now_batch["batch_id"]
        wait_events("DELIVERED", "C-1")
        # a cancel reaches the recipient whose time has not come, and says so with their metadata
        api.call("POST", f"/campaigns/{tx_id}/cancel")
        cancelled = wait_events("CANCELLED", "C-2")
        assert cancelled["batch_id"] == later_batch["batch_id"] and "success" not in json.dumps(cancelled)
        assert api.call("GET", f"/campaigns/{tx_id}/batches")["items"][1]["status"] == "CANCELLED"
        batches = api.call("GET", f"/campaigns/{tx_id}/message-events")["items"]
        assert batches and all(b["state"] in ("DELIVERED", "PENDING") for b in batches)
    finally:
        srv.shutdown()
