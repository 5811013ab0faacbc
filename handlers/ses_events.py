"""SES-events Lambda (SNS → SQS): typed parsing, precedence-aware recording, partial failures.

The whole SQS batch is recorded at once (``record_ses_events``: one read of its messages, at most
one write per message); powertools' batch processor then reports each record's own outcome, so
only the records whose message could not be written come back. Each invocation has its own batch
processor and count buffer: the embedded stack runs several event workers as threads of one
process, and a module-level processor would mix their records.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from core.observability import lambda_entry
from core.services.events import CountBuffer, record_ses_events
from core.services.message_events import MessageEventBuffer
from handlers.context import deps, each_sqs_record


@lambda_entry("ses_events")
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    d = deps()
    counts = CountBuffer(d.store, d.clock)
    # opted-in campaigns' message events: one outbox item per campaign, written by record_ses_events
    # before the messages (a failed write fails that campaign's records, which SQS delivers again)
    outbox = MessageEventBuffer(d.store, d.clock, ref_prefix="ses-")

    records = event.get("Records") or []
    # the service binds each message's correlation ids to its log lines itself
    outcomes = dict(zip((r["messageId"] for r in records),
                        record_ses_events([r["body"] for r in records], store=d.store, analytics=d.analytics,
                                          evidence=d.evidence, counts=counts, message_events=outbox), strict=True))

    def record(record: SQSRecord) -> str:  # powertools passes it by this name
        outcome = outcomes[record.message_id]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = each_sqs_record(event, context, record)
    # If a flush fails the batch is retried: its events are recognised as replays, and the
    # campaign's final recount restores any count they did not add.
    counts.flush()
    d.evidence.flush()
    return result
