"""SES-events Lambda (SQS: SNS notifications, or S3 notifications of Firehose objects): typed
parsing, precedence-aware recording, partial failures.

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

from core.observability import lambda_entry, log
from core.services.event_sources import event_bodies, objects_recorded, s3_objects
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
    # a record is one SNS notification, or an S3 notification of Firehose objects of many events
    bodies: dict[str, list[str] | Exception] = {}
    for r in records:
        try:
            bodies[r["messageId"]] = event_bodies(r["body"], d.blobs)
        except Exception as exc:  # noqa: BLE001 - the object could not be read: this record is retried
            bodies[r["messageId"]] = exc
    flat = [(mid, body) for mid, got in bodies.items() if not isinstance(got, Exception) for body in got]
    # the service binds each message's correlation ids to its log lines itself
    results = record_ses_events([body for _, body in flat], store=d.store, analytics=d.analytics,
                                 evidence=d.evidence, counts=counts, message_events=outbox)
    outcomes: dict[str, list[str | Exception]] = {mid: [] for mid in bodies}
    for (mid, _), outcome in zip(flat, results, strict=True):
        outcomes[mid].append(outcome)

    recorded: list[str] = []  # bodies whose objects go once the counts and the evidence are written

    def record(record: SQSRecord) -> str:  # powertools passes it by this name
        got = bodies[record.message_id]
        if isinstance(got, Exception):
            raise got
        failed = next((o for o in outcomes[record.message_id] if isinstance(o, Exception)), None)
        if failed is not None:  # the whole record again: the events it did record are replays then
            raise failed
        if "malformed" in outcomes[record.message_id]:  # never recordable: said where, then deleted too
            log.warning("ses events object held malformed events", objects=s3_objects(record.body),
                        malformed=outcomes[record.message_id].count("malformed"))
        recorded.append(record.body)
        return ", ".join(sorted({str(o) for o in outcomes[record.message_id]})) or "ignored"

    result = each_sqs_record(event, context, record)
    # If a flush fails the batch is retried, its objects still there: its events are recognised as
    # replays and the evidence mark is made again (a count addition lost with it is restored by the
    # campaign's final recount).
    counts.flush()
    d.evidence.flush()
    for body in recorded:
        objects_recorded(body, d.blobs)
    return result
