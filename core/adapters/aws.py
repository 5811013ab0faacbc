"""boto3 client construction and AWS call accounting.

Every adapter takes an injected client; ``client(service)`` builds the default one from
settings (a moto endpoint in the embedded stack, the real regional endpoint on AWS).
``CallCounter`` hooks botocore's event system so tests and benchmarks count real wire calls.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
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
_SERVICE_CONFIG = {"sesv2": SES_CONFIG, "ses": SES_CONFIG}


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


class CallCounter:
    """Counts AWS operations made by the clients it is attached to, e.g. ``dynamodb.UpdateItem``.

    Also counts DynamoDB items written, since a BatchWriteItem of 25 items costs 25 writes.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.items_written = 0
        # DynamoDB capacity as AWS would bill it, estimated from the bytes on the wire: a read
        # unit per 4 KB returned (half for an eventually consistent read), a write unit per 1 KB
        # written (twice inside a transaction). moto reports no real consumed capacity.
        self.read_units = 0.0
        self.write_units = 0.0
        self.transaction_surcharge = 0.0  # the extra units transactions cost over plain writes
        self.by_component: dict[str, set[str]] = {}
        self.component_calls: Counter[tuple[str, str]] = Counter()  # (component, "service.Operation"): calls
        self.component_write_units: Counter[str] = Counter()
        self._lock = threading.Lock()

    def attach(self, boto_client: Any) -> Any:
        boto_client.meta.events.register("before-call.*.*", self._on_call)
        boto_client.meta.events.register("after-call.dynamodb.*", self._on_result)
        return boto_client

    def _on_result(self, http_response: Any = None, parsed: Any = None, model: Any = None, **_: Any) -> None:
        if model is None or model.name not in ("GetItem", "Query", "BatchGetItem", "Scan"):
            return
        raw = getattr(http_response, "content", b"") or b""
        body = json.loads(raw or b"{}")
        if model.name == "GetItem":
            sizes = [len(json.dumps(body["Item"]))] if "Item" in body else [0]
        elif model.name == "BatchGetItem":
            sizes = [len(json.dumps(i)) for items in (body.get("Responses") or {}).values() for i in items]
        else:  # a query is billed on the items it read together, in 4 KB steps
            sizes = [sum(len(json.dumps(i)) for i in body.get("Items", []))]
        units = sum(max(1, -(-size // 4096)) for size in sizes)
        with self._lock:
            self.read_units += units

    def _on_call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        """``before-call`` fires for wire calls only (not for presigning); ``params`` is the
        serialized request, so item counts come from its JSON body (DynamoDB's protocol)."""
        name = f"{model.service_model.service_name}.{model.name}"
        written, units, surcharge = 0, 0.0, 0.0
        if model.name in ("PutItem", "UpdateItem", "DeleteItem"):
            written, units = 1, 1.0
            if model.name == "PutItem":
                body = json.loads(params.get("body") or b"{}")
                units = max(1, -(-len(json.dumps(body.get("Item", {}))) // 1024))
        elif model.name in ("BatchWriteItem", "TransactWriteItems"):
            body = json.loads(params.get("body") or b"{}")
            if model.name == "BatchWriteItem":
                reqs = [r for v in body.get("RequestItems", {}).values() for r in v]
                written = len(reqs)
                units = sum(max(1, -(-len(json.dumps(r)) // 1024)) for r in reqs)
            else:
                written = sum(1 for i in body.get("TransactItems", []) if "ConditionCheck" not in i)
                units = 2.0 * len(body.get("TransactItems", []))
                surcharge = units - written  # what a replica does not pay again
        with self._lock:
            self.calls[name] += 1
            self.items_written += written
            self.write_units += units
            self.transaction_surcharge += surcharge
            self.by_component.setdefault(component.get(), set()).add(name)
            self.component_calls[(component.get(), name)] += 1
            self.component_write_units[component.get()] += units

    def total(self, prefix: str = "") -> int:
        return sum(v for k, v in self.calls.items() if k.startswith(prefix))

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.component_calls.clear()
            self.component_write_units.clear()
            self.items_written = 0
            self.read_units = self.write_units = self.transaction_surcharge = 0.0
