"""A structlog processor that keeps addresses and placeholder values out of the logs.

Every string in a log event (message, fields, nested values, exception text) has its email
addresses replaced by ``<hmac>@masked``: a keyed hash, so lines about one person can still be
correlated without the address being readable or guessable from the log. Fields that hold
recipient data by name (``placeholder_data``, ``row``, ``email``, ``recipient``, ``to`` …) are
masked whatever their content. The key comes from ``set_key`` (bootstrap derives it from the
platform secret); until then it is random per process.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
ADDRESS_FIELDS = frozenset({"email", "recipient", "recipient_email", "to", "address", "destination", "reply_to"})
DATA_FIELDS = frozenset({"placeholder_data", "row", "data", "rows", "values", "csv_row", "body"})
_key = os.urandom(32)


def set_key(key: bytes) -> None:
    global _key
    _key = key


def mask_address(address: str) -> str:
    digest = hmac.new(_key, address.strip().lower().encode(), hashlib.sha256).hexdigest()[:12]
    return f"{digest}@masked"


# an unsubscribe link's token is the address in (signed) base64: as readable as the address
UNSUBSCRIBE_TOKEN = re.compile(r"(/unsubscribe/)[A-Za-z0-9_\-=.%]+")


def mask_text(text: str) -> str:
    text = UNSUBSCRIBE_TOKEN.sub(r"\1[token]", text)
    return EMAIL.sub(lambda m: mask_address(m.group(0)), text) if "@" in text else text


def _clean(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return "[nested]"
    if isinstance(value, str):
        return mask_text(value) if ("@" in value or "/unsubscribe/" in value) else value
    if isinstance(value, dict):
        return {k: _field(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    return value


def _field(name: Any, value: Any, depth: int = 0) -> Any:
    key = str(name).lower()
    if key in DATA_FIELDS and value not in (None, "", {}, []):
        return "[redacted]"
    if key in ADDRESS_FIELDS and isinstance(value, str) and value:
        return mask_address(value) if "@" in value else "[redacted]"
    return _clean(value, depth)


def redact_personal_data(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog processor: place it after ``format_exc_info`` and before the renderer."""
    return {k: _field(k, v) for k, v in event.items()}
