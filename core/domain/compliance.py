"""CAN-SPAM / Spam Act footer rules: variables the platform provides to every template, and
which of them a mail must show (an unsubscribe link and the sender's postal address)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Provided by the platform at send time; a CSV column of the same name never overrides them
PLATFORM_VARIABLES = ("unsubscribe_url", "postal_address", "sender_name")
FOOTER_VARIABLES = ("unsubscribe_url", "postal_address")


def missing_footer(variables: Iterable[str]) -> list[str]:
    """The footer variables a template does not use (empty: it carries the required footer)."""
    used = set(variables)
    return [v for v in FOOTER_VARIABLES if v not in used]


def footer_variables(identity: dict[str, Any] | None, unsubscribe_url: str) -> dict[str, str]:
    identity = identity or {}
    return {"unsubscribe_url": unsubscribe_url, "postal_address": str(identity.get("postal_address") or ""),
            "sender_name": str(identity.get("sender_name") or "")}
