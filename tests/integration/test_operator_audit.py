"""Operator tools against moto: a rotated API key reaches the operator once and never the logs,
and every admin action of the runbooks and the admin CLI (secret-revealing reads included) is in
the tenant's audit log, with the operator as actor and no secret."""

from __future__ import annotations

import json

import pytest
import structlog

from core.adapters.privacy import AuditRepository
from core.observability import configure_logging
from core.services import audit, auth
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
    from ops import cli

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
