"""Identifier rules that outside systems impose on our ids.

Tenant ids travel as SES message tags (``tenant_id``), and SES refuses a whole SendEmail call
with ``BadRequestException`` when a tag value has a character outside ``[A-Za-z0-9_-]`` or is
longer than 256 characters. So a tenant id is checked where the tenant is created, and every
tag value is made safe right before it is sent (ids created before the check existed).
"""

from __future__ import annotations

import re

from core.domain.errors import InvalidInput

SES_TAG_MAX = 256
_TAG_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
_TAG_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9_-]")
TENANT_ID_MAX = 64


def check_tenant_id(tenant_id: str) -> str:
    """Return ``tenant_id`` if it is usable everywhere (SES tags, keys, URLs); else InvalidInput."""
    if not isinstance(tenant_id, str) or not tenant_id:
        raise InvalidInput("tenant id must be a non-empty string")
    if len(tenant_id) > TENANT_ID_MAX:
        raise InvalidInput(f"tenant id is longer than {TENANT_ID_MAX} characters")
    if not _TAG_SAFE.match(tenant_id):
        raise InvalidInput("tenant id may contain only letters, digits, '_' and '-'")
    return tenant_id


def ses_tag_value(value: object) -> str:
    """``value`` as an SES tag value: unsafe characters become ``_``, at most 256 characters."""
    text = _TAG_UNSAFE_CHAR.sub("_", str(value if value is not None else ""))[:SES_TAG_MAX]
    return text or "_"
