"""Per-process dependencies for the Lambda entrypoints, built once (cold start) and overridable."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from core.bootstrap import Deps, bootstrap

T = TypeVar("T")
_deps: Deps | None = None
# Several embedded regions in one process: each stack's threads run with their own dependencies.
_scoped: ContextVar[Deps | None] = ContextVar("deps", default=None)


def deps() -> Deps:
    global _deps
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    if _deps is None:
        _deps = bootstrap()
    return _deps


@contextmanager
def scoped(d: Deps) -> Iterator[None]:
    """Run the handlers on this thread with ``d`` (the embedded stack's per-region threads)."""
    token = _scoped.set(d)
    try:
        yield
    finally:
        _scoped.reset(token)


def use(d: Deps | None) -> None:
    """Install dependencies (the embedded stack and tests call this before invoking handlers)."""
    global _deps
    _deps = d


_memo_lock = threading.Lock()


def memo(name: str, build: Callable[[Deps], T]) -> T:
    """One ``build(deps)`` per dependency set and name, built on first use (thread-safe)."""
    d = deps()
    with _memo_lock:
        if name not in d.memo:
            d.memo[name] = build(d)
        return d.memo[name]


class LocalContext:
    """The parts of a Lambda context our handlers read, for in-process invocation."""

    function_name = "local"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:local"
    aws_request_id = "local"

    def __init__(self, request_id: str = "local", millis: int = 900_000):
        self.aws_request_id = request_id
        self._millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self._millis


def context_or_local(context: Any) -> Any:
    return context if context is not None else LocalContext()


def each_sqs_record(event: dict[str, Any], context: Any, handle: Callable[[SQSRecord], str]
                    ) -> PartialItemFailureResponse:
    """Run ``handle`` on every record of an SQS event and report the failed ones (partial batch
    response: only those are retried). A processor per invocation: the embedded stack runs several
    workers as threads of one process, and a shared one would mix their records."""
    return process_partial_response(event=event, record_handler=handle,
                                    processor=BatchProcessor(event_type=EventType.SQS), context=context)
