"""Per-process dependencies for the Lambda entrypoints, built once (cold start) and overridable."""

from __future__ import annotations

from typing import Any

from core.bootstrap import Deps, bootstrap

_deps: Deps | None = None


def deps() -> Deps:
    global _deps
    if _deps is None:
        _deps = bootstrap()
    return _deps


def use(d: Deps | None) -> None:
    """Install dependencies (the embedded stack and tests call this before invoking handlers)."""
    global _deps
    _deps = d
    from handlers.routes.common import reset_auth_cache

    reset_auth_cache()


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
