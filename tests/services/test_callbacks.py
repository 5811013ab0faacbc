"""core/services/callbacks.py on the fakes: the outbox a status change writes, delivered in order,
retried on the Standard Webhooks schedule (a receiver's Retry-After honoured, whatever it sends),
disabled by a 410, dead-lettered when exhausted."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from core.domain.statuses import TransactionStatus
from core.services import callbacks, campaigns
from core.services.callbacks import MAX_RETRY_AFTER, SCHEDULE_SECONDS, _retry_after, next_attempt
from core.services.tenants import new_webhook_secret
from tests.fakes import FakeSecrets, FakeWebhookHttp
from tests.services.builders import NOW, TENANT, stored_campaign

T = TransactionStatus
URL = "https://hooks.example.com/cb"


@pytest.fixture
def secret() -> str:
    return new_webhook_secret()


@pytest.fixture
def secrets(secret) -> FakeSecrets:
    return FakeSecrets({TENANT: secret})


@pytest.fixture
def http() -> FakeWebhookHttp:
    return FakeWebhookHttp()


def deliver(store, http, secrets, clock) -> int:
    return callbacks.deliver_due(store=store, http=http, secrets=secrets, clock=clock, timeout=1.0)


def signed_by(secret: str, body: bytes, headers: dict[str, str]) -> dict:
    """The payload, if ``secret`` signed it (Standard Webhooks); Webhook.verify would refuse the
    FakeClock's timestamp as too old, so the signature is checked against the header's time."""
    when = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
    expected = Webhook(secret).sign(headers["webhook-id"], when, body.decode())
    assert expected in headers["webhook-signature"].split()
    return json.loads(body)


def states(store, tx_id="tx_1") -> list[str]:
    return [c.state for c in store.callbacks(tx_id)]


# ---- Retry-After and the schedule (pure) ----------------------------------------------------------

@pytest.mark.parametrize("value, after", [
    ("120", timedelta(seconds=120)),
    ("+30", timedelta(seconds=30)),
    ("000045", timedelta(seconds=45)),
    ("0", timedelta(0)),
    ("-5", timedelta(0)),  # a negative delay is "now", never the past
    ("999999", timedelta(seconds=86400)),  # clamped to 24 h
    ("99999999999999999999999999999999", MAX_RETRY_AFTER),  # huge: clamped, no overflow
    ("Mon, 02 Mar 2020 10:00:00 GMT", timedelta(hours=1)),
    ("Mon, 02 Mar 2020 10:00:00 -0000", timedelta(hours=1)),  # "-0000": a zone-less date, read as GMT
    ("Mon, 02 Mar 2020 12:00:00 +0200", timedelta(hours=1)),
    ("Sun, 01 Mar 2020 09:00:00 GMT", timedelta(0)),  # in the past: now
    ("Fri, 01 Jan 2100 00:00:00 GMT", MAX_RETRY_AFTER),
])
def test_a_receivers_retry_after_becomes_a_time_within_a_day(value, after):
    assert _retry_after(value, NOW) == NOW + after


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "1.5", "Mon, 99 Foo 2026 xx:yy GMT", "12 34", "٣"])
def test_a_retry_after_that_cannot_be_read_is_ignored(value):
    assert _retry_after(value, NOW) is None


def test_the_retry_schedule_backs_off_with_jitter_and_ends():
    rng = random.Random(7)
    for made, base in enumerate(SCHEDULE_SECONDS):
        at = next_attempt(made, NOW, 500, None, rng)
        assert at is not None and base * 0.9 <= (at - NOW).total_seconds() <= base * 1.1
    assert next_attempt(len(SCHEDULE_SECONDS), NOW, 500, None, rng) is None  # exhausted: dead letter


def test_retry_after_only_delays_a_429_or_503_and_never_hastens_it():
    rng = random.Random(1)
    assert next_attempt(1, NOW, 429, "3600", rng) == NOW + timedelta(hours=1)
    assert next_attempt(1, NOW, 503, "Mon, 02 Mar 2020 11:00:00 GMT", rng) == NOW + timedelta(hours=2)
    assert (next_attempt(2, NOW, 429, "1", rng) - NOW).total_seconds() >= 270  # the schedule's 5 min stands
    assert (next_attempt(1, NOW, 500, "3600", rng) - NOW).total_seconds() <= 5.5  # a 500's hint is not honoured


# ---- delivery over the fakes ------------------------------------------------------------------------

def test_a_status_change_is_delivered_signed_once_and_leaves_the_due_index(store, clock, http, secrets, secret):
    stored_campaign(store, status=T.SCHEDULED, callback_url=URL)
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    assert deliver(store, http, secrets, clock) == 1
    (url, body, headers), = http.got
    payload = signed_by(secret, body, headers)
    assert headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    assert url == URL and payload["status"] == "CANCELLED" and payload["sequence"] == 1
    assert headers["webhook-id"] == "msg_tx_1_1" and headers["X-Signature"].startswith("v1=")
    assert states(store) == ["DELIVERED"] and store.due("CALLBACK", clock.now() + timedelta(days=2)) == []
    assert deliver(store, http, secrets, clock) == 0


def test_a_failed_attempt_is_retried_on_schedule_with_the_same_webhook_id(store, clock, http, secrets):
    stored_campaign(store, status=T.SCHEDULED, callback_url=URL)
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    http.answer("/cb", None, error="connection refused")
    deliver(store, http, secrets, clock)
    (cb,) = store.callbacks("tx_1")
    assert cb.state == "PENDING" and cb.attempts[0]["error"] == "connection refused"
    assert 4.5 <= (cb.next_attempt_at - clock.now()).total_seconds() <= 5.5
    assert deliver(store, http, secrets, clock) == 0  # not due yet
    clock.advance(6)
    assert deliver(store, http, secrets, clock) == 1
    assert http.webhook_ids() == ["msg_tx_1_1", "msg_tx_1_1"] and states(store) == ["DELIVERED"]
    assert len(store.callbacks("tx_1")[0].attempts) == 2


def test_a_429_waits_for_the_receivers_retry_after(store, clock, http, secrets):
    stored_campaign(store, status=T.SCHEDULED, callback_url=URL)
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    http.answer("/cb", 429, retry_after="Mon, 02 Mar 2020 09:10:00 -0000")
    deliver(store, http, secrets, clock)
    assert store.callbacks("tx_1")[0].next_attempt_at == NOW + timedelta(minutes=10)
    clock.advance(599)
    assert deliver(store, http, secrets, clock) == 0
    clock.advance(1)
    assert deliver(store, http, secrets, clock) == 1 and states(store) == ["DELIVERED"]


def test_a_later_callback_waits_behind_an_earlier_one_and_they_arrive_in_order(store, clock, http, secrets):
    tx = stored_campaign(store, status=T.SCHEDULED, callback_url=URL)
    campaigns.change_status(store, clock, tx, T.READY_TO_SEND)
    http.answer("/cb", 500)
    assert deliver(store, http, secrets, clock) == 1
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    assert deliver(store, http, secrets, clock) == 0  # CANCELLED waits while READY_TO_SEND is retrying
    first, second = store.callbacks("tx_1")
    assert second.attempts == [] and second.next_attempt_at == first.next_attempt_at
    clock.advance(6)
    assert deliver(store, http, secrets, clock) == 2
    assert [json.loads(body)["sequence"] for _, body, _ in http.got] == [1, 1, 2]
    assert states(store) == ["DELIVERED", "DELIVERED"]


def test_a_410_disables_the_endpoint_for_the_campaigns_later_callbacks(store, clock, http, secrets):
    tx = stored_campaign(store, status=T.SCHEDULED, callback_url=URL)
    campaigns.change_status(store, clock, tx, T.READY_TO_SEND)
    http.answer("/cb", 410)
    deliver(store, http, secrets, clock)
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    deliver(store, http, secrets, clock)
    assert states(store) == ["DISABLED", "DISABLED"] and len(http.got) == 1


def test_an_exhausted_callback_is_dead_lettered_and_can_be_redelivered(store, clock, http, secrets):
    stored_campaign(store, status=T.SCHEDULED, callback_url=URL)
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    http.answer("/cb", 503, times=len(SCHEDULE_SECONDS))
    for _ in range(len(SCHEDULE_SECONDS) + 2):
        deliver(store, http, secrets, clock)
        clock.advance(30 * 3600)
    (cb,) = store.callbacks("tx_1")
    assert cb.state == "DEAD" and len(cb.attempts) == len(SCHEDULE_SECONDS) == len(http.got)
    assert callbacks.redeliver(store, "tx_1", clock) == [1]
    assert deliver(store, http, secrets, clock) == 1
    assert states(store) == ["DELIVERED"] and http.webhook_ids()[-1] == "msg_tx_1_1"


def test_a_tenant_without_a_signing_secret_gets_a_failed_attempt_not_an_error(store, clock, http):
    stored_campaign(store, status=T.SCHEDULED, callback_url=URL)
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    assert deliver(store, http, FakeSecrets(), clock) == 1
    (cb,) = store.callbacks("tx_1")
    assert cb.state == "PENDING" and cb.attempts[0]["error"] == "tenant has no signing secret" and http.got == []


def test_during_a_rotation_both_secrets_sign(store, clock, http, secrets, secret):
    secrets.set_secret(TENANT, new_webhook_secret(), keep_previous=True)
    new = secrets.signing_secrets(TENANT)[0]
    stored_campaign(store, status=T.SCHEDULED, callback_url=URL)
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    deliver(store, http, secrets, clock)
    (_, body, headers), = http.got
    assert signed_by(new, body, headers) == signed_by(secret, body, headers)
    assert len(headers["webhook-signature"].split()) == 2


def test_an_attempt_another_deliverer_recorded_first_is_not_recorded_twice(store, clock, http, secrets):
    stored_campaign(store, status=T.SCHEDULED, callback_url=URL)
    campaigns.cancel_campaign(store, clock, TENANT, "tx_1")
    (read_by_both,) = store.callbacks("tx_1")
    first = callbacks.deliver_callback(read_by_both, store=store, http=http, secrets=secrets, clock=clock, timeout=1)
    second = callbacks.deliver_callback(read_by_both, store=store, http=http, secrets=secrets, clock=clock, timeout=1)
    assert first.state == "DELIVERED" and second is read_by_both  # lost the conditional write: unchanged
    assert len(store.callbacks("tx_1")[0].attempts) == 1


def test_campaigns_on_one_receiver_are_all_delivered_in_one_pass(store, clock, http, secrets):
    for i in range(6):
        stored_campaign(store, f"tx_{i}", status=T.SCHEDULED, callback_url=URL)
        campaigns.cancel_campaign(store, clock, TENANT, f"tx_{i}")
    assert callbacks.deliver_due(store=store, http=http, secrets=secrets, clock=clock, timeout=1.0,
                                 workers=4, per_host=2) == 6
    assert sorted(http.webhook_ids()) == [f"msg_tx_{i}_1" for i in range(6)]
    assert all(states(store, f"tx_{i}") == ["DELIVERED"] for i in range(6))


def test_a_date_retry_after_uses_the_pass_clock_even_without_a_zone():
    naive_now = datetime(2020, 3, 2, 9, 0)  # a clock without tzinfo must not crash the comparison
    assert _retry_after("Mon, 02 Mar 2020 09:00:30 GMT", naive_now) == naive_now + timedelta(seconds=30)
    assert _retry_after("Mon, 02 Mar 2020 09:00:30 GMT", NOW.astimezone(UTC)) == NOW + timedelta(seconds=30)
