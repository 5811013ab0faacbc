"""The OpenSearch index setup runs at every controller start: it must be idempotent against a
domain that already has the template, the ISM policy (OpenSearch answers a plain PUT over an
existing policy with 409) and the write index."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace
from urllib.parse import urlsplit

from opensearchpy import OpenSearch
from opensearchpy.connection import Connection

from core.adapters.analytics import OpenSearchAnalytics


class Domain(Connection):
    """An OpenSearch domain's answers for the setup calls, with state across runs."""

    requests: list[tuple[str, str, dict]] = []
    state: dict[str, object] = {}

    def perform_request(self, method, url, params=None, body=None, timeout=None, ignore=(), headers=None):
        path = urlsplit(url).path
        Domain.requests.append((method, path, dict(params or {})))
        st = Domain.state
        if path.startswith("/_plugins/_ism/policies/"):
            if method == "GET":
                return 200, {}, json.dumps({"_id": "ep-events", "_seq_no": 7, "_primary_term": 1, "policy": {}})
            if path in st and "if_seq_no" not in (params or {}):
                self._raise_error(409, json.dumps({"error": {"type": "version_conflict_engine_exception"}}))
            st[path] = True
            return 200, {}, json.dumps({"_id": "ep-events"})
        if method == "HEAD":
            return (200 if "alias" in st else 404), {}, ""
        if method == "PUT" and path == "/ep-events-000001":
            if "alias" in st:
                self._raise_error(400, json.dumps({"error": {"type": "resource_already_exists_exception"}}))
            st["alias"] = True
        return 200, {}, json.dumps({"acknowledged": True})


def analytics() -> OpenSearchAnalytics:
    return OpenSearchAnalytics(OpenSearch(hosts=[{"host": "search.example", "port": 443}], connection_class=Domain),
                               prefix="ep")


def test_ensure_index_twice_updates_the_policy_and_keeps_the_write_index():
    Domain.requests, Domain.state = [], {}
    analytics().ensure_index()
    assert ("PUT", "/ep-events-000001", {}) in Domain.requests
    Domain.requests = []

    analytics().ensure_index()  # a restart, or the other task of a rolling deployment

    ism = [(m, p) for m, p, q in Domain.requests if p.startswith("/_plugins/_ism/")]
    assert ism == [("PUT", "/_plugins/_ism/policies/ep-events"), ("GET", "/_plugins/_ism/policies/ep-events"),
                   ("PUT", "/_plugins/_ism/policies/ep-events")]
    update = [q for m, p, q in Domain.requests if p.startswith("/_plugins/_ism/") and m == "PUT"][-1]
    assert {k: str(v) for k, v in update.items()} == {"if_seq_no": "7", "if_primary_term": "1"}
    assert not any(p == "/ep-events-000001" for _, p, _ in Domain.requests)


def test_a_write_index_created_meanwhile_is_not_an_error():
    Domain.requests, Domain.state = [], {}
    a = analytics()
    a.client.indices.exists_alias = lambda **_: False  # another task created it between HEAD and PUT
    Domain.state["alias"] = True
    a.ensure_index()


def test_the_controller_prepares_analytics_at_start_leader_or_not(monkeypatch):
    import controller.__main__ as entry

    calls = []
    deps = SimpleNamespace(analytics=SimpleNamespace(ensure_index=lambda: calls.append("ensure_index")))
    ran = []

    class Controller:
        def __init__(self, d, holder):
            assert calls == ["ensure_index"]  # before any pass, whatever the lease says
            self.lease = SimpleNamespace(release=lambda: None)

        def run_once(self):
            ran.append(True)

    monkeypatch.setattr(entry, "bootstrap", lambda settings: deps)
    monkeypatch.setattr(entry, "Controller", Controller)
    monkeypatch.setattr(entry, "get_settings", lambda: SimpleNamespace(log_level="INFO"))
    monkeypatch.setattr(entry, "configure_logging", lambda level: None)
    monkeypatch.setattr(sys, "argv", ["controller", "--once"])
    entry.main()
    assert calls == ["ensure_index"] and ran == [True]


def test_a_failed_setup_does_not_stop_the_controller():
    from controller.__main__ import prepare_analytics

    def boom():
        raise ConnectionError("domain unreachable")
    assert prepare_analytics(SimpleNamespace(ensure_index=boom)) is False
    assert prepare_analytics(object()) is True  # the SQLite store has nothing to set up
