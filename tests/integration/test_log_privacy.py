"""The structured logs of a whole run (ingest, send, SES events with a bounce, an erasure, API
audit lines) hold no address and no placeholder value in plain text."""

from __future__ import annotations

import json

import structlog

from core.bootstrap import privacy_ports
from core.log_privacy import mask_address, redact_personal_data
from core.observability import configure_logging, log
from core.services import privacy
from core.services.events import record_ses_event
from tests.conftest import ses_event_for, sns_envelope
from tests.helpers import send_single_batch, submit

PERSON = "Logged.Person@example.org"
SECRET_VALUE = "Plumbobulous"


def test_processor_masks_addresses_everywhere_and_data_fields_by_name():
    out = redact_personal_data(None, "info", {
        "event": f"sent to {PERSON}", "to": PERSON, "placeholder_data": {"first_name": SECRET_VALUE},
        "nested": {"list": [f"<{PERSON}>", 3]}, "exception": f"Traceback ... ValueError: bad {PERSON}",
        "path": "/api/v1/email/unsubscribe/dGVuYW50CnBAeC5vcmcKbTE.0123abcd"})
    text = json.dumps(out)
    assert PERSON.lower() not in text.lower() and SECRET_VALUE not in text
    assert out["to"] == mask_address(PERSON) == mask_address(PERSON.upper())  # stable: lines correlate
    assert out["placeholder_data"] == "[redacted]" and out["nested"]["list"][1] == 3
    assert out["path"] == "/api/v1/email/unsubscribe/[token]"


def test_unconfigured_processes_redact_too(capsys):
    # a Lambda never calls configure_logging: the default chain carries the processor as well
    log.info("sent", to=PERSON)
    assert PERSON.lower() not in capsys.readouterr().out.lower()


def test_logs_of_a_run_hold_no_address_or_placeholder_value(deps, tenant, capsys):
    before = structlog.get_config()
    configure_logging("DEBUG")
    try:
        tx_id = submit(deps, "tenant-a", f"email,first_name\n{PERSON},{SECRET_VALUE}\nnot-an-address,{SECRET_VALUE}\n"
                                         f"bounce@simulator.amazonses.com,{SECRET_VALUE}\n")
        batch, mailer = send_single_batch(deps, tx_id)
        for s in mailer.sent:
            for name in ("ses_send.json", "ses_bounce.json"):
                record_ses_event(sns_envelope(ses_event_for(name, tenant="tenant-a", message_id=s["tags"]["message_id"],
                                                            recipient=s["to"], ses_id=s["ses_id"])),
                                 store=deps.store, analytics=deps.analytics)
        ports = privacy_ports(deps, peer_table=False)
        job = privacy.request_erasure(ports, "tenant-a", PERSON, "key_log")
        privacy.run_erasure(ports, job["erasure_id"])
        log.warning("audit", action="suppression.add", target=PERSON, reason=f"asked by {PERSON}")
        err = capsys.readouterr().err
    finally:
        structlog.configure(**before)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(lines) >= 5, err[:2000]  # the run did log
    assert PERSON.lower() not in err.lower() and "bounce@simulator.amazonses.com" not in err
    assert SECRET_VALUE not in err
    assert "@masked" in err  # the audit line is there, with the address masked
