"""Pure privacy rules: the keyed hash an erased address is suppressed by, the forms of an
address to look for, and how a CSV loses a person's rows without moving anyone else's lines."""

from __future__ import annotations

import csv
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email

ERASED_ADDRESS = "erased@invalid"  # what a pseudonymised message holds instead of the address
# Event fields kept on a pseudonymised message: what happened and when, nothing about the person
EVENT_FIELDS_KEPT = ("id", "type", "at", "bounce_type", "bounce_subtype", "feedback_type", "delay_type")


@dataclass(frozen=True)
class AddressHasher:
    """HMAC-SHA256 of ``tenant \\n address`` under a key derived from a platform secret.

    Keyed, so the table alone cannot be used to test guesses of who was erased; per tenant, so
    two tenants' hashes of one address differ. Changing the secret orphans existing hashes
    (those people could be mailed again): the secret is the unsubscribe signing key, which is
    never rotated casually for the same reason."""

    key: bytes

    @classmethod
    def from_secret(cls, secret: str) -> AddressHasher:
        return cls(hmac.new(secret.encode(), b"suppression-address-hash", hashlib.sha256).digest())

    def __call__(self, tenant_id: str, address: str) -> str:
        return hmac.new(self.key, f"{tenant_id}\n{address.strip().lower()}".encode(), hashlib.sha256).hexdigest()


def address_forms(email: str) -> set[str]:
    """Lower-cased forms the address may be stored in: as given, normalised, and ASCII (punycode
    domain, which ingest stores for IDN domains). Raises ValueError for something not an address."""
    raw = email.strip().lower()
    try:
        checked = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    forms = {raw, checked.normalized.lower()}
    if checked.ascii_email:
        forms.add(checked.ascii_email.lower())
    return {f for f in forms if f}


def canonical_address(email: str) -> str:
    """The one form hashed for suppression (the ASCII form when there is one)."""
    checked = validate_email(email.strip(), check_deliverability=False)
    return (checked.ascii_email or checked.normalized).lower()


# Characters that can continue an address on either side: a match needs none of them next to
# it, so ann@example.org is not found inside joann@example.org or ann@example.org.uk. A quote
# counts as a delimiter (an apostrophe is legal in a local part, but texts quote addresses).
_ADDRESS_CHAR = r"\w.!#$%&*+/=?^`{|}~@-"


def address_pattern(forms: Iterable[str]) -> re.Pattern[str]:
    """Whole-address matcher for free text: one of ``forms`` not preceded by an address
    character and not followed by one (a sentence's full stop after it is no continuation)."""
    alts = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rf"(?<![{_ADDRESS_CHAR}])(?:{alts})(?![\w@+-]|\.[\w-])", re.IGNORECASE)


def _bytes_pattern(forms: Iterable[str]) -> re.Pattern[bytes]:
    """The same over UTF-8 bytes (any byte >= 0x80 counts as an address character)."""
    alts = b"|".join(re.escape(f.encode()) for f in sorted(forms, key=len, reverse=True))
    cls = rb"\w.!#$%&*+/=?^`{|}~@\x80-\xff-"
    return re.compile(rb"(?<![" + cls + rb"])(?:" + alts + rb")(?![\w@+\x80-\xff-]|\.[\w\x80-\xff-])",
                      re.IGNORECASE)


def text_mentions(text: str, forms: set[str]) -> bool:
    """Whether ``text`` contains one of the address ``forms`` as a whole address (exact, any case)."""
    low = text.lower()
    return any(f in low for f in forms) and address_pattern(forms).search(text) is not None


def value_mentions(value: Any, forms: set[str]) -> bool:
    """Whether any string inside ``value`` (nested dicts and lists, keys included) mentions the person."""
    if isinstance(value, str):
        return text_mentions(value, forms)
    if isinstance(value, dict):
        return any(value_mentions(k, forms) or value_mentions(v, forms) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(value_mentions(v, forms) for v in value)
    return False


def stream_mentions(chunks: Iterable[bytes], forms: set[str]) -> bool:
    """Whether a byte stream (read in chunks: constant memory) contains one of ``forms`` as a
    whole address. A cheap substring test gates the exact match on each window; a match that
    touches a window's edges is decided in the next window, which repeats the tail."""
    needles = [f.encode() for f in forms]
    pattern = _bytes_pattern(forms)
    keep = max(len(n) for n in needles) + 3  # a match, the character before it, the two after it
    window, first = b"", True
    for data in chunks:
        if not data:
            continue
        first = first and len(window) <= keep  # the window still starts at the stream's start
        window = window[-keep:] + data
        if any(n in window.lower() for n in needles) and any(
                (first or m.start() > 0) and m.end() < len(window) - 1 for m in pattern.finditer(window)):
            return True
    # the stream's end is a boundary: a match at the very end of the last window counts too
    return any((first or m.start() > 0) and m.end() >= len(window) - 1 for m in pattern.finditer(window))


def row_mentions(fields: Iterable[str], forms: set[str]) -> bool:
    """A CSV row is the person's when one of its fields is their address, or holds it as a whole
    address (a note naming them); another address that merely contains theirs is someone else."""
    return any(text_mentions(str(f), forms) for f in fields if f)


def delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] and counts[best] > counts[","] else ","


def without_rows_mentioning(data: bytes, forms: set[str]) -> tuple[bytes, int]:
    """The CSV with every row that mentions one of ``forms`` blanked out, and how many rows.

    A removed row becomes empty line(s) (ingest skips blank lines), so every other row keeps its
    line number (rejections and ingest checkpoints name lines) and its exact bytes. The header
    row is never removed."""
    text = data.decode("utf-8", errors="surrogateescape")
    lines = text.splitlines(keepends=True)
    if not lines:
        return data, 0
    reader = csv.reader(iter(lines), delimiter=delimiter(lines[0]), strict=False)
    out: list[str] = []
    removed, consumed, first = 0, 0, True
    for row in reader:
        span = lines[consumed:reader.line_num]
        consumed = reader.line_num
        chunk = "".join(span)
        if not first and row_mentions(row, forms):
            removed += 1
            out.append("".join("\r\n" if s.endswith("\r\n") else "\n" for s in span))
        else:
            out.append(chunk)
        first = False
    out.extend(lines[consumed:])
    if not removed:
        return data, 0
    return "".join(out).encode("utf-8", errors="surrogateescape"), removed


def scrub_event(event: dict) -> dict:
    """An event as kept on a pseudonymised message (diagnostics, user agents, IPs and links go)."""
    return {k: v for k, v in event.items() if k in EVENT_FIELDS_KEPT}
