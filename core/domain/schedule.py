"""Per-recipient send times: the recipients CSV's optional ``send_at`` column.

A row's ``send_at`` (ISO 8601 with a UTC offset, e.g. ``2026-12-03T09:00:00+01:00``) releases that
recipient at its own time, so "9:00 in each recipient's time zone" is one campaign. The value must
fall in the campaign's window: from its ``schedule.send_at`` (or its submission) to its
``schedule.send_until`` (default ``DEFAULT_WINDOW`` after the start). Ingest groups rows by the
minute they are due at (``send_minute``) into batches of their own, each due at that minute in
the ``due`` index: the controller's work follows what becomes due, never the message count.

The column is consumed, not rendered: it is no template variable (a template or subject using
``send_at`` is refused at submit). Listed in ``metadata_columns`` its raw value is also kept as the
message's metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

SEND_AT_COLUMN = "send_at"
DEFAULT_WINDOW = timedelta(hours=48)  # covers 09:00 in every time zone (UTC-12 .. UTC+14) of a day
MAX_VALUE_CHARS = 64


def window(start: datetime, send_until: datetime | None) -> tuple[datetime, datetime]:
    """The campaign's window for per-recipient send times: [start, send_until or start + DEFAULT_WINDOW]."""
    return start, send_until or start + DEFAULT_WINDOW


def send_minute(at: datetime) -> datetime:
    """The batch a recipient due at ``at`` goes in: the first minute boundary at or after ``at``, so
    nobody is mailed before their time (and at most 59 s after it, plus the controller's pass).
    Rounded in UTC: an offset with seconds (``+05:30:30``) would put a local minute off the UTC one."""
    utc = at.astimezone(UTC)
    start = utc.replace(second=0, microsecond=0)
    return start if start == utc else start + timedelta(minutes=1)


def recipient_send_at(cell: str, start: datetime, end: datetime) -> tuple[datetime | None, str | None]:
    """A row's send time from its ``send_at`` cell, checked against the window [start, end].

    Returns (time, None); (None, None) for an empty cell (the row goes at the campaign's own time);
    or (None, reason) for a value that is not ISO 8601 with an offset or lies outside the window
    (the row is refused with that reason, ``send_at_invalid`` or ``send_at_outside_window``).
    """
    text = cell.strip()
    if not text:
        return None, None
    shown = text[:MAX_VALUE_CHARS]
    try:
        at = datetime.fromisoformat(text.replace("z", "Z")) if len(text) <= MAX_VALUE_CHARS else None
    except ValueError:
        at = None
    if at is None:
        return None, f"send_at_invalid: {shown!r} is not an ISO 8601 date and time (e.g. 2026-12-03T09:00:00+01:00)"
    if at.tzinfo is None or at.utcoffset() is None:
        return None, f"send_at_invalid: {shown!r} has no UTC offset (write e.g. +01:00 or Z)"
    if at < start or at > end:
        return None, (f"send_at_outside_window: {shown!r} is outside the campaign's window "
                      f"{start.isoformat()} .. {end.isoformat()}")
    return at, None
