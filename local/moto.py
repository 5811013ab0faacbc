"""A moto server in its own process on loopback: the AWS of the embedded stack and the tests.

``python -m local.moto`` runs moto's WSGI app on waitress (keep-alive, a thread pool: ``serve``)
with patches that keep the embedded stack's cost per call small and independent of the data it
holds (moto is built for unit tests, not for a 100k recipient campaign). local/moto_costs.py has
those about per-request work (answers, SQS attributes, SNS signing); these are about data:

* A Query reads its partition, and an index query the members that index keeps
  (``patch_query_cost``), not every item of the table; its results are copied shallow.
* ``TransactWriteItems`` deep-copies every table it touches before each call, to roll back on a
  lost condition: with ~7k messages a template upload took 21-28 s. The patch checks every
  condition first and applies only when all hold (what DynamoDB's all-or-nothing promises), and
  on an error while applying restores just the items it touched.
* Table streams keep every record for ever; the patch keeps the newest ``STREAM_RECORDS`` (AWS
  keeps 24 h). A reader behind the retained window resumes at the oldest retained record.
* Every GetRecords call registers a new shard iterator for ever; the patch keeps the newest
  ``STREAM_ITERATORS``. A topic keeps its newest ``SNS_NOTIFICATIONS`` notifications, not all.
* PartiQL ``BatchExecuteStatement`` answers 500 in moto. The patch runs what the controller's
  fenced bulk puts send (core/adapters/dynamodb.py ``_fenced_puts``) with DynamoDB's semantics:
  ``INSERT INTO "table" VALUE {'name': ?, …}`` creates the item only if its key is free, and
  answers that statement ``DuplicateItem`` otherwise; a bad item is that statement's
  ``ValidationError``. It also runs what the events Lambda's batched message writes send
  (``DynamoTable.update_each``): ``UPDATE "table" SET "a"=? … REMOVE "b" … WHERE "PK"=? AND
  "SK"=? AND "c"=? AND "d" IS MISSING``, a conditional update of an existing item that answers
  ``ConditionalCheckFailed`` (with the item, for ALL_OLD) when the WHERE is false or there is
  no item. Any other statement (or option) is refused whole with a ``ValidationException``, so
  nothing unsupported passes silently.

It also makes each DynamoDB write (a whole transaction, a whole PartiQL batch) one critical section: moto's server
serves requests on threads and checks a condition apart from the write it guards, so two
concurrent conditional writes could both pass, and both return the same old image; on AWS they
cannot. For the same reason each SQS queue's sends, receives and deletes take turns
(``patch_sqs_queues``): a send racing a delete was lost.

And it publishes SES events, which moto does not: SES v2 SendEmail with a configuration set
whose event destination (SES v1 ``CreateConfigurationSetEventDestination``, what
local/bootstrap.py creates like infra does on AWS) names a Firehose stream (or an SNS topic) gets
the Send event put there before the call returns, the later events (Delivery, Bounce, …) shortly after
(``local.ses_simulator.SesEventPublisher``). The answer carries the ``x-emailplatform-ses-events``
header, so the embedded stack knows its SES endpoint publishes. Every accepted message is kept whole
(the MIME message SES would deliver, ``local.ses_mailbox``): moto itself keeps one body only.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any


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
        """Start our own server; refuse a port something already listens on (another stack's moto
        answered our health check while ours died on the taken port, and the stack ran on its state)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"port {self.port} is already in use (another moto server?): set "
                                   "EMAILPLATFORM_MOTO_PORT to a free port, or EMAILPLATFORM_AWS_ENDPOINT_URL "
                                   "to use the server there")
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


FIREHOSE_USAGE_PATH = "/_emailplatform/firehose-usage"  # GET: records and billed bytes put to Firehose
STREAM_RECORDS = 200_000
STREAM_ITERATORS = 10_000
SNS_NOTIFICATIONS = 1_000


FIREHOSE: list[Any] = []  # the embedded Firehose (local.ses_simulator.FirehoseBuffer) once patched


def patch_ses_events() -> None:
    """SES v2 SendEmail publishes SES events (see the module docstring). Idempotent."""
    import json

    from moto.firehose.models import firehose_backends
    from moto.ses.models import ses_backends
    from moto.sesv2.responses import SESV2Response
    from moto.sns.models import sns_backends

    from local import ses_mailbox
    from local.ses_simulator import EVENTS_HEADER, FirehoseBuffer, SesEventPublisher

    if getattr(SESV2Response, "_emailplatform_patched", False):
        return
    # moto stops at 50 Firehose streams a region; AWS's quota is adjustable and the tests make one
    # a stack, hundreds a server
    from moto.firehose.models import DeliveryStream

    DeliveryStream.MAX_STREAMS_PER_REGION = 5000

    def deliver(stream_arn: str, records: list[bytes]) -> None:  # one object of these records
        _, _, _, region, account, resource = stream_arn.split(":", 5)
        firehose_backends[account][region].put_record_batch(resource.split("/", 1)[1],
                                                            [{"Data": r} for r in records])

    firehose = FirehoseBuffer(deliver, float(os.environ.get("EMAILPLATFORM_FIREHOSE_BUFFER_SECONDS", "0.5")))
    FIREHOSE.append(firehose)

    def publish(target_arn: str, message: str) -> None:
        _, _, service, region, account, _ = target_arn.split(":", 5)
        if service == "firehose":  # SES puts each event as one newline-terminated JSON record
            firehose.put(target_arn, message.encode() + b"\n")
        else:
            sns_backends[account][region].publish(message, arn=target_arn)

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


# One lock for every write to the embedded DynamoDB (patch_moto) and for the index membership
# kept beside it (patch_query_cost): a query snapshots an index's members under it.
WRITES = threading.RLock()


def patch_query_cost() -> None:
    """A Query costs what it reads, as on DynamoDB, not what the table holds.

    moto's ``Table.query`` starts from ``all_items()``, which lists and *sorts* every item of the
    table, for a query on the table (one partition) as for one on an index: with 20,000 messages
    stored, each controller pass's handful of queries took seconds of the server's CPU and the
    embedded stack slowed down as data grew. While a query runs, ``all_items`` here answers with
    the one partition (a table query) or the items the index holds under the queried partition
    value (an index query: the query sorts the matches itself). Everything else that lists the
    table (Scan, exports) is unchanged.

    An index's members (the items that have its key attributes, by their index partition value)
    are found by one pass over the table at the index's first query and then kept up to date by
    every write: ``Table.put_item`` and ``Table.delete_item`` (which every put, delete, batch,
    transaction and PartiQL path ends in) and ``DynamoDBBackend.update_item`` (which changes an
    item in place). ``EMAILPLATFORM_MOTO_CHECK_ANSWERS=1`` compares each index query's members with
    a pass over the whole table and fails the call when they differ."""
    import inspect

    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if getattr(Table, "_emailplatform_query_patched", False):
        return
    hint = threading.local()
    original_query, original_all_items = Table.query, Table.all_items
    original_put, original_delete = Table.put_item, Table.delete_item
    original_update = DynamoDBBackend.update_item
    signature = inspect.signature(original_query)
    check = os.environ.get("EMAILPLATFORM_MOTO_CHECK_ANSWERS") == "1"

    def every_item(table):  # noqa: ANN001, ANN202
        # copies, taken in C: moto's GetItem adds empty partitions (a defaultdict) without our lock
        return [i for v in list(table.items.values()) for i in (list(v.values()) if table.range_key_attr else [v])]

    def members_of(table, index):  # noqa: ANN001, ANN202
        """{partition value: {item key: item}} of ``index``: built at its first query, then kept
        (per index name *and* key schema: an index re-created under its name starts afresh)."""
        kept = table.__dict__.setdefault("_emailplatform_members", {})
        # the partition attribute first: members are grouped by its value
        needs = [k["AttributeName"] for k in sorted(index.schema, key=lambda k: k["KeyType"] != "HASH")]
        ident = (index.name, tuple(needs))
        if ident not in kept:
            for old in [k for k in kept if k[0] == index.name]:
                del kept[old]
            groups: dict = {}  # partition value -> {item key: item}
            where: dict = {}  # item key -> its partition value
            for item in every_item(table):
                if all(n in item.attrs for n in needs):
                    key = (item.hash_key, item.range_key)
                    where[key] = item.attrs[needs[0]]
                    groups.setdefault(where[key], {})[key] = item
            kept[ident] = (needs, groups, where)
        return kept[ident]

    def refresh(table, hash_key, range_key) -> None:  # noqa: ANN001
        """After a write to one key: where its item now belongs in each kept index."""
        kept = table.__dict__.get("_emailplatform_members")
        if not kept:
            return
        found = table.items.get(hash_key)
        item = found.get(range_key) if found is not None and table.range_key_attr else found
        key = (hash_key, range_key if table.range_key_attr else None)
        for needs, groups, where in kept.values():
            if key in where:
                value = where.pop(key)
                groups[value].pop(key, None)
                if not groups[value]:
                    del groups[value]
            if item is not None and all(n in item.attrs for n in needs):
                where[key] = item.attrs[needs[0]]
                groups.setdefault(where[key], {})[key] = item

    def query(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        call = signature.bind(self, *args, **kwargs).arguments  # moto passes index_name by position
        index = {i.name: i for i in self.all_indexes()}.get(call.get("index_name") or "")
        if call.get("index_name") and index is None:  # moto's own error for an unknown index
            return original_query(self, *args, **kwargs)
        if index is not None:
            with WRITES:
                needs, groups, _ = members_of(self, index)
                items = list(groups.get(call.get("hash_key"), {}).values())
            if check:
                with WRITES:
                    full = [i for i in every_item(self) if all(n in i.attrs for n in needs)
                            and i.attrs[needs[0]] == call.get("hash_key")]
                if {id(i) for i in full} != {id(i) for i in items}:
                    raise AssertionError(f"index {index.name}: kept members differ from the table's")
            hint.query = (self, items)
        else:
            found = self.items.get(call.get("hash_key"))
            items = [] if found is None else [found] if not self.range_key_attr else sorted(
                found.values(), key=lambda x: x.range_key)
            hint.query = (self, items)
        try:
            return original_query(self, *args, **kwargs)
        finally:
            hint.query = None

    def all_items(self):  # noqa: ANN001, ANN202
        current = getattr(hint, "query", None)
        if current is None or current[0] is not self:
            return original_all_items(self)
        return current[1]

    def put_item(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        with WRITES:
            item = original_put(self, *args, **kwargs)
            refresh(self, item.hash_key, item.range_key)
            return item

    def delete_item(self, hash_key, range_key=None):  # noqa: ANN001, ANN202
        with WRITES:
            try:
                return original_delete(self, hash_key, range_key)
            finally:
                refresh(self, hash_key, range_key)

    def update_item(self, table_name, key, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        with WRITES:
            try:
                return original_update(self, table_name, key, *args, **kwargs)
            finally:  # also after a lost condition or a failed expression: whatever the item is now
                try:
                    table = self.get_table(table_name)
                    keys = self.get_keys_value(table, key)
                except Exception:  # noqa: BLE001 - no such table or key: the update wrote nothing
                    keys = None
                if keys is not None:
                    refresh(table, *keys)

    import copy as real_copy

    from moto.dynamodb.models import table as table_module

    class QueryCopies:
        """``copy`` inside moto's table module. ``Table.query`` deep-copies every item it returns
        (a fifth of the server's CPU in a large campaign), yet only reads them afterwards: its
        projections build new items and the answer is built from the copies. A query's results
        are copied shallow instead (each item's attribute map, under the write lock, so no write
        lands half-way through); every other copy there (Scan, backups) stays deep."""

        copy = staticmethod(real_copy.copy)

        @staticmethod
        def deepcopy(value, memo=None):  # noqa: ANN001, ANN205
            if getattr(hint, "query", None) is None or not isinstance(value, list):
                return real_copy.deepcopy(value, memo)
            with WRITES:
                return [shallow(item) for item in value]

    def shallow(item):  # noqa: ANN001, ANN202
        twin = object.__new__(type(item))
        twin.__dict__.update(item.__dict__)
        twin.attrs = dict(item.attrs)
        return twin

    table_module.copy = QueryCopies  # type: ignore[assignment]
    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]
    Table.put_item = put_item  # type: ignore[method-assign]
    Table.delete_item = delete_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]
    Table._emailplatform_query_patched = True  # type: ignore[attr-defined]


def patch_request_routing() -> None:
    """moto's server finds each request's backend by listing its own package directory (an
    ``isdir`` per entry) and trying hundreds of URL patterns: half the server's CPU during a large
    campaign. The answer for a host never changes, so it is remembered."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if getattr(DomainDispatcherApplication, "_emailplatform_patched", False):
        return
    original = DomainDispatcherApplication.get_backend_for_host

    def get_backend_for_host(self, host):  # noqa: ANN001, ANN202
        known = self.__dict__.setdefault("_emailplatform_backends", {})  # called under self.lock
        if host not in known:
            known[host] = original(self, host)
        return known[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]
    DomainDispatcherApplication._emailplatform_patched = True  # type: ignore[attr-defined]


def patch_sqs_queues() -> None:
    """Each SQS queue's messages change under that queue's own lock (moto's ``_messages_lock``).

    moto's server answers on many threads, and moto rebuilds a queue's message list on every
    delete without that lock: a message added meanwhile was dropped. In a 3,000-recipient demo
    one SES Delivery event in ~7,000 was lost that way, leaving a message SENT for ever. Two
    receives could also hand out one message twice, and a visibility change racing a receive
    answered 500. Sends, receives, deletes, visibility changes and purges of one queue now take
    turns; queues do not wait on each other, and a long poll waits without holding the lock (a
    ``Condition`` over an ``RLock`` releases it fully while it waits). Lock order: a queue, then
    its dead-letter queue (a receive moving a message there)."""
    import functools

    from moto.sqs.models import Queue, SQSBackend

    if getattr(Queue, "_emailplatform_locked", False):
        return

    def on_queue(method):  # noqa: ANN001, ANN202
        @functools.wraps(method)
        def call(self, *args, **kwargs):  # noqa: ANN001, ANN202
            with self._messages_lock:
                return method(self, *args, **kwargs)
        return call

    def on_named_queue(method):  # noqa: ANN001, ANN202
        @functools.wraps(method)
        def call(self, queue_name, *args, **kwargs):  # noqa: ANN001, ANN202
            with self.get_queue(queue_name)._messages_lock:
                return method(self, queue_name, *args, **kwargs)
        return call

    def wait_for_messages(self, timeout):  # noqa: ANN001, ANN202
        """Wait for a send (or up to ``timeout``), the lock released meanwhile. moto's version
        returns at once while any message is visible, also one a FIFO group in flight holds
        back: a long poll then spun, holding its queue, until its wait time ran out."""
        with self._messages_lock:
            self._messages_lock.wait(timeout)

    Queue.wait_for_messages = wait_for_messages  # type: ignore[method-assign]
    Queue.add_message = on_queue(Queue.add_message)  # type: ignore[method-assign]
    Queue.delete_message = on_queue(Queue.delete_message)  # type: ignore[method-assign]
    for name in ("receive_message", "change_message_visibility", "purge_queue"):
        setattr(SQSBackend, name, on_named_queue(getattr(SQSBackend, name)))
    Queue._emailplatform_locked = True  # type: ignore[attr-defined]


def patch_sns_history() -> None:
    """A topic keeps its newest ``SNS_NOTIFICATIONS`` notifications for inspection, not every one
    (moto kept each SES event's text for ever: ~350 MB for a 100k-recipient campaign)."""
    from collections import deque

    from moto.sns.models import Topic

    if getattr(Topic, "_emailplatform_history_patched", False):
        return
    original = Topic.__init__

    def __init__(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        original(self, *args, **kwargs)
        self.sent_notifications = deque(self.sent_notifications, maxlen=SNS_NOTIFICATIONS)

    Topic.__init__ = __init__  # type: ignore[method-assign]
    Topic._emailplatform_history_patched = True  # type: ignore[attr-defined]


def patch_instance_tracking() -> None:
    """moto lists every model object it ever creates, for its dashboard (``/moto-api/data.json``):
    each DynamoDB item version (an UpdateItem copies the item), stream record, shard iterator and
    SQS message stayed in memory for ever (1.8 GB at 20,000 recipients) and data.json walked them
    all, S3 objects too (each Firehose object of SES events, written by a thread of its own while
    data.json read them: a 500). Those are no longer listed; what the platform reads there (SES's
    accepted mail) still is."""
    from moto.core.common_models import BaseModel
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import StreamRecord
    from moto.dynamodbstreams.models import ShardIterator
    from moto.s3.models import FakeKey
    from moto.sqs.models import Message

    if getattr(BaseModel, "_emailplatform_untracked", False):
        return
    untracked = (Item, StreamRecord, ShardIterator, Message, FakeKey)
    original = BaseModel.__new__

    def __new__(cls, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN204
        return object.__new__(cls) if cls in untracked else original(cls, *args, **kwargs)

    BaseModel.__new__ = __new__  # type: ignore[method-assign]
    for cls in untracked:
        cls.instances_tracked = []  # type: ignore[attr-defined,union-attr]
    BaseModel._emailplatform_untracked = True  # type: ignore[attr-defined]


def patch_moto() -> None:
    """Apply the patches described in the module docstring (idempotent)."""
    from local.moto_costs import patch_costs

    patch_ses_events()
    patch_query_cost()
    patch_request_routing()
    patch_sqs_queues()
    patch_sns_history()
    patch_instance_tracking()
    patch_costs()
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
    from moto.dynamodb.responses import (
        DynamoHandler,
        validate_put_has_empty_attrs,
        validate_put_has_empty_keys,
        validate_put_has_gsi_keys_set_to_none,
    )
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

    insert_statement = re.compile(r'\s*INSERT\s+INTO\s+"((?:[^"]|"")+)"\s+VALUE\s+\{(.*)\}\s*', re.I | re.S)
    insert_field = re.compile(r"\s*'((?:[^']|'')+)'\s*:\s*\?\s*")

    def parse_insert(text: str) -> tuple[str, list[str]]:
        """The table and attribute names of ``INSERT INTO "t" VALUE {'a': ?, 'b': ?}``; anything
        else is refused (the only PartiQL the platform sends)."""
        m = insert_statement.fullmatch(text)
        names: list[str] = []
        body, pos = (m.group(2), 0) if m else ("", 0)
        while m:
            f = insert_field.match(body, pos)
            if not f:
                break
            names.append(f.group(1).replace("''", "'"))
            pos = f.end()
            if pos == len(body):
                if len(set(names)) == len(names):
                    return m.group(1).replace('""', '"'), names
                break
            if body[pos] != ",":
                break
            pos += 1
        raise MockValidationException(
            "Statement wasn't well formed, can't be processed (the embedded DynamoDB runs only "
            f"INSERT INTO \"table\" VALUE {{'name': ?, ...}} and UPDATE \"table\" SET \"a\"=? ... WHERE \"key\"=? AND ... "
            f"in BatchExecuteStatement): {text[:200]}")

    update_statement = re.compile(r'\s*UPDATE\s+"((?:[^"]|"")+)"\s+(.*?)\s+WHERE\s+(.*?)\s*', re.I | re.S)
    update_clause = re.compile(r'\s*(?:SET\s+"((?:[^"]|"")+)"\s*=\s*\?|REMOVE\s+"((?:[^"]|"")+)")\s*', re.I)
    where_term = re.compile(r'\s*"((?:[^"]|"")+)"\s*(?:(=)\s*\?|IS\s+(MISSING))\s*(?:AND\b|$)', re.I)

    def parse_update(text: str) -> tuple[str, list[str], list[str], list[tuple[str, bool]]] | None:
        """``UPDATE "t" SET "a"=? … REMOVE "b" … WHERE "k"=? AND … AND "c" IS MISSING`` (what
        ``DynamoTable.update_each`` sends): the table, the names set (one parameter each, in
        order), the names removed, and the WHERE terms ((name, True): equal to the next
        parameter; (name, False): missing). None when ``text`` is no such statement."""
        m = update_statement.fullmatch(text)
        if not m:
            return None
        sets: list[str] = []
        removes: list[str] = []
        pos, body = 0, m.group(2)
        while pos < len(body):
            c = update_clause.match(body, pos)
            if not c or c.end() == pos:
                return None
            if c.group(1) is not None:
                sets.append(c.group(1).replace('""', '"'))
            else:
                removes.append(c.group(2).replace('""', '"'))
            pos = c.end()
        terms: list[tuple[str, bool]] = []
        pos, where = 0, m.group(3)
        while pos < len(where):
            t = where_term.match(where, pos)
            if not t or t.end() == pos:
                return None
            terms.append((t.group(1).replace('""', '"'), t.group(2) is not None))
            pos = t.end()
        if not sets and not removes or not terms:
            return None
        return m.group(1).replace('""', '"'), sets, removes, terms

    def run_update(self, parsed, params, old_on_fail):  # noqa: ANN001, ANN202
        """One UPDATE statement as DynamoDB runs it: the WHERE must name the whole key (else the
        statement is a ValidationError); a WHERE that is false, or no item, is ConditionalCheckFailed
        (with the item as it is, when asked for ALL_OLD); an UPDATE never creates an item."""
        name, sets, removes, terms = parsed
        table = self.tables.get(name)
        if table is None:
            return {"Error": {"Code": "ResourceNotFound", "Message": "Requested resource not found"}}
        equal_count = sum(1 for _, equal in terms if equal)
        if len(params) != len(sets) + equal_count:
            return {"Error": {"Code": "ValidationError",
                              "Message": "Number of parameters in request and statement don't match."}}
        values = iter(params)
        set_values = [next(values) for _ in sets]
        equals = {n: next(values) for n, equal in terms if equal}
        missing = [n for n, equal in terms if not equal]
        key_attrs = [a for a in (table.hash_key_attr, table.range_key_attr) if a]
        if any(a not in equals for a in key_attrs) or any(a in (*sets, *removes) for a in key_attrs):
            return {"Error": {"Code": "ValidationError", "Message": "Where clause does not contain a mandatory "
                              "equality on all key attributes, or the statement changes a key attribute"}}
        key = {a: equals[a] for a in key_attrs}
        names: dict[str, str] = {}
        vals: dict[str, Any] = {}
        parts = []
        if sets:
            for i, (n, v) in enumerate(zip(sets, set_values, strict=True)):
                names[f"#s{i}"], vals[f":s{i}"] = n, v
            parts.append("SET " + ", ".join(f"#s{i} = :s{i}" for i in range(len(sets))))
        if removes:
            for i, n in enumerate(removes):
                names[f"#r{i}"] = n
            parts.append("REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes))))
        conds = [f"attribute_exists(#k{i})" for i in range(len(key_attrs))]
        for i, a in enumerate(key_attrs):
            names[f"#k{i}"] = a
        for i, (n, v) in enumerate((n, v) for n, v in equals.items() if n not in key_attrs):
            names[f"#c{i}"], vals[f":c{i}"] = n, v
            conds.append(f"#c{i} = :c{i}")
        for i, n in enumerate(missing):
            names[f"#m{i}"] = n
            conds.append(f"attribute_not_exists(#m{i})")
        try:
            self.update_item(name, key, " ".join(parts), names, vals, condition_expression=" AND ".join(conds))
        except ConditionalCheckFailed:
            answer: dict[str, Any] = {"Error": {"Code": "ConditionalCheckFailed",
                                                "Message": "The conditional request failed"}}
            current = self.get_item(name, key) if old_on_fail == "ALL_OLD" else None
            if current is not None:
                answer["Error"]["Item"] = current.to_json()["Attributes"]
            return answer
        except MockValidationException as exc:
            return {"Error": {"Code": "ValidationError", "Message": exc.message}}
        return {"TableName": name}

    def batch_execute_statement(self, statements):  # noqa: ANN001, ANN202
        if not 1 <= len(statements) <= 25:
            raise MockValidationException("1 validation error detected: Value at 'statements' failed to satisfy "
                                          "constraint: Member must have length less than or equal to 25")
        planned, keys = [], set()
        for st in statements:  # validate the whole request first: a refused request writes nothing
            text = st.get("Statement") or ""
            if len(text) > 8192:
                raise MockValidationException("1 validation error detected: Value at 'statements.member.statement' "
                                              "failed to satisfy constraint: Member must have length less than or "
                                              "equal to 8192")
            if set(st) - {"Statement", "Parameters", "ReturnValuesOnConditionCheckFailure"}:
                raise MockValidationException(f"Unsupported in the embedded DynamoDB: "
                                              f"{sorted(set(st) - {'Statement', 'Parameters', 'ReturnValuesOnConditionCheckFailure'})}")
            params = st.get("Parameters") or []
            update = parse_update(text)
            if update is not None:
                table = self.tables.get(update[0])
                if table is not None:  # one statement per item, as for BatchWriteItem
                    where = dict(zip([n for n, equal in update[3] if equal], params[len(update[1]):], strict=False))
                    key = (update[0], repr([where.get(table.hash_key_attr), where.get(table.range_key_attr)]))
                    if key in keys:
                        raise MockValidationException("Provided list of item keys contains duplicates")
                    keys.add(key)
                planned.append(("UPDATE", update, params, st.get("ReturnValuesOnConditionCheckFailure")))
                continue
            name, names = parse_insert(text)
            if len(params) != len(names):
                raise MockValidationException("Number of parameters in request and statement don't match.")
            item = dict(zip(names, params, strict=True))
            table = self.tables.get(name)
            if table is not None:
                key = (name, repr([item.get(table.hash_key_attr), item.get(table.range_key_attr)]))
                if key in keys:  # as BatchWriteItem: one batch, one write per item
                    raise MockValidationException("Provided list of item keys contains duplicates")
                keys.add(key)
            planned.append(("INSERT", (name, table, item), params, None))
        responses = []
        for verb, what, params, old_on_fail in planned:
            if verb == "UPDATE":
                responses.append(run_update(self, what, params, old_on_fail))
                continue
            name, table, item = what
            if table is None:
                responses.append({"Error": {"Code": "ResourceNotFound", "Message": "Requested resource not found"}})
                continue
            answer = {"TableName": name}
            try:
                validate_put_has_empty_keys(item, table)
                validate_put_has_empty_attrs(item, table)
                validate_put_has_gsi_keys_set_to_none(item, table)
                self.put_item(name, item, condition_expression="attribute_not_exists(#k)",
                              expression_attribute_names={"#k": table.hash_key_attr})
            except ConditionalCheckFailed:
                answer["Error"] = {"Code": "DuplicateItem", "Message": "Duplicate primary key exists in table"}
            except MockValidationException as exc:
                answer["Error"] = {"Code": "ValidationError", "Message": exc.message}
            responses.append(answer)
        return responses

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

    lock = WRITES

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
    batch_execute_statement = serialised(batch_execute_statement)
    original_add, original_get = StreamShard.add, StreamShard.get
    original_iterator, original_records = DynamoDBStreamsBackend.get_shard_iterator, DynamoDBStreamsBackend.get_records
    for cls, name, fn in ((DynamoDBBackend, "transact_write_items", transact_write_items),
                          (DynamoDBBackend, "batch_execute_statement", batch_execute_statement), (StreamShard, "add", add),
                          (StreamShard, "get", get), (DynamoDBStreamsBackend, "get_shard_iterator", get_shard_iterator),
                          (DynamoDBStreamsBackend, "get_records", get_records)):
        setattr(cls, name, fn)  # moto's own classes, patched in this (the moto server's) process only
    DynamoDBBackend._emailplatform_patched = True  # type: ignore[attr-defined]


def serve(host: str, port: int) -> None:
    """moto's WSGI app on waitress, not on moto's own werkzeug development server.

    Werkzeug's server answers every request with ``Connection: close`` and starts a thread per
    connection: each boto3 call paid a new TCP connection, a new thread and a log line, and its
    accept loop (one thread) waited for every thread to start. Waitress keeps connections alive and
    serves them from a pool of threads; long-polling receivers (SQS ``WaitTimeSeconds``) each hold
    one of them, so the pool is far larger than the platform's pollers.

    Two differences from moto's own server remain, neither used by the platform: waitress drops
    request headers with ``_`` in their name (S3 user metadata keys such as ``x-amz-meta-my_key``
    are lost) and capitalises answer header names (``x-amz-meta-plain`` comes back as
    ``X-Amz-Meta-Plain``, so boto3 shows the key ``Plain``)."""
    import json

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from waitress import serve as waitress_serve
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser

    from local import ses_mailbox

    class Parser(HTTPRequestParser):
        """A request with no body gets no ``100 Continue``: waitress 3 sends one for ``Expect:
        100-continue`` with ``Content-Length: 0`` (boto3's empty PutObject) and then waits for a
        body that never comes. The final answer alone is what RFC 9110 allows there."""

        def parse_header(self, header_plus: bytes) -> None:
            super().parse_header(header_plus)
            if not self.chunked and self.content_length == 0:
                self.expect_continue = False

    HTTPChannel.parser_class = Parser  # this process is the moto server: its one waitress

    os.environ.setdefault("MOTO_PORT", str(port))  # moto builds its own URLs (presigned posts, queues) from it
    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict, start_response: Any) -> Any:
        path = environ.get("PATH_INFO")
        if path in (ses_mailbox.PATH, FIREHOSE_USAGE_PATH):
            # what the embedded SES accepted (local.ses_mailbox); what its Firehose ingested (bench.cost)
            body = json.dumps(ses_mailbox.records() if path == ses_mailbox.PATH
                              else FIREHOSE[0].usage() if FIREHOSE else {}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        # werkzeug's server passes the path as it came (RAW_URI); without it moto reads the decoded
        # path and S3 decodes it again ("a%20b.csv" stored as "a b.csv", "what?.csv" as "what")
        environ.setdefault("RAW_URI", environ.get("REQUEST_URI", ""))
        return moto_app(environ, start_response)

    keep_collections_short()
    # Every pooled boto3 connection stays open between calls (idle ones close after channel_timeout):
    # the limit is far above what the platform's clients pool, or a new client would wait for one.
    waitress_serve(app, host=host, port=port, threads=SERVER_THREADS, connection_limit=CONNECTIONS,
                   channel_timeout=120, ident="moto", _quiet=True)


GC_FREEZE_SECONDS = 30.0


def keep_collections_short(every: float = GC_FREEZE_SECONDS) -> threading.Thread:
    """The server's heap is what it stores (items, messages, mail), kept until it is deleted.
    Python's full garbage collections walk all of it: 2.6 s at 1.8 GB, with every request
    waiting, so at ~20,000 recipients SES calls outlasted the platform's 5 s read timeout and
    their chunks went in doubt. What survived a collection is frozen (``gc.freeze``) every
    ``every`` seconds, so a collection walks only what came since. What is deleted later is
    still freed by reference counting (an item, a message); only a cycle made before a freeze
    and dropped after it stays."""
    import gc

    def freeze() -> None:
        while True:
            gc.collect()
            gc.freeze()
            time.sleep(every)

    thread = threading.Thread(target=freeze, name="gc-freeze", daemon=True)
    thread.start()
    return thread


SERVER_THREADS = 96  # the embedded stack's long-pollers (a dozen queues, two regions) and its callers
CONNECTIONS = 8000  # under the process's open-file limit (`ulimit -n`, 20,000 here)


if __name__ == "__main__":
    import argparse

    patch_moto()
    ap = argparse.ArgumentParser(description="the embedded stack's AWS: moto, patched, on waitress")
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=5000)
    args = ap.parse_args()
    serve(args.host, args.port)
