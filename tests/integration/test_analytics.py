"""Analytics: one contract suite run for real on the SQLite store; the OpenSearch adapter's
requests checked against the OpenSearch API shapes through a recording connection."""

import json

import pytest
from opensearchpy import OpenSearch
from opensearchpy.connection import Connection

from core.adapters.analytics import OpenSearchAnalytics, SqliteAnalytics
from core.services.analytics import event_document
from core.services.events import interpret, parse_sns_envelope
from tests.conftest import ses_event_for, sns_envelope

TX = "tx_an"


def parsed(name, i, **kw):
    ev = ses_event_for(name, tenant="t1", message_id=f"{TX}-b00001-{i:05d}", recipient=f"u{i}@x.org", ses_id=f"s{i}")
    for key, val in kw.items():
        ev[key.split(".")[0]][key.split(".")[1]] = val
    return interpret(parse_sns_envelope(sns_envelope(ev)))


def sample_events():
    evs = [parsed("ses_send.json", i) for i in range(1, 6)]
    evs += [parsed("ses_delivery.json", i) for i in range(1, 5)]
    evs += [parsed("ses_bounce.json", 5)]
    evs += [parsed("ses_open.json", 1), parsed("ses_open.json", 2)]
    evs += [parsed("ses_click.json", 1), parsed("ses_click.json", 2, **{"click.link": "https://example.com/other"}),
            parsed("ses_click.json", 3)]
    return evs


@pytest.fixture
def sqlite_store():
    store = SqliteAnalytics()
    for e in sample_events():
        store.index_event(event_document(e))
    return store


def test_contract_counts_and_idempotency(sqlite_store):
    sqlite_store.index_event(event_document(parsed("ses_delivery.json", 1)))  # replay: no double count
    assert sqlite_store.counts("t1", TX) == {"Send": 5, "Delivery": 4, "Bounce": 1, "Open": 2, "Click": 3}
    assert sqlite_store.counts("other-tenant", TX) == {}


def test_contract_breakdowns(sqlite_store):
    assert sqlite_store.top_links("t1", TX, 10) == [{"link": "https://example.com/offer", "count": 2},
                                                   {"link": "https://example.com/other", "count": 1}]
    (reason,) = sqlite_store.bounce_reasons("t1", TX, 10)
    assert reason["bounce_type"] == "Permanent" and reason["count"] == 1 and "550" in reason["diagnostic"]
    over = sqlite_store.over_time("t1", TX, 60)
    assert sum(b.get("Delivery", 0) for b in over) == 4 and all(b["bucket"].endswith("Z") for b in over)


def test_document_has_the_design_fields():
    doc = event_document(parsed("ses_click.json", 7))
    assert set(doc) >= {"transaction_id", "message_id", "event_type", "timestamp", "recipient_email", "metadata"}
    assert doc["metadata"]["link_url"] == "https://example.com/offer" and doc["metadata"]["ip_address"]


class Recording(Connection):
    """Answers like OpenSearch would and remembers every request."""

    requests: list[tuple[str, str, object]] = []

    def perform_request(self, method, url, params=None, body=None, timeout=None, ignore=(), headers=None):
        text = body.decode() if isinstance(body, bytes) else body
        Recording.requests.append((method, url, text))
        if url.startswith("/_bulk"):
            items = [json.loads(line) for line in text.strip().splitlines()][0::2]
            resp = {"errors": False, "items": [{"index": {"_id": i["index"]["_id"], "status": 201}} for i in items]}
        elif url.endswith("/_search"):
            resp = {"aggregations": {
                "by_type": {"buckets": [{"key": "Delivery", "doc_count": 4}]},
                "over_time": {"buckets": [{"key_as_string": "2026-01-01T10:00:00.000Z",
                                           "by_type": {"buckets": [{"key": "Open", "doc_count": 2}]}}]},
                "reasons": {"buckets": [{"key": ["Permanent", "General", "550"], "doc_count": 1}]},
                "links": {"buckets": [{"key": "https://example.com/offer", "doc_count": 2}]}}}
        elif method == "HEAD":
            return 404, {}, ""
        else:
            resp = {"acknowledged": True}
        return 200, {}, json.dumps(resp)


@pytest.fixture
def opensearch():
    Recording.requests = []
    client = OpenSearch(hosts=[{"host": "search.example", "port": 443}], connection_class=Recording)
    return OpenSearchAnalytics(client, prefix="ep")


def test_opensearch_setup_uses_explicit_mappings_and_ism(opensearch):
    opensearch.ensure_index()
    calls = {(m, u): b for m, u, b in Recording.requests}
    template = json.loads(calls[("PUT", "/_index_template/ep-events")])
    assert template["index_patterns"] == ["ep-events-*"]
    props = template["template"]["mappings"]["properties"]
    assert template["template"]["mappings"]["dynamic"] == "strict"
    assert props["timestamp"]["type"] == "date" and props["metadata"]["properties"]["ip_address"]["type"] == "ip"
    ism = json.loads(calls[("PUT", "/_plugins/_ism/policies/ep-events")])
    assert {s["name"] for s in ism["policy"]["states"]} == {"hot", "delete"}
    created = json.loads(calls[("PUT", "/ep-events-000001")])
    assert created["aliases"]["ep-events"]["is_write_index"] is True


def test_opensearch_bulk_is_idempotent_by_event_id(opensearch):
    events = sample_events()[:3]
    opensearch.index_many([event_document(e) for e in events])
    (method, url, body) = Recording.requests[-1]
    lines = [json.loads(x) for x in body.strip().splitlines()]
    assert method == "POST" and url.startswith("/_bulk")
    assert [a["index"]["_id"] for a in lines[0::2]] == [e.event_id for e in events]
    assert all(a["index"]["_index"] == "ep-events" for a in lines[0::2])
    assert lines[1]["event_type"] == "Send" and lines[1]["transaction_id"] == TX


def test_opensearch_queries_are_tenant_scoped_aggregations(opensearch):
    assert opensearch.counts("t1", TX) == {"Delivery": 4}
    assert opensearch.over_time("t1", TX, 60) == [{"bucket": "2026-01-01T10:00:00.000Z", "Open": 2}]
    assert opensearch.bounce_reasons("t1", TX, 5)[0]["diagnostic"] == "550"
    assert opensearch.top_links("t1", TX, 5) == [{"link": "https://example.com/offer", "count": 2}]
    for _method, url, body in Recording.requests:
        q = json.loads(body)
        assert url == "/ep-events/_search" and q["size"] == 0
        assert {"term": {"tenant_id": "t1"}} in q["query"]["bool"]["filter"]
        assert {"term": {"transaction_id": TX}} in q["query"]["bool"]["filter"]
