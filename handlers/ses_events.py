"""SES-events Lambda (SNS → SQS): typed parsing, precedence-aware recording, partial failures.

Each invocation has its own batch processor and count buffer: the embedded stack runs several
event workers as threads of one process, and a module-level processor would mix their records.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from core.observability import correlated, lambda_entry
from core.services.events import CountBuffer, parse_sns_envelope, record_ses_event
from handlers.context import deps


def _ids(body: str) -> dict[str, str | None]:
    """Correlation ids for the record's log lines (a record that does not parse has none; the
    service counts and logs it)."""
    try:
        tags = parse_sns_envelope(body).mail.tags
    except Exception:
        return {}
    return {k: next(iter(tags.get(k) or []), None) for k in ("tenant_id", "transaction_id", "message_id")}


@lambda_entry("ses_events")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    d = deps()
    counts = CountBuffer(d.store, d.clock)

    def record(record: SQSRecord) -> str:  # powertools passes it by this name
        with correlated(**_ids(record.body)):
            return record_ses_event(record.body, store=d.store, analytics=d.analytics, evidence=d.evidence, counts=counts)

    result = process_partial_response(event=event, record_handler=record,
                                      processor=BatchProcessor(event_type=EventType.SQS), context=context)
    # If a flush fails the batch is retried: its events are recognised as replays, and the
    # campaign's final recount restores any count they did not add.
    counts.flush()
    d.evidence.flush()
    return result
