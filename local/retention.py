"""EMULATION of DynamoDB TTL for the embedded stack: moto accepts a table's TTL setting but never
deletes expired items. ``TtlSweeper`` deletes items whose TTL attribute (epoch seconds) has
passed, as DynamoDB's background process does (on AWS within days of expiry, not to the second),
so retention is visible locally. Deletes go through the table, so the stream (and with it the
emulated DR replica) sees them like TTL deletes on a global table. A sweep scans the whole table
(as DynamoDB's does), so it runs every five minutes: retention is counted in days. Not used on AWS."""

from __future__ import annotations

import threading
import time
from typing import Any

from config.settings import Settings
from core import schema
from core.adapters.aws import client
from core.observability import log


class TtlSweeper(threading.Thread):
    def __init__(self, settings: Settings, region: str | None = None, interval: float = 300.0,
                 now: Any = time.time):
        super().__init__(name="ttl-sweeper", daemon=True)
        self.settings, self.region, self.interval, self.now = settings, region or settings.region, interval, now
        self.stop_event = threading.Event()
        self.deleted = 0

    def sweep_once(self) -> int:
        """Delete every item whose TTL has passed; returns how many."""
        ddb = client(self.settings, "dynamodb", self.region)
        attr = schema.MAIN_TABLE.ttl_attribute
        kw: dict[str, Any] = {"TableName": self.settings.table_name, "FilterExpression": "#t < :now",
                              "ExpressionAttributeNames": {"#t": attr, "#pk": "PK", "#sk": "SK"},
                              "ExpressionAttributeValues": {":now": {"N": str(int(self.now()))}},
                              "ProjectionExpression": "#pk, #sk"}
        n = 0
        while True:
            resp = ddb.scan(**kw)
            for key in resp.get("Items", []):
                try:  # only if still expired: an item written again since the scan stays
                    ddb.delete_item(TableName=self.settings.table_name, Key=key, ConditionExpression="#t < :now",
                                    ExpressionAttributeNames={"#t": attr},
                                    ExpressionAttributeValues=kw["ExpressionAttributeValues"])
                except ddb.exceptions.ConditionalCheckFailedException:
                    continue
                n += 1
            if "LastEvaluatedKey" not in resp:
                break
            kw["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        self.deleted += n
        return n

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                n = self.sweep_once()
                if n:
                    log.info("ttl sweep", deleted=n, region=self.region)
            except Exception as exc:
                log.warning("ttl sweep failed", error=str(exc)[:200])

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
