"""Small ports the services depend on; adapters in ``core.adapters`` implement them and tests
fake them. The campaign store is ``core.adapters.store.DynamoStore`` (too wide to restate)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock tests move by hand; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: datetime | None = None):
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class BlobStore(Protocol):
    def presign_post(self, bucket: str, key: str, max_bytes: int, expires: int, content_type: str) -> dict[str, Any]: ...
    def size(self, bucket: str, key: str) -> int: ...
    def read_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes: ...
    def open_text(self, bucket: str, key: str) -> Any: ...
    def open_bytes(self, bucket: str, key: str) -> Any: ...
    def put(self, bucket: str, key: str, data: bytes, content_type: str = ..., tags: dict[str, str] | None = ...
            ) -> None: ...
    def tag(self, bucket: str, key: str, tags: dict[str, str]) -> None: ...


class SendQueue(Protocol):
    def send(self, body: dict[str, Any], *, group: str | None = None, dedup_id: str | None = None) -> None: ...


class Mailer(Protocol):
    def send(self, *, sender: str, to: str, subject: str, html: str, reply_to: str | None,
             headers: dict[str, str], tags: dict[str, str], text: str | None = None,
             attachments: list[Any] | None = None) -> str: ...


class WebhookHttp(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Any: ...


class SigningSecrets(Protocol):
    def signing_secrets(self, tenant_id: str) -> list[str]: ...
