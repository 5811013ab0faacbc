"""Privacy aggregates over the single table and the buckets: retention settings, erasure jobs,
hashed suppressions, audit entries, and the reads an erasure or a subject access request needs.

One repository per aggregate (``RetentionRepository``, ``ErasureRepository``, ``AuditRepository``)
plus ``SubjectFinder`` (where a person's data lives) and ``VersionedBlobs`` (every version of an
object, which an erasure must reach: the buckets are versioned). Keys come from ``core.schema``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core import schema
from core.adapters.dynamodb import DynamoTable, Page, Update, serialize
from core.adapters.repositories._base import _on
from core.domain.errors import NotFound, StaleWrite, TemporaryError
from core.domain.privacy import stream_mentions, value_mentions

# an item's keys, index entries, fencing stamp and TTL: not the aggregate's fields
_HIDDEN = {*schema.MAIN_TABLE.string_attributes, "fence", schema.TTL_ATTRIBUTE}


def _fields(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in _HIDDEN}


class RetentionRepository:
    """A tenant's retention overrides (days per kind); absent kinds take the platform default."""

    def __init__(self, table: DynamoTable):
        self.table = table

    def get(self, tenant_id: str) -> dict[str, int]:
        item = self.table.get(schema.retention_key(tenant_id), consistent=False) or {}
        return {k: int(v) for k, v in (item.get("days") or {}).items()}

    def put(self, tenant_id: str, days: dict[str, int], updated_at: str) -> None:
        self.table.put({**schema.retention_key(tenant_id), "tenant_id": tenant_id, "days": days,
                        "updated_at": updated_at, **schema.retention_listing(tenant_id)})

    def tenants(self) -> Iterator[tuple[str, dict[str, int]]]:
        """Tenants with their own settings (via the ``tenant`` index)."""
        for item in self.table.query_all(schema.RETENTION_SETTINGS, **_on(schema.TENANT_INDEX)):
            yield item["tenant_id"], {k: int(v) for k, v in (item.get("days") or {}).items()}


class IdentityRepository:
    """The tenant's sender identity for the CAN-SPAM footer (postal address, sender name)."""

    def __init__(self, table: DynamoTable):
        self.table = table

    def get(self, tenant_id: str) -> dict[str, Any] | None:
        item = self.table.get(schema.compliance_key(tenant_id), consistent=False)
        return _fields(item) if item else None

    def put(self, tenant_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.table.put({**schema.compliance_key(tenant_id), "tenant_id": tenant_id, **fields})
        return {k: v for k, v in fields.items() if v is not None}


class ErasureRepository:
    """Erasure jobs. Every change is conditional on the job's step and version (the controller
    may crash between any two writes and resume from what the item says)."""

    def __init__(self, table: DynamoTable):
        self.table = table

    def create(self, job: dict[str, Any], due_at: str) -> None:
        item = {**schema.erasure_key(job["erasure_id"]), **job, **schema.due_entry(schema.DUE_ERASURES, due_at),
                **schema.erasure_listing(job["tenant_id"], job["requested_at"], job["erasure_id"])}
        if not self.table.put_new(item):
            raise StaleWrite(f"erasure {job['erasure_id']} exists")

    def get(self, erasure_id: str, tenant_id: str | None = None) -> dict[str, Any]:
        item = self.table.get(schema.erasure_key(erasure_id))
        if not item or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise NotFound(f"erasure {erasure_id} not found")
        return _fields(item)

    def page(self, tenant_id: str, limit: int, cursor: str | None) -> Page:
        page = self.table.query(schema.tenant_erasures(tenant_id), **_on(schema.TENANT_INDEX),
                                limit=limit, cursor=cursor, forward=False)
        return Page([_fields(i) for i in page.items], page.cursor)

    def of_tenant(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        for item in self.table.query_all(schema.tenant_erasures(tenant_id), **_on(schema.TENANT_INDEX)):
            yield _fields(item)

    def due(self, now: str, limit: int = 20) -> list[str]:
        page = self.table.query(schema.DUE_ERASURES, **_on(schema.DUE_INDEX), sk_upto=now, limit=limit)
        return [i["erasure_id"] for i in page.items]

    def advance(self, job: dict[str, Any], fields: dict[str, Any], *, remove: tuple[str, ...] = (),
                clear_due: bool = False) -> dict[str, Any]:
        """Write ``fields`` if the job is still at the step and version we read; raises StaleWrite."""
        sets = {**fields, "version": int(job["version"]) + 1}
        return _fields(self.table.update(Update(
            schema.erasure_key(job["erasure_id"]), set=sets,
            remove=(*remove, *(schema.DUE_INDEX.keys if clear_due else ())),
            condition="#step = :step AND #ver = :ver", values={":step": job["step"], ":ver": int(job["version"])},
            names={"#step": "step", "#ver": "version"})))

    def note(self, erasure_id: str, kind: str, members: set[str]) -> None:
        """Add to the receipt's string set ``r_<kind>`` (idempotent: a redo after a crash adds nothing twice)."""
        if members:
            self.table.update(Update(schema.erasure_key(erasure_id), set={}, add={f"r_{kind}": set(members)},
                                     condition="attribute_exists(PK)"), returns="NONE")

    def forget(self, erasure_id: str, kind: str, members: set[str]) -> None:
        """Take members out of the receipt's string set ``r_<kind>`` (a verdict revised on evidence)."""
        if members:  # Update has no DELETE clause: the one raw call (idempotent, like ADD)
            self.table.client.update_item(
                TableName=self.table.name, Key=serialize(schema.erasure_key(erasure_id)),
                UpdateExpression="DELETE #r :m", ConditionExpression="attribute_exists(PK)",
                ExpressionAttributeNames={"#r": f"r_{kind}"}, ExpressionAttributeValues={":m": {"SS": sorted(members)}})

    def begin_count(self, erasure_id: str, kind: str, n: int) -> None:
        """Before a deletion that returns a count: record ``n`` found (``p_<kind>``), so a pass that
        dies after deleting can still add exactly what went (``n`` less what is left)."""
        self.table.update(Update(schema.erasure_key(erasure_id), set={f"p_{kind}": n},
                                 condition="attribute_not_exists(#p)", names={"#p": f"p_{kind}"}), returns="NONE")

    def settle_count(self, erasure_id: str, kind: str, pending: int | None, deleted: int) -> None:
        """Add ``deleted`` to ``n_<kind>`` and clear the pending count, once: conditional on the
        pending count we read (None: there was none), so two passes cannot both add it."""
        cond, values = ("#p = :p", {":p": pending}) if pending is not None else ("attribute_not_exists(#p)", {})
        try:
            self.table.update(Update(schema.erasure_key(erasure_id), set={}, add={f"n_{kind}": int(deleted)},
                                     remove=(f"p_{kind}",), condition=f"attribute_exists(PK) AND {cond}",
                                     values=values or None, names={"#p": f"p_{kind}"}), returns="NONE")
        except StaleWrite:
            pass  # another pass settled it

    def set_once(self, erasure_id: str, name: str, value: Any) -> None:
        try:
            self.table.update(Update(schema.erasure_key(erasure_id), set={name: value},
                                     condition="attribute_not_exists(#n)", names={"#n": name}), returns="NONE")
        except StaleWrite:
            pass

    def snooze(self, job: dict[str, Any], until: str, why: str) -> None:
        try:
            self.table.update(Update(schema.erasure_key(job["erasure_id"]), set={"due_at": until, "waiting": why},
                                     condition="#step = :step", values={":step": job["step"]},
                                     names={"#step": "step"}), returns="NONE")
        except StaleWrite:
            pass


class SuppressionHashes:
    """Suppressions kept as a keyed hash of the address (no address stored)."""

    def __init__(self, table: DynamoTable):
        self.table = table

    def put(self, tenant_id: str, digest: str, reason: str, source: str | None, at: str) -> bool:
        return self.table.put_new({**schema.suppression_hash_key(tenant_id, digest), "tenant_id": tenant_id,
                                   "address_hash": digest, "reason": reason, "source": source, "created_at": at})

    def get(self, tenant_id: str, digest: str) -> dict[str, Any] | None:
        item = self.table.get(schema.suppression_hash_key(tenant_id, digest))
        return _fields(item) if item else None

    def delete(self, tenant_id: str, digest: str) -> bool:
        return self.table.delete(schema.suppression_hash_key(tenant_id, digest), "attribute_exists(PK)")

    def all(self, tenant_id: str) -> Iterator[str]:
        for item in self.table.query_all(schema.suppression_partition(tenant_id), schema.SUPPRESSED_HASH_PREFIX,
                                         projection="address_hash"):
            yield item["address_hash"]

    def every(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        """Every suppression of the tenant, plain and hashed: reason and time only (reports)."""
        yield from self.table.query_all(schema.suppression_partition(tenant_id))


class AuditRepository:
    def __init__(self, table: DynamoTable):
        self.table = table

    def put(self, entry: dict[str, Any], expiration: int) -> None:
        self.table.put({**schema.audit_key(entry["tenant_id"], entry["at"], entry["entry_id"]), **entry,
                        schema.TTL_ATTRIBUTE: expiration})

    def page(self, tenant_id: str, limit: int, cursor: str | None) -> Page:
        page = self.table.query(schema.audit_partition(tenant_id), limit=limit, cursor=cursor, forward=False)
        return Page([_fields(i) for i in page.items], page.cursor)


class SubjectFinder:
    """Where one person's data lives in a tenant's part of the table, and the conditional writes
    that pseudonymise it. Reads every message partition of the tenant's campaigns (there is no
    index by address, on purpose: it would be one more copy of every address); retention bounds it."""

    def __init__(self, table: DynamoTable):
        self.table = table

    def campaigns(self, tenant_id: str) -> Iterator[dict[str, Any]]:
        yield from self.table.query_all(schema.tenant_campaigns(tenant_id), **_on(schema.TENANT_INDEX))

    def batch_ids(self, tx_id: str) -> list[str]:
        return [i["batch_id"] for i in self.table.query_all(schema.transaction_partition(tx_id), schema.BATCH_PREFIX,
                                                            projection="batch_id")]

    def messages(self, batch_id: str, addresses: set[str], full: bool = False) -> list[dict[str, Any]]:
        proj = None if full else "message_id, recipient_email, #status, tenant_id"
        return [_fields(i) for i in self.table.query_all(schema.batch_partition(batch_id), schema.MESSAGE_PREFIX,
                                                         projection=proj)
                if str(i.get("recipient_email", "")).lower() in addresses]

    def partition(self, batch_id: str, addresses: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The person's messages of a batch (whole items) and every send-log entry of the batch
        (the chunks that may be mailing them), in one paginated query."""
        mine, logs = [], []
        for i in self.table.query_all(schema.batch_partition(batch_id)):
            if i[schema.SK].startswith(schema.MESSAGE_PREFIX) and str(i.get("recipient_email", "")).lower() in addresses:
                mine.append(_fields(i))
            elif i[schema.SK].startswith(schema.SEND_LOG_PREFIX):
                logs.append(i)
        return mine, logs

    def message_event_batches(self, tx_id: str) -> list[dict[str, Any]]:
        """A campaign's message-event outbox items (``MSGEVENTS#``), delivered or not."""
        return list(self.table.query_all(schema.transaction_partition(tx_id), schema.MESSAGE_EVENTS_PREFIX))

    def redact_message_events(self, key: dict[str, str], payload: dict[str, Any]) -> bool:
        """Write an outbox item's payload back with the person's events redacted, if it still
        holds as many events as we read (a batch's payload is written at creation and then only
        by an erasure; the deliverer writes state and attempts). False if it is gone."""
        try:
            self.table.update(Update(key, set={"payload": payload},
                                     condition="attribute_exists(PK) AND size(payload.#ev) = :n",
                                     values={":n": len(payload.get("events") or [])}, names={"#ev": "events"}),
                              returns="NONE")
            return True
        except StaleWrite:
            return False

    def rejections(self, tx_id: str, addresses: set[str]) -> list[dict[str, Any]]:
        return [i for i in self.table.query_all(schema.transaction_partition(tx_id), schema.REJECTION_PREFIX)
                if _mentions(i, addresses)]

    def callbacks(self, tx_id: str, addresses: set[str]) -> list[dict[str, Any]]:
        return [i for i in self.table.query_all(schema.transaction_partition(tx_id), schema.CALLBACK_PREFIX)
                if _mentions(i, addresses)]

    def send_logs(self, batch_id: str, addresses: set[str]) -> list[dict[str, Any]]:
        """Send-log entries of a batch that mention the person (an SES error text may name the recipient)."""
        return [i for i in self.table.query_all(schema.batch_partition(batch_id), schema.SEND_LOG_PREFIX)
                if _mentions(i, addresses)]

    def pseudonymise_message(self, batch_id: str, message_id: str, tenant_id: str, placeholder: str,
                             scrub: Callable[[dict[str, Any]], dict[str, Any]],
                             redact: Callable[[Any], Any] | None = None, attempts: int = 5) -> bool:
        """Replace the address and placeholder data and scrub the events, keep status and counts
        (the summary outlives the detail). ``erased`` makes later SES events for it be ignored.
        ``redact`` is applied to every other field (``failure_reason`` can quote the address, as an
        SES rejection does); what it changes goes in the same write. One write on purpose: once
        the address is replaced, an erasure resumed after a crash no longer finds the message (it
        is found by ``recipient_email``), so nothing may be left for a second write.

        The events handler (or a sender) may write the item at the same time: the write is
        conditional on the events generation (``ev_gen``) and the status read with it (every
        other writer of a message changes its status), and re-read and retried when either moved,
        so nothing written in between is lost or kept unredacted. False when the message is gone
        (or another tenant's); raises TemporaryError if it kept changing."""
        key = schema.message_key(batch_id, message_id)
        replaced = {"recipient_email", "placeholder_data", "metadata", "events", "erased"}
        for _ in range(attempts):
            item = self.table.get(key)
            if not item or item.get("tenant_id") != tenant_id:
                return False
            gen, status = item.get("ev_gen"), item.get("status")
            cond = "attribute_exists(PK) AND tenant_id = :t AND " + (
                "ev_gen = :g" if gen is not None else "attribute_not_exists(ev_gen)") + " AND " + (
                "#st = :st" if status is not None else "attribute_not_exists(#st)")
            values: dict[str, Any] = {":t": tenant_id, **({":g": gen} if gen is not None else {}),
                                      **({":st": status} if status is not None else {})}
            sets: dict[str, Any] = {
                "recipient_email": placeholder, "placeholder_data": {}, "metadata": {},
                "events": [scrub(e) for e in item.get("events") or []], "erased": True}
            if redact is not None:
                for name, value in _fields(item).items():
                    if name not in replaced and (kept := redact(value)) != value:
                        sets[name] = kept
            try:
                self.table.update(Update(key, set=sets, condition=cond, values=values, names={"#st": "status"}),
                                  returns="NONE")
                return True
            except StaleWrite:
                continue  # an event landed between the read and the write: apply the scrub to it too
        raise TemporaryError(f"message {message_id} kept changing while it was pseudonymised", delay=1)

    def redact(self, key: dict[str, str], sets: dict[str, Any], remove: tuple[str, ...] = ()) -> None:
        try:
            self.table.update(Update(key, set=sets, remove=remove, condition="attribute_exists(PK)"), returns="NONE")
        except StaleWrite:
            pass


def _mentions(item: dict[str, Any], addresses: set[str]) -> bool:
    """Whether any value of the item names one of the address forms as a whole address."""
    return value_mentions(_fields(item), addresses)


@dataclass
class ObjectVersion:
    key: str
    version_id: str | None
    latest: bool


class VersionedBlobs:
    """One region's buckets, every object version included (an erasure must reach old versions)."""

    def __init__(self, client: Any, region: str):
        self.client, self.region = client, region

    def exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise

    def versions(self, bucket: str, prefix: str) -> Iterator[ObjectVersion]:
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                vid = v.get("VersionId")
                yield ObjectVersion(v["Key"], None if vid in (None, "null") else vid, bool(v.get("IsLatest")))

    def read(self, bucket: str, v: ObjectVersion) -> bytes:
        kw: dict[str, Any] = {"Bucket": bucket, "Key": v.key}
        if v.version_id:
            kw["VersionId"] = v.version_id
        return self.client.get_object(**kw)["Body"].read()

    def mentions(self, bucket: str, v: ObjectVersion, needles: set[str], chunk: int = 1024 * 1024) -> bool:
        """Whether the object version holds one of the address forms ``needles`` (lower-case) as a
        whole address (joann@… is not ann@…), read in chunks (constant memory: an upload may be
        1 GiB); case-insensitive."""
        kw: dict[str, Any] = {"Bucket": bucket, "Key": v.key}
        if v.version_id:
            kw["VersionId"] = v.version_id
        body = self.client.get_object(**kw)["Body"]
        try:
            return stream_mentions(iter(lambda: body.read(chunk), b""), needles)
        finally:
            body.close()

    def latest_keys(self, bucket: str, prefix: str) -> set[str]:
        """Keys under ``prefix`` whose current version is an object (not a delete marker)."""
        return {o["Key"] for p in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for o in p.get("Contents", [])}

    def tags(self, bucket: str, v: ObjectVersion) -> dict[str, str]:
        kw: dict[str, Any] = {"Bucket": bucket, "Key": v.key}
        if v.version_id:
            kw["VersionId"] = v.version_id
        try:
            return {t["Key"]: t["Value"] for t in self.client.get_object_tagging(**kw).get("TagSet", [])}
        except ClientError:
            return {}

    def put(self, bucket: str, key: str, data: bytes, tags: dict[str, str] | None = None) -> None:
        from urllib.parse import urlencode

        kw: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": data, "ContentType": "text/csv"}
        if tags:
            kw["Tagging"] = urlencode(tags)
        self.client.put_object(**kw)

    def delete(self, bucket: str, v: ObjectVersion) -> None:
        kw: dict[str, Any] = {"Bucket": bucket, "Key": v.key}
        if v.version_id:
            kw["VersionId"] = v.version_id
        self.client.delete_object(**kw)
