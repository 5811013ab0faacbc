"""Message Centre's view: the HTTP API of the embedded stack, every documented 4xx included."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from core.services.auth import create_key
from core.services.tenants import ensure_tenant
from ops.client import ApiError, Client

HTML = "<p>Hi {{ first_name }}</p>"


def other_client(stack, scopes=None, tenant="tenant-b"):
    ensure_tenant(stack.deps.store, stack.deps.secrets, tenant)
    raw, _ = create_key(stack.deps.store, tenant, scopes)
    return Client(f"http://127.0.0.1:{stack.settings.api_port}/api/v1/email", raw)


def err(excinfo):
    return excinfo.value.status, excinfo.value.body["error"]["code"]


def test_health_and_openapi(api, stack):
    base = f"http://127.0.0.1:{stack.settings.api_port}"
    assert requests.get(f"{base}/api/v1/health").json() == {"status": "ok"}
    spec = requests.get(f"{base}/api/v1/email/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/api/v1/email/campaigns" in spec["paths"]
    assert "SubmitCampaign" in str(spec["components"]["schemas"])


def test_a_campaign_through_its_whole_lifecycle(api):
    tid = api.create_template("Welcome", "Welcome {{ first_name }}", HTML)
    tpl = api.call("GET", f"/templates/{tid}")
    assert tpl["active_version"] == 1 and tpl["versions"][0]["variables"] == ["first_name"]
    up = api.upload_csv("email,first_name\nsuccess@simulator.amazonses.com,Ann\nbob@example.org,Bob\nnope,X\n")
    body = {"template_id": tid, "csv_file_url": up["csv_file_url"], "tags": {"team": "growth"}}
    key = str(uuid.uuid4())
    first = api.call("POST", "/campaigns", headers={"Idempotency-Key": key}, json=body)
    second = api.call("POST", "/campaigns", headers={"Idempotency-Key": key}, json=body)
    assert first["status"] == "ACCEPT" and second["transaction_id"] == first["transaction_id"]
    tx_id = first["transaction_id"]
    with pytest.raises(ApiError) as e:  # same key, different body
        api.call("POST", "/campaigns", headers={"Idempotency-Key": key}, json={**body, "tags": {"team": "x"}})
    assert err(e) == (422, "idempotency_key_reused")
    listed = api.call("GET", "/campaigns?limit=50")
    assert sum(1 for c in listed["items"] if c["transaction_id"] == tx_id) == 1
    final = api.wait_for(tx_id, {"COMPLETED"}, timeout=120)
    assert final["summary"]["total_messages"] == 2 and final["summary"]["refused_at_ingest"] == 1
    assert final["summary"]["sent"] == 2
    rej = api.call("GET", f"/campaigns/{tx_id}/rejections")["items"]
    assert rej[0]["line"] == 4 and rej[0]["reason"].startswith("invalid_email")
    batches = api.call("GET", f"/campaigns/{tx_id}/batches")["items"]
    assert [b["status"] for b in batches] == ["COMPLETED"]
    msgs = api.call("GET", f"/campaigns/{tx_id}/messages?limit=1")
    assert len(msgs["items"]) == 1 and msgs["next_cursor"]
    rest = api.call("GET", f"/campaigns/{tx_id}/messages?limit=10&cursor={msgs['next_cursor']}")
    ids = {m["message_id"] for m in msgs["items"] + rest["items"]}
    assert len(ids) == 2
    one = api.call("GET", f"/messages/{msgs['items'][0]['message_id']}")
    assert one["status"] in ("DELIVERED", "OPENED", "CLICKED", "BOUNCED") and one["timestamps"]["SENT"]
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/campaigns/{tx_id}/cancel")
    assert err(e) == (409, "conflict")


def test_auth_errors(api, stack):
    base = f"http://127.0.0.1:{stack.settings.api_port}/api/v1/email"
    r = requests.get(f"{base}/campaigns")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = requests.get(f"{base}/campaigns", headers={"X-API-Key": "ep_wrong"})
    assert r.status_code == 401
    reader = other_client(stack, ["campaigns:read"], tenant="tenant-reader")
    with pytest.raises(ApiError) as e:
        reader.call("POST", "/templates", json={"name": "x", "subject": "y"})
    assert err(e) == (403, "forbidden")


def test_another_tenants_ids_are_not_found(api, stack):
    tid = api.create_template("T", "S", HTML)
    up = api.upload_csv("email\na@example.org\n")
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})
    intruder = other_client(stack)
    for path in (f"/campaigns/{tx['transaction_id']}", f"/campaigns/{tx['transaction_id']}/messages",
                 f"/campaigns/{tx['transaction_id']}/batches", f"/templates/{tid}",
                 f"/messages/{tx['transaction_id']}-b00001-00001"):
        with pytest.raises(ApiError) as e:
            intruder.call("GET", path)
        assert err(e) == (404, "not_found"), path
    for verb in ("cancel", "pause"):
        with pytest.raises(ApiError) as e:
            intruder.call("POST", f"/campaigns/{tx['transaction_id']}/{verb}")
        assert e.value.status == 404
    with pytest.raises(ApiError) as e:  # using another tenant's upload or template
        intruder.call("POST", "/campaigns", json={"template_id": tid, "csv_file_url": up["csv_file_url"]})
    assert e.value.status == 404
    assert intruder.call("GET", "/campaigns")["items"] == []


def test_submit_validation_errors(api, stack):
    tid = api.create_template("T", "S", HTML)
    up = api.upload_csv("email\na@example.org\n")
    pending = api.call("POST", "/templates", json={"name": "never uploaded", "subject": "s"})
    uploads = stack.settings.bucket("uploads")
    cases = [
        ({"template_id": tid}, 422, "invalid_input"),  # neither csv_file_url nor upload_id
        ({"template_id": tid, "upload_id": up["upload_id"], "csv_file_url": up["csv_file_url"]}, 422, "invalid_input"),
        ({"template_id": tid, "csv_file_url": "s3://somebody-else/x.csv"}, 422, "invalid_input"),
        ({"template_id": tid, "csv_file_url": f"s3://{uploads}/local-tenant/missing.csv"}, 422, "invalid_input"),
        ({"template_id": tid, "upload_id": "upl_unknown"}, 404, "not_found"),
        ({"template_id": "tpl_unknown", "upload_id": up["upload_id"]}, 404, "not_found"),
        ({"template_id": pending["template_id"], "upload_id": up["upload_id"]}, 409, "conflict"),
        ({"template_id": tid, "upload_id": up["upload_id"], "schedule": {"send_at": "2020-01-01T00:00:00Z"}}, 422, "invalid_input"),
        ({"template_id": tid, "upload_id": up["upload_id"], "schedule": {"send_at": "next tuesday"}}, 422, "invalid_input"),
        ({"template_id": tid, "upload_id": up["upload_id"], "callback_url": "http://169.254.169.254/"}, 422, "invalid_input"),
        ({"template_id": tid, "upload_id": up["upload_id"], "callback_url": "gopher://x"}, 422, "invalid_input"),
        ({"template_id": tid, "upload_id": up["upload_id"], "from": "not an address"}, 422, "invalid_input"),
        ({"template_id": tid, "upload_id": up["upload_id"], "subject": "a\r\nBcc: x@y.z"}, 422, "invalid_input"),
        ({"template_id": 5}, 422, "invalid_input"),
    ]
    for body, status, code in cases:
        with pytest.raises(ApiError) as e:
            api.call("POST", "/campaigns", json=body)
        assert err(e) == (status, code), body
    r = requests.post(f"{api.base}/campaigns", data="{not json", headers={"X-API-Key": stack.tenant["api_key"],
                                                                         "Content-Type": "application/json"})
    assert r.status_code in (400, 422) and "error" in r.json()


def test_template_validation_errors(api, stack):
    for source, status, code in [
        (b"{% if %}", 422, "invalid_input"),
        (b"\xff\xfe not utf8", 422, "invalid_input"),
        (b"x" * (stack.settings.max_template_bytes + 1), 413, "payload_too_large"),
    ]:
        t = api.call("POST", "/templates", json={"name": "bad", "subject": "s"})
        api.upload(t["upload"], source)
        with pytest.raises(ApiError) as e:
            api.call("POST", f"/templates/{t['template_id']}/confirm")
        assert err(e) == (status, code)
    t = api.call("POST", "/templates", json={"name": "not yet", "subject": "s"})
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/templates/{t['template_id']}/confirm")
    assert err(e) == (409, "conflict")
    with pytest.raises(ApiError) as e:
        api.call("POST", "/templates", json={"name": "x", "subject": "{{ broken"})
    assert e.value.status == 422


def test_new_template_versions_keep_pinned_campaigns_working(api):
    tid = api.create_template("V", "v1 {{ first_name }}", "<p>one</p>")
    v2 = api.call("POST", f"/templates/{tid}/versions", json={"name": "V", "subject": "v2"})
    assert v2["version"] == 2
    tpl = api.call("GET", f"/templates/{tid}")
    assert tpl["active_version"] == 1 and tpl["latest_version"] == 2
    up = api.upload_csv("email,first_name\na@example.org,A\n")
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})
    got = api.call("GET", f"/campaigns/{tx['transaction_id']}")
    assert got["template_version"] == 1


def test_pause_resume_cancel_rules(api):
    tid = api.create_template("P", "S", HTML)
    up = api.upload_csv("email,first_name\na@example.org,A\n")
    later = (datetime.now(UTC) + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"],
                                              "schedule": {"send_at": later}})
    tx_id = tx["transaction_id"]
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/campaigns/{tx_id}/resume")
    assert e.value.status == 409
    api.wait_for(tx_id, {"SCHEDULED"}, timeout=30)
    assert api.call("POST", f"/campaigns/{tx_id}/pause")["status"] == "PAUSED"
    assert api.call("POST", f"/campaigns/{tx_id}/resume")["status"] == "SCHEDULED"
    assert api.call("POST", f"/campaigns/{tx_id}/cancel")["status"] == "CANCELLED"
    with pytest.raises(ApiError) as e:
        api.call("POST", f"/campaigns/{tx_id}/explode")
    assert e.value.status == 404


def test_listing_parameters_are_validated(api):
    for q in ("limit=0", "limit=abc", "limit=10000"):
        with pytest.raises(ApiError) as e:
            api.call("GET", f"/campaigns?{q}")
        assert e.value.status == 422, q
    with pytest.raises(ApiError) as e:
        api.call("GET", "/campaigns?cursor=%%%")
    assert e.value.status == 400


def test_suppressions_and_one_click_unsubscribe(api, stack):
    api.call("PUT", "/suppressions/Someone@Example.org", json={"reason": "manual"})
    assert api.call("GET", "/suppressions/someone@example.org")["reason"] == "manual"
    assert any(i["email"] == "someone@example.org" for i in api.call("GET", "/suppressions")["items"])
    api.call("DELETE", "/suppressions/someone@example.org")
    with pytest.raises(ApiError) as e:
        api.call("GET", "/suppressions/someone@example.org")
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        api.call("PUT", "/suppressions/not-an-address", json={})
    assert e.value.status == 422
    from core.domain.unsubscribe import sign_unsubscribe_token as unsubscribe_token

    token = unsubscribe_token(stack.settings.unsubscribe_secret, "local-tenant", "leaver@example.org", "m1")
    base = f"http://127.0.0.1:{stack.settings.api_port}/api/v1/email"
    assert requests.get(f"{base}/unsubscribe/{token}").status_code == 200  # no API key needed
    for _ in range(2):  # idempotent
        r = requests.post(f"{base}/unsubscribe/{token}", data="List-Unsubscribe=One-Click")
        assert r.status_code == 200
    assert api.call("GET", "/suppressions/leaver@example.org")["reason"] == "unsubscribe"
    assert requests.post(f"{base}/unsubscribe/{token[:-2]}xx").status_code == 404


def test_webhook_secret_rotation_needs_admin(api, stack):
    before = api.call("GET", "/webhook-secret")["secrets"]
    after = api.call("POST", "/webhook-secret/rotate")["secrets"]
    assert after[1] == before[0] and after[0] != before[0]
    reader = other_client(stack, ["campaigns:read"], tenant="tenant-reader2")
    with pytest.raises(ApiError) as e:
        reader.call("GET", "/webhook-secret")
    assert e.value.status == 403
