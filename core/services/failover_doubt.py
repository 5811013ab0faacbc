"""In-doubt chunks of a region that is no longer active: never re-sent (no duplicate send, ever).

The send-evidence policy (core/services/sending.py) resolves an in-doubt chunk once its region's
event pipeline is past the chunk, *or* has recorded nothing for a window. After a failover the
second is not evidence: the old region's pipeline (SES → Firehose → S3 → SQS → its events Lambda, all in the
old region) may be dead, so its silence says nothing about what SES accepted there. Re-sending
then risks a duplicate, which this platform never trades for delivery.

So when the active region resolves a chunk written by *another* region (the only way a sender
reads another region's INTENT is after a failover: senders send only in the active region), the
messages without Send evidence are re-sent only if that region's evidence mark is past the chunk
(its pipeline delivered everything up to a window after the chunk's last call). Otherwise they end
FAILED with ``NOT_RESENT_REASON``: counted in the campaign (``failed``), in its message-event
callbacks when opted in, in ``emailplatform_sends_total{outcome="not_resent_after_failover"}`` and
the log line ``in-doubt messages not re-sent after failover``. An operator who accepts the risk of a
duplicate re-sends them explicitly: ``python -m runbooks.failover --resend-in-doubt --campaign <id>``
(runbooks/failover.md), as a new campaign of those recipients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from core.domain.models import Message, parse_iso
from core.domain.statuses import SENDABLE_MESSAGE, MessageStatus
from core.observability import SENDS, log
from core.services.ports import SendLogRepository

NOT_RESENT_REASON = "in doubt after failover: not re-sent to avoid a duplicate"


def evidence_complete(intent: dict[str, Any], mark: tuple[datetime, datetime] | None, window: timedelta) -> bool:
    """The chunk's region's pipeline recorded Send events of mail sent a window after the chunk's
    last call: whatever SES accepted of the chunk has its evidence in."""
    last_send = parse_iso(intent.get("send_by") or intent["created_at"])
    return mark is not None and mark[0] >= last_send + window


def give_up_after_failover(*, store: SendLogRepository, own_region: str, window: timedelta, intent: dict[str, Any],
                           chunk: Iterable[Message], in_doubt: set[str],
                           fail: Callable[[Message, MessageStatus, str], None]) -> set[str]:
    """Call once the evidence wait of ``intent`` is over. For a chunk of another region whose
    evidence is not complete, fail the ``in_doubt`` messages still without evidence (``fail``
    writes each conditionally, from a sendable status only) and return their ids; else nothing
    (the chunk is this region's own, or its evidence is complete: the rest were never accepted)."""
    region = intent.get("region")
    if not region or region == own_region or evidence_complete(intent, store.send_evidence(region), window):
        return set()
    gave_up = {m.message_id for m in chunk if m.message_id in in_doubt
               and (m.status in SENDABLE_MESSAGE or m.status == MessageStatus.SENDING)}
    if not gave_up:
        return set()
    for m in chunk:
        if m.message_id in gave_up:
            fail(m, MessageStatus.FAILED, NOT_RESENT_REASON)
            SENDS.labels("not_resent_after_failover").inc()
    log.error("in-doubt messages not re-sent after failover", region=region, active_region=own_region,
              messages=len(gave_up), chunk_sent_by=intent.get("send_by"), why=NOT_RESENT_REASON)
    return gave_up
