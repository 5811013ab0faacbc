"""boto3 client construction and AWS call accounting.

Every adapter takes an injected client; ``client(service)`` builds the default one from
settings (a moto endpoint in the embedded stack, the real regional endpoint on AWS).
``CallCounter`` hooks botocore's event system so tests and benchmarks count real wire calls.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import boto3
from botocore.config import Config

from config.settings import Settings
from core.observability import component

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
# SendEmail is not idempotent: a retry after a lost response sends the mail twice. The SES
# client makes exactly one attempt and gives up quickly; the sender classifies what happened
# (core.adapters.ses) and retries only what SES certainly did not accept.
# (botocore's ``max_attempts`` counts retries, so ``max_attempts: 1`` would still send twice:
# ``total_max_attempts`` counts the first attempt too.)
SES_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=32,
                    connect_timeout=2, read_timeout=5)
# DynamoDB requests are built in one place (core.adapters.dynamodb.DynamoTable) and DynamoDB
# validates each one itself (a ValidationException names the fault); botocore's client-side
# walk over every parameter was 15 % of the SES events handler's CPU (0.3 ms of 1.9 ms per event).
DYNAMODB_CONFIG = _CONFIG.merge(Config(parameter_validation=False))
_SERVICE_CONFIG = {"sesv2": SES_CONFIG, "ses": SES_CONFIG, "dynamodb": DYNAMODB_CONFIG}


class _SharedSession(boto3.session.Session):
    """A boto3 session that any thread may create clients from: one at a time, under its lock.

    A botocore session is not thread-safe (credentials and components resolve lazily); the
    clients it creates are, and so are the service models its loader caches."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._client_lock = threading.Lock()

    def client(self, *args: Any, **kwargs: Any) -> Any:
        with self._client_lock:
            return super().client(*args, **kwargs)

    def resource(self, *args: Any, **kwargs: Any) -> Any:
        with self._client_lock:
            return super().resource(*args, **kwargs)


_SESSIONS: dict[tuple[str, bool], _SharedSession] = {}
_SESSIONS_LOCK = threading.Lock()


def session(settings: Settings, region: str | None = None) -> boto3.session.Session:
    """This process's boto3 session for a region, built on first use and then shared.

    A fresh session parses botocore's service and endpoint models again (~0.1 s a client); the
    shared one parses each once per process, which Lambda cold starts and tests both feel.
    Credentials resolve once per session, through the default chain (refreshing ones refresh)."""
    name = region or settings.region
    local = bool(settings.aws_endpoint_url)
    with _SESSIONS_LOCK:
        shared = _SESSIONS.get((name, local))
        if shared is None:
            kw: dict[str, Any] = {"region_name": name}
            if local:  # the embedded stack: any credentials will do
                kw.update(aws_access_key_id="local", aws_secret_access_key="local")
            shared = _SESSIONS[(name, local)] = _SharedSession(**kw)
    return shared


def client(settings: Settings, service: str, region: str | None = None) -> Any:
    """A new client (its own connection pool and event hooks) from the region's shared session."""
    return session(settings, region).client(
        service, endpoint_url=settings.aws_endpoint_url, config=_SERVICE_CONFIG.get(service, _CONFIG)
    )


def item_bytes(item: dict[str, Any]) -> int:
    """The size DynamoDB bills an item by, from its wire form (``{"name": {"S": "…"}}``): each
    attribute's name plus its value, by AWS's rules (strings and binaries by length, a number
    about one byte per two digits plus one, a list or map 3 bytes plus 1 per element)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return (len(v.lstrip("-").replace(".", "").strip("0")) + 1) // 2 + 1
    if kind == "B":
        return len(v) * 3 // 4  # base64 on the wire
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_bytes({kind[0]: x}) for x in v)
    if kind == "L":
        return 3 + sum(1 + _value_bytes(x) for x in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_bytes(x) for k, x in v.items())
    return 0


def _units(size: int, per: int) -> int:
    return max(1, -(-size // per))


_INSERT_NAMES = re.compile(r"'((?:[^']|'')+)'\s*:\s*\?")


def _inserted_item(statement: dict[str, Any]) -> dict[str, Any] | None:
    """The item a PartiQL ``INSERT INTO "t" VALUE {'a': ?, …}`` statement writes (names from the
    text, values from its parameters), or None for any other statement."""
    text = statement.get("Statement") or ""
    if text.lstrip()[:6].upper() != "INSERT":
        return None
    names = [n.replace("''", "'") for n in _INSERT_NAMES.findall(text)]
    params = statement.get("Parameters") or []
    return dict(zip(names, params, strict=True)) if len(names) == len(params) else None


def _updated_key(statement: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """The key a PartiQL UPDATE of ``DynamoTable.update_each``'s shape writes (its WHERE starts
    with the two key equalities) and the bytes its SET values carry; None for any other statement."""
    text = statement.get("Statement") or ""
    if text.lstrip()[:6].upper() != "UPDATE" or " WHERE " not in text:
        return None
    params = statement.get("Parameters") or []
    sets = text.split(" WHERE ", 1)[0].count("?")
    if len(params) < sets + 2:
        return None
    return {"PK": params[sets], "SK": params[sets + 1]}, sum(_value_bytes(v) for v in params[:sets])


def _partiql_verbs(statements: list[dict[str, Any]]) -> set[str]:
    """``PartiQLInsert``/``PartiQLUpdate``…: what IAM authorises each statement of a batch as."""
    return {"PartiQL" + (st.get("Statement") or "").lstrip()[:6].capitalize() for st in statements}


def _authorised_as(name: str, params: dict[str, Any]) -> str:
    """The operation as IAM authorises it: an S3 delete naming a version is DeleteObjectVersion."""
    if name == "s3.DeleteObject" and "versionId" in (params.get("query_string") or {}):
        return "s3.DeleteObjectVersion"
    return name


class CallCounter:
    """Counts AWS operations made by the clients it is attached to, e.g. ``dynamodb.UpdateItem``.

    Also counts DynamoDB items written, since a BatchWriteItem of 25 items costs 25 writes.

    DynamoDB capacity is estimated as AWS would bill it (moto reports none), from the items on
    the wire sized by AWS's rules (``item_bytes``): a read unit per 4 KB read (half for an
    eventually consistent read), a write unit per 1 KB written, twice inside a transaction. A
    write is billed on the larger of the item before and after it, and a write that loses its
    condition still costs the size of the item it found. So an UpdateItem is sized after the
    call, from what came back (the old or new image, the item of a lost condition) or, when
    nothing did, from the last size seen for that key (a read, an earlier write), plus the bytes
    the update carries. Only a key never seen is priced at the floor of its update's own bytes.

    A PartiQL ``BatchExecuteStatement`` of INSERTs is priced per statement like a PutItem (AWS
    bills each statement as the single write it is, no batch surcharge). A statement answered
    ``DuplicateItem`` (or ``ConditionalCheckFailed``) is billed like a conditional put that lost its
    condition; one answered with another error (throttled, invalid) wrote nothing and is not
    billed, nor is a request refused whole. An UPDATE (``DynamoTable.update_each``) is priced like
    an UpdateItem that returned nothing: the size last seen for its key plus the bytes it sets.
    Any other statement counts at the floor, 1. Such a call is attributed to its component as the
    IAM actions its statements need (``dynamodb.PartiQLInsert``, ``dynamodb.PartiQLUpdate``).
    """

    _SIZES_KEPT = 500_000  # sizes remembered by key (a bench's worth of messages)

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.items_written = 0
        self.read_units = 0.0
        self.write_units = 0.0
        self.transaction_surcharge = 0.0  # the extra units transactions cost over plain writes
        self.lost_condition_units = 0.0  # writes that lost their condition: billed, never replicated
        self.by_component: dict[str, set[str]] = {}
        self.component_calls: Counter[tuple[str, str]] = Counter()  # (component, "service.Operation"): calls
        self.component_write_units: defaultdict[str, float] = defaultdict(float)
        self.component_items_written: Counter[str] = Counter()
        self.component_cpu: defaultdict[str, float] = defaultdict(float)  # seconds spent counting, not working
        self.component_read_units: defaultdict[str, float] = defaultdict(float)
        self._sizes: dict[tuple[str, str], int] = {}  # (PK, SK) -> the item's last known size
        self._lock = threading.Lock()

    def attach(self, boto_client: Any) -> Any:
        boto_client.meta.events.register("before-call.*.*", self._timed(self._on_call))
        boto_client.meta.events.register("after-call.dynamodb.*", self._timed(self._on_result))
        return boto_client

    def _timed(self, hook: Any) -> Any:
        """``hook`` with its own CPU time kept per component (``component_cpu``): the counting
        parses every request and answer again, work AWS never sees, which a bench takes out of
        the CPU it reports for a Lambda."""
        def timed(**kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return hook(**kwargs)
            finally:
                spent = time.thread_time() - started
                with self._lock:
                    self.component_cpu[component.get()] += spent
        return timed

    @staticmethod
    def _key(item: dict[str, Any]) -> tuple[str, str] | None:
        pk, sk = item.get("PK"), item.get("SK")
        if not isinstance(pk, dict) or not isinstance(sk, dict):
            return None
        return str(next(iter(pk.values()))), str(next(iter(sk.values())))

    def _remember(self, item: dict[str, Any], size: int | None = None) -> None:
        key = self._key(item)
        if key is None:
            return
        if len(self._sizes) >= self._SIZES_KEPT:
            self._sizes.clear()
        self._sizes[key] = item_bytes(item) if size is None else size

    def _on_result(self, http_response: Any = None, parsed: Any = None, model: Any = None,
                   context: Any = None, **_: Any) -> None:
        if model is None:
            return
        name = model.name
        request = (context or {}).get("emailplatform_request") or {}
        raw = getattr(http_response, "content", b"") or b""
        if name == "UpdateItem":
            self._on_update(request, json.loads(raw or b"{}"))
            return
        if name == "BatchExecuteStatement":
            self._on_statements((context or {}).get("emailplatform_statement_units") or [],
                                (context or {}).get("emailplatform_statement_sizes") or [], json.loads(raw or b"{}"))
            return
        if name in ("PutItem", "DeleteItem"):
            if b"ConditionalCheckFailed" in raw:
                with self._lock:
                    self.lost_condition_units += float((context or {}).get("emailplatform_units", 1.0))
            return
        if name not in ("GetItem", "Query", "BatchGetItem", "Scan"):
            return
        body = json.loads(raw or b"{}")
        with self._lock:
            if name == "GetItem":
                item = body.get("Item")
                sizes = [item_bytes(item)] if item else [0]
                if item:
                    self._remember(item, sizes[0])
                strong = [bool(request.get("ConsistentRead"))]
            elif name == "BatchGetItem":
                sizes, strong = [], []
                asked = request.get("RequestItems") or {}
                for table, items in (body.get("Responses") or {}).items():
                    consistent = bool((asked.get(table) or {}).get("ConsistentRead"))
                    projected = "ProjectionExpression" in (asked.get(table) or {})
                    for i in items:
                        sizes.append(item_bytes(i))  # a projection is billed on the whole item: a floor
                        strong.append(consistent)
                        if not projected:
                            self._remember(i, sizes[-1])
            else:  # a query is billed on the items it read together, in 4 KB steps
                items = body.get("Items", [])
                sizes = [sum(item_bytes(i) for i in items)]
                strong = [bool(request.get("ConsistentRead"))]
                if "ProjectionExpression" not in request:
                    for i in items:
                        self._remember(i)
            units = sum(_units(size, 4096) * (1.0 if s else 0.5) for size, s in zip(sizes, strong, strict=True))
            self.read_units += units
            self.component_read_units[component.get()] += units

    def _on_update(self, request: dict[str, Any], body: dict[str, Any]) -> None:
        """An UpdateItem's write units: the larger of the item before and after, from the images
        that came back (or the size last seen for its key) and the bytes the update adds."""
        added = sum(_value_bytes(v) for v in (request.get("ExpressionAttributeValues") or {}).values())
        key = request.get("Key") or {}
        with self._lock:
            if "Item" in body:  # a lost condition, with the item it found (ALL_OLD on failure)
                size = item_bytes(body["Item"])
                self._remember(body["Item"], size)
            elif "Attributes" in body and request.get("ReturnValues") == "ALL_NEW":
                size = item_bytes(body["Attributes"])
                self._remember(body["Attributes"], size)
            else:
                known = self._sizes.get(self._key(key) or ("", ""))
                if "Attributes" in body and request.get("ReturnValues") == "ALL_OLD":
                    known = item_bytes(body["Attributes"])
                size = (known if known is not None else item_bytes(key)) + added
                if "__type" not in body:
                    k = self._key(key)
                    if k is not None:
                        self._sizes[k] = size
            units = float(_units(size, 1024))
            self.write_units += units
            self.component_write_units[component.get()] += units
            if "ConditionalCheckFailed" in str(body.get("__type", "")):
                self.lost_condition_units += units

    def _on_statements(self, priced: list[int], sizes: list[tuple[dict[str, Any], int] | None],
                       body: dict[str, Any]) -> None:
        """Settle a PartiQL batch's units from its per-statement answers (see the class docstring);
        an UPDATE written leaves its item's new size, one that lost leaves the size of the item found."""
        responses = body.get("Responses")
        errors: list[dict[str, Any]] = ([r.get("Error") or {} for r in responses] if isinstance(responses, list)
                                        else [{"Code": "RequestRefused"}] * len(priced))
        lost = unbilled = unwritten = 0
        for units, error, size in zip(priced, errors, sizes or [None] * len(priced), strict=False):
            code = error.get("Code")
            if code in ("DuplicateItem", "ConditionalCheckFailed"):
                lost += units
                if error.get("Item"):
                    with self._lock:
                        self._remember(error["Item"])
            elif code:
                unbilled += units
                unwritten += 1
            elif size is not None:
                k = self._key(size[0])
                if k is not None:
                    with self._lock:
                        self._sizes[k] = size[1]
        with self._lock:
            self.lost_condition_units += lost
            self.write_units -= unbilled
            self.component_write_units[component.get()] -= unbilled
            self.items_written -= unwritten
            self.component_items_written[component.get()] -= unwritten

    def _on_call(self, params: dict[str, Any], model: Any, context: Any = None, **_: Any) -> None:
        """``before-call`` fires for wire calls only (not for presigning); ``params`` is the
        serialized request, so item counts come from its JSON body (DynamoDB's protocol). An
        UpdateItem's units are counted after the call (``_on_update``): its size shows there."""
        name = f"{model.service_model.service_name}.{model.name}"
        written, units, surcharge = 0, 0.0, 0.0
        body: dict[str, Any] = {}
        if model.service_model.service_name == "dynamodb":
            body = json.loads(params.get("body") or b"{}")
            if context is not None:
                context["emailplatform_request"] = body
        if model.name in ("PutItem", "UpdateItem", "DeleteItem") and body:
            written = 1
            if model.name == "PutItem":
                size = item_bytes(body.get("Item", {}))
                units = float(_units(max(size, self._sizes.get(self._key(body.get("Item", {})) or ("", ""), 0)), 1024))
                self._remember(body.get("Item", {}), size)
            elif model.name == "DeleteItem":
                units = float(_units(self._sizes.get(self._key(body.get("Key", {})) or ("", ""), 0), 1024))
            if context is not None:
                context["emailplatform_units"] = units
        elif model.name == "BatchExecuteStatement" and body:
            priced: list[int] = []
            sizes: list[tuple[dict[str, Any], int] | None] = []
            for statement in body.get("Statements", []):
                item = _inserted_item(statement)
                updated = _updated_key(statement) if item is None else None
                if updated is not None:
                    key, added = updated
                    size = self._sizes.get(self._key(key) or ("", ""), item_bytes(key)) + added
                    priced.append(_units(size, 1024))
                    sizes.append((key, size))  # remembered once the statement is known written
                    continue
                sizes.append(None)
                if item is None:
                    priced.append(1)
                    continue
                size = item_bytes(item)
                priced.append(_units(max(size, self._sizes.get(self._key(item) or ("", ""), 0)), 1024))
                self._remember(item, size)
            written, units = len(priced), float(sum(priced))
            if context is not None:
                context["emailplatform_statement_units"] = priced
                context["emailplatform_statement_sizes"] = sizes
        elif model.name in ("BatchWriteItem", "TransactWriteItems"):
            if model.name == "BatchWriteItem":
                reqs = [r for v in body.get("RequestItems", {}).values() for r in v]
                written = len(reqs)
                for r in reqs:
                    item = (r.get("PutRequest") or {}).get("Item")
                    if item is not None:
                        units += _units(item_bytes(item), 1024)
                        self._remember(item)
                    else:
                        units += 1
            else:
                for t in body.get("TransactItems", []):
                    (kind, op), = t.items()
                    if kind == "Put":
                        size = item_bytes(op.get("Item", {}))
                        self._remember(op.get("Item", {}), size)
                    else:
                        size = self._sizes.get(self._key(op.get("Key", {})) or ("", ""), 0)
                        if kind == "Update":
                            size += sum(_value_bytes(v) for v in (op.get("ExpressionAttributeValues") or {}).values())
                    one = _units(size, 1024)
                    units += 2.0 * one
                    if kind != "ConditionCheck":
                        written += 1
                        surcharge += one  # what a replica does not pay again: it applies the item once
                    else:
                        surcharge += 2.0 * one  # a condition check writes nothing to replicate
        with self._lock:
            self.calls[name] += 1
            self.items_written += written
            self.component_items_written[component.get()] += written
            self.write_units += units
            self.transaction_surcharge += surcharge
            actions = {f"dynamodb.{v}" for v in _partiql_verbs(body.get("Statements", []))} \
                if name == "dynamodb.BatchExecuteStatement" else {_authorised_as(name, params)}
            self.by_component.setdefault(component.get(), set()).update(actions)
            self.component_calls[(component.get(), name)] += 1
            self.component_write_units[component.get()] += units

    def total(self, prefix: str = "") -> int:
        return sum(v for k, v in self.calls.items() if k.startswith(prefix))

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.component_calls.clear()
            self.component_write_units.clear()
            self.component_read_units.clear()
            self.items_written = 0
            self.component_items_written.clear()
            self.component_cpu.clear()
            self.read_units = self.write_units = self.transaction_surcharge = self.lost_condition_units = 0.0
