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
* PartiQL ``BatchExecuteStatement`` answers 500 in moto. The patch runs what the controller's
  fenced bulk puts send (core/adapters/dynamodb.py ``_fenced_puts``) with DynamoDB's semantics:
  ``INSERT INTO "table" VALUE {'name': ?, …}`` creates the item only if its key is free, and
  answers that statement ``DuplicateItem`` otherwise; a bad item is that statement's
  ``ValidationError``. Any other statement (or option) is refused whole with a
  ``ValidationException``, so nothing unsupported passes silently.

It also makes each DynamoDB write (a whole transaction, a whole PartiQL batch) one critical section: moto's server
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
import re
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


def patch_query_cost() -> None:
    """A Query costs what its partition holds, as on DynamoDB, not what the table holds.

    moto's ``Table.query`` starts from ``all_items()``, which lists and *sorts* every item of the
    table, for a query on the table (one partition) as for one on an index: with 20,000 messages
    stored, each controller pass's handful of queries took seconds of the server's CPU and the
    embedded stack slowed down as data grew. While a query runs, ``all_items`` here answers with
    the one partition (a table query) or the items unsorted (an index query: the query sorts the
    matches itself). Everything else that lists the table (Scan, exports) is unchanged."""
    import inspect
    import threading as _threading

    from moto.dynamodb.models.table import Table

    if getattr(Table, "_emailplatform_query_patched", False):
        return
    hint = _threading.local()
    original_query, original_all_items = Table.query, Table.all_items
    signature = inspect.signature(original_query)

    def query(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        call = signature.bind(self, *args, **kwargs).arguments  # moto passes index_name by position
        index = {i.name: i for i in self.all_indexes()}.get(call.get("index_name") or "")
        if call.get("index_name") and index is None:  # moto's own error for an unknown index
            return original_query(self, *args, **kwargs)
        # an index holds only the items that have its key attributes (most of ours are sparse)
        needs = [k["AttributeName"] for k in index.schema] if index is not None else None
        hint.query = (self, needs if index is not None else call.get("hash_key"), index is not None)
        try:
            return original_query(self, *args, **kwargs)
        finally:
            hint.query = None

    def all_items(self):  # noqa: ANN001, ANN202
        current = getattr(hint, "query", None)
        if current is None or current[0] is not self:
            return original_all_items(self)
        if current[2]:  # an index query: the items the index holds, in no particular order (it sorts them)
            needs = current[1]
            return [i for v in self.items.values() for i in (v.values() if self.range_key_attr else [v])
                    if all(n in i.attrs for n in needs)]
        found = self.items.get(current[1])
        if found is None:
            return []
        if not self.range_key_attr:
            return [found]
        return sorted(found.values(), key=lambda x: x.range_key)

    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]
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


def patch_moto() -> None:
    """Apply the patches described in the module docstring (idempotent)."""
    patch_ses_events()
    patch_query_cost()
    patch_request_routing()
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
            f"INSERT INTO \"table\" VALUE {{'name': ?, ...}} in BatchExecuteStatement): {text[:200]}")

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
            if set(st) - {"Statement", "Parameters"}:
                raise MockValidationException(f"Unsupported in the embedded DynamoDB: {sorted(set(st) - {'Statement', 'Parameters'})}")
            name, names = parse_insert(text)
            params = st.get("Parameters") or []
            if len(params) != len(names):
                raise MockValidationException("Number of parameters in request and statement don't match.")
            item = dict(zip(names, params, strict=True))
            table = self.tables.get(name)
            if table is not None:
                key = (name, repr([item.get(table.hash_key_attr), item.get(table.range_key_attr)]))
                if key in keys:  # as BatchWriteItem: one batch, one write per item
                    raise MockValidationException("Provided list of item keys contains duplicates")
                keys.add(key)
            planned.append((name, table, item))
        responses = []
        for name, table, item in planned:
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
    batch_execute_statement = serialised(batch_execute_statement)
    original_add, original_get = StreamShard.add, StreamShard.get
    original_iterator, original_records = DynamoDBStreamsBackend.get_shard_iterator, DynamoDBStreamsBackend.get_records
    for cls, name, fn in ((DynamoDBBackend, "transact_write_items", transact_write_items),
                          (DynamoDBBackend, "batch_execute_statement", batch_execute_statement), (StreamShard, "add", add),
                          (StreamShard, "get", get), (DynamoDBStreamsBackend, "get_shard_iterator", get_shard_iterator),
                          (DynamoDBStreamsBackend, "get_records", get_records)):
        setattr(cls, name, fn)  # moto's own classes, patched in this (the moto server's) process only
    DynamoDBBackend._emailplatform_patched = True  # type: ignore[attr-defined]


if __name__ == "__main__":
    patch_moto()
    from moto.server import main

    main(sys.argv[1:])
