"""FIFO queues refuse an empty MessageDeduplicationId: the adapter never sends one."""

from core.adapters.sqs import SqsQueue


class _Client:
    def __init__(self):
        self.sent = []

    def send_message(self, **kw):
        self.sent.append(kw)


def test_a_fifo_message_without_a_dedup_id_gets_its_content_hash():
    c = _Client()
    q = SqsQueue(c, "p-send.fifo")
    q._url = "https://sqs/p-send.fifo"
    q.send({"batch_id": "b1"})
    q.send({"batch_id": "b1"})
    q.send({"batch_id": "b2"}, dedup_id="explicit")
    ids = [kw["MessageDeduplicationId"] for kw in c.sent]
    assert ids[0] and ids[0] == ids[1] and ids[2] == "explicit"
