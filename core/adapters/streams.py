"""Following a DynamoDB table's stream: every shard, round after round."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any


def follow_table_stream(ddb: Any, streams: Any, table_name: str, stop: threading.Event, *, start: str = "LATEST",
                        limit: int = 100, idle_wait: float = 0.5) -> Iterator[list[dict[str, Any]]]:
    """Yield the records of each round over all shards until ``stop`` is set (waits when a round
    brings nothing). Yields nothing if the table has no stream."""
    arn = ddb.describe_table(TableName=table_name)["Table"].get("LatestStreamArn")
    if not arn:
        return
    iterators: dict[str, str | None] = {
        s["ShardId"]: streams.get_shard_iterator(StreamArn=arn, ShardId=s["ShardId"], ShardIteratorType=start)[
            "ShardIterator"] for s in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]}
    while not stop.is_set():
        records: list[dict[str, Any]] = []
        for sid, it in list(iterators.items()):
            if it:
                resp = streams.get_records(ShardIterator=it, Limit=limit)
                iterators[sid] = resp.get("NextShardIterator")
                records.extend(resp.get("Records", []))
        yield records
        if not records:
            stop.wait(idle_wait)
