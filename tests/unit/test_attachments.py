"""Attachments: allowed by name, declared type and content; sent as a raw MIME message."""

import io
import zipfile
from email import message_from_bytes, policy

import pytest

from core.adapters.ses import raw_message
from core.domain.attachments import AttachedFile, check_content, check_declared
from core.domain.errors import InvalidInput

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def office(*names: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in names:
            z.writestr(n, "<x/>")
    return buf.getvalue()


def test_accepted_files_pass():
    check_declared("Invoice 42.pdf", "application/pdf")
    check_content("application/pdf", PDF)
    check_declared("logo.PNG", "image/png")
    check_content("image/png", PNG)
    check_content("text/csv", "a,b\n1,é\n".encode())
    check_content(DOCX, office("[Content_Types].xml", "word/document.xml"))


@pytest.mark.parametrize("filename,content_type,why", [
    ("setup.exe", "application/pdf", ".exe files are refused"),
    ("invoice.pdf.js", "application/pdf", ".js files are refused"),
    ("page.html", "text/plain", ".html files are refused"),
    ("logo.svg", "image/png", ".svg files are refused"),
    ("report.docm", DOCX, ".docm files are refused"),
    ("bundle.zip", "application/zip", ".zip files are refused"),
    ("a.pdf", "application/x-msdownload", "not accepted"),
    ("photo.png", "application/pdf", "does not end in .pdf"),
    ("../etc/passwd.pdf", "application/pdf", "not a valid file name"),
    ("a\r\nb.pdf", "application/pdf", "not a valid file name"),
])
def test_dangerous_or_mismatched_declarations_are_refused(filename, content_type, why):
    with pytest.raises(InvalidInput, match=why):
        check_declared(filename, content_type)


@pytest.mark.parametrize("content_type,data,why", [
    ("application/pdf", b"MZ\x90\x00 an executable", "executable"),
    ("application/pdf", b"#!/bin/sh\nrm -rf /", "executable"),
    ("application/pdf", PNG, "not application/pdf"),
    ("image/png", PDF, "not image/png"),
    ("text/plain", b"abc\x00def", "binary data"),
    ("text/plain", b"\xff\xfe bad", "not UTF-8"),
    ("text/calendar", b"hello", "not text/calendar"),
    (DOCX, b"PK\x03\x04 not really a zip", "not a readable Office file"),
    (DOCX, office("[Content_Types].xml", "word/vbaProject.bin"), "macros"),
    (DOCX, office("[Content_Types].xml", "word/embeddings/payload.exe"), "macros or an embedded executable"),
    ("application/pdf", b"", "empty"),
])
def test_content_that_is_not_what_it_claims_is_refused(content_type, data, why):
    with pytest.raises(InvalidInput, match=why):
        check_content(content_type, data)


def test_the_raw_message_has_both_parts_the_headers_and_each_file():
    unsub = "<https://mail.example.com/api/v1/email/unsubscribe/" + "t" * 120 + ">"
    raw = raw_message(sender="News <news@example.com>", to="ann@example.org", subject="Hi Zoë", html="<p>Hi</p>",
                      text="Hi", reply_to="help@example.com",
                      headers={"X-Ref": "r1", "List-Unsubscribe": unsub},
                      attachments=[AttachedFile("a.pdf", "application/pdf", PDF), AttachedFile("l.png", "image/png", PNG)])
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998 and raw.isascii()
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    assert (msg["From"], msg["To"], msg["Reply-To"], msg["Subject"]) == (
        "News <news@example.com>", "ann@example.org", "help@example.com", "Hi Zoë")
    assert msg["X-Ref"] == "r1" and msg["List-Unsubscribe"] == unsub  # a plain URL, not encoded words
    assert msg.get_body(("plain",)).get_content().strip() == "Hi"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Hi</p>"
    files = {p.get_filename(): (p.get_content_type(), p.get_content()) for p in msg.iter_attachments()}
    assert files == {"a.pdf": ("application/pdf", PDF), "l.png": ("image/png", PNG)}


def test_no_type_ses_refuses_can_be_registered():
    """AWS rule (SES mime-types): SES rejects messages with these attachments; moto does not."""
    from core.domain.attachments import ALLOWED, SES_UNSUPPORTED_EXTENSIONS

    allowed_ext = {e for t in ALLOWED.values() for e in t.extensions}
    assert not allowed_ext & SES_UNSUPPORTED_EXTENSIONS
    for ext in sorted(SES_UNSUPPORTED_EXTENSIONS):
        with pytest.raises(InvalidInput):
            check_declared(f"file{ext}", "application/pdf")


def test_a_message_over_ses_40_mb_is_refused_before_the_call():
    """AWS rule: SES v2 takes messages up to 40 MB, attachments and encoding included."""
    from core.adapters.ses import SesMailer
    from core.domain.errors import MessageRefused

    class NoCall:
        def send_email(self, **kw):
            raise AssertionError("SES must not be called")

    big = AttachedFile("big.pdf", "application/pdf", PDF + b"0" * (31 * 1024 * 1024))  # ×4/3 in base64 > 40 MB
    with pytest.raises(MessageRefused, match="at most 41943040"):
        SesMailer(NoCall(), "cs").send(sender="a@example.com", to="b@example.org", subject="s", html="<p>h</p>",
                                       text="h", reply_to=None, headers={}, tags={}, attachments=[big])


def test_with_attachments_the_call_is_raw_and_keeps_tags_and_configuration_set():
    from core.adapters.ses import SesMailer

    calls = []

    class Client:
        def send_email(self, **kw):
            calls.append(kw)
            return {"MessageId": "m1"}

    SesMailer(Client(), "cs").send(sender="a@example.com", to="b@example.org", subject="s", html="<p>h</p>",
                                   text="h", reply_to="r@example.com", headers={"X-A": "1"},
                                   tags={"message_id": "tx-b00001-00001"},
                                   attachments=[AttachedFile("a.pdf", "application/pdf", PDF)])
    (kw,) = calls
    assert set(kw["Content"]) == {"Raw"} and kw["ConfigurationSetName"] == "cs"
    assert kw["EmailTags"] == [{"Name": "message_id", "Value": "tx-b00001-00001"}]
    assert kw["Destination"] == {"ToAddresses": ["b@example.org"]} and "ReplyToAddresses" not in kw
    assert b"Reply-To: r@example.com" in kw["Content"]["Raw"]["Data"]


def test_an_image_the_html_shows_by_cid_goes_inline_and_the_rest_stay_attachments():
    from core.domain.attachments import as_inline_if_shown

    html = '<p>Hi</p><img src="cid:att_logo" alt="Logo">'
    logo = as_inline_if_shown("att_logo", AttachedFile("logo.png", "image/png", PNG), html)
    other = as_inline_if_shown("att_other", AttachedFile("o.png", "image/png", PNG), html)  # not shown
    pdf = as_inline_if_shown("att_logo", AttachedFile("a.pdf", "application/pdf", PDF), html)  # not an image
    assert (logo.content_id, other.content_id, pdf.content_id) == ("att_logo", None, None)
    raw = raw_message(sender="a@example.com", to="b@example.org", subject="s", html=html, text="Hi [Logo]",
                      reply_to=None, headers={}, attachments=[logo, other, pdf])
    msg = message_from_bytes(raw, policy=policy.default)
    html_part = msg.get_body(("html",))
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    inline = [p for p in related.iter_parts() if p.get_content_type() == "image/png"]
    assert [p["Content-ID"] for p in inline] == ["<att_logo>"] and inline[0].get_content_disposition() == "inline"
    assert html_part in list(related.iter_parts())
    assert sorted(p.get_filename() for p in msg.iter_attachments()) == ["a.pdf", "o.png"]
