"""CSV ingestion: ACCEPT → PROCESSING → SCHEDULED | READY_TO_SEND (or FAILED with a reason).

Streams the file (constant memory: one batch of rows at a time; duplicate and suppression
state, and the rows waiting for their send minute's batch to fill, spill to a temporary SQLite
file, not Python sets and lists). Batches are numbered in the order they fill and message ids
derive from them, so every write is an idempotent put. After each batch the transaction's
checkpoint advances with a conditional write; a restart re-reads the file, rebuilds the
duplicate state without writing, and resumes at the checkpoint: no message is written twice and
none is lost. That needs every row decided as before: before a batch is written, the rejections
so far and a watermark (the last line decided) are, and a resumed attempt takes the answers that
depend on changing data (suppressions, attachments) from them for every row up to the watermark.
A cancel during ingest makes the checkpoint write lose and ingestion stops.

Errors are classified: a row too large for a message item is refused with a reason; a CSV the
platform may not read or that is gone (AccessDenied, NoSuchKey) and a write DynamoDB refuses as
invalid (an item over 400 KB) fail the campaign with the reason; anything else (throttling, 5xx,
a dropped connection) propagates, and the next pass resumes from the checkpoint.
"""

from __future__ import annotations

import codecs
import contextvars
import csv
import io
import itertools
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from email_validator import EmailNotValidError, validate_email

from config.settings import Settings
from core.domain import schedule
from core.domain.compliance import PLATFORM_VARIABLES
from core.domain.errors import NotFound, StaleWrite
from core.domain.models import Batch, Message, Rejection, Transaction, batch_id_for, message_id_for
from core.domain.statuses import MessageStatus, after_ingest
from core.domain.statuses import TransactionStatus as T
from core.observability import ROWS_INGESTED, ROWS_REFUSED, log
from core.services import privacy
from core.services.attachments import usable
from core.services.campaigns import change_status, move_batches_on, rest_as_draft
from core.services.ports import (
    BatchMessages,
    BlobStore,
    CampaignBatches,
    CampaignStore,
    Clock,
    MessageRepository,
    TemplateRepository,
    TransactionRepository,
    UploadRepository,
)
from core.services.rendering import template_variables

csv.field_size_limit(1024 * 1024)


class IngestFailed(Exception):
    """The file as a whole cannot be used; the campaign fails with this reason. ``refused``: the
    rows refused (their rejections written) when the whole file was read, so the failed
    campaign's summary agrees with ``/rejections``."""

    def __init__(self, reason: str, refused: int | None = None):
        super().__init__(reason)
        self.refused = refused


class _SpillSet:
    """A set of strings on disk: memory stays flat whatever the CSV size."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="ingest-", suffix=".sqlite")
        os.close(fd)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-8000;"
                              "CREATE TABLE seen(e TEXT PRIMARY KEY) WITHOUT ROWID;"
                              "CREATE TABLE suppressed(e TEXT PRIMARY KEY) WITHOUT ROWID;"
                              "CREATE TABLE hashed(h TEXT PRIMARY KEY) WITHOUT ROWID;"
                              "CREATE TABLE earlier(line INTEGER PRIMARY KEY, reason TEXT, with_email INTEGER);"
                              "CREATE TABLE waiting(minute TEXT, seq INTEGER, row TEXT, PRIMARY KEY(minute, seq));"
                              "BEGIN;")
        self.hasher: Callable[[str], str] | None = None  # erased addresses are suppressed by a keyed hash (core.domain.privacy)

    def load_suppressed(self, emails: Iterator[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO suppressed VALUES (?)", ((e.lower(),) for e in emails))

    def load_hashed(self, hashes: Iterator[str], hasher: Callable[[str], str]) -> None:
        self.hasher = hasher
        self.db.executemany("INSERT OR IGNORE INTO hashed VALUES (?)", ((h,) for h in hashes))

    def erased(self, key: str) -> bool:
        return self.hasher is not None and self.db.execute(
            "SELECT 1 FROM hashed WHERE h = ?", (self.hasher(key),)).fetchone() is not None

    def add(self, key: str) -> bool:
        return self.db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (key,)).rowcount == 1

    def remove(self, key: str) -> None:
        self.db.execute("DELETE FROM seen WHERE e = ?", (key,))

    def suppressed(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM suppressed WHERE e = ?", (key,)).fetchone() is not None

    def load_earlier(self, rejections: Iterator[Rejection]) -> None:
        """The rejections an earlier attempt wrote: its decisions, replayed (``earlier``)."""
        self.db.executemany("INSERT OR REPLACE INTO earlier VALUES (?, ?, ?)",
                            ((r.line, r.reason, int(bool(r.email))) for r in rejections))

    def earlier(self, line: int) -> tuple[str, bool] | None:
        """(reason, written with the address) of the row an earlier attempt refused; None: accepted."""
        row = self.db.execute("SELECT reason, with_email FROM earlier WHERE line = ?", (line,)).fetchone()
        return (row[0], bool(row[1])) if row else None

    def hold(self, minute: datetime | None, seq: int, row: Any) -> None:
        """A row waiting, on disk, for its send minute's batch to fill."""
        self.db.execute("INSERT INTO waiting VALUES (?, ?, ?)", (_minute_key(minute), seq, json.dumps(row)))

    def take(self, minute: datetime | None) -> list[Any]:
        """The rows waiting for ``minute``, in file order; they leave the file."""
        key = _minute_key(minute)
        rows = [tuple(json.loads(r)) for (r,) in self.db.execute(
            "SELECT row FROM waiting WHERE minute = ? ORDER BY seq", (key,))]
        self.db.execute("DELETE FROM waiting WHERE minute = ?", (key,))
        return rows

    def close(self) -> None:
        self.db.close()
        os.unlink(self.path)


def _minute_key(minute: datetime | None) -> str:
    return minute.isoformat() if minute is not None else ""


@dataclass
class _Progress:
    accepted: int = 0
    refused: int = 0
    batches: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


MAX_LINE_BYTES = 1024 * 1024
_MISSING: Any = object()
# A message item holds the row's values and, later, its events: DynamoDB items are at most 400 KB.
MAX_ROW_DATA_BYTES = 300 * 1024
# S3 answers about the object itself or our access to it: no retry will change them.
S3_PERMANENT = {"AccessDenied": "the platform is not allowed to read it (AccessDenied)",
                "AllAccessDisabled": "access to it is disabled (AllAccessDisabled)",
                "NoSuchKey": "it no longer exists (NoSuchKey)", "404": "it no longer exists",
                "NoSuchBucket": "its bucket does not exist (NoSuchBucket)",
                "InvalidObjectState": "it is archived (InvalidObjectState)",
                "KMS.DisabledException": "its KMS key is disabled", "KMS.NotFoundException": "its KMS key is gone",
                "KMS.AccessDeniedException": "the platform may not use its KMS key"}


def _row_bytes(email: str, data: dict[str, str]) -> int:
    return len(email.encode()) + sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


def _permanent_write_error(exc: ClientError) -> str | None:
    """The reason a DynamoDB write can never succeed (a ValidationException, e.g. an item over
    400 KB), or None for an error a retry may cure."""
    err = exc.response.get("Error", {})
    reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
    if err.get("Code") != "ValidationException" and "ValidationError" not in reasons:
        return None
    message = err.get("Message", "")
    if "size" in message.lower():
        return f"a row makes a message larger than DynamoDB's 400 KB item limit ({message})"
    return f"DynamoDB refused the campaign's data as invalid: {message[:300]}"


def _lines(raw: Any) -> Iterator[str]:
    """Decode the file line by line, so a bad byte is reported on its own line (a text wrapper
    decodes 256 KB ahead and would name a line before it)."""
    n = 0
    while True:
        chunk = raw.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        n += 1
        if len(chunk) > MAX_LINE_BYTES:
            raise IngestFailed(f"line {n} is longer than {MAX_LINE_BYTES} bytes")
        if n == 1 and chunk.startswith(codecs.BOM_UTF8):
            chunk = chunk[len(codecs.BOM_UTF8):]
        try:
            yield chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IngestFailed(f"line {n} is not UTF-8 text (byte {exc.start + 1} of the line): "
                               "save the file as UTF-8") from None


def _delimiter(first_line: str) -> str:
    """Comma, or the semicolon/tab that spreadsheets in many locales write, judged by the header."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] and counts[best] > counts[","] else ","


def _rows(raw: Any) -> Iterator[tuple[int, list[str]]]:
    lines = _lines(raw)
    first = next(lines, None)
    if first is None:
        return
    reader = csv.reader(itertools.chain([first], lines), delimiter=_delimiter(first), strict=False)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise IngestFailed(f"not a valid CSV file (line {reader.line_num}: {exc})") from None


def _header(row: list[str], needed: set[str]) -> list[str]:
    names = [h.strip() for h in row]
    lowered = [n.lower() for n in names]
    if "email" not in lowered:
        raise IngestFailed("missing column 'email' in the header row")
    dupes = sorted({n for n in lowered if lowered.count(n) > 1 and n})
    if dupes:
        raise IngestFailed(f"duplicate column names in the header: {dupes}")
    if any(not n for n in names):
        raise IngestFailed("the header has an empty column name")
    missing = sorted(needed - set(names) - {"email"})
    if missing:  # every message would fail to render: refuse the file before anything is sent
        raise IngestFailed(f"the CSV has no column for {missing}, which the template uses "
                           f"(columns: {names})")
    return names


class Abandoned(Exception):
    """Shutdown asked us to stop; the checkpoint makes the next run resume where we left."""


def ingest_transaction(tx: Transaction, *, store: CampaignStore, blobs: BlobStore, settings: Settings, clock: Clock,
                       should_stop: Callable[[], bool] = lambda: False) -> Transaction:
    """Drive one transaction through ingestion. Safe to call again after any crash."""
    if tx.status == T.ACCEPT:
        tx = change_status(store, clock, tx, T.PROCESSING)
    if tx.status != T.PROCESSING:
        return tx
    try:
        if not tx.ingest_done and not store.get_transaction(tx.transaction_id).ingest_done:
            tx = _ingest_file(tx, store=store, blobs=blobs, settings=settings, clock=clock, should_stop=should_stop)
            if tx.status != T.PROCESSING:
                return tx
    except ClientError as exc:
        reason = _permanent_write_error(exc)
        if reason is None:
            raise  # temporary (throttling, 5xx): the next pass resumes from the checkpoint
        return _fail(store, clock, tx, reason)
    except IngestFailed as exc:
        return _fail(store, clock, tx, str(exc), {} if exc.refused is None else {"refused_rows": exc.refused})
    return finalize(store.get_transaction(tx.transaction_id), store=store, clock=clock)


def _fail(store: TransactionRepository, clock: Clock, tx: Transaction, reason: str,
          fields: dict[str, Any] | None = None) -> Transaction:
    log.warning("ingest failed", transaction_id=tx.transaction_id, reason=reason)
    tx = store.get_transaction(tx.transaction_id)
    if tx.status == T.PROCESSING:
        tx = change_status(store, clock, tx, T.FAILED, {"failure_reason": reason, **(fields or {})})
    return tx


def _ingest_file(tx: Transaction, *, store: CampaignStore, blobs: BlobStore, settings: Settings, clock: Clock,
                 should_stop: Callable[[], bool]) -> Transaction:
    bucket = settings.bucket("uploads")
    try:
        text = blobs.open_bytes(bucket, tx.csv_s3_key)
    except NotFound:
        raise IngestFailed("the recipients CSV no longer exists") from None
    except ClientError as exc:
        why = S3_PERMANENT.get(exc.response.get("Error", {}).get("Code", ""))
        if why is None:
            raise  # throttling (SlowDown), 5xx: temporary
        raise IngestFailed(f"the recipients CSV cannot be read: {why}") from None
    needed = _template_columns(store, tx)
    resume_at = tx.ingest_checkpoint  # batches already written by an earlier attempt
    resume_line = tx.ingest_line  # written with ingest_checkpoint, so as fresh as resume_at
    seen = _SpillSet()
    seen.load_suppressed(store.suppressed_emails(tx.tenant_id))
    if getattr(store, "address_hasher", None) is not None:
        seen.load_hashed(store.suppression_hashes(tx.tenant_id), lambda e: store.address_hasher(tx.tenant_id, e))
    # retention: message and rejection items expire (TTL) and batch files are tagged for lifecycle
    keep = privacy.store_retention(store, tx.tenant_id)
    rejection_ttl = privacy.expiration(keep["rejections"], clock.now())
    # A resumed attempt must make the decisions the earlier one made for every row it decided
    # (batch contents and message ids follow from them): rows up to the watermark take their
    # suppression and attachment answers from the rejections written then, whatever the
    # suppression list or the attachments became since (the sender checks suppressions again
    # right before each send). Rows past it were never written into a batch: decided afresh.
    decided_upto = max(resume_line, store.ingest_watermark(tx.transaction_id))
    if decided_upto:
        seen.load_earlier(_rejections(store, tx.transaction_id))
    batch_tags = privacy.retention_tags(keep["batches"])
    # per-recipient send times (the optional send_at column) must fall in the campaign's window
    window_start, window_end = schedule.window(tx.send_at or tx.created_at, tx.send_until)
    window_start -= timedelta(seconds=settings.schedule_grace_seconds)  # as for the campaign's own send_at
    progress = _Progress()
    rejections: list[Rejection] = []
    # Rows waiting for their batch, per send minute (None: the campaign's own time); each minute fills
    # batches of its own, so every batch is due at one time and only the last batch of each minute
    # is short, however the file interleaves minutes. The rows wait on disk (the spill file), only
    # their count per minute in memory. Row = (email, placeholder data, metadata, the recipient's
    # own attachment ids).
    waiting: dict[datetime | None, int] = {}
    held = 0
    send_ix: int | None = None
    header: list[str] | None = None
    meta_columns = set(tx.metadata_columns)  # kept on the message, never rendered
    own_files = _RowAttachments(store, settings, tx)
    not_rendered = meta_columns | ({tx.attachment_column} if tx.attachment_column else set())
    email_ix = 0
    line = 0

    def refuse(line_no: int, reason: str, email: str | None = None) -> None:
        reason, email = reason[:1000], email[:320] if email else email  # a rejection is a small item too
        progress.refused += 1
        key = reason.split(":")[0]
        progress.reasons[key] = progress.reasons.get(key, 0) + 1
        ROWS_REFUSED.labels(key).inc()
        if line_no > resume_line:
            rejections.append(Rejection(line=line_no, reason=reason, email=email))
            if len(rejections) >= 500:
                store.put_rejections(tx.transaction_id, rejections, rejection_ttl)
                rejections.clear()

    # Writes run on one background thread, one batch behind the parser: CPU (parsing, address
    # validation) overlaps the network writes while memory stays at two batches and checkpoints
    # stay in file order. A write error surfaces at the next flush or at the end.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
    in_flight: list[Future] = []

    def wait_writes() -> None:
        nonlocal tx
        while in_flight:
            tx = in_flight.pop(0).result()

    def write(snapshot: Transaction, index: int, rows: list, rejected: list, last_line: int, accepted: int,
              refused: int, minute: datetime | None) -> Transaction:
        if rejected:
            store.put_rejections(snapshot.transaction_id, rejected, rejection_ttl)
        # every row up to here is decided and its rejection written: a resumed attempt replays them
        store.set_ingest_watermark(snapshot.transaction_id, last_line, rejection_ttl)
        send_at = minute or snapshot.send_at
        now = clock.now()
        status = MessageStatus.SCHEDULED if send_at and send_at > now else MessageStatus.READY_TO_SEND
        _write_batch(snapshot, batch_id_for(snapshot.transaction_id, index), index, rows, status,
                     store=store, blobs=blobs, settings=settings, send_at=send_at,
                     expiration=privacy.expiration(keep["messages"], max(now, send_at) if send_at else now),
                     tags=batch_tags)
        try:
            new = store.update_transaction(snapshot, {"ingest_checkpoint": index, "ingest_line": last_line,
                                                      "total_messages": accepted, "refused_rows": refused})
        except StaleWrite:
            new = store.get_transaction(snapshot.transaction_id)
        ROWS_INGESTED.inc(len(rows))
        if index % 20 == 0:
            log.info("ingest progress", transaction_id=snapshot.transaction_id, batches=index,
                     rows_accepted=accepted, rows_refused=refused)
        return new

    def flush(last_line: int, minute: datetime | None) -> None:
        index = progress.batches + 1
        progress.batches = index
        del waiting[minute]
        rows = seen.take(minute)
        if index <= resume_at:
            return
        wait_writes()
        if tx.status != T.PROCESSING:
            return  # cancelled meanwhile: write nothing more
        rejected = list(rejections)
        rejections.clear()
        # copy_context: the writer thread keeps this thread's context (component attribution)
        in_flight.append(writer.submit(contextvars.copy_context().run, write, tx, index, rows, rejected,
                                       last_line, progress.accepted, progress.refused, minute))

    try:
        for line, row in _rows(text):
            if header is None:
                if not row or not any(c.strip() for c in row):
                    continue
                header = _header(row, needed)
                email_ix = [h.lower() for h in header].index("email")
                if meta_columns - set(header):
                    raise IngestFailed(f"the CSV has no column for the metadata columns "
                                       f"{sorted(meta_columns - set(header))} (columns: {header})")
                if tx.attachment_column and tx.attachment_column not in header:
                    raise IngestFailed(f"the CSV has no column {tx.attachment_column!r}, the campaign's "
                                       f"attachment_column (columns: {header})")
                lowered = [h.lower() for h in header]
                send_ix = lowered.index(schedule.SEND_AT_COLUMN) if schedule.SEND_AT_COLUMN in lowered else None
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) < len(header):
                refuse(line, f"missing_fields: row has {len(row)} fields, the header has {len(header)}")
                continue
            if len(row) > len(header) and any(c.strip() for c in row[len(header):]):
                refuse(line, f"extra_fields: row has {len(row)} fields, the header has {len(header)}")
                continue
            raw_email = row[email_ix].strip()
            try:
                # SES needs an ASCII local part; an IDN domain goes out as punycode
                checked = validate_email(raw_email, check_deliverability=False, allow_smtputf8=False)
                email = checked.ascii_email or checked.normalized
            except EmailNotValidError as exc:
                refuse(line, f"invalid_email: {exc}", raw_email or None)
                continue
            key = email.lower()
            if not seen.add(key):
                refuse(line, "duplicate: address already appears earlier in the file", email)
                continue
            replay = line <= decided_upto  # an earlier attempt decided this row
            earlier = seen.earlier(line) if replay else None  # its rejection (None: it accepted the row)
            if not replay:
                suppressed = seen.suppressed(key)
                erased = not suppressed and seen.erased(key)
            else:  # the same answer, whatever changed since
                reason, with_email = earlier or ("", False)
                suppressed = reason.startswith("suppressed") and with_email
                erased = reason.startswith("suppressed") and not with_email
            if suppressed:
                refuse(line, "suppressed: address is on the tenant's suppression list", email)
                continue
            if erased:  # an erased person: refused without writing the address down again
                refuse(line, "suppressed: address is on the tenant's suppression list")
                continue
            minute: datetime | None = None
            if send_ix is not None:  # consumed, never rendered (kept as metadata only when declared one)
                at, why = schedule.recipient_send_at(row[send_ix], window_start, window_end)
                if why:
                    seen.remove(key)
                    refuse(line, why, email)
                    continue
                minute = schedule.send_minute(at) if at else None
                if minute is not None and tx.send_at is not None and minute < tx.send_at:
                    minute = tx.send_at  # within the grace before the campaign's time: never before it
            data = {h: row[i] for i, h in enumerate(header)
                    if i != email_ix and i != send_ix and h not in not_rendered}
            metadata = {h: row[i] for i, h in enumerate(header) if h in meta_columns}
            size = _row_bytes(email, {**data, **metadata})
            if size > MAX_ROW_DATA_BYTES:
                seen.remove(key)  # the address was not used: a later, smaller row for it may be
                refuse(line, f"too_large: the row's values are {size // 1024} KB; a recipient's data may be at "
                             f"most {MAX_ROW_DATA_BYTES // 1024} KB (DynamoDB items are at most 400 KB)", email)
                continue
            cell = row[header.index(tx.attachment_column)] if tx.attachment_column else ""
            if not replay:
                own, why = own_files.of(cell)
            else:
                why = earlier[0] if earlier is not None and earlier[0].startswith("attachment_") else None
                own = [] if why or not cell.strip() else [cell.strip()]
            if why:
                seen.remove(key)
                refuse(line, why, email)
                continue
            held += 1
            seen.hold(minute, held, (email, data, metadata, own))
            waiting[minute] = waiting.get(minute, 0) + 1
            progress.accepted += 1
            if waiting[minute] >= settings.batch_size:
                flush(line, minute)
                if should_stop():
                    raise Abandoned(f"stopped after batch {progress.batches}")
                if tx.status != T.PROCESSING:
                    log.info("ingest stopped: campaign left PROCESSING", transaction_id=tx.transaction_id,
                             status=tx.status.value)
                    return tx
        if header is None:
            raise IngestFailed("the file is empty: no header row")
        for minute in sorted(waiting, key=lambda m: (m is not None, m or datetime.min.replace(tzinfo=UTC))):
            flush(line, minute)  # the partial batches, in a fixed order (a resumed run numbers them alike)
        wait_writes()
        if rejections:
            store.put_rejections(tx.transaction_id, rejections, rejection_ttl)
            rejections.clear()
    finally:
        writer.shutdown(wait=True)
        seen.close()
        text.close()
    if progress.accepted == 0:
        raise IngestFailed(f"no valid recipient in the file ({progress.refused} rows refused)", refused=progress.refused)
    tx = store.get_transaction(tx.transaction_id)
    if tx.status != T.PROCESSING:
        return tx
    try:  # the upload itself now follows the tenant's upload retention (lifecycle rule by tag)
        blobs.tag(settings.bucket("uploads"), tx.csv_s3_key, privacy.retention_tags(keep["uploads"]))
    except Exception as exc:  # the bucket-wide expiry still applies; never fail a campaign for a tag
        log.warning("upload retention tag not set", transaction_id=tx.transaction_id, error=str(exc)[:200])
    tx = store.update_transaction(tx, {"ingest_done": True, "total_messages": progress.accepted,
                                       "refused_rows": progress.refused, "batch_count": progress.batches,
                                       "ingest_checkpoint": progress.batches})
    log.info("ingest complete", transaction_id=tx.transaction_id, batches=progress.batches,
             rows_accepted=progress.accepted, rows_refused=progress.refused, reasons=progress.reasons)
    return tx


def _rejections(store: MessageRepository, tx_id: str) -> Iterator[Rejection]:
    cursor = None
    while True:
        page, cursor = store.rejections_page(tx_id, 500, cursor)
        yield from page
        if not cursor:
            return


class _RowAttachments:
    """A row's own attachment (the campaign's ``attachment_column`` names an attachment id): it
    must be the tenant's, confirmed, and fit in one message beside the campaign's attachments.
    Each id is looked up once per ingest."""

    def __init__(self, store: UploadRepository, settings: Settings, tx: Transaction):
        self.store, self.tx = store, tx
        self.room = settings.max_message_attachment_bytes
        self.limit = settings.max_message_attachment_bytes
        if tx.attachment_column:
            for att_id in tx.attachments:  # checked at submit; their size is taken from every row's room
                att = usable(store, tx.tenant_id, att_id)
                self.room -= (att.size_bytes or 0) if att else 0
        self._known: dict[str, Any] = {}

    def of(self, cell: str) -> tuple[list[str], str | None]:
        """(the row's attachment ids, None) or ([], the reason the row is refused)."""
        att_id = cell.strip()
        if not att_id:
            return [], None
        if att_id not in self._known:
            self._known[att_id] = usable(self.store, self.tx.tenant_id, att_id) if len(att_id) <= 100 else None
        att = self._known[att_id]
        if att is None:
            return [], (f"attachment_missing: the row names attachment {att_id[:100]!r}, which is not an uploaded "
                        f"and confirmed attachment of this tenant")
        if (att.size_bytes or 0) > self.room:
            return [], (f"attachment_too_large: attachment {att_id} ({att.size_bytes} bytes) and the campaign's "
                        f"attachments exceed {self.limit} bytes per message")
        return [att_id], None


def _template_columns(store: TemplateRepository, tx: Transaction) -> set[str]:
    """The placeholders the campaign's template and subject use: the CSV must have a column each."""
    tv = store.get_template_version(tx.template_id, tx.template_version)
    needed = set(tv.variables)
    if tx.subject:
        needed |= set(template_variables(tx.subject))
    return needed - set(PLATFORM_VARIABLES)  # unsubscribe_url, postal_address: the platform provides them


def _write_batch(tx: Transaction, batch_id: str, index: int, rows: list[tuple[str, dict[str, str], dict[str, str], list[str]]],
                 status: MessageStatus, *, store: BatchMessages, blobs: BlobStore, settings: Settings,
                 expiration: int | None = None,
                 tags: dict[str, str] | None = None, send_at: Any = _MISSING) -> None:
    """Batch file, then messages, then the batch item: a batch item exists only when complete."""
    out = io.StringIO()
    columns = sorted({k for _, d, *_ in rows for k in d})
    w = csv.writer(out)
    w.writerow(["message_id", "email", *columns])
    messages = []
    for i, (email, data, metadata, own) in enumerate(rows, start=1):
        mid = message_id_for(batch_id, i)
        w.writerow([mid, email, *(data.get(c, "") for c in columns)])
        messages.append(Message(message_id=mid, batch_id=batch_id, transaction_id=tx.transaction_id,
                                tenant_id=tx.tenant_id, recipient_email=email, placeholder_data=data,
                                metadata=metadata, attachments=own, status=status))
    key = f"{tx.tenant_id}/{tx.transaction_id}/{batch_id}.csv"
    blobs.put(settings.bucket("batches"), key, out.getvalue().encode(), tags=tags)
    store.put_messages(messages, expiration)
    store.put_batch(Batch(batch_id=batch_id, transaction_id=tx.transaction_id, tenant_id=tx.tenant_id,
                          index=index, message_count=len(rows),
                          send_at=tx.send_at if send_at is _MISSING else send_at,  # the batch's own time
                          s3_file_path=f"s3://{settings.bucket('batches')}/{key}"))


def finalize(tx: Transaction, *, store: CampaignBatches, clock: Clock) -> Transaction:
    """Move written batches on (SCHEDULED with a due time, or READY) and then the transaction; a
    draft rests in DRAFT with its batches unreleased (``core.services.campaigns.release_campaign``)."""
    if tx.status != T.PROCESSING:
        return tx
    if after_ingest(tx.draft, tx.send_at, clock.now()) == T.DRAFT:
        return rest_as_draft(store, clock, tx)
    # each batch at its own time: SCHEDULED while one is ahead (per-recipient send_at), READY otherwise
    return change_status(store, clock, tx, move_batches_on(store, tx, clock.now()))
