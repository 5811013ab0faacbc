import json

import pytest

from core.domain.statuses import MessageStatus
from core.services.events import interpret, parse_sns_envelope
from tests.conftest import load_event, sns_envelope


@pytest.mark.parametrize("name,status,suppress", [
    ("ses_send.json", MessageStatus.SENT, None),
    ("ses_delivery.json", MessageStatus.DELIVERED, None),
    ("ses_bounce.json", MessageStatus.BOUNCED, "hard_bounce"),
    ("ses_complaint.json", MessageStatus.COMPLAINED, "complaint"),
    ("ses_open.json", MessageStatus.OPENED, None),
    ("ses_click.json", MessageStatus.CLICKED, None),
    ("ses_reject.json", MessageStatus.REJECTED, None),
    ("ses_delivery_delay.json", MessageStatus.SENT, None),
    ("ses_rendering_failure.json", MessageStatus.FAILED, None),
])
def test_every_documented_event_type_is_understood(name, status, suppress):
    parsed = interpret(parse_sns_envelope(sns_envelope(load_event(name))))
    assert parsed is not None
    assert parsed.status == status
    assert parsed.suppress_reason == suppress
    assert parsed.message_id == "MESSAGE" and parsed.tenant_id == "TENANT"


def test_event_id_is_stable_across_sns_redelivery():
    ev = load_event("ses_delivery.json")
    a = interpret(parse_sns_envelope(sns_envelope(ev, "sns-1")))
    b = interpret(parse_sns_envelope(sns_envelope(ev, "sns-2")))
    assert a.event_id == b.event_id


def test_transient_bounce_is_not_suppressed():
    ev = load_event("ses_bounce.json")
    ev["bounce"]["bounceType"] = "Transient"
    assert interpret(parse_sns_envelope(json.dumps(ev))).suppress_reason is None


def test_click_keeps_the_link():
    parsed = interpret(parse_sns_envelope(sns_envelope(load_event("ses_click.json"))))
    assert parsed.detail["link"] == "https://example.com/offer"
