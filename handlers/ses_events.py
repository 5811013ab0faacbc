"""SES-events Lambda (SNS → SQS): typed parsing, precedence-aware recording, partial failures."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from core.observability import acting_as
from core.services.events import record_ses_event
from handlers.context import deps

processor = BatchProcessor(event_type=EventType.SQS)


def _record(record: SQSRecord) -> str:
    d = deps()
    return record_ses_event(record.body, store=d.store, analytics=d.analytics, evidence=d.evidence)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with acting_as("ses_events"):
        result = process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
        deps().evidence.flush()  # if this fails the batch is retried: its events are recognised as replays
        return result
