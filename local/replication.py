"""EMULATION of AWS-managed replication for the embedded stack's DR region. moto replicates
neither DynamoDB global tables nor S3 buckets, so:

* ``TableReplicator`` follows the source table's stream and applies every change to the same
  table in the other region after ``lag`` seconds (last writer wins, like global tables);
* ``BucketReplicator`` copies new objects of each platform bucket to its DR twin (like CRR).

Neither is used on AWS, where the global table and S3 replication (infra/) do this.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from config.settings import Settings
from core import schema
from core.adapters.aws import client
from core.adapters.streams import follow_table_stream
from core.observability import log


class EchoRegistry:
    """What replicators wrote, so the opposite direction does not send it back (global tables
    know a change's origin; a stream alone does not)."""

    def __init__(self) -> None:
        # every image written, not just the last: two quick writes must both be recognised
        self._written: dict[tuple[str, str, str], Counter[str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def digest(image: dict[str, Any] | None) -> str:
        """Order-insensitive for sets: a stream may list a set's members in any order."""
        def canon(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: (sorted(x) if k in ("SS", "NS", "BS") else canon(x)) for k, x in v.items()}
            if isinstance(v, list):
                return [canon(x) for x in v]
            return v

        return json.dumps(canon(image), sort_keys=True) if image is not None else "DELETE"

    def wrote(self, region: str, key: tuple[str, str], image: dict[str, Any] | None) -> None:
        with self._lock:
            self._written.setdefault((region, *key), Counter())[self.digest(image)] += 1

    def is_echo(self, region: str, key: tuple[str, str], image: dict[str, Any] | None) -> bool:
        with self._lock:
            seen = self._written.get((region, *key))
            digest = self.digest(image)
            if seen and seen[digest] > 0:
                seen[digest] -= 1
                return True
            return False


class TableReplicator(threading.Thread):
    def __init__(self, settings: Settings, source: str, dest: str, lag: float = 0.5, from_now: bool = False,
                 echoes: EchoRegistry | None = None):
        super().__init__(name=f"replicate-{source}-to-{dest}", daemon=True)
        self.settings, self.source, self.dest, self.lag = settings, source, dest, lag
        self.echoes = echoes or EchoRegistry()
        self.from_now = from_now
        self.stop_event = threading.Event()
        self.applied = 0
        self.last_applied_at: datetime | None = None  # creation time of the newest applied change
        self.ready = threading.Event()

    def run(self) -> None:
        dst = client(self.settings, "dynamodb", self.dest)
        records = follow_table_stream(client(self.settings, "dynamodb", self.source),
                                      client(self.settings, "dynamodbstreams", self.source), self.settings.table_name,
                                      self.stop_event, start="LATEST" if self.from_now else "TRIM_HORIZON",
                                      limit=1000, idle_wait=0.2)
        first = True
        for batch in records:
            if first:  # the iterators exist: nothing written from now on can be missed
                self.ready.set()
                first = False
            if batch:
                self.stop_event.wait(self.lag)
                self._apply(dst, batch)

    def _apply(self, dst: Any, records: list[dict[str, Any]]) -> None:
        pending: list[dict[str, Any]] = []
        keys: set[tuple[str, str]] = set()

        def flush() -> None:
            if pending:
                req = {self.settings.table_name: list(pending)}
                while req:
                    req = dst.batch_write_item(RequestItems=req).get("UnprocessedItems") or {}
                pending.clear()
                keys.clear()

        for r in records:
            d = r["dynamodb"]
            key = (d["Keys"]["PK"]["S"], d["Keys"]["SK"]["S"])
            image = None if r["eventName"] == "REMOVE" else d["NewImage"]
            if self.echoes.is_echo(self.source, key, image):
                continue  # our own replicated write coming back
            if key in keys or len(pending) == 25:
                flush()
            self.echoes.wrote(self.dest, key, image)
            if image is None:
                pending.append({"DeleteRequest": {"Key": d["Keys"]}})
            else:
                pending.append({"PutRequest": {"Item": image}})
            keys.add(key)
            created = d.get("ApproximateCreationDateTime")
            if created is not None:
                self.last_applied_at = created if isinstance(created, datetime) else datetime.fromtimestamp(
                    float(created), UTC)
            self.applied += 1
        flush()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)


class BucketReplicator(threading.Thread):
    def __init__(self, settings: Settings, source: str, dest: str, interval: float = 1.0):
        super().__init__(name=f"s3-{source}-to-{dest}", daemon=True)
        self.settings, self.source, self.dest, self.interval = settings, source, dest, interval
        self.stop_event = threading.Event()
        self.copied = 0

    def backlog(self) -> int:
        s3 = client(self.settings, "s3", self.source)
        missing = 0
        for b in schema.REPLICATED_BUCKETS:
            src, dst = self.settings.bucket(b.purpose, self.source), self.settings.bucket(b.purpose, self.dest)
            have = {o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=dst) for o in p.get("Contents", [])}
            missing += sum(1 for p in s3.get_paginator("list_objects_v2").paginate(Bucket=src)
                           for o in p.get("Contents", []) if o["Key"] not in have)
        return missing

    def run(self) -> None:
        s3 = client(self.settings, "s3", self.source)
        while not self.stop_event.is_set():
            try:
                for b in schema.REPLICATED_BUCKETS:
                    src, dst = self.settings.bucket(b.purpose, self.source), self.settings.bucket(b.purpose, self.dest)
                    have = {o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=dst)
                            for o in p.get("Contents", [])}
                    for p in s3.get_paginator("list_objects_v2").paginate(Bucket=src):
                        for o in p.get("Contents", []):
                            if o["Key"] not in have:
                                s3.copy_object(Bucket=dst, Key=o["Key"], CopySource={"Bucket": src, "Key": o["Key"]})
                                self.copied += 1
            except Exception as exc:
                log.warning("bucket replication pass failed", error=str(exc)[:200])
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
