"""A campaign of several batches (the e2e stack's batch_size is 50) over several sender workers,
with every SES simulator address, a duplicate and a broken row, end to end over HTTP.

Sized to prove exactly-once sending and counts that add up across batches, chunks and concurrent
senders in about a minute on 2 cores: 300 recipients make 6 batches of 5 send chunks each, as many
batches as the 1,050 recipients in batches of 200 it replaced (whose extra messages added minutes,
not cases). Volume itself is exercised by `make demo RECIPIENTS=20000` (exact counts checked) and bench/."""

import time
from collections import Counter

import pytest

from core.domain.statuses import MessageStatus
from tests.e2e.test_api import HTML

pytestmark = pytest.mark.slow  # the tier's largest campaign; `make test` runs it, `-m "not slow"` leaves it out

SIMULATOR = ["success", "bounce", "ooto", "complaint", "suppressionlist"]
PEOPLE = 250
TOTAL = PEOPLE + 10 * len(SIMULATOR)  # 300: 6 batches of the e2e stack's 50


def test_every_recipient_gets_exactly_one_send_and_everything_adds_up(api, stack):
    rows = ["email,first_name"]
    rows += [f"{s}+{i}@simulator.amazonses.com,S{i}" for i in range(10) for s in SIMULATOR]
    rows += [f"person{i}@example.org,P{i}" for i in range(PEOPLE)]
    rows += ["person5@example.org,Dup", "broken@,X"]
    tid = api.create_template("Big", "Hello {{ first_name }}", HTML)
    up = api.upload_csv("\n".join(rows) + "\n")
    sent_before = len(stack.simulator.sent)
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})
    tx_id = tx["transaction_id"]
    # a healthy run completes in about a minute; the bound stays under pytest's own timeout (600 s)
    final = api.wait_for(tx_id, {"COMPLETED", "FAILED"}, timeout=420)
    assert final["status"] == "COMPLETED"

    sends = [s for s in stack.simulator.sent[sent_before:] if s["message_id"].startswith(tx_id)]
    per_recipient = Counter(s["to"] for s in sends)
    assert len(per_recipient) == TOTAL and set(per_recipient.values()) == {1}

    s = final["summary"]
    assert s["total_messages"] == TOTAL and s["refused_at_ingest"] == 2
    assert s["sent"] == TOTAL
    bounced = s["bounced"]
    assert bounced >= 20  # bounce@ and suppressionlist@ always bounce
    assert s["complained"] >= 10 and s["delivered"] + bounced == TOTAL

    # message ⇄ batch ⇄ campaign consistency: batch summaries come from the final recount,
    # taken on the controller pass after COMPLETED
    store = stack.deps.store
    deadline = time.monotonic() + 60
    while not (store.get_transaction(tx_id).recount or store.get_transaction(tx_id).recounted):
        assert time.monotonic() < deadline, "the final recount was not taken"
        time.sleep(0.5)
    statuses = Counter()
    batches = store.batches(tx_id)
    assert len(batches) == 6  # several batches for the 3 sender workers to share
    for b in batches:
        msgs, _ = store.batch_partition(b.batch_id)
        statuses.update(m.status for m in msgs)
        assert b.summary.total_messages == len(msgs)
        assert b.status.value == "COMPLETED"
    assert statuses[MessageStatus.BOUNCED] == bounced
    assert statuses[MessageStatus.COMPLAINED] == s["complained"]
    assert sum(statuses.values()) == TOTAL

    # hard bounces and complaints are now suppressed for the tenant
    assert store.get_suppression("local-tenant", "bounce+0@simulator.amazonses.com")["reason"] == "hard_bounce"
    assert store.get_suppression("local-tenant", "complaint+0@simulator.amazonses.com")["reason"] == "complaint"
