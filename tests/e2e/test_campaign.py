"""A 1,000+ recipient campaign with every SES simulator address, end to end over HTTP."""

import time
from collections import Counter

import pytest

from core.domain.statuses import MessageStatus
from tests.e2e.test_api import HTML

pytestmark = pytest.mark.slow  # minutes on 2 cores; `make test` runs it, `-m "not slow"` leaves it out

SIMULATOR = ["success", "bounce", "ooto", "complaint", "suppressionlist"]


def test_every_recipient_gets_exactly_one_send_and_everything_adds_up(api, stack):
    rows = ["email,first_name"]
    rows += [f"{s}+{i}@simulator.amazonses.com,S{i}" for i in range(10) for s in SIMULATOR]
    rows += [f"person{i}@example.org,P{i}" for i in range(1000)]
    rows += ["person5@example.org,Dup", "broken@,X"]
    tid = api.create_template("Big", "Hello {{ first_name }}", HTML)
    up = api.upload_csv("\n".join(rows) + "\n")
    sent_before = len(stack.simulator.sent)
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})
    tx_id = tx["transaction_id"]
    final = api.wait_for(tx_id, {"COMPLETED", "FAILED"}, timeout=900)
    assert final["status"] == "COMPLETED"

    sends = [s for s in stack.simulator.sent[sent_before:] if s["message_id"].startswith(tx_id)]
    per_recipient = Counter(s["to"] for s in sends)
    assert len(per_recipient) == 1050 and set(per_recipient.values()) == {1}

    s = final["summary"]
    assert s["total_messages"] == 1050 and s["refused_at_ingest"] == 2
    assert s["sent"] == 1050
    bounced = s["bounced"]
    assert bounced >= 20  # bounce@ and suppressionlist@ always bounce
    assert s["complained"] >= 10 and s["delivered"] + bounced == 1050

    # message ⇄ batch ⇄ campaign consistency: batch summaries come from the final recount,
    # taken on the controller pass after COMPLETED
    store = stack.deps.store
    deadline = time.monotonic() + 60
    while not (store.get_transaction(tx_id).recount or store.get_transaction(tx_id).recounted):
        assert time.monotonic() < deadline, "the final recount was not taken"
        time.sleep(0.5)
    statuses = Counter()
    for b in store.batches(tx_id):
        msgs, _ = store.batch_partition(b.batch_id)
        statuses.update(m.status for m in msgs)
        assert b.summary.total_messages == len(msgs)
        assert b.status.value == "COMPLETED"
    assert statuses[MessageStatus.BOUNCED] == bounced
    assert statuses[MessageStatus.COMPLAINED] == s["complained"]
    assert sum(statuses.values()) == 1050

    # hard bounces and complaints are now suppressed for the tenant
    assert store.get_suppression("local-tenant", "bounce+0@simulator.amazonses.com")["reason"] == "hard_bounce"
    assert store.get_suppression("local-tenant", "complaint+0@simulator.amazonses.com")["reason"] == "complaint"
