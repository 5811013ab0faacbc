"""``SendLogRepository`` in memory: the write-ahead INTENT of a chunk (create-only), closed once
with its outcomes, and each region's Send-evidence mark, which only moves forward."""

from __future__ import annotations

from datetime import datetime

from core import schema
from core.domain.errors import StaleWrite
from core.domain.models import iso, parse_iso, utcnow
from tests.fakes.base import FakeRepository
from tests.fakes.table import FakeUpdate, Item


def _intent(item: Item | None) -> bool:
    return item is not None and item.get("state") == "INTENT"


class FakeSendLog(FakeRepository):
    def send_log_intent(self, batch_id: str, chunk: int, attempt: int, message_ids: list[str], worker: str, *,
                        region: str, now: datetime, send_by: datetime, expiration: int | None = None) -> bool:
        ttl = {schema.TTL_ATTRIBUTE: expiration} if expiration else {}
        return self.table.put_new({
            **schema.send_log_key(batch_id, chunk, attempt), "state": "INTENT", "chunk": chunk,
            "attempt": attempt, "message_ids": message_ids, "worker": worker, "region": region,
            "created_at": iso(now), "send_by": iso(send_by), **ttl,
        })

    def extend_send_by(self, batch_id: str, chunk: int, attempt: int, send_by: datetime) -> None:
        self.table.update(FakeUpdate(schema.send_log_key(batch_id, chunk, attempt), set={"send_by": iso(send_by)},
                                     condition=_intent))

    def send_log_done(self, batch_id: str, chunk: int, attempt: int, results: dict[str, dict[str, str]],
                      in_doubt_at: datetime | None = None) -> None:
        self.table.update(FakeUpdate(
            schema.send_log_key(batch_id, chunk, attempt),
            set={"state": "DONE", "results": results, "done_at": iso(utcnow()),
                 "in_doubt_at": iso(in_doubt_at) if in_doubt_at else None},
            condition=_intent))

    def advance_send_evidence(self, region: str, newest: datetime, now: datetime) -> None:
        try:
            self.table.update(FakeUpdate(
                schema.send_evidence_key(region), set={"newest_send": iso(newest), "recorded_at": iso(now)},
                condition=lambda i: i is None or "newest_send" not in i or i["newest_send"] < iso(newest)))
        except StaleWrite:
            pass

    def send_evidence(self, region: str) -> tuple[datetime, datetime] | None:
        item = self.table.get(schema.send_evidence_key(region))
        if not item:
            return None
        return parse_iso(item["newest_send"]), parse_iso(item["recorded_at"])
