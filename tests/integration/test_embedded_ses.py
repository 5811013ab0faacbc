"""The embedded SES publishes its events from the moto server process, like SES does on AWS:
the Send event of every accepted message is put to the configuration set's Firehose stream (and
so reaches the events bucket and queue) before SendEmail returns, whatever happens to the caller afterwards; the outcome
events follow. Each name prefix has its own configuration set, so stacks sharing one moto
server never see each other's events."""

import json
import time

import pytest

from core.adapters.aws import client
from core.adapters.s3 import S3BlobStore
from core.domain.errors import SendInDoubt, SendingHeld
from core.services.event_sources import event_bodies
from local.bootstrap import create_resources
from local.ses_simulator import Rates, SimulatingMailer, event_destination_name, rates_of
from tests.conftest import make_settings

TAGS = {"tenant_id": "tenant-a", "transaction_id": "tx_emb", "batch_id": "tx_emb-b00001",
        "message_id": "tx_emb-b00001-00001"}


def _send(mailer, to="person1@example.org", sender="noreply@example.com", **tags):
    return mailer.send(sender=sender, to=to, subject="Hello P1", html="<p>Hello P1</p>", reply_to=None,
                       headers={}, tags={**TAGS, **tags})


def _events(settings, wait: float = 0.0, until: int = 0) -> list[dict]:
    """SES events in the prefix's events queue (removed): everything visible now, or, with
    ``wait``, until ``until`` events arrived or ``wait`` seconds passed."""
    sqs = client(settings, "sqs")
    blobs = S3BlobStore(client(settings, "s3"))
    url = sqs.get_queue_url(QueueName=settings.queue("ses-events"))["QueueUrl"]
    out: list[dict] = []
    deadline = time.monotonic() + wait
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        for m in msgs:  # S3 notifications of Firehose objects: each object's events
            out += [json.loads(e) for e in event_bodies(m["Body"], blobs)]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if msgs:
            continue
        if len(out) >= until or time.monotonic() >= deadline:
            return out
        time.sleep(0.05)


def test_the_send_event_reaches_the_events_queue_in_a_firehose_object_and_the_delivery_follows(deps, settings):
    # GIVEN the bootstrap's configuration set, named after the prefix, with its event destination
    assert settings.ses_configuration_set == settings.name_prefix
    # WHEN the real SES adapter sends one message through the moto server
    ses_id = _send(deps.mailer, to="success@simulator.amazonses.com")
    # THEN its Send event is in the events queue once Firehose wrote its buffer (well within 5 s)
    now = _events(settings, wait=5, until=1)
    sends = [e for e in now if e["eventType"] == "Send"]
    assert len(sends) == 1
    mail = sends[0]["mail"]
    assert mail["messageId"] == ses_id and mail["destination"] == ["success@simulator.amazonses.com"]
    assert mail["tags"]["message_id"] == [TAGS["message_id"]] and mail["tags"]["tenant_id"] == ["tenant-a"]
    assert mail["tags"]["ses:configuration-set"] == [settings.ses_configuration_set]
    assert mail["commonHeaders"]["subject"] == "Hello P1" and mail["source"] == "noreply@example.com"
    # AND the Delivery follows, for the same mail, with no second Send
    later = now + _events(settings, wait=5, until=2 - len(now))
    assert sorted(e["eventType"] for e in later) == ["Delivery", "Send"]
    delivery = next(e for e in later if e["eventType"] == "Delivery")
    assert delivery["mail"]["messageId"] == ses_id and delivery["mail"]["timestamp"] == mail["timestamp"]
    assert _events(settings, wait=0.5) == []


def test_a_send_whose_answer_is_lost_still_has_its_send_event(deps, settings):
    """SES took the mail, the answer never came back: the caller is in doubt, the evidence is there."""
    simulator = SimulatingMailer(deps.mailer)
    try:
        simulator.inject("ReadTimeout", accepted=True)
        with pytest.raises(SendInDoubt):
            _send(simulator)
        sends = [e for e in _events(settings, wait=5, until=1) if e["eventType"] == "Send"]
        assert [e["mail"]["tags"]["message_id"] for e in sends] == [[TAGS["message_id"]]]
        assert simulator.sent == []  # the caller never learnt the SES id
        ses_id = _send(simulator, message_id="tx_emb-b00001-00002")
        assert simulator.endpoint_publishes is True and [s["ses_id"] for s in simulator.sent] == [ses_id]
    finally:
        simulator.faults.detach()
        simulator.stop()


def test_a_message_ses_refuses_has_no_events(deps, settings):
    with pytest.raises(SendingHeld):  # moto refuses an unverified sender
        _send(deps.mailer, sender="someone@unverified.example")
    assert _events(settings, wait=0.3) == []


def test_prefixes_sharing_one_moto_server_do_not_see_each_others_events(moto_server, deps, settings):
    from core.bootstrap import bootstrap

    other = make_settings(moto_server.url)
    create_resources(other)
    assert other.ses_configuration_set != settings.ses_configuration_set
    ses_id = _send(bootstrap(other).mailer)
    got = _events(other, wait=5, until=2)
    assert {e["mail"]["messageId"] for e in got} == {ses_id} and "Send" in {e["eventType"] for e in got}
    assert _events(settings, wait=0.3) == []


def test_the_stack_rates_travel_with_the_event_destination(moto_server):
    from core.bootstrap import bootstrap

    rates = Rates(delivery=0.0, open=0.0, click=0.0)  # every other address bounces
    assert rates_of(event_destination_name("cs", rates)) == rates
    assert rates_of("to-firehose") == Rates()  # infra's destination name: the defaults
    settings = make_settings(moto_server.url)
    create_resources(settings, rates=rates)
    create_resources(settings, rates=rates)  # idempotent
    ses_id = _send(bootstrap(settings).mailer, to="person2@example.org")
    got = _events(settings, wait=5, until=2)
    assert [(e["eventType"], e["mail"]["messageId"]) for e in got] == [("Send", ses_id), ("Bounce", ses_id)]
