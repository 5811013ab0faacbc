"""Webhook delivery to a real HTTP server on loopback, verified with the standardwebhooks package."""

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from core.adapters.webhooks import GuardedHttpClient
from core.domain.errors import InvalidInput
from core.domain.statuses import TransactionStatus
from core.services import callbacks, campaigns
from core.services.tenants import rotate_webhook_secret
from tests.helpers import submit


class Receiver:
    """A callback endpoint whose answers the test scripts: [(status, headers, delay), ...]."""

    def __init__(self, script=None):
        self.script = list(script or [])
        self.got: list[tuple[dict, bytes]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status, headers, delay = outer.script.pop(0) if outer.script else (200, {}, 0)
                time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def http():
    return GuardedHttpClient(require_https=False, allow_loopback=True)


def deliver(deps, timeout=2.0, client=None):
    return callbacks.deliver_due(store=deps.store, http=client or http(), secrets=deps.secrets, clock=deps.clock,
                                 timeout=timeout)


def cancelled_campaign(deps, url):
    tx_id = submit(deps, "tenant-a", "email\na@x.org\n", callback_url=url)
    campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)
    return tx_id


def test_callbacks_are_signed_and_verify_independently(deps, tenant, receiver):
    tx_id = cancelled_campaign(deps, receiver.url)
    assert deliver(deps) == 1
    headers, body = receiver.got[0]
    payload = Webhook(tenant["webhook_secret"]).verify(body, headers)
    assert payload["transaction_id"] == tx_id and payload["status"] == "CANCELLED" and payload["sequence"] == 1
    assert headers["webhook-id"] == f"msg_{tx_id}_1"
    key = base64.b64decode(tenant["webhook_secret"].removeprefix("whsec_"))
    signed = f"{headers['webhook-timestamp']}.{body.decode()}".encode()
    assert headers["x-signature"] == "v1=" + hmac.new(key, signed, hashlib.sha256).hexdigest()
    assert deps.store.callbacks(tx_id)[0].state == "DELIVERED"
    assert deliver(deps) == 0  # nothing due any more


def test_rotation_keeps_old_and_new_secrets_valid(deps, tenant, receiver):
    rotated = rotate_webhook_secret(deps.secrets, "tenant-a")["secrets"]
    assert rotated[1] == tenant["webhook_secret"]
    cancelled_campaign(deps, receiver.url)
    deliver(deps)
    headers, body = receiver.got[0]
    Webhook(rotated[0]).verify(body, headers)
    Webhook(tenant["webhook_secret"]).verify(body, headers)


def test_receiver_down_then_up_is_delivered_after_retries_with_the_same_id(deps, tenant, clock):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here yet
    tx_id = cancelled_campaign(deps, f"http://127.0.0.1:{port}/hook")
    deliver(deps)
    cb = deps.store.callbacks(tx_id)[0]
    assert cb.state == "PENDING" and cb.attempts[0]["error"]
    assert 4.5 <= (cb.next_attempt_at - clock.now()).total_seconds() <= 5.5
    assert deliver(deps) == 0  # not due yet
    up = Receiver()
    up.server.server_close()
    up.server = ThreadingHTTPServer(("127.0.0.1", port), up.server.RequestHandlerClass)
    threading.Thread(target=up.server.serve_forever, daemon=True).start()
    try:
        clock.advance(6)
        assert deliver(deps) == 1
        cb = deps.store.callbacks(tx_id)[0]
        assert cb.state == "DELIVERED" and len(cb.attempts) == 2
        assert up.got[0][0]["webhook-id"] == f"msg_{tx_id}_1"
    finally:
        up.close()


def test_410_disables_the_endpoint_for_the_campaign(deps, tenant):
    r = Receiver([(410, {}, 0)])
    try:
        tx_id = submit(deps, "tenant-a", "email\na@x.org\n", callback_url=r.url)
        tx = deps.store.get_transaction(tx_id)
        campaigns.change_status(deps.store, deps.clock, tx, TransactionStatus.PROCESSING)
        deliver(deps)
        campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)
        deliver(deps)
        assert [c.state for c in deps.store.callbacks(tx_id)] == ["DISABLED", "DISABLED"]
        assert len(r.got) == 1
    finally:
        r.close()


def test_429_retry_after_is_honoured(deps, tenant, clock):
    r = Receiver([(429, {"Retry-After": "120"}, 0)])
    try:
        tx_id = cancelled_campaign(deps, r.url)
        deliver(deps)
        cb = deps.store.callbacks(tx_id)[0]
        assert cb.state == "PENDING" and (cb.next_attempt_at - clock.now()).total_seconds() == 120
        clock.advance(60)
        assert deliver(deps) == 0
        clock.advance(61)
        assert deliver(deps) == 1 and deps.store.callbacks(tx_id)[0].state == "DELIVERED"
    finally:
        r.close()


def test_slow_receiver_times_out_and_is_retried(deps, tenant):
    r = Receiver([(200, {}, 2.0)])
    try:
        tx_id = cancelled_campaign(deps, r.url)
        deliver(deps, timeout=0.3)
        cb = deps.store.callbacks(tx_id)[0]
        assert cb.state == "PENDING" and "timed out" in cb.attempts[0]["error"]
    finally:
        r.close()


def test_redirects_are_not_followed(deps, tenant):
    r = Receiver([(302, {"Location": "http://169.254.169.254/latest/meta-data/"}, 0)])
    try:
        tx_id = cancelled_campaign(deps, r.url)
        deliver(deps)
        cb = deps.store.callbacks(tx_id)[0]
        assert cb.state == "PENDING" and cb.attempts[0]["status"] == 302 and len(r.got) == 1
    finally:
        r.close()


def test_a_name_resolving_to_a_private_address_is_refused_at_connect_time(deps, tenant, receiver):
    tx_id = cancelled_campaign(deps, receiver.url.replace("127.0.0.1", "hooks.example.com"))
    rebinding = GuardedHttpClient(require_https=False, allow_loopback=False,
                                  resolver=lambda *a, **k: [(2, 1, 6, "", ("10.0.0.7", 80))])
    deliver(deps, client=rebinding)
    cb = deps.store.callbacks(tx_id)[0]
    assert "non-public" in cb.attempts[0]["error"] and receiver.got == []


def test_private_callback_url_is_refused_at_submit(deps, tenant):
    from core.domain.errors import InvalidInput

    deps.settings = deps.settings.model_copy(update={"callback_allow_loopback": False})
    with pytest.raises(InvalidInput, match="non-public"):
        submit(deps, "tenant-a", "email\na@x.org\n", callback_url="http://10.1.2.3/hook")


def test_crash_between_status_change_and_delivery_delivers_exactly_once(deps, tenant, receiver):
    tx_id = cancelled_campaign(deps, receiver.url)  # the change and its outbox entry committed together
    # ... the controller died here, before any delivery. A new one starts:
    from tests.helpers import leader

    c = leader(deps, "restarted")
    c.deps.http = http()
    c.callbacks_pass()
    c.callbacks_pass()
    assert [h["webhook-id"] for h, _ in receiver.got] == [f"msg_{tx_id}_1"]
    assert json.loads(receiver.got[0][1])["status"] == "CANCELLED"


def test_exhausted_retries_dead_letter_and_can_be_redelivered(deps, tenant, clock, receiver):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    tx_id = cancelled_campaign(deps, f"http://127.0.0.1:{dead_port}/hook")
    for _ in range(len(callbacks.SCHEDULE_SECONDS) + 1):
        deliver(deps)
        clock.advance(30 * 3600)
    cb = deps.store.callbacks(tx_id)[0]
    assert cb.state == "DEAD" and len(cb.attempts) == len(callbacks.SCHEDULE_SECONDS)
    assert callbacks.redeliver(deps.store, tx_id, clock) == [1]
    assert deps.store.callbacks(tx_id)[0].state == "PENDING"


class DripServer:
    """Reads the request, then answers one byte at a time for up to ``drip_for`` seconds."""

    def __init__(self, answer: bytes, every: float = 0.1, drip_for: float = 8.0):
        self.answer, self.every, self.drip_for = answer, every, drip_for
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            started = time.monotonic()
            for i in range(len(self.answer)):
                if self.stop.wait(self.every) or time.monotonic() - started > self.drip_for:
                    return
                try:
                    conn.sendall(self.answer[i:i + 1])
                except OSError:
                    return  # the client hung up

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 200 + b"\r\nContent-Length: 0\r\n\r\n",  # headers drip
    b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + b"b" * 200,  # body drips
], ids=["headers", "body"])
def test_a_dripping_receiver_cannot_hold_an_attempt_past_its_deadline(answer):
    server = DripServer(answer)
    try:
        started = time.monotonic()
        res = http().post(server.url, b"{}", {}, timeout=1.0)
        took = time.monotonic() - started
    finally:
        server.close()
    assert res.status is None and "timed out" in res.error
    assert took < 1.0 + 1.0


@pytest.mark.parametrize("url,shown", [
    ("http://2852039166/hook", "169.254.169.254"),
    ("http://017700000001/hook", "127.0.0.1"),
    ("http://0x7f000001/hook", "127.0.0.1"),
    ("http://127.1/hook", "127.0.0.1"),
    ("http://10.0.0.1 /hook", "whitespace"),
    ("http://[2002:a9fe:a9fe::1]/hook", "169.254.169.254"),
    ("http://[64:ff9b::a00:1]/hook", "10.0.0.1"),
    ("http://192.88.99.1/hook", "192.88.99.0/24"),
    ("http://a..example.com/hook", "empty label"),
])
def test_obfuscated_and_malformed_callback_hosts_are_refused_at_submit(deps, tenant, url, shown):
    deps.settings = deps.settings.model_copy(update={"callback_allow_loopback": False})
    with pytest.raises(InvalidInput) as err:
        submit(deps, "tenant-a", "email\na@x.org\n", callback_url=url)
    assert err.value.http_status == 422 and shown in err.value.message


def test_submit_stores_the_normalised_url_and_delivery_uses_it(deps, tenant, receiver):
    written = receiver.url.replace("127.0.0.1", "127.1")
    tx_id = cancelled_campaign(deps, written)
    assert deps.store.get_transaction(tx_id).callback_url == receiver.url
    assert deliver(deps) == 1 and len(receiver.got) == 1


def test_a_campaigns_callbacks_arrive_in_sequence_order(deps, tenant, clock):
    r = Receiver([(500, {}, 0)])  # the first attempt of the first callback fails
    try:
        tx_id = submit(deps, "tenant-a", "email\na@x.org\n", callback_url=r.url)
        tx = deps.store.get_transaction(tx_id)
        campaigns.change_status(deps.store, deps.clock, tx, TransactionStatus.PROCESSING)
        assert deliver(deps) == 1
        campaigns.cancel_campaign(deps.store, deps.clock, "tenant-a", tx_id)
        assert deliver(deps) == 0  # CANCELLED waits while PROCESSING is retrying
        assert [c.state for c in deps.store.callbacks(tx_id)] == ["PENDING", "PENDING"]
        clock.advance(6)
        assert deliver(deps) == 2
        assert [json.loads(body)["sequence"] for _, body in r.got] == [1, 1, 2]
        assert [c.state for c in deps.store.callbacks(tx_id)] == ["DELIVERED", "DELIVERED"]
    finally:
        r.close()


def test_a_bad_stored_secret_fails_the_attempt_and_the_pass_goes_on(deps, tenant, receiver):
    from core.services.tenants import ensure_tenant

    ensure_tenant(deps.store, deps.secrets, "tenant-b")
    bad_tx = cancelled_campaign(deps, receiver.url)
    deps.secrets.set_secret("tenant-a", "whsec_", keep_previous=False)  # written around Settings
    good_tx = submit(deps, "tenant-b", "email\na@x.org\n", callback_url=receiver.url)
    campaigns.cancel_campaign(deps.store, deps.clock, "tenant-b", good_tx)
    deliver(deps)
    bad = deps.store.callbacks(bad_tx)[0]
    assert bad.state == "PENDING" and "cannot sign" in bad.attempts[0]["error"]
    assert deps.store.callbacks(good_tx)[0].state == "DELIVERED"
    assert [h["webhook-id"] for h, _ in receiver.got] == [f"msg_{good_tx}_1"]


def self_signed_localhost(tmp_path):
    """A certificate for 'localhost' (PEM cert, PEM key) made for this test."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_an_answer_with_a_body_on_a_closing_connection_is_read(tmp_path, tls):
    import ssl

    seen: list[tuple[str, str]] = []

    class H(BaseHTTPRequestHandler):  # HTTP/1.0: the server closes after the body
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers["Host"], self.path))
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(b"received")

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    client_context = None
    if tls:
        cert, key = self_signed_localhost(tmp_path)
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(cert, key)
        server.socket = server_context.wrap_socket(server.socket, server_side=True)
        client_context = ssl.create_default_context(cafile=cert)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = GuardedHttpClient(require_https=tls, allow_loopback=True, ssl_context=client_context)
        scheme = "https" if tls else "http"
        res = client.post(f"{scheme}://localhost:{server.server_port}/hook?x=1", b"{}", {}, timeout=2.0)
    finally:
        server.shutdown()
        server.server_close()
    assert (res.status, res.error) == (200, None)
    assert seen == [(f"localhost:{server.server_port}", "/hook?x=1")]
