import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from core.domain.models import Transaction
from core.domain.statuses import TransactionStatus
from core.services.callbacks import SCHEDULE_SECONDS, callback_for, next_attempt, signature_headers
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


def test_owner_x_signature_is_hex_hmac_of_body():
    import base64
    import hashlib
    import hmac

    secret = new_webhook_secret()
    body = '{"a":1}'
    h = signature_headers([secret], "m", datetime.now(UTC), body)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    assert h["X-Signature"] == hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


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

    cb = callback_for(tx, TransactionStatus.SENT, Summary(total_messages=10, delivered=3), datetime.now(UTC))
    assert cb.seq == 5 and cb.webhook_id == "msg_tx_1_5"
    assert set(cb.payload) >= {"transaction_id", "status", "timestamp", "summary", "sequence"}
    assert cb.payload["summary"] == {"total_messages": 10, "delivered": 3, "bounced": 0, "complained": 0,
                                     "opened": 0, "clicked": 0}
