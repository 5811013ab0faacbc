"""SendEmail is not idempotent: the SES client the platform builds makes exactly one attempt,
and an answer that is not a clear refusal leaves the send in doubt (never retried blindly)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.adapters.aws import client
from core.adapters.ses import SesMailer
from core.domain.errors import SendInDoubt
from tests.conftest import make_settings


class _Ses5xx(BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self):  # noqa: N802 - http.server's naming
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"__type": "InternalFailure", "message": "internal failure"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-amzn-ErrorType", "InternalFailure")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def ses_5xx():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ses5xx)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Ses5xx.hits = 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_5xx_from_send_email_is_one_attempt_and_in_doubt(ses_5xx):
    settings = make_settings(ses_5xx)
    mailer = SesMailer(client(settings, "sesv2"), "emailplatform")
    with pytest.raises(SendInDoubt):
        mailer.send(sender="a@example.com", to="b@example.org", subject="s", html="h", reply_to=None,
                    headers={}, tags={"tenant_id": "t"})
    assert _Ses5xx.hits == 1  # the SDK did not send it again


def test_the_ses_client_gives_up_quickly():
    cfg = client(make_settings("http://127.0.0.1:1"), "sesv2").meta.config
    assert cfg.retries["total_max_attempts"] == 1
    assert cfg.connect_timeout <= 5 and cfg.read_timeout <= 10
