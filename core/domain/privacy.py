"""Pure privacy rules: the keyed hash an erased address is suppressed by, the forms of an
address to look for, and how a CSV loses a person's rows without moving anyone else's lines."""

from __future__ import annotations

import csv
import hashlib
import hmac
from dataclasses import dataclass

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
    for _row in reader:
        span = lines[consumed:reader.line_num]
        consumed = reader.line_num
        chunk = "".join(span)
        if not first and any(f in chunk.lower() for f in forms):
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
