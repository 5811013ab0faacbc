"""Patches of the embedded AWS's data, in-process (local/moto.py).

The embedded SQS keeps a message sent while another request deletes one (``patch_sqs_queues``). moto rebuilds a queue's message list on delete without the queue's lock;
the moto server answers on many threads, and in a demo one SES Delivery event in ~7,000 was lost
that way. The race is forced here: the send runs exactly when the delete has copied the list."""

from __future__ import annotations

import threading
import time
import weakref

from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from local.moto import (
    SNS_NOTIFICATIONS,
    patch_instance_tracking,
    patch_sns_history,
    patch_sqs_queues,
)


class SendWhenCopied(list):
    """A queue's message list that, once a full pass over it ends (the delete's copy), has
    another thread send a message, and waits up to ``wait`` for that send to finish."""

    def __init__(self, items, send, wait: float = 0.5):
        super().__init__(items)
        self.send, self.wait, self.fired = send, wait, False

    def __iter__(self):
        yield from list.__iter__(self)
        if not self.fired:
            self.fired = True
            self.sender = threading.Thread(target=self.send)
            self.sender.start()
            self.sender.join(self.wait)  # unlocked: the send lands now, in the list being replaced


def test_a_message_sent_while_another_is_deleted_is_kept():
    patch_sqs_queues()
    backend = sqs_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"]
    backend.create_queue("race-on-delete")
    backend.send_message("race-on-delete", "first")
    received = backend.receive_message("race-on-delete", 1, 0, 30)
    queue = backend.get_queue("race-on-delete")
    queue._messages = racing = SendWhenCopied(queue._messages, lambda: backend.send_message("race-on-delete", "late"))

    backend.delete_message("race-on-delete", received[0].receipt_handle)
    racing.sender.join(5)

    assert [m.body for m in queue._messages] == ["late"]


def test_a_long_poll_does_not_hold_its_queue():
    """A receive waiting for messages lets a send in (its wait releases the queue's lock)."""
    patch_sqs_queues()
    backend = sqs_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"]
    backend.create_queue("long-poll")
    got: list = []
    poll = threading.Thread(target=lambda: got.extend(backend.receive_message("long-poll", 1, 5, 30)))
    poll.start()
    threading.Timer(0.3, lambda: backend.send_message("long-poll", "hello")).start()
    poll.join(10)
    assert [m.body for m in got] == ["hello"]


def test_a_topic_keeps_its_newest_notifications_only():
    from moto.sns.models import sns_backends

    patch_sns_history()
    backend = sns_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"]
    topic = backend.create_topic("history")
    for i in range(SNS_NOTIFICATIONS + 5):
        backend.publish(f"event {i}", arn=topic.arn)
    kept = [n[1] for n in topic.sent_notifications]
    assert len(kept) == SNS_NOTIFICATIONS and kept[-1] == f"event {SNS_NOTIFICATIONS + 4}"


def test_a_long_poll_on_a_fifo_group_in_flight_lets_a_delete_through():
    """Visible messages a FIFO group in flight holds back: the poll waits without its queue's lock."""
    patch_sqs_queues()
    backend = sqs_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"]
    backend.create_queue("held.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    backend.send_message("held.fifo", "a", group_id="g")
    backend.send_message("held.fifo", "b", group_id="g")
    first = backend.receive_message("held.fifo", 1, 0, 30)
    poll = threading.Thread(target=lambda: backend.receive_message("held.fifo", 1, 3, 30))
    poll.start()
    time.sleep(0.2)
    started = time.monotonic()
    backend.delete_message("held.fifo", first[0].receipt_handle)
    assert time.monotonic() - started < 1.5  # the poll held the queue for its whole 3 s before
    poll.join(10)


def test_a_deleted_item_and_message_are_freed_not_kept_for_the_dashboard():
    """moto listed every item version and SQS message it ever made (1.8 GB at 20k recipients)."""
    from moto.dynamodb.models import dynamodb_backends

    patch_instance_tracking()
    ddb = dynamodb_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"]
    ddb.create_table("freed", schema=[{"AttributeName": "PK", "KeyType": "HASH"}],
                     attr=[{"AttributeName": "PK", "AttributeType": "S"}], throughput=None,
                     billing_mode="PAY_PER_REQUEST", indexes=None, global_indexes=None, streams=None,
                     sse_specification=None, tags=None, deletion_protection_enabled=False, warm_throughput=None)
    ddb.put_item("freed", {"PK": {"S": "a"}, "m": {"M": {"x": {"L": [{"S": "y"}]}}}})
    ddb.update_item("freed", {"PK": {"S": "a"}}, "SET n = :one", {}, {":one": {"N": "1"}})
    item = weakref.ref(ddb.get_item("freed", {"PK": {"S": "a"}}))
    ddb.delete_item("freed", {"PK": {"S": "a"}})
    sqs = sqs_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"]
    sqs.create_queue("freed")
    sqs.send_message("freed", "hi")
    handle = sqs.receive_message("freed", 1, 0, 30)[0].receipt_handle
    message = weakref.ref(sqs.get_queue("freed")._messages[0])
    sqs.delete_message("freed", handle)

    assert item() is None and message() is None  # freed at once, by reference counting
