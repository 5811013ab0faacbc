"""Every runbook in dry-run against the embedded stack; the kill switch and the stuck-campaign
nudges for real; failover and failback executed for real against a second (DR) region."""

import pytest

from local.moto import free_port
from local.replication import BucketReplicator, EchoRegistry, TableReplicator
from local.stack import Stack
from runbooks import (
    failback,
    failover,
    pause_sending,
    resume_sending,
    rotate_keys,
    ses_reputation,
    stuck_campaign,
    webhook_backlog,
)
from tests.e2e.test_api import HTML


@pytest.fixture(scope="module")
def stack(moto_server, aws_calls):
    """A stack of its own: the DR replica below copies the whole table from its start, which on the
    tier's shared stack (thousands of messages by now) took minutes."""
    from tests.e2e.conftest import start_e2e_stack

    s = start_e2e_stack(moto_server, aws_calls)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api(stack):
    from ops.client import Client

    return Client(f"http://127.0.0.1:{stack.settings.api_port}/api/v1/email", stack.tenant["api_key"])


def run(module, argv, settings):
    lines: list[str] = []
    code = module.main(argv, settings=settings, out=lines.append)
    return code, lines


@pytest.fixture(scope="module")
def campaign(api):
    tid = api.create_template("RB", "S", HTML)
    up = api.upload_csv("email,first_name\nsuccess@simulator.amazonses.com,A\n")
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})
    return tx["transaction_id"]


def test_every_runbook_runs_in_dry_run_and_changes_nothing(stack, campaign):
    s = stack.settings
    keys_before = stack.deps.store.api_keys("local-tenant")  # the stack is shared: other tests add keys
    for module, argv in [
        (pause_sending, []), (pause_sending, ["--tenant", "local-tenant"]), (resume_sending, []),
        (stuck_campaign, ["--campaign", campaign]), (webhook_backlog, ["--campaign", campaign]),
        (webhook_backlog, ["--tenant", "local-tenant"]), (ses_reputation, []),
        (rotate_keys, ["--tenant", "local-tenant"]),
    ]:
        code, lines = run(module, argv, s)
        assert code == 0, (module.__name__, lines)
        assert any("dry-run" in line or "already done" in line for line in lines) or module in (
            stuck_campaign, webhook_backlog, ses_reputation), (module.__name__, lines)
    assert stack.deps.store.sending_paused("local-tenant") is None  # dry-run changed nothing
    assert stack.deps.store.api_keys("local-tenant") == keys_before  # rotate_keys made none


def test_pause_and_resume_sending_for_real(stack):
    s = stack.settings
    assert run(pause_sending, ["--tenant", "local-tenant", "--execute"], s)[0] == 0
    assert stack.deps.store.sending_paused("local-tenant")
    code, lines = run(pause_sending, ["--tenant", "local-tenant", "--execute"], s)  # safe to re-run
    assert code == 0 and any("already done" in line for line in lines)
    assert run(resume_sending, ["--tenant", "local-tenant", "--execute"], s)[0] == 0
    assert stack.deps.store.sending_paused("local-tenant") is None


def test_stuck_campaign_reports_and_an_unknown_campaign_fails(stack, campaign):
    code, lines = run(stuck_campaign, ["--campaign", campaign], stack.settings)
    assert code == 0 and any("batches by status" in line for line in lines)
    code, lines = run(stuck_campaign, ["--campaign", "tx_nope"], stack.settings)
    assert code == 1 and any("FAILED" in line for line in lines)


@pytest.fixture(scope="module")
def dr(stack, moto_server):
    p = stack.settings
    s = p.model_copy(update={"region": p.dr_region, "dr_region": p.region, "api_port": free_port(),
                             "metrics_port": free_port(), "local_api_key": stack.tenant["api_key"],
                             "local_webhook_secret": stack.tenant["webhook_secret"]})
    from local.bootstrap import create_resources

    create_resources(s)
    echoes = EchoRegistry()
    table = TableReplicator(p, p.region, p.dr_region, lag=0.2, echoes=echoes)
    buckets = BucketReplicator(p, p.region, p.dr_region)
    table.start()
    buckets.start()
    from runbooks.regions import _set_flag, probe_lag

    for region in (p.region, p.dr_region):  # both regions know who is active before DR starts
        _set_flag(p, region, p.region)
    probe_lag(p, p.region, p.dr_region, timeout=300)  # the replica has caught up
    dr_stack = Stack.start(s, metrics=False)
    back = TableReplicator(p, p.dr_region, p.region, lag=0.2, from_now=True, echoes=echoes)  # both ways
    back.start()
    yield dr_stack
    for r in (table, buckets, back):
        r.stop()
    dr_stack.stop()


def test_failover_and_failback_for_real(stack, dr, api):
    p = stack.settings
    dr_api = f"http://127.0.0.1:{dr.settings.api_port}"
    primary_api = f"http://127.0.0.1:{p.api_port}"
    code, lines = run(failover, ["--target-api", dr_api], p)  # dry-run: all checks pass, nothing changes
    assert code == 0, lines
    assert not any("FAILED" in line for line in lines)
    code, lines = run(failover, ["--target-api", dr_api, "--execute", "--canary-key", stack.tenant["api_key"],
                                 "--wait", "90"], p)
    assert code == 0, "\n".join(lines)
    assert any("controller took the lease: ok" in line for line in lines)
    assert any("canary campaign" in line and ": ok" in line for line in lines)
    code, lines = run(failover, ["--target-api", dr_api, "--execute", "--wait", "5"], p)  # re-run: idempotent
    assert code == 0 and any("already done" in line for line in lines), lines
    code, lines = run(failback, ["--target-api", primary_api, "--execute", "--wait", "90"], p)
    assert code == 0, "\n".join(lines)
    assert any("controller took the lease: ok" in line for line in lines)
