"""The API contract as a new user (or an attacker) meets it over HTTP: typos are refused, checks
run in the right order, odd inputs get a precise 4xx, and concurrent callers never see each
other's data."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter

import requests

from core.services.auth import create_key
from core.services.tenants import ensure_tenant

HTML = "<p>Hi {{ first_name }}</p>"


def url(stack, path: str) -> str:
    return f"http://127.0.0.1:{stack.settings.api_port}/api/v1/email{path}"


def key(stack) -> dict[str, str]:
    return {"X-API-Key": stack.tenant["api_key"]}


def err(r: requests.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def ready_campaign_body(api) -> dict:
    tid = api.create_template("C", "S {{ first_name }}", HTML)
    up = api.upload_csv("email,first_name\na@example.org,A\n")
    return {"template_id": tid, "upload_id": up["upload_id"]}


def test_unknown_fields_are_refused_naming_them(api, stack):
    body = ready_campaign_body(api)
    for typo, name in (({"schedule": {"sendAt": "2099-01-01T00:00:00Z"}}, "schedule.sendAt"),
                       ({"callbackUrl": "https://example.com/hook"}, "callbackUrl")):
        r = requests.post(url(stack, "/campaigns"), json={**body, **typo}, headers=key(stack))
        assert err(r) == (422, "invalid_input") and name in r.json()["error"]["message"], r.text
    r = requests.post(url(stack, "/templates"), json={"name": "x", "subject": "y", "subjct": "z"}, headers=key(stack))
    assert r.status_code == 422 and "subjct" in r.json()["error"]["message"]
    r = requests.get(url(stack, "/campaigns?limit=5&limt=7"), headers=key(stack))
    assert err(r) == (422, "invalid_input") and "limt" in r.json()["error"]["message"]


def test_authentication_then_authorisation_then_validation(stack):
    r = requests.post(url(stack, "/campaigns"), json={"bogus": 1})
    assert err(r) == (401, "unauthorized")  # not 422: the schema is not taught to strangers
    r = requests.post(url(stack, "/campaigns"), data="{not json", headers={"X-API-Key": "ep_wrong"})
    assert err(r) == (401, "unauthorized")
    ensure_tenant(stack.deps.store, stack.deps.secrets, "tenant-order")
    raw, _ = create_key(stack.deps.store, "tenant-order", ["campaigns:read"])
    r = requests.post(url(stack, "/templates"), json={"wrong": True}, headers={"X-API-Key": raw})
    assert err(r) == (403, "forbidden")


def test_odd_inputs_get_a_precise_4xx(api, stack):
    h = {**key(stack), "Content-Type": "application/json"}
    r = requests.post(url(stack, "/templates"), data=b'{"name": "\xff\xfe", "subject": "s"}', headers=h)
    assert err(r) == (400, "invalid_encoding")
    r = requests.post(url(stack, "/templates"), data="[" * 100_000 + "]" * 100_000, headers=h)
    assert r.status_code in (400, 413) and "error" in r.json()
    r = requests.post(url(stack, "/templates"), data="[" * 5000 + "]" * 5000, headers=h)
    assert r.status_code in (400, 422) and "error" in r.json()
    body = ready_campaign_body(api)
    r = requests.post(url(stack, "/campaigns"), headers=key(stack),
                      json={**body, "tags": {f"k{i}": "v" * 3000 for i in range(50)}})
    assert err(r) == (422, "invalid_input")
    r = requests.post(url(stack, "/campaigns"), headers=key(stack), json={**body, "tags": {"a b": "x"}})
    assert err(r) == (422, "invalid_input")
    for cursor in ("%%%", "eyJQSyI6IHsiUyI6ICJ4In19", "MS0xMDA6.0000", "-500:"):
        r = requests.get(url(stack, "/campaigns"), params={"cursor": cursor}, headers=key(stack))
        assert err(r) == (400, "invalid_cursor"), cursor
    for q in ("limit=%C2%B2", "limit=0", "limit=abc"):
        r = requests.get(url(stack, f"/campaigns?{q}"), headers=key(stack))
        assert err(r) == (422, "invalid_input"), q
    tid = body["template_id"]
    r = requests.post(url(stack, f"/templates/{tid}/confirm?version=%C2%B2"), headers=key(stack))
    assert err(r) == (422, "invalid_input")
    r = requests.get(url(stack, "/campaigns/tx_x/analytics?bucket_seconds=%C2%B2"), headers=key(stack))
    assert err(r) == (422, "invalid_input")


def test_methods_other_than_the_routes_get_405_or_204_not_501(stack):
    r = requests.options(url(stack, "/campaigns"))
    assert r.status_code == 204 and {"GET", "POST"} <= set(r.headers["Allow"].replace(" ", "").split(","))
    r = requests.request("TRACE", url(stack, "/campaigns"))
    assert err(r) == (405, "method_not_allowed") and "GET" in r.headers["Allow"]
    r = requests.delete(url(stack, "/campaigns"), headers=key(stack))
    assert err(r) == (405, "method_not_allowed")
    r = requests.head(url(stack, "/campaigns"), headers=key(stack))
    assert r.status_code == 200 and not r.content
    assert requests.get(url(stack, "/nowhere")).status_code == 404


def test_percent_encoded_path_parameters_are_decoded(api, stack):
    r = requests.put(url(stack, "/suppressions/manual%2Btag%40example.com"), json={"reason": "manual"},
                     headers=key(stack))
    assert r.status_code == 200 and r.json()["email"] == "manual+tag@example.com"
    assert api.call("GET", "/suppressions/manual+tag@example.com")["reason"] == "manual"
    assert stack.deps.store.get_suppression("local-tenant", "manual+tag@example.com") is not None


def test_submit_refuses_a_broken_subject_and_a_far_schedule(api, stack):
    body = ready_campaign_body(api)
    r = requests.post(url(stack, "/campaigns"), json={**body, "subject": "Hi {{ broken"}, headers=key(stack))
    assert err(r) == (422, "invalid_input") and "subject" in r.json()["error"]["message"]
    r = requests.post(url(stack, "/campaigns"), json={**body, "schedule": {"send_at": "2099-01-01T00:00:00Z"}},
                      headers=key(stack))
    assert err(r) == (422, "invalid_input") and "days ahead" in r.json()["error"]["message"]


def test_openapi_declares_security_and_every_error_answer(stack):
    spec = requests.get(url(stack, "/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["bearer"]["scheme"] == "bearer"
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"400", "404", "422"} <= codes, (method, path)
            public = op.get("security") == []
            assert public or {"401", "403"} <= codes, (method, path)
    assert spec["paths"]["/api/v1/email/campaigns"]["post"]["responses"].keys() >= {"202", "409"}


REQUESTS_PER_CLIENT = 40


def test_concurrent_clients_with_mixed_keys_never_see_each_other(api, stack):
    """Twenty clients at once, three identities interleaved, 800 requests: no cross-answer, no 5xx.
    The other tenant has no campaign, ours has at least one, a wrong key gets 401. (The twenty
    concurrent clients make the interleaving; 2,200 requests took minutes of moto time, not cases.)"""
    api.call("POST", "/campaigns", json=ready_campaign_body(api))
    ensure_tenant(stack.deps.store, stack.deps.secrets, "tenant-concurrent")
    other, _ = create_key(stack.deps.store, "tenant-concurrent", ["campaigns:read"])
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def client(n: int) -> None:
        session = requests.Session()
        for i in range(REQUESTS_PER_CLIENT):
            who = (n + i) % 3
            raw = [stack.tenant["api_key"], other, f"ep_wrong_{uuid.uuid4().hex}"][who]
            r = session.get(url(stack, "/campaigns?limit=1"), headers={"X-API-Key": raw}, timeout=30)
            if r.status_code >= 500:
                result = f"5xx {r.status_code}"
            elif who == 2:
                result = "ok" if r.status_code == 401 else f"wrong key answered {r.status_code}"
            elif r.status_code != 200:
                result = f"valid key answered {r.status_code}"
            else:
                items = r.json()["items"]
                result = "ok" if bool(items) == (who == 0) else "cross-answer"
            with lock:
                outcomes[result] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert outcomes == Counter({"ok": 20 * REQUESTS_PER_CLIENT}), outcomes


def test_api_metrics_are_labelled_by_route_template(api, stack):
    from prometheus_client import REGISTRY

    api.call("GET", f"/campaigns/tx_{uuid.uuid4().hex}", expect=(404,))
    labels = {s.labels["route"] for m in REGISTRY.collect() if m.name == "emailplatform_api_requests"
              for s in m.samples}
    assert "/api/v1/email/campaigns/<tx_id>" in labels
    assert not any(label.startswith("/api/v1/email/campaigns/tx_") for label in labels)
    assert json.dumps(sorted(labels))  # bounded: templates only
