"""SQS: the send queue (one message per batch) and queue depth for metrics."""

from __future__ import annotations

import hashlib
import json
from typing import Any


class SqsQueue:
    def __init__(self, client: Any, queue_name: str):
        self.client = client
        self.name = queue_name
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self.client.get_queue_url(QueueName=self.name)["QueueUrl"]
        return self._url

    def send(self, body: dict[str, Any], *, group: str | None = None, dedup_id: str | None = None) -> None:
        kw: dict[str, Any] = {"QueueUrl": self.url, "MessageBody": json.dumps(body)}
        if self.name.endswith(".fifo"):
            # FIFO queues refuse an empty deduplication id: default to the body's content hash
            dedup = dedup_id or hashlib.sha256(kw["MessageBody"].encode()).hexdigest()
            kw.update(MessageGroupId=group or "default", MessageDeduplicationId=dedup)
        self.client.send_message(**kw)

    def receive(self, max_messages: int = 10, wait_seconds: int = 1, visibility: int | None = None) -> list[dict[str, Any]]:
        kw: dict[str, Any] = {"QueueUrl": self.url, "MaxNumberOfMessages": max_messages,
                              "WaitTimeSeconds": wait_seconds, "AttributeNames": ["All"]}
        if visibility is not None:
            kw["VisibilityTimeout"] = visibility
        return self.client.receive_message(**kw).get("Messages", [])

    def delete(self, receipts: list[str]) -> None:
        for i in range(0, len(receipts), 10):
            entries = [{"Id": str(j), "ReceiptHandle": r} for j, r in enumerate(receipts[i:i + 10])]
            self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)

    def release(self, receipt: str, delay: int) -> None:
        """Make a message visible again after ``delay`` seconds (retry later)."""
        self.client.change_message_visibility(QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=delay)

    def depth(self) -> dict[str, int]:
        attrs = self.client.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return {"visible": int(attrs["ApproximateNumberOfMessages"]),
                "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"])}
