"""Following a DynamoDB table's stream: every shard, round after round, across shard rollovers.

DynamoDB closes a stream's shards every few hours and opens children in their place (each child
names its ``ParentShardId``). A follower that keeps the shards it saw at start reads nothing after
the first rollover, so this one re-describes the stream when a shard ends (its ``GetRecords``
answer has no ``NextShardIterator``) and every ``rediscover_seconds``, starts a child from
``TRIM_HORIZON`` once its parent is exhausted (records of a key stay in order across the
rollover), and forgets shards that are closed and read to their end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from core.observability import log


def _describe(streams: Any, arn: str) -> list[dict[str, Any]]:
    """Every shard of the stream (DescribeStream pages through ``LastEvaluatedShardId``)."""
    shards: list[dict[str, Any]] = []
    kw: dict[str, Any] = {"StreamArn": arn}
    while True:
        desc = streams.describe_stream(**kw)["StreamDescription"]
        shards.extend(desc.get("Shards", []))
        last = desc.get("LastEvaluatedShardId")
        if not last:
            return shards
        kw["ExclusiveStartShardId"] = last


class _Shards:
    """Which shards are read (with their iterators), which wait for a parent, which are done."""

    def __init__(self, streams: Any, arn: str):
        self.streams, self.arn = streams, arn
        self.reading: dict[str, str] = {}  # shard id → its next iterator, in start order
        self.waiting: dict[str, str | None] = {}  # shard id → parent shard id, not started yet
        self.done: set[str] = set()  # read to their end (kept while the stream still lists them)

    def discover(self, start: str | None = None) -> None:
        """Re-describe the stream. At the first call ``start`` says where existing shards begin
        (LATEST: open shards from now on, closed ones are history); shards found later are read
        from TRIM_HORIZON, each after its parent."""
        described = _describe(self.streams, self.arn)
        listed = {s["ShardId"] for s in described}
        for s in described:
            sid = s["ShardId"]
            if sid in self.reading or sid in self.waiting or sid in self.done:
                continue
            closed = "EndingSequenceNumber" in s.get("SequenceNumberRange", {})
            if start == "LATEST":
                if closed:
                    self.done.add(sid)
                else:
                    self._open(sid, "LATEST")
                continue
            self.waiting[sid] = s.get("ParentShardId")
        self.done &= listed  # a shard trimmed from the stream is no one's unread parent any more
        self._start_ready(listed)

    def _start_ready(self, listed: set[str]) -> None:
        progressed = True
        while progressed:  # parent before child, whatever order DescribeStream listed them in
            progressed = False
            for sid, parent in list(self.waiting.items()):
                if parent is None or parent in self.done or (parent not in listed and parent not in self.reading
                                                             and parent not in self.waiting):
                    del self.waiting[sid]
                    self._open(sid, "TRIM_HORIZON")
                    progressed = True

    def _open(self, sid: str, kind: str) -> None:
        self.reading[sid] = self.streams.get_shard_iterator(StreamArn=self.arn, ShardId=sid,
                                                           ShardIteratorType=kind)["ShardIterator"]

    def finished(self, sid: str) -> None:
        """The shard is closed and read to its end: drop it (its children may start)."""
        self.reading.pop(sid, None)
        self.done.add(sid)
        log.info("stream shard finished", shard_id=sid)


def follow_table_stream(ddb: Any, streams: Any, table_name: str, stop: threading.Event, *, start: str = "LATEST",
                        limit: int = 100, idle_wait: float = 0.5, rediscover_seconds: float = 60.0,
                        monotonic: Callable[[], float] = time.monotonic) -> Iterator[list[dict[str, Any]]]:
    """Yield the records of each round over all shards until ``stop`` is set (waits when a round
    brings nothing). Yields nothing if the table has no stream. A shard's records come in order,
    and a child shard's after its parent's. Errors (throttling, an expired iterator) propagate:
    the caller restarts the follower."""
    arn = ddb.describe_table(TableName=table_name)["Table"].get("LatestStreamArn")
    if not arn:
        return
    shards = _Shards(streams, arn)
    shards.discover(start)
    described_at = monotonic()
    while not stop.is_set():
        records: list[dict[str, Any]] = []
        ended = False
        for sid, it in list(shards.reading.items()):
            resp = streams.get_records(ShardIterator=it, Limit=limit)
            records.extend(resp.get("Records", []))
            nxt = resp.get("NextShardIterator")
            if nxt:
                shards.reading[sid] = nxt
            else:
                shards.finished(sid)
                ended = True
        if ended or not shards.reading or monotonic() - described_at >= rediscover_seconds:
            shards.discover()
            described_at = monotonic()
        yield records
        if not records:
            stop.wait(idle_wait)
