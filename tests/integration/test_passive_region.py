"""The passive region refuses API writes (C12): the real handler, in-process, over API Gateway events."""

from __future__ import annotations

import json

from core.domain.unsubscribe import sign_unsubscribe_token
from handlers import api
from handlers.context import scoped
from local.gateway import to_event
from runbooks.regions import _set_flag

BASE = "/api/v1/email"


def call(deps, method: str, path: str, key: str, body: dict | None = None) -> tuple[int, dict, dict]:
    raw = json.dumps(body).encode() if body is not None else b""
    event = to_event(method, BASE + path, {"X-API-Key": key, "Content-Type": "application/json"}, raw, "127.0.0.1")
    with scoped(deps):
        out = api.resolve(event, None)
    headers = {**(out.get("headers") or {}), **{k: v[-1] for k, v in (out.get("multiValueHeaders") or {}).items()}}
    return out["statusCode"], headers, json.loads(out["body"]) if out["body"] else {}


def test_the_passive_region_refuses_writes_and_keeps_serving_reads(deps, tenant):
    s = deps.settings
    key = tenant["api_key"]
    # GIVEN the replicated flag names the other region
    _set_flag(s, s.region, s.dr_region)

    # WHEN a client writes here THEN 503 with Retry-After, naming the active region
    status, headers, body = call(deps, "POST", "/templates", key, {"name": "t", "subject": "s"})
    assert status == 503
    assert headers["Retry-After"] == str(s.passive_region_retry_after_seconds)
    assert body["error"]["code"] == "passive_region"
    assert f"the active region is {s.dr_region}" in body["error"]["message"]
    assert body["error"]["details"] == [{"region": s.region, "active_region": s.dr_region}]
    assert call(deps, "PUT", "/suppressions/a@example.org", key, {"reason": "manual"})[0] == 503
    assert call(deps, "DELETE", "/suppressions/a@example.org", key)[0] == 503

    # AND a recipient's one-click unsubscribe too: the passive replica cannot check an erasure the
    # active region may be completing (its suppression would bring the address back)
    token = sign_unsubscribe_token(s.unsubscribe_secret, tenant["tenant_id"], "leaving@example.org", "m-1")
    with scoped(deps):
        out = api.resolve(to_event("POST", f"{BASE}/unsubscribe/{token}", {}, b"List-Unsubscribe=One-Click",
                                   "127.0.0.1"), None)
    assert out["statusCode"] == 503

    # AND reads keep working (and show that nothing was written)
    status, _, listing = call(deps, "GET", "/suppressions", key)
    assert status == 200 and listing["items"] == []
    assert call(deps, "HEAD", "/suppressions", key)[0] == 200
    # authentication still comes first: an unauthenticated caller learns nothing about regions
    assert call(deps, "POST", "/templates", "wrong-key", {"name": "t", "subject": "s"})[0] == 401

    # WHEN the flag names this region again, writes are taken once the cached flag is re-read
    monotonic = [1000.0]
    deps.memo["active_region"] = api._ActiveRegion(deps.store.table, s.active_region_cache_seconds,
                                                   lambda: monotonic[0])
    assert call(deps, "POST", "/templates", key, {"name": "t", "subject": "s"})[0] == 503
    _set_flag(s, s.region, s.region)
    assert call(deps, "POST", "/templates", key, {"name": "t", "subject": "s"})[0] == 503  # cached
    monotonic[0] += s.active_region_cache_seconds
    assert call(deps, "POST", "/templates", key, {"name": "t", "subject": "s"})[0] == 201


def test_a_single_region_setup_without_the_flag_takes_writes(deps, tenant):
    status, _, _ = call(deps, "POST", "/templates", tenant["api_key"], {"name": "t", "subject": "s"})
    assert status == 201


def test_the_openapi_document_lists_503_for_writes():
    doc = json.loads(api.openapi_document())
    assert "503" in doc["paths"][f"{BASE}/templates"]["post"]["responses"]
    assert "503" in doc["paths"][f"{BASE}/campaigns"]["post"]["responses"]
