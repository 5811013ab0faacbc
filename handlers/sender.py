"""Send-queue Lambda: one SQS record per batch; failures are reported per record."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from core.bootstrap import worker_name
from core.observability import acting_as, log
from core.services.sending import BatchSender
from core.services.templates import load_source
from handlers.context import deps

processor = BatchProcessor(event_type=EventType.SQS)


_senders: dict[int, BatchSender] = {}


def sender() -> BatchSender:
    """One BatchSender per dependency set (templates compiled once per version per process)."""
    d = deps()
    if id(d) not in _senders:
        _senders[id(d)] = _build(d)
    return _senders[id(d)]


def _build(d) -> BatchSender:  # noqa: ANN001

    def loader(template_id: str, version: int) -> tuple[str, str]:
        tv, source = load_source(d.store, d.blobs, d.settings, template_id, version)
        return tv.subject, source

    return BatchSender(store=d.store, mailer=d.mailer, limiter=d.limiter, clock=d.clock, settings=d.settings,
                       template_loader=loader, worker=worker_name())


def send_record(body: str) -> str:
    msg = json.loads(body)
    outcome = sender().send_batch(msg["transaction_id"], msg["batch_id"])
    log.info("send record done", transaction_id=msg["transaction_id"], batch_id=msg["batch_id"],
             outcome=outcome.state, sent=outcome.sent, failed=outcome.failed)
    return outcome.state


def _record(record: SQSRecord) -> str:
    return send_record(record.body)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with acting_as("sender"):
        return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
