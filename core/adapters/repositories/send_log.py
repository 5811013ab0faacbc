"""The send log: a write-ahead entry per chunk of SES calls, and each region's Send-evidence mark
that resolves a chunk left in doubt (core/services/sending.py)."""

from __future__ import annotations

from datetime import datetime

from core import schema
from core.adapters.dynamodb import Update
from core.adapters.repositories._base import TableRepository, _expires
from core.domain.errors import StaleWrite
from core.domain.models import iso, parse_iso, utcnow


class DynamoSendLog(TableRepository):
    """The send log: ``BATCH#<batch id>``/``SENDLOG#<chunk>#<attempt>`` items and ``EVIDENCE#<region>``/``SEND`` marks."""

    def send_log_intent(self, batch_id: str, chunk: int, attempt: int, message_ids: list[str], worker: str, *,
                        region: str, now: datetime, send_by: datetime, expiration: int | None = None) -> bool:
        """Write-ahead record before the SES calls of one chunk. False if it already exists.

        ``region`` names the event pipeline that will carry the chunk's Send events and
        ``send_by`` bounds its last SES call; an in-doubt resolution needs both. ``expiration``
        (epoch seconds): the tenant's message retention, as on the messages it names (its
        outcomes may quote an SES error text that holds the address).
        """
        ttl = _expires(expiration)
        return self.table.put_new({
            **schema.send_log_key(batch_id, chunk, attempt), "state": "INTENT", "chunk": chunk,
            "attempt": attempt, "message_ids": message_ids, "worker": worker, "region": region,
            "created_at": iso(now), "send_by": iso(send_by), **ttl,
        })

    def extend_send_by(self, batch_id: str, chunk: int, attempt: int, send_by: datetime) -> None:
        """Push an INTENT's send-by time out (before its first SES call: its slots start late)."""
        self.table.update(Update(
            schema.send_log_key(batch_id, chunk, attempt), set={"send_by": iso(send_by)},
            condition="#st = :i", values={":i": "INTENT"}, names={"#st": "state"},
        ))

    def send_log_done(self, batch_id: str, chunk: int, attempt: int, results: dict[str, dict[str, str]],
                      in_doubt_at: datetime | None = None) -> None:
        """Close a chunk's INTENT with each message's outcome. ``in_doubt_at`` (with IN_DOUBT
        outcomes) bounds when SES may have accepted the message whose call did not complete."""
        self.table.update(Update(
            schema.send_log_key(batch_id, chunk, attempt),
            set={"state": "DONE", "results": results, "done_at": iso(utcnow()),
                 "in_doubt_at": iso(in_doubt_at) if in_doubt_at else None},
            condition="#st = :i", values={":i": "INTENT"}, names={"#st": "state"},
        ))

    def advance_send_evidence(self, region: str, newest: datetime, now: datetime) -> None:
        """Move the region's Send-evidence mark forward (never back: concurrent recorders race)."""
        try:
            self.table.update(Update(
                schema.send_evidence_key(region), set={"newest_send": iso(newest), "recorded_at": iso(now)},
                condition="attribute_not_exists(newest_send) OR newest_send < :n", values={":n": iso(newest)},
            ))
        except StaleWrite:
            pass

    def send_evidence(self, region: str) -> tuple[datetime, datetime] | None:
        """(newest Send event recorded, when) for a region's event pipeline; None if it never recorded one."""
        item = self.table.get(schema.send_evidence_key(region))
        if not item:
            return None
        return parse_iso(item["newest_send"]), parse_iso(item["recorded_at"])
