"""Webhook delivery to a real HTTP server on loopback, verified with the standardwebhooks package."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from core.adapters.webhooks import GuardedHttpClient
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
    assert headers["webhook-id"] == f"msg_{tx_id}_1" and len(headers["x-signature"]) == 64
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
