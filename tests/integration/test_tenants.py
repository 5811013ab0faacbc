"""Tenants and their keys across restarts of the embedded stack (which re-asserts its tenant)."""

from __future__ import annotations

import pytest

from core.domain.errors import InvalidInput, Unauthorized
from core.services import auth
from core.services.tenants import create_tenant, ensure_tenant


def test_a_restart_never_unrevokes_the_local_key(deps):
    raw = "ep_local_key_for_restart_test"
    first = ensure_tenant(deps.store, deps.secrets, "tenant-r", api_key=raw)
    assert auth.authenticate(deps.store, raw).tenant_id == "tenant-r"
    assert auth.revoke_key(deps.store, "tenant-r", first["key_id"])
    again = ensure_tenant(deps.store, deps.secrets, "tenant-r", api_key=raw)  # what `make run` does at start
    assert again["key_id"] == first["key_id"] and again["key_revoked"]
    with pytest.raises(Unauthorized):
        auth.authenticate(deps.store, raw)


def test_a_new_tenant_gets_a_signing_secret_and_keys_only_known_scopes(deps):
    create_tenant(deps.store, deps.secrets, "tenant-new")
    assert deps.secrets.signing_secrets("tenant-new")[0].startswith("whsec_")
    with pytest.raises(InvalidInput, match="unknown scope"):
        auth.create_key(deps.store, "tenant-new", ["campaigns:reed"])
    raw, key = auth.create_key(deps.store, "tenant-new", ["templates:write", "campaigns:read"])
    assert key.scopes == ["campaigns:read", "templates:write"]
    assert auth.authenticate(deps.store, raw).scopes == {"campaigns:read", "templates:write"}


def test_keys_are_usage_plan_keys_in_every_region_and_revocation_disables_them(deps):
    """The edge requires an API Gateway key in x-api-key: a tenant key is registered as one in
    both regions' usage plans (so the plan's throttling applies per tenant) and disabled on revoke."""
    from core.adapters.apigateway import UsagePlanKeys
    from core.adapters.aws import client

    plans = {}
    for region in (deps.settings.region, deps.settings.dr_region):
        gw = client(deps.settings, "apigateway", region)
        api = gw.create_rest_api(name=f"{deps.settings.name_prefix}-api")["id"]
        plan = gw.create_usage_plan(name=f"{deps.settings.name_prefix}-default",
                                    throttle={"rateLimit": 100, "burstLimit": 200})["id"]
        plans[region] = (gw, plan)
        assert api
    gateway = UsagePlanKeys(plans)
    raw, key = auth.create_key(deps.store, "tenant-gw", ["campaigns:read"], gateway=gateway)
    for gw, plan in plans.values():
        (item,) = [k for k in gw.get_api_keys(includeValues=True)["items"] if k["name"] == f"tenant-gw.{key.key_id}"]
        assert item["value"] == raw and item["enabled"]
        assert item["id"] in {k["id"] for k in gw.get_usage_plan_keys(usagePlanId=plan)["items"]}
    assert auth.revoke_key(deps.store, "tenant-gw", key.key_id, gateway=gateway)
    for gw, _ in plans.values():
        (item,) = [k for k in gw.get_api_keys()["items"] if k["name"] == f"tenant-gw.{key.key_id}"]
        assert not item["enabled"]


def test_a_tenant_sends_only_as_a_sender_authorised_for_it(deps):
    """The shared domain's other local parts belong to other tenants."""
    from core.domain.errors import Forbidden
    from core.services.tenants import allow_sender, revoke_sender
    from tests.helpers import submit

    ensure_tenant(deps.store, deps.secrets, "tenant-a")
    with pytest.raises(Forbidden, match="may not send as ceo@example.com"):
        submit(deps, "tenant-a", "email,first_name\na@example.org,A\n", **{"from": "CEO <ceo@example.com>"})
    assert submit(deps, "tenant-a", "email,first_name\na@example.org,A\n", **{"from": deps.settings.default_from})
    allow_sender(deps.store, "tenant-a", "news@acme.example")
    allow_sender(deps.store, "tenant-a", "@mail.acme.example")
    for sender in ("Acme News <news@acme.example>", "billing@mail.acme.example"):
        assert submit(deps, "tenant-a", "email,first_name\na@example.org,A\n", **{"from": sender})
    revoke_sender(deps.store, "tenant-a", "news@acme.example")
    with pytest.raises(Forbidden):
        submit(deps, "tenant-a", "email,first_name\na@example.org,A\n", **{"from": "news@acme.example"})
    with pytest.raises(InvalidInput):
        allow_sender(deps.store, "tenant-a", "not a sender")
