"""Send-queue Lambda: one SQS record per batch; failures are reported per record.

A batch processor per invocation (the embedded stack's send workers are threads of one process);
one BatchSender per dependency set, so templates compile once per version per process.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from core.bootstrap import Deps, worker_name
from core.observability import correlated, lambda_entry, log
from core.services.attachments import AttachmentFiles
from core.services.regions import gate_sending
from core.services.sending import BatchSender
from core.services.templates import load_mail_source
from handlers.context import each_sqs_record, memo


def sender() -> BatchSender:
    return memo("batch_sender", _build)


def _build(d: Deps) -> BatchSender:
    def loader(template_id: str, version: int) -> tuple[str, str, str | None]:
        return load_mail_source(d.store, d.blobs, d.settings, template_id, version)

    # a region sends only while it is confirmed active (self-fencing, core/services/regions.py)
    return BatchSender(store=gate_sending(d.store, d.settings, d.clock), mailer=d.mailer, limiter=d.limiter,
                       clock=d.clock, settings=d.settings, template_loader=loader, worker=worker_name(),
                       attachment_files=AttachmentFiles(d.store, d.blobs, d.settings))


def send_record(body: str) -> str:
    msg = json.loads(body)
    with correlated(tenant_id=msg.get("tenant_id"), transaction_id=msg["transaction_id"], batch_id=msg["batch_id"]):
        outcome = sender().send_batch(msg["transaction_id"], msg["batch_id"])
        log.info("send record done", outcome=outcome.state, sent=outcome.sent, failed=outcome.failed)
    return outcome.state


def _record(record: SQSRecord) -> str:
    return send_record(record.body)


@lambda_entry("sender")
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    return each_sqs_record(event, context, _record)
