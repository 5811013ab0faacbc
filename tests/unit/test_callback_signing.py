import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from core.domain.models import Transaction
from core.domain.statuses import TransactionStatus
from core.services.callbacks import (
    SCHEDULE_SECONDS,
    InvalidSigningSecret,
    next_attempt,
    signature_headers,
)
from core.services.tenants import new_webhook_secret


def test_an_independent_verifier_accepts_our_signature():
    secret = new_webhook_secret()
    now = datetime.now(UTC)
    body = json.dumps({"transaction_id": "tx_1", "status": "SENT"})
    headers = signature_headers([secret], "msg_tx_1_3", now, body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)


def test_rotation_signs_with_both_secrets():
    old, new = new_webhook_secret(), new_webhook_secret()
    now = datetime.now(UTC)
    body = "{}"
    headers = signature_headers([new, old], "msg_x", now, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(body, headers)


def x_signature(secret, timestamp, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return "v1=" + hmac.new(key, f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


def test_x_signature_is_v1_hmac_of_timestamp_and_body():
    secret = new_webhook_secret()
    body = '{"a":1}'
    h = signature_headers([secret], "m", datetime.now(UTC), body)
    assert h["X-Signature"] == x_signature(secret, h["webhook-timestamp"], body)


def test_x_signature_cannot_be_replayed_with_another_timestamp():
    secret = new_webhook_secret()
    first = signature_headers([secret], "m", datetime(2026, 1, 1, tzinfo=UTC), "{}")
    later = signature_headers([secret], "m", datetime(2026, 1, 1, 0, 10, tzinfo=UTC), "{}")
    assert first["X-Signature"] != later["X-Signature"]
    assert x_signature(secret, later["webhook-timestamp"], "{}") != first["X-Signature"]


def test_x_signature_carries_one_signature_per_secret_in_rotation_order():
    new, old = new_webhook_secret(), new_webhook_secret()
    h = signature_headers([new, old], "m", datetime.now(UTC), "{}")
    ts = h["webhook-timestamp"]
    assert h["X-Signature"].split(" ") == [x_signature(new, ts, "{}"), x_signature(old, ts, "{}")]
    assert len(h["webhook-signature"].split(" ")) == 2


@pytest.mark.parametrize("bad", ["whsec_", "whsec_!!!!", "whsec_a", "whsec_" + "=" * 8])
def test_an_unusable_stored_secret_is_a_clear_error(bad):
    with pytest.raises(InvalidSigningSecret, match="webhook signing secret"):
        signature_headers([new_webhook_secret(), bad], "m", datetime.now(UTC), "{}")


@pytest.mark.parametrize("value", [
    "Wed, 21 Oct 2015 07:28:00 -0000",  # parsedate_to_datetime gives a naive datetime for -0000
    "Wed, 21 Oct 2037 07:28:00 -0000",
    "Wed, 21 Oct 2037 07:28:00",  # no zone at all
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "-5", "-99999999999999999999", str(10**30), "9" * 5000, "+7", " 120 ", "soon", "Wed, 99 Foo 2015", "",
])
def test_any_retry_after_is_read_without_raising_and_clamped_to_a_day(value):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    at = next_attempt(1, now, 429, value)
    assert now <= at <= now + timedelta(hours=24)


def test_retry_after_dates_in_minus_0000_are_utc():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    at = next_attempt(1, now, 503, "Thu, 01 Jan 2026 01:00:00 -0000")
    assert (at - now).total_seconds() == 3600


def test_a_huge_retry_after_waits_one_day():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert next_attempt(1, now, 429, str(10**30)) - now == timedelta(hours=24)


def test_schedule_follows_standard_webhooks_and_then_gives_up():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for n, seconds in enumerate(SCHEDULE_SECONDS):
        at = next_attempt(n, now, 500, None)
        assert abs((at - now).total_seconds() - seconds) <= seconds * 0.1 + 1e-6
    assert next_attempt(len(SCHEDULE_SECONDS), now, 500, None) is None


def test_retry_after_is_honoured_on_429():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    at = next_attempt(1, now, 429, "120")
    assert (at - now).total_seconds() == 120


def test_callback_payload_shape_and_sequence():
    tx = Transaction(transaction_id="tx_1", tenant_id="t", template_id="tpl", template_version=1,
                     csv_s3_key="k", callback_url="https://h.example.com/", version=4)
    from core.domain.models import Summary

    cb = tx.status_callback(TransactionStatus.SENT, Summary(total_messages=10, delivered=3), datetime.now(UTC))
    assert cb.seq == 5 and cb.webhook_id == "msg_tx_1_5"
    assert set(cb.payload) >= {"transaction_id", "status", "timestamp", "summary", "sequence"}
    assert cb.payload["summary"] == {"total_messages": 10, "delivered": 3, "bounced": 0, "complained": 0,
                                     "opened": 0, "clicked": 0}
