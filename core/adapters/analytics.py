"""Analytics stores: SQLite (embedded stack, the `make run` default) and OpenSearch (AWS).

Indexing is idempotent: the document id is the SES event's content-derived id, so a replayed
event overwrites itself instead of counting twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import UTC, datetime
from typing import Any

from core.domain.errors import TemporaryError
from core.observability import ANALYTICS_FAILURES as INDEX_FAILURES
from core.observability import ANALYTICS_INDEXED as EVENTS_INDEXED
from core.observability import ANALYTICS_LAG as INDEX_LAG
from core.observability import log
from core.schema import ANALYTICS_RETENTION_DAYS


def _lag(ts: str) -> float:
    try:
        return max(0.0, time.time() - datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0.0


class SqliteAnalytics:
    """One file (or memory) database; safe across the embedded stack's threads."""

    def __init__(self, path: str = ":memory:"):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS events(
              event_id TEXT PRIMARY KEY, tenant_id TEXT, transaction_id TEXT, message_id TEXT, event_type TEXT,
              ts TEXT, recipient TEXT, link TEXT, bounce_type TEXT, bounce_subtype TEXT, diagnostic TEXT, doc TEXT);
            CREATE INDEX IF NOT EXISTS events_tx ON events(tenant_id, transaction_id, event_type, ts);""")

    def index_event(self, d: dict[str, Any]) -> None:
        self.index_many([d])

    def index_many(self, docs: list[dict[str, Any]]) -> None:
        """One transaction for a batch of events (the events handler indexes an SQS batch at once)."""
        rows = [(d["event_id"], d["tenant_id"], d["transaction_id"], d["message_id"], d["event_type"], d["timestamp"],
                 d["recipient_email"], d["metadata"]["link_url"], d["metadata"]["bounce_type"],
                 d["metadata"]["bounce_subtype"], d["metadata"]["diagnostic"], json.dumps(d)) for d in docs]
        if not rows:
            return
        with self.lock:
            self.db.execute("BEGIN")  # autocommit connection: one explicit transaction for the batch
            try:
                self.db.executemany("INSERT OR REPLACE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        EVENTS_INDEXED.labels("sqlite").inc(len(rows))
        INDEX_LAG.labels("sqlite").set(_lag(docs[-1]["timestamp"]))

    def _q(self, sql: str, args: tuple) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def counts(self, tenant_id: str, tx_id: str) -> dict[str, int]:
        return dict(self._q("SELECT event_type, count(*) FROM events WHERE tenant_id=? AND transaction_id=? "
                            "GROUP BY event_type", (tenant_id, tx_id)))

    def over_time(self, tenant_id: str, tx_id: str, bucket_seconds: int) -> list[dict[str, Any]]:
        rows = self._q("SELECT event_type, ts FROM events WHERE tenant_id=? AND transaction_id=?", (tenant_id, tx_id))
        buckets: dict[int, dict[str, int]] = {}
        for kind, ts in rows:
            t = int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()) // bucket_seconds * bucket_seconds
            buckets.setdefault(t, {})
            buckets[t][kind] = buckets[t].get(kind, 0) + 1
        return [{"bucket": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **c}
                for t, c in sorted(buckets.items())]

    def bounce_reasons(self, tenant_id: str, tx_id: str, top: int) -> list[dict[str, Any]]:
        rows = self._q("SELECT bounce_type, bounce_subtype, diagnostic, count(*) c FROM events WHERE tenant_id=? AND "
                       "transaction_id=? AND event_type='Bounce' GROUP BY 1,2,3 ORDER BY c DESC LIMIT ?",
                       (tenant_id, tx_id, top))
        return [{"bounce_type": a, "bounce_subtype": b, "diagnostic": c, "count": n} for a, b, c, n in rows]

    # -- privacy: erasure, subject access, retention ---------------------------------------
    def erase_recipient(self, tenant_id: str, addresses: set[str]) -> int:
        """Delete every event of a tenant about any of ``addresses`` (lower-case); returns how many."""
        marks = ",".join("?" * len(addresses))
        with self.lock:
            return self.db.execute(f"DELETE FROM events WHERE tenant_id=? AND lower(recipient) IN ({marks})",
                                   (tenant_id, *sorted(addresses))).rowcount

    def count_recipient(self, tenant_id: str, addresses: set[str]) -> int:
        """How many events of a tenant are about any of ``addresses`` (an erasure's receipt)."""
        marks = ",".join("?" * len(addresses))
        rows = self._q(f"SELECT count(*) FROM events WHERE tenant_id=? AND lower(recipient) IN ({marks})",
                       (tenant_id, *sorted(addresses)))
        return int(rows[0][0])

    def recipient_events(self, tenant_id: str, addresses: set[str]) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(addresses))
        rows = self._q(f"SELECT doc FROM events WHERE tenant_id=? AND lower(recipient) IN ({marks}) ORDER BY ts",
                       (tenant_id, *sorted(addresses)))
        return [json.loads(d) for (d,) in rows]

    def purge_before(self, tenant_id: str, cutoff: str) -> int:
        """Retention: delete a tenant's events older than ``cutoff`` (ISO time)."""
        with self.lock:
            return self.db.execute("DELETE FROM events WHERE tenant_id=? AND ts < ?", (tenant_id, cutoff)).rowcount

    def top_links(self, tenant_id: str, tx_id: str, top: int) -> list[dict[str, Any]]:
        rows = self._q("SELECT link, count(*) c FROM events WHERE tenant_id=? AND transaction_id=? AND "
                       "event_type='Click' GROUP BY link ORDER BY c DESC LIMIT ?", (tenant_id, tx_id, top))
        return [{"link": link, "count": n} for link, n in rows]


INDEX_TEMPLATE = {
    "index_patterns": ["{prefix}-events-*"],
    "template": {
        "settings": {"number_of_shards": 1, "number_of_replicas": 1,
                     "plugins.index_state_management.rollover_alias": "{prefix}-events"},
        "mappings": {"dynamic": "strict", "properties": {
            "event_id": {"type": "keyword"}, "tenant_id": {"type": "keyword"},
            "transaction_id": {"type": "keyword"}, "message_id": {"type": "keyword"},
            "event_type": {"type": "keyword"}, "timestamp": {"type": "date"},
            "recipient_email": {"type": "keyword"},
            "metadata": {"properties": {
                "user_agent": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 256}}},
                "ip_address": {"type": "ip"}, "link_url": {"type": "keyword"},
                "bounce_type": {"type": "keyword"}, "bounce_subtype": {"type": "keyword"},
                "diagnostic": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 512}}}}},
            # the tenant's own per-message metadata: kept in _source, not indexed (free-form keys)
            "message_metadata": {"type": "object", "enabled": False},
        }},
    },
}

ISM_POLICY = {"policy": {
    "description": f"Event indices: roll over daily, delete after {ANALYTICS_RETENTION_DAYS} days",
    "default_state": "hot",
    "states": [
        {"name": "hot", "actions": [{"rollover": {"min_index_age": "1d"}}],
         "transitions": [{"state_name": "delete", "conditions": {"min_index_age": f"{ANALYTICS_RETENTION_DAYS}d"}}]},
        {"name": "delete", "actions": [{"delete": {}}], "transitions": []},
    ],
    "ism_template": [{"index_patterns": ["{prefix}-events-*"], "priority": 100}],
}}


def _fill(obj: Any, prefix: str) -> Any:
    return json.loads(json.dumps(obj).replace("{prefix}", prefix))


class OpenSearchAnalytics:
    """Amazon OpenSearch Service through opensearch-py (SigV4 when no client is injected)."""

    def __init__(self, client: Any = None, *, prefix: str, endpoint: str | None = None, region: str | None = None):
        self.prefix = prefix
        self.alias = f"{prefix}-events"
        if client is None:
            import boto3
            from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection

            auth = AWSV4SignerAuth(boto3.Session().get_credentials(), region, "es")
            host = (endpoint or "").removeprefix("https://").removeprefix("http://").rstrip("/")
            client = OpenSearch(hosts=[{"host": host, "port": 443}], http_auth=auth, use_ssl=True,
                                verify_certs=True, connection_class=RequestsHttpConnection, timeout=10,
                                max_retries=3, retry_on_timeout=True)
        self.client = client

    def ensure_index(self) -> None:
        """Index template with explicit mappings, ISM retention policy, first write index.

        Idempotent: the controller calls it at every start, leader or not, in each region. An
        existing ISM policy is updated in place (OpenSearch refuses a plain PUT over it with 409);
        a write index another process just created is left alone. Until it has run, an event
        written to the alias would auto-create a plain index of that name with dynamic mappings."""
        from opensearchpy.exceptions import ConflictError, RequestError

        self.client.indices.put_index_template(name=self.alias, body=_fill(INDEX_TEMPLATE, self.prefix))
        path, policy_body = f"/_plugins/_ism/policies/{self.alias}", _fill(ISM_POLICY, self.prefix)
        try:
            self.client.transport.perform_request("PUT", path, body=policy_body)
        except ConflictError:
            current = self.client.transport.perform_request("GET", path)
            self.client.transport.perform_request("PUT", path, body=policy_body, params={
                "if_seq_no": current["_seq_no"], "if_primary_term": current["_primary_term"]})
        if not self.client.indices.exists_alias(name=self.alias):
            try:
                self.client.indices.create(index=f"{self.alias}-000001",
                                           body={"aliases": {self.alias: {"is_write_index": True}}})
            except RequestError as exc:
                if "resource_already_exists_exception" not in str(exc):
                    raise

    def index_event(self, doc: dict[str, Any]) -> None:
        self.index_many([doc])

    def index_many(self, docs: list[dict[str, Any]]) -> None:
        """Bulk index with per-item retries; the document id is the event id (idempotent)."""
        from opensearchpy import helpers

        actions = [{"_op_type": "index", "_index": self.alias, "_id": d["event_id"], "_source": d} for d in docs]
        ok, errors = helpers.bulk(self.client, actions, max_retries=3, raise_on_error=False)
        EVENTS_INDEXED.labels("opensearch").inc(ok)
        if errors:
            INDEX_FAILURES.labels("opensearch").inc(len(errors))
            log.warning("opensearch bulk errors", count=len(errors), first=str(errors[0])[:300])

    def _search(self, tenant_id: str, tx_id: str, aggs: dict[str, Any], extra_filter: list | None = None) -> dict:
        query = {"bool": {"filter": [{"term": {"tenant_id": tenant_id}}, {"term": {"transaction_id": tx_id}},
                                     *(extra_filter or [])]}}
        return self.client.search(index=self.alias, body={"size": 0, "query": query, "aggs": aggs})["aggregations"]

    def counts(self, tenant_id: str, tx_id: str) -> dict[str, int]:
        aggs = self._search(tenant_id, tx_id, {"by_type": {"terms": {"field": "event_type", "size": 20}}})
        return {b["key"]: b["doc_count"] for b in aggs["by_type"]["buckets"]}

    def over_time(self, tenant_id: str, tx_id: str, bucket_seconds: int) -> list[dict[str, Any]]:
        aggs = self._search(tenant_id, tx_id, {"over_time": {
            "date_histogram": {"field": "timestamp", "fixed_interval": f"{bucket_seconds}s"},
            "aggs": {"by_type": {"terms": {"field": "event_type", "size": 20}}}}})
        return [{"bucket": b["key_as_string"], **{t["key"]: t["doc_count"] for t in b["by_type"]["buckets"]}}
                for b in aggs["over_time"]["buckets"]]

    def bounce_reasons(self, tenant_id: str, tx_id: str, top: int) -> list[dict[str, Any]]:
        aggs = self._search(tenant_id, tx_id, {"reasons": {"multi_terms": {"terms": [
            {"field": "metadata.bounce_type"}, {"field": "metadata.bounce_subtype"},
            {"field": "metadata.diagnostic.raw"}], "size": top}}}, [{"term": {"event_type": "Bounce"}}])
        return [{"bounce_type": b["key"][0], "bounce_subtype": b["key"][1], "diagnostic": b["key"][2],
                 "count": b["doc_count"]} for b in aggs["reasons"]["buckets"]]

    def _recipient_query(self, tenant_id: str, addresses: set[str]) -> dict[str, Any]:
        return {"bool": {"filter": [{"term": {"tenant_id": tenant_id}},
                                    {"terms": {"recipient_email": sorted(addresses)}}]}}

    def erase_recipient(self, tenant_id: str, addresses: set[str], attempts: int = 5) -> int:
        """delete_by_query over every event index (the alias covers them all). The indices are
        refreshed first, so events indexed a moment ago are searched too. A document changed while
        the query ran (a version conflict) is not skipped: the query runs again for what is left,
        and if conflicts outlast ``attempts`` a TemporaryError asks the caller to retry later.
        Addresses as SES reported them (lower-case forms). Returns how many were deleted."""
        deleted = 0
        for _ in range(attempts):
            self.client.indices.refresh(index=f"{self.alias}*")
            resp = self.client.delete_by_query(index=f"{self.alias}*", body={"query": self._recipient_query(
                tenant_id, addresses)}, refresh=True, conflicts="proceed")
            deleted += int(resp.get("deleted", 0))
            if not int(resp.get("version_conflicts", 0)):
                return deleted
        raise TemporaryError(f"analytics erasure kept meeting version conflicts ({deleted} deleted so far)", delay=5)

    def count_recipient(self, tenant_id: str, addresses: set[str]) -> int:
        """How many events of a tenant are about any of ``addresses`` (refreshed first)."""
        self.client.indices.refresh(index=f"{self.alias}*")
        resp = self.client.count(index=f"{self.alias}*", body={"query": self._recipient_query(tenant_id, addresses)})
        return int(resp.get("count", 0))

    def recipient_events(self, tenant_id: str, addresses: set[str]) -> list[dict[str, Any]]:
        resp = self.client.search(index=f"{self.alias}*", body={
            "size": 1000, "query": self._recipient_query(tenant_id, addresses), "sort": [{"timestamp": "asc"}]})
        return [h["_source"] for h in resp["hits"]["hits"]]

    def purge_before(self, tenant_id: str, cutoff: str) -> int:
        resp = self.client.delete_by_query(index=f"{self.alias}*", body={"query": {"bool": {"filter": [
            {"term": {"tenant_id": tenant_id}}, {"range": {"timestamp": {"lt": cutoff}}}]}}}, conflicts="proceed")
        return int(resp.get("deleted", 0))

    def top_links(self, tenant_id: str, tx_id: str, top: int) -> list[dict[str, Any]]:
        aggs = self._search(tenant_id, tx_id, {"links": {"terms": {"field": "metadata.link_url", "size": top}}},
                            [{"term": {"event_type": "Click"}}])
        return [{"link": b["key"], "count": b["doc_count"]} for b in aggs["links"]["buckets"]]
