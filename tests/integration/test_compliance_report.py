"""The compliance report from what the platform stores: mail counted by when it was sent (the
campaign's send times, stamped with its sent count) and unsubscribes measured from the request's
arrival to the suppression. The real API handler, in-process, over API Gateway events."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from core import schema
from core.domain.unsubscribe import sign_unsubscribe_token
from core.services.events import record_ses_event
from handlers import api
from handlers.context import scoped
from local.gateway import to_event
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import send_single_batch, submit

BASE = "/api/v1/email"


def test_the_report_counts_mail_sent_in_the_period_and_measures_unsubscribes(deps, tenant):
    # GIVEN a campaign whose two mails were handed to SES (their Send events recorded)
    tx_id = submit(deps, "tenant-a", "email,first_name\na@example.org,A\nb@example.org,B\n")
    batch, mailer = send_single_batch(deps, tx_id)
    for s in mailer.sent:
        record_ses_event(sns_envelope(ses_event_for("ses_send.json", tenant="tenant-a", message_id=s["tags"]["message_id"],
                                                    recipient=s["to"], ses_id=s["ses_id"])), store=deps.store)
    item = deps.store.table.get(schema.transaction_key(tx_id))
    assert item["n_sent"] == 2 and item["first_sent_at"] <= item["last_sent_at"]  # when, beside how many

    # AND a one-click unsubscribe that reached API Gateway 1.5 s before the handler suppressed it
    token = sign_unsubscribe_token(deps.settings.unsubscribe_secret, "tenant-a", "a@example.org", "m-1")
    click = to_event("POST", f"{BASE}/unsubscribe/{token}", {}, b"List-Unsubscribe=One-Click", "127.0.0.1")
    click["requestContext"]["requestTimeEpoch"] = int(time.time() * 1000) - 1500
    with scoped(deps):
        assert api.resolve(click, None)["statusCode"] == 200

    # WHEN the tenant asks for the report of a period around now
    today = deps.clock.now().date()
    query = f"start={today - timedelta(days=1)}&end={today + timedelta(days=1)}"
    ask = to_event("GET", f"{BASE}/compliance/report?{query}", {"X-API-Key": tenant["api_key"]}, b"", "127.0.0.1")
    with scoped(deps):
        out = api.resolve(ask, None)
    assert out["statusCode"] == 200, out["body"]
    r = json.loads(out["body"])

    # THEN the mail is the campaign's, counted by its send times, and the report says so
    assert r["mail"]["campaigns"] == 1 and r["mail"]["sent"] == 2
    assert "first and last recorded send both fall in the period" in r["mail_counted"]["what"]
    # AND the unsubscribe's request-to-suppression time is measured from the stored timestamps
    measured = r["unsubscribes"]["request_to_suppression"]
    assert r["unsubscribes"]["honoured"] == 1 and measured["measured"] == 1 and measured["not_measured"] == 0
    assert 1.5 <= measured["max_seconds"] < 60 and measured["median_seconds"] == measured["max_seconds"]


def test_an_unsubscribe_without_the_gateways_arrival_time_is_honoured_unmeasured(deps, tenant):
    """``requestTimeEpoch`` is read through the typed request context; an event without it (not API
    Gateway's) still unsubscribes, and the report counts it as not measured."""
    token = sign_unsubscribe_token(deps.settings.unsubscribe_secret, "tenant-a", "b@example.org", "m-2")
    click = to_event("POST", f"{BASE}/unsubscribe/{token}", {}, b"List-Unsubscribe=One-Click", "127.0.0.1")
    arrived = click["requestContext"].pop("requestTimeEpoch")  # what local/gateway.py sets, as API Gateway does
    assert abs(arrived / 1000 - time.time()) < 60
    with scoped(deps):
        assert api.resolve(click, None)["statusCode"] == 200
    stored = deps.store.get_suppression("tenant-a", "b@example.org")
    assert stored and stored["reason"] == "unsubscribe" and not stored.get("requested_at")
