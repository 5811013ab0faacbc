"""``WebhookHttp`` and ``SecretStore`` in memory: a callback receiver whose answers a test
scripts (status, ``Retry-After``, a transport error), and the tenants' signing secrets with
SecretsManagerStore's rotation (current first, then the previous one)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class FakeHttpResult:
    """What ``GuardedHttpClient.post`` returns (core.adapters.webhooks.HttpResult)."""

    status: int | None
    retry_after: str | None = None
    error: str | None = None
    elapsed: float = 0.0


class FakeWebhookHttp:
    """Answers each POST with the next scripted answer for its URL path (``answer``), else 200.
    ``got`` keeps every request: (url, body, headers)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes, dict[str, str]]] = []
        self._script: dict[str, deque[FakeHttpResult]] = {}
        self._lock = threading.Lock()

    def answer(self, path: str, status: int | None, *, retry_after: str | None = None, error: str | None = None,
               times: int = 1) -> None:
        with self._lock:
            self._script.setdefault(path, deque()).extend(
                FakeHttpResult(status, retry_after, error) for _ in range(times))

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        with self._lock:
            self.got.append((url, body, dict(headers)))
            script = self._script.get(urlsplit(url).path)
            return script.popleft() if script else FakeHttpResult(200, elapsed=0.01)

    def webhook_ids(self) -> list[str]:
        return [headers["webhook-id"] for _, _, headers in self.got]


class FakeSecrets:
    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        self._secrets: dict[str, dict[str, str | None]] = {t: {"current": s, "previous": None}
                                                           for t, s in (secrets or {}).items()}
        self._lock = threading.Lock()

    def signing_secrets(self, tenant_id: str) -> list[str]:
        with self._lock:
            data = self._secrets.get(tenant_id) or {}
            return [s for s in (data.get("current"), data.get("previous")) if s]

    def set_secret(self, tenant_id: str, secret: str, keep_previous: bool = True) -> None:
        prev = self.signing_secrets(tenant_id)
        with self._lock:
            self._secrets[tenant_id] = {
                "current": secret, "previous": prev[0] if (prev and keep_previous and prev[0] != secret) else None}

    def drop_previous(self, tenant_id: str) -> None:
        cur = self.signing_secrets(tenant_id)
        if cur:
            with self._lock:
                self._secrets[tenant_id] = {"current": cur[0], "previous": None}
