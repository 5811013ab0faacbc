"""Operator tools against moto: a rotated API key reaches the operator once and never the logs,
every admin action of the runbooks and the admin CLI (secret-revealing reads included) is in
the tenant's audit log, with the operator as actor and no secret, and where the edge requires
API keys both tools keep the usage plans in step with the tenant's keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog

from core.adapters.apigateway import UsagePlanKeys
from core.adapters.aws import client
from core.adapters.privacy import AuditRepository
from core.domain.models import ApiKey
from core.observability import configure_logging
from core.services import audit, auth
from core.services.tenants import create_tenant
from ops import cli
from runbooks import common, pause_sending, resume_sending, rotate_keys


@pytest.fixture(autouse=True)
def logging_restored():
    """A runbook configures logging onto this test's captured stderr: later tests get theirs back."""
    before = structlog.get_config()
    yield
    structlog.configure(**before)


def _entries(deps, tenant_id: str = "tenant-a") -> list[dict]:
    return audit.audit_page(AuditRepository(deps.store.table), tenant_id, 50, None)["items"]


def test_rotating_keys_shows_the_new_key_once_and_logs_no_key_or_secret(deps, tenant, monkeypatch, capsys):
    made: list[str] = []
    create = auth.create_key

    def remembering(*a, **kw):
        raw, key = create(*a, **kw)
        made.append(raw)
        return raw, key

    monkeypatch.setattr(auth, "create_key", remembering)
    # every log line the runbook writes, whatever its level, goes to the captured stderr
    monkeypatch.setattr(common, "configure_logging", lambda level: configure_logging("DEBUG"))
    lines: list[str] = []
    code = rotate_keys.main(["--tenant", "tenant-a", "--execute", "--json"], settings=deps.settings,
                            out=lines.append)
    captured = capsys.readouterr()
    (raw,) = made
    secrets = deps.secrets.signing_secrets("tenant-a")
    assert code == 0 and len(secrets) == 2  # rotated: new and previous
    assert "runbook step" in captured.err  # the steps were logged
    for secret in [raw, tenant["api_key"], *secrets]:
        assert secret not in captured.err, "a key or secret reached the logs"
        assert secret not in captured.out, "a key or secret is in the --json step report"
    assert sum(raw in line for line in lines) == 1  # shown to the operator once


def test_runbook_and_cli_admin_actions_are_in_the_tenants_audit_log(deps, tenant, settings, monkeypatch, capsys):
    old_key = next(k.key_id for _, k in deps.store.api_keys("tenant-a"))
    run = {"settings": deps.settings, "out": lambda line: None}
    assert rotate_keys.main(["--tenant", "tenant-a", "--execute"], **run) == 0
    new_key = next(k.key_id for _, k in deps.store.api_keys("tenant-a") if k.key_id != old_key)
    assert rotate_keys.main(["--tenant", "tenant-a", "--finish", old_key, "--execute"], **run) == 0
    assert pause_sending.main(["--tenant", "tenant-a", "--execute"], **run) == 0
    assert resume_sending.main(["--tenant", "tenant-a", "--execute"], **run) == 0
    assert rotate_keys.main(["--tenant", "tenant-a"], **run) == 0  # a dry run does nothing: nothing audited
    for name, value in (("AWS_ENDPOINT_URL", settings.aws_endpoint_url), ("NAME_PREFIX", settings.name_prefix),
                        ("ENVIRONMENT", "test")):
        monkeypatch.setenv(f"EMAILPLATFORM_{name}", value)
    assert cli.main(["tenant", "show", "--tenant", "tenant-a"]) == 0
    assert cli.main(["webhook-secret", "show", "--tenant", "tenant-a"]) == 0
    capsys.readouterr()

    entries = _entries(deps)
    assert [(e["action"], e["target"]) for e in reversed(entries)] == [
        ("RUNBOOK rotate-keys create key", {"key_id": new_key}),
        ("RUNBOOK rotate-keys rotate webhook secret", {}),
        ("RUNBOOK rotate-keys revoke key", {"key_id": old_key}),
        ("RUNBOOK rotate-keys drop previous webhook secret", {}),
        ("RUNBOOK pause-sending pause sending", {"reason": "runbook pause-sending"}),
        ("RUNBOOK resume-sending resume sending", {}),
        ("CLI tenant show", {}),
        ("CLI webhook-secret show", {}),
    ]
    assert all(e["actor"].startswith("operator:") and e["outcome"] == "ok" for e in entries)
    assert [e["source"] for e in reversed(entries)] == ["runbook"] * 6 + ["cli"] * 2
    logged = json.dumps(entries)
    for secret in [tenant["api_key"], *deps.secrets.signing_secrets("tenant-a")]:
        assert secret not in logged


def _usage_plans(settings) -> dict[str, tuple[Any, str]]:
    """A usage plan in each region, as the edge component creates them (stack output usage_plan_ids)."""
    plans = {}
    for region in (settings.region, settings.dr_region):
        gw = client(settings, "apigateway", region)
        plans[region] = (gw, gw.create_usage_plan(name=f"{settings.name_prefix}-default")["id"])
    return plans


def _edge_key(gw: Any, plan: str, key: ApiKey) -> dict[str, Any]:
    """The gateway's copy of a tenant key, with whether it is a key of the usage plan."""
    (item,) = [k for k in gw.get_api_keys(includeValues=True, limit=500)["items"]
               if k["name"] == auth.gateway_key_name(key)]
    return {**item, "in_plan": item["id"] in {k["id"] for k in gw.get_usage_plan_keys(usagePlanId=plan)["items"]}}


def _key(deps, tenant_id: str, key_id: str) -> ApiKey:
    return next(k for _, k in deps.store.api_keys(tenant_id) if k.key_id == key_id)


def test_rotating_keys_where_the_edge_requires_keys_puts_the_new_key_in_the_usage_plans(deps):
    """On AWS with usage_plan_ids set, API Gateway refuses (403) an x-api-key that is not a key of
    the usage plan before the Lambda runs, and goes on accepting one it still holds enabled: the
    runbook registers the new key in every region's plan and, at --finish, disables the old one."""
    plans = _usage_plans(deps.settings)
    settings = deps.settings.model_copy(update={"usage_plan_ids": {r: plan for r, (_, plan) in plans.items()}})
    create_tenant(deps.store, deps.secrets, "tenant-gw")
    _, old = auth.create_key(deps.store, "tenant-gw", ["campaigns:read"], gateway=UsagePlanKeys(plans))
    lines: list[str] = []
    run = {"settings": settings, "out": lines.append}

    assert rotate_keys.main(["--tenant", "tenant-gw", "--execute"], **run) == 0
    (shown,) = [json.loads(line[line.index("{"):]) for line in lines if line.startswith("[secret]")]
    new = _key(deps, "tenant-gw", shown["key_id"])
    for gw, plan in plans.values():
        edge = _edge_key(gw, plan, new)
        assert edge["value"] == shown["api_key"] and edge["enabled"] and edge["in_plan"]

    assert rotate_keys.main(["--tenant", "tenant-gw", "--finish", old.key_id, "--execute"], **run) == 0
    for gw, plan in plans.values():
        assert not _edge_key(gw, plan, old)["enabled"]
        assert _edge_key(gw, plan, new)["enabled"]


def test_cli_keys_create_and_revoke_keep_the_usage_plans_in_step(deps, settings, monkeypatch, capsys):
    plans = _usage_plans(deps.settings)
    for name, value in (("AWS_ENDPOINT_URL", settings.aws_endpoint_url), ("NAME_PREFIX", settings.name_prefix),
                        ("ENVIRONMENT", "test"),
                        ("USAGE_PLAN_IDS", json.dumps({r: plan for r, (_, plan) in plans.items()}))):
        monkeypatch.setenv(f"EMAILPLATFORM_{name}", value)
    capsys.readouterr()
    assert cli.main(["keys", "create", "--tenant", "tenant-cli", "--scope", "campaigns:read"]) == 0
    created = json.loads(capsys.readouterr().out)
    key = _key(deps, "tenant-cli", created["key_id"])
    for gw, plan in plans.values():
        edge = _edge_key(gw, plan, key)
        assert edge["value"] == created["api_key"] and edge["enabled"] and edge["in_plan"]
    assert cli.main(["keys", "revoke", "--tenant", "tenant-cli", "--key-id", key.key_id]) == 0
    for gw, plan in plans.values():
        assert not _edge_key(gw, plan, key)["enabled"]
