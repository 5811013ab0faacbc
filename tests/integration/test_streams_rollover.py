"""The table-stream follower across shard rollovers (C16), over an in-memory DynamoDB Streams fake.

moto's stream never rolls its shards over, so a small fake of the three calls the follower makes
plays what DynamoDB does every few hours: the shard closes, a child shard names it as parent."""

from __future__ import annotations

import threading
from typing import Any

from core.adapters.streams import follow_table_stream


class FakeStreams:
    """DescribeStream (2 shards a page, to exercise paging), GetShardIterator, GetRecords."""

    def __init__(self) -> None:
        self.shards: dict[str, dict[str, Any]] = {}
        self.listing: list[str] = []  # DescribeStream order
        self.reads: dict[str, int] = {}

    def add_shard(self, sid: str, parent: str | None = None, *records: str, first: bool = False) -> None:
        self.shards[sid] = {"parent": parent, "records": [], "closed": False}
        self.listing.insert(0, sid) if first else self.listing.append(sid)
        self.put(sid, *records)

    def put(self, sid: str, *records: str) -> None:
        assert not self.shards[sid]["closed"]
        self.shards[sid]["records"].extend({"eventID": r, "dynamodb": {"Keys": {}}} for r in records)

    def close(self, sid: str) -> None:
        self.shards[sid]["closed"] = True

    def describe_stream(self, StreamArn: str, ExclusiveStartShardId: str | None = None) -> dict[str, Any]:
        at = self.listing.index(ExclusiveStartShardId) + 1 if ExclusiveStartShardId else 0
        page = self.listing[at:at + 2]
        shards = []
        for sid in page:
            s = self.shards[sid]
            rng = {"StartingSequenceNumber": "1"}
            if s["closed"]:
                rng["EndingSequenceNumber"] = str(len(s["records"]) + 1)
            shards.append({"ShardId": sid, "SequenceNumberRange": rng,
                           **({"ParentShardId": s["parent"]} if s["parent"] else {})})
        desc: dict[str, Any] = {"StreamArn": StreamArn, "Shards": shards}
        if at + 2 < len(self.listing):
            desc["LastEvaluatedShardId"] = page[-1]
        return {"StreamDescription": desc}

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str) -> dict[str, Any]:
        pos = len(self.shards[ShardId]["records"]) if ShardIteratorType == "LATEST" else 0
        return {"ShardIterator": f"{ShardId}|{pos}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        sid, pos = ShardIterator.split("|")
        self.reads[sid] = self.reads.get(sid, 0) + 1
        s, at = self.shards[sid], int(pos)
        out = s["records"][at:at + Limit]
        end = at + len(out)
        resp: dict[str, Any] = {"Records": out}
        if not (s["closed"] and end >= len(s["records"])):
            resp["NextShardIterator"] = f"{sid}|{end}"
        return resp


class FakeTable:
    def describe_table(self, TableName: str) -> dict[str, Any]:
        return {"Table": {"TableName": TableName, "LatestStreamArn": "arn:aws:dynamodb:eu-west-1:1:table/t/stream/x"}}


def ids(rounds: list[list[dict[str, Any]]]) -> list[str]:
    return [r["eventID"] for records in rounds for r in records]


def rounds_of(follower: Any, n: int) -> list[list[dict[str, Any]]]:
    return [next(follower) for _ in range(n)]


def test_after_a_rollover_the_child_shards_records_follow_the_parents():
    streams, stop = FakeStreams(), threading.Event()
    streams.add_shard("shard-1", None)
    follower = follow_table_stream(FakeTable(), streams, "t", stop, start="LATEST", idle_wait=0, limit=2)
    assert ids(rounds_of(follower, 1)) == []  # started: reads from now on
    streams.put("shard-1", "r1", "r2")
    assert ids(rounds_of(follower, 1)) == ["r1", "r2"]

    # WHEN DynamoDB rolls the shard over: it closes with records left to read, the child gets writes
    streams.put("shard-1", "r3", "r4", "r5")
    streams.close("shard-1")
    streams.add_shard("shard-2", "shard-1", "r6", "r7")

    # THEN the parent is read to its end, then the child from its first record
    assert ids(rounds_of(follower, 5)) == ["r3", "r4", "r5", "r6", "r7"]
    streams.put("shard-2", "r8")
    assert ids(rounds_of(follower, 2)) == ["r8"]
    # AND the closed, exhausted parent is not read any more
    reads = streams.reads["shard-1"]
    rounds_of(follower, 3)
    assert streams.reads["shard-1"] == reads
    stop.set()
    assert list(follower) == []


def test_lineage_is_followed_whatever_order_the_stream_lists_shards_in():
    streams, stop = FakeStreams(), threading.Event()
    streams.add_shard("a", None, "a1", "a2")
    streams.close("a")
    streams.add_shard("b", "a", "b1", first=True)
    streams.close("b")
    streams.add_shard("c", "b", "c1", first=True)  # listed c, b, a: children before parents
    follower = follow_table_stream(FakeTable(), streams, "t", stop, start="TRIM_HORIZON", idle_wait=0)
    assert ids(rounds_of(follower, 4)) == ["a1", "a2", "b1", "c1"]


def test_a_shard_that_appears_without_its_parent_ending_is_found_by_the_periodic_describe():
    streams, stop, now = FakeStreams(), threading.Event(), [0.0]
    streams.add_shard("s1", None)
    follower = follow_table_stream(FakeTable(), streams, "t", stop, idle_wait=0, rediscover_seconds=60,
                                   monotonic=lambda: now[0])
    rounds_of(follower, 1)
    streams.add_shard("s2", None, "x1")  # e.g. a split: s1 stays open
    assert ids(rounds_of(follower, 2)) == []  # not described yet
    now[0] += 60
    assert ids(rounds_of(follower, 2)) == ["x1"]
