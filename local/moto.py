"""A moto server in its own process on loopback: the AWS of the embedded stack and the tests.

``python -m local.moto`` runs moto's own server with three patches that keep the embedded stack's
cost per call independent of the data it holds (moto is built for unit tests, not for a 100k
recipient campaign):

* ``TransactWriteItems`` deep-copies every table it touches before each call, to roll back on a
  lost condition: with ~7k messages a template upload took 21-28 s. The patch checks every
  condition first and applies only when all hold (what DynamoDB's all-or-nothing promises), and
  on an error while applying restores just the items it touched.
* Table streams keep every record for ever; the patch keeps the newest ``STREAM_RECORDS`` (AWS
  keeps 24 h). A reader behind the retained window resumes at the oldest retained record.
* Every GetRecords call registers a new shard iterator for ever; the patch keeps the newest
  ``STREAM_ITERATORS``.

It also makes each DynamoDB write (and a whole transaction) one critical section: moto's server
serves requests on threads and checks a condition apart from the write it guards, so two
concurrent conditional writes could both pass, and both return the same old image; on AWS they
cannot.

And it publishes SES events, which moto does not: SES v2 SendEmail with a configuration set
whose event destination (SES v1 ``CreateConfigurationSetEventDestination``, what
local/bootstrap.py creates like infra does on AWS) names an SNS topic gets the Send event on that
topic before the call returns, the later events (Delivery, Bounce, …) shortly after
(``local.ses_simulator.SesEventPublisher``). The answer carries the ``x-emailplatform-ses-events``
header, so the embedded stack knows its SES endpoint publishes. Every accepted message is kept whole
(the MIME message SES would deliver, ``local.ses_mailbox``): moto itself keeps one body only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the moto child gets SIGTERM if its parent dies, so it can never be left behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    except OSError:
        pass


class MotoServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> MotoServer:
        env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "local.moto", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout}s")

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


STREAM_RECORDS = 200_000
STREAM_ITERATORS = 10_000


def patch_ses_events() -> None:
    """SES v2 SendEmail publishes SES events (see the module docstring). Idempotent."""
    import json

    from moto.ses.models import ses_backends
    from moto.sesv2.responses import SESV2Response
    from moto.sns.models import sns_backends

    from local import ses_mailbox
    from local.ses_simulator import EVENTS_HEADER, SesEventPublisher

    if getattr(SESV2Response, "_emailplatform_patched", False):
        return

    def publish(topic_arn: str, message: str) -> None:
        _, _, _, region, account, _ = topic_arn.split(":", 5)
        sns_backends[account][region].publish(message, arn=topic_arn)

    publisher = SesEventPublisher(publish)
    original = SESV2Response.send_email

    def send_email(self):  # noqa: ANN001, ANN202
        answer = original(self)  # raises when SES refuses the message: no events then
        request = json.loads(self.body)
        name = request.get("ConfigurationSetName")
        destination = (ses_backends[self.current_account][self.region].config_set_event_destination.get(name)
                       if name else None)
        ses_id = json.loads(answer)["MessageId"]
        accepted = next((m for m in reversed(ses_backends[self.current_account][self.region].sent_messages)
                         if getattr(m, "id", None) == ses_id), None)
        if accepted is not None:  # the full message for tests (local.ses_mailbox): moto keeps one body only
            ses_mailbox.keep(accepted, request)
        sends = publisher.accepted(ses_id=ses_id, request=request, destination=destination)
        return answer, {EVENTS_HEADER: str(sends)}

    SESV2Response.send_email = send_email  # type: ignore[method-assign]
    SESV2Response._emailplatform_patched = True  # type: ignore[attr-defined]


def patch_moto() -> None:
    """Apply the patches described in the module docstring (idempotent)."""
    patch_ses_events()
    import copy
    from collections import OrderedDict

    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    if getattr(DynamoDBBackend, "_emailplatform_patched", False):
        return
    from moto.dynamodb.models import get_filter_expression as filter_expression

    def transact_write_items(self, transact_items):  # noqa: ANN001, ANN202
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        seen: set[tuple[str, str]] = set()
        plan = []
        errors: list = []
        for item in transact_items:  # phase 1: read and check, change nothing
            if len(item) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise MockValidationException("Unsupported transaction operation")
            table = self.get_table(op["TableName"])
            if op_type == "Put":
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            unique = (str(op["TableName"]), str(dict(sorted(key.items()))))
            if unique in seen:
                raise MultipleTransactionsException()
            seen.add(unique)
            current = self.get_item(op["TableName"], key)
            cond = op.get("ConditionExpression")
            if cond is not None and not filter_expression(
                    cond, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")).expr(current):
                old = (current.to_json()["Attributes"]
                       if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current else None)
                errors.append(("ConditionalCheckFailed", ConditionalCheckFailed().message, old))
            else:
                errors.append((None, None, None))
            plan.append((op_type, op, key, copy.deepcopy(current)))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        done = []
        try:  # phase 2: apply (conditions were checked under the server's lock above)
            for op_type, op, key, before in plan:
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                if op_type == "Put":
                    self.put_item(op["TableName"], op["Item"], expression_attribute_names=names,
                                  expression_attribute_values=values)
                elif op_type == "Delete":
                    self.delete_item(op["TableName"], key, expression_attribute_names=names,
                                     expression_attribute_values=values)
                elif op_type == "Update":
                    self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"],
                                     expression_attribute_names=names, expression_attribute_values=values)
                done.append((op_type, op, key, before))
        except Exception:
            for op_type, op, key, before in reversed(done):  # undo only what this call changed
                if op_type == "ConditionCheck":
                    continue
                table = self.get_table(op["TableName"])
                if before is None:
                    self.delete_item(op["TableName"], key)
                else:
                    table.put_item(before.to_json()["Attributes"])
            raise

    def add(self, old, new):  # noqa: ANN001, ANN202
        original_add(self, old, new)
        extra = len(self.items) - STREAM_RECORDS
        if extra > STREAM_RECORDS // 10:  # trim in steps, keeping sequence numbers stable
            del self.items[:extra]
            self.starting_sequence_number += extra

    def get(self, start, quantity):  # noqa: ANN001, ANN202
        return original_get(self, max(int(start), self.starting_sequence_number), quantity)

    def get_shard_iterator(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if not isinstance(self.shard_iterators, OrderedDict):
            self.shard_iterators = OrderedDict(self.shard_iterators)
        it = original_iterator(self, *args, **kwargs)
        while len(self.shard_iterators) > STREAM_ITERATORS:
            self.shard_iterators.popitem(last=False)
        return it

    def get_records(self, iterator_arn, limit):  # noqa: ANN001, ANN202
        out = original_records(self, iterator_arn, limit)
        if isinstance(self.shard_iterators, OrderedDict):
            self.shard_iterators.pop(iterator_arn, None)  # a used iterator is never read again by us
            while len(self.shard_iterators) > STREAM_ITERATORS:
                self.shard_iterators.popitem(last=False)
        return out

    lock = threading.RLock()

    def serialised(fn):  # noqa: ANN001, ANN202
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            with lock:
                return fn(*args, **kwargs)
        return call

    for name in ("put_item", "update_item", "delete_item"):
        setattr(DynamoDBBackend, name, serialised(getattr(DynamoDBBackend, name)))
        # moto's handler reads the item it returns as ALL_OLD/UPDATED_OLD *before* the backend
        # call: without the lock around both, two concurrent updates return the same old image
        # (real DynamoDB returns the image the write replaced), and the counts built on it double
        setattr(DynamoHandler, name, serialised(getattr(DynamoHandler, name)))
    transact_write_items = serialised(transact_write_items)
    original_add, original_get = StreamShard.add, StreamShard.get
    original_iterator, original_records = DynamoDBStreamsBackend.get_shard_iterator, DynamoDBStreamsBackend.get_records
    DynamoDBBackend.transact_write_items = transact_write_items
    StreamShard.add, StreamShard.get = add, get
    DynamoDBStreamsBackend.get_shard_iterator = get_shard_iterator
    DynamoDBStreamsBackend.get_records = get_records
    DynamoDBBackend._emailplatform_patched = True


if __name__ == "__main__":
    patch_moto()
    from moto.server import main

    main(sys.argv[1:])
