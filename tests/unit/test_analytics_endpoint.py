"""Infra passes the OpenSearch endpoint as an https URL; the adapter must connect to its host."""

from core.adapters.analytics import OpenSearchAnalytics


def test_an_https_endpoint_becomes_the_host(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    a = OpenSearchAnalytics(prefix="p", endpoint="https://search-p-abc.eu-west-1.es.amazonaws.com/",
                            region="eu-west-1")
    (conn,) = a.client.transport.connection_pool.connections
    assert conn.host == "https://search-p-abc.eu-west-1.es.amazonaws.com:443"
