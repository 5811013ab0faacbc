"""In-process stand-ins for Lambda's SQS event source mappings: they poll the same queues and
call the same handler functions the Lambdas run."""

from __future__ import annotations

import threading
import time
from typing import Any

from core.observability import acting_as, log
from core.schema import EVENTS_QUEUE, SEND_QUEUE, Queue
from handlers import sender, ses_events
from handlers.context import LocalContext


class QueueWorker(threading.Thread):
    component = "unattributed"  # the Lambda whose event source mapping this worker plays
    lambda_handler: Any = None
    retry_after: int | None = None

    source: Queue | None = None  # the queue definition whose event source mapping this worker plays

    def __init__(self, name: str, queue: Any, stop: threading.Event, batch: int | None = None, deps: Any = None):
        super().__init__(name=name, daemon=True)
        self.deps = deps
        self.queue, self.stop_event = queue, stop
        self.batch = batch or (self.source.batch_size if self.source else 10)
        self.window = self.source.batching_window if self.source else 0
        self.halted = threading.Event()  # this worker alone (a region's compute being killed)

    def halt(self) -> None:
        self.halted.set()

    def run(self) -> None:
        from handlers.context import scoped

        with acting_as(self.component), scoped(self.deps):
            self._loop()

    def _loop(self) -> None:
        while not (self.stop_event.is_set() or self.halted.is_set()):
            try:
                msgs = self._gather()
                if msgs:
                    self.handle(msgs)
            except Exception as exc:
                log.warning("worker error", worker=self.name, error=str(exc)[:300])
                self.stop_event.wait(1)

    def _gather(self) -> list[dict[str, Any]]:
        """Like the event source mapping: up to ``batch`` records, waiting up to the batching
        window for more once the first arrived (SQS returns at most 10 per call)."""
        msgs = self.queue.receive(min(self.batch, 10), wait_seconds=1)
        deadline = time.monotonic() + self.window
        while msgs and len(msgs) < self.batch and time.monotonic() < deadline and not self.stop_event.is_set():
            more = self.queue.receive(min(self.batch - len(msgs), 10), wait_seconds=1)
            msgs += more
            if not more and self.window <= 1:
                break
        return msgs

    def handle(self, msgs: list[dict[str, Any]]) -> None:
        """What the event source mapping does: delete what succeeded, leave the reported failures."""
        resp = self.lambda_handler(_sqs_event(msgs, self.queue.name), LocalContext())
        failed = {f["itemIdentifier"] for f in resp.get("batchItemFailures", [])}
        self.queue.delete([m["ReceiptHandle"] for m in msgs if m["MessageId"] not in failed])
        if self.retry_after is not None:
            for m in msgs:
                if m["MessageId"] in failed:
                    self.queue.release(m["ReceiptHandle"], self.retry_after)


def _sqs_event(msgs: list[dict[str, Any]], arn: str) -> dict[str, Any]:
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""),
        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "local",
    } for m in msgs]}


class SendWorker(QueueWorker):
    component = "sender"
    source = SEND_QUEUE
    lambda_handler = staticmethod(sender.handler)
    retry_after = 5  # a failed batch record comes back soon (Lambda: the queue's visibility timeout)


class EventsWorker(QueueWorker):
    component = "ses_events"
    source = EVENTS_QUEUE
    lambda_handler = staticmethod(ses_events.handler)
    retry_after = None  # failed records reappear after the visibility timeout, as on Lambda
