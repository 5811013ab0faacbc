"""Custom mail headers a campaign may add, and the metadata columns it may declare.

A header is refused (with the header named) when it could inject another header or break the
message, or when it would override a header the platform or SES sets:

* name: RFC 5322 field name (printable US-ASCII 33-126 except ``:``), at most 126 characters
  (SES v2 ``MessageHeader.Name``);
* value: printable US-ASCII and spaces, no CR or LF (header injection), 1 to 870 characters
  (SES v2 ``MessageHeader.Value``: ``[ -~]*``, length 1-870; an empty one fails the call);
  non-ASCII would need RFC 2047 encoding, which SES does not apply to custom headers;
* not one of ``RESERVED``, nor a ``Content-*`` (MIME structure), ``Resent-*`` or SES's own
  ``X-SES-*`` header (addresses, subject, ids, dates, the unsubscribe headers, signatures);
* at most ``MAX_CUSTOM_HEADERS``: SES v2 takes at most 15 headers per message and the platform
  sets two (List-Unsubscribe, List-Unsubscribe-Post).
"""

from __future__ import annotations

import re

from core.domain.errors import InvalidInput

MAX_CUSTOM_HEADERS = 10
MAX_NAME = 126
MAX_VALUE = 870
_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_VALUE = re.compile(r"[ -~]+")  # SES's pattern: printable ASCII and space (no tab, CR, LF or other control)
RESERVED = frozenset(h.lower() for h in (
    "From", "To", "Cc", "Bcc", "Subject", "Reply-To", "Sender", "Return-Path", "Message-ID", "Date",
    "List-Unsubscribe", "List-Unsubscribe-Post", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
    "Content-Disposition", "Content-ID", "Received", "DKIM-Signature", "Feedback-ID", "Resent-From",
    "Resent-To", "Resent-Cc", "Resent-Bcc", "Resent-Sender", "Resent-Date", "Resent-Message-ID",
))
RESERVED_PREFIXES = ("x-ses-", "content-", "resent-")


def check_custom_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The campaign's custom headers if every one is allowed; InvalidInput (422) naming the first
    refused header otherwise."""
    headers = headers or {}
    if len(headers) > MAX_CUSTOM_HEADERS:
        raise InvalidInput(f"at most {MAX_CUSTOM_HEADERS} custom headers (SES takes 15 per message, the "
                           f"platform sets 2); got {len(headers)}")
    seen: set[str] = set()
    for name, value in headers.items():
        where = [{"loc": ["body", "headers", name]}]
        if not name or len(name) > MAX_NAME or not _NAME.fullmatch(name):
            raise InvalidInput(f"header name {name[:80]!r} is not a valid field name (printable ASCII without "
                               f"':' or spaces, 1-{MAX_NAME} characters)", where)
        low = name.lower()
        if low in RESERVED or low.startswith(RESERVED_PREFIXES):
            raise InvalidInput(f"header {name} is set by the platform or SES and cannot be overridden", where)
        if low in seen:
            raise InvalidInput(f"header {name} is given twice (names are case-insensitive)", where)
        seen.add(low)
        if "\r" in value or "\n" in value:
            raise InvalidInput(f"header {name} contains a line break (header injection refused)", where)
        if not value:
            raise InvalidInput(f"header {name} has an empty value (SES needs 1-{MAX_VALUE} characters)", where)
        if not _VALUE.fullmatch(value):
            raise InvalidInput(f"header {name} may contain printable ASCII characters and spaces only", where)
        if len(value) > MAX_VALUE:
            raise InvalidInput(f"header {name} is longer than {MAX_VALUE} characters", where)
    return dict(headers)


MAX_METADATA_COLUMNS = 20
_COLUMN = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


def check_metadata_columns(columns: list[str] | None, template_variables: set[str]) -> list[str]:
    """CSV columns kept as per-message metadata (never rendered). Refused: ``email``, a column the
    template or subject uses (it would not be rendered), a repeated or malformed name."""
    columns = [c.strip() for c in (columns or [])]
    if len(columns) > MAX_METADATA_COLUMNS:
        raise InvalidInput(f"at most {MAX_METADATA_COLUMNS} metadata columns; got {len(columns)}")
    for c in columns:
        where = [{"loc": ["body", "metadata_columns", c]}]
        if not _COLUMN.fullmatch(c):
            raise InvalidInput(f"metadata column {c[:80]!r} is not a valid column name", where)
        if c.lower() == "email":
            raise InvalidInput("the email column cannot be metadata", where)
        if c in template_variables:
            raise InvalidInput(f"metadata column {c} is used by the template or subject; metadata is not rendered",
                               where)
    if len({c for c in columns}) != len(columns):
        raise InvalidInput("a metadata column is named twice")
    return columns
