"""Shared fixtures: one real moto server per test session, fresh resources per test."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings, load_settings
from core.adapters.aws import CallCounter
from core.bootstrap import Deps, bootstrap
from core.services.ports import FakeClock
from local.moto import MotoServer

EVENTS = Path(__file__).parent / "events"


def load_event(name: str) -> dict[str, Any]:
    """A real AWS event sample from tests/events/ (shapes from the AWS documentation)."""
    return json.loads((EVENTS / name).read_text())


# The session fixtures of the e2e tier (tests/e2e/conftest.py): the tests that use them share one
# embedded stack and one AWS call counter, so they run on one worker, in file order.
E2E_STACK_FIXTURES = {"stack", "api", "aws_calls"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Work units for pytest-xdist's ``--dist loadgroup`` (what `make test` runs; each worker has its
    own moto server). Every test on the e2e stack runs on one worker, in file order, so
    test_zz_least_privilege still runs last and sees every AWS call the tier made. A test that uses a
    module- or class-scoped fixture runs on one worker with the rest of its file (the fixture is
    built once). Any other test needs only its own fixtures (fresh resources under its own name
    prefix) and goes to whichever worker is free.

    The e2e tests that start stacks (and moto servers) of their own (kill -9, automatic failover,
    `emailplatform up`, Prometheus) form a second group: xdist hands out the largest groups first,
    so these minutes-long runs start early, beside the e2e stack's group, instead of trailing at
    the end of the run on one worker."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        defs = [d for ds in (fixtures.name2fixturedefs.values() if fixtures else ()) for d in ds]
        if item.path.parent.name == "e2e" and E2E_STACK_FIXTURES & {d.argname for d in defs}:
            item.add_marker(pytest.mark.xdist_group("e2e-stack"))
        elif item.path.parent.name == "e2e":
            item.add_marker(pytest.mark.xdist_group("e2e-own-stacks"))
        elif any(d.scope in ("module", "class", "package") for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


def make_settings(moto_url: str, **overrides: Any) -> Settings:
    base = dict(
        environment="test", aws_endpoint_url=moto_url, name_prefix=f"t{uuid.uuid4().hex[:10]}",
        batch_size=50, send_chunk_size=10, ses_max_send_rate=10_000, callback_allow_loopback=True,
        callback_require_https=False, send_evidence_window_seconds=300, completion_window_seconds=3600, recount_interval_seconds=0,
    )
    base.update(overrides)
    return load_settings(**base)


@pytest.fixture
def settings(moto_server) -> Settings:
    return make_settings(moto_server.url)


@pytest.fixture
def clock() -> FakeClock:
    from datetime import UTC, datetime

    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def counter() -> CallCounter:
    return CallCounter()


@pytest.fixture
def deps(settings, clock, counter) -> Deps:
    from local.bootstrap import create_resources

    create_resources(settings)
    return bootstrap(settings, clock=clock, counter=counter)


@pytest.fixture
def tenant(deps) -> dict[str, str]:
    from core.services.tenants import ensure_tenant

    return ensure_tenant(deps.store, deps.secrets, "tenant-a")


def sns_envelope(ses_event: dict[str, Any], sns_id: str | None = None) -> str:
    """The SQS body SNS delivers for an SES event (non-raw delivery)."""
    return json.dumps({
        "Type": "Notification", "MessageId": sns_id or str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-events", "Message": json.dumps(ses_event),
        "Timestamp": "2026-01-01T10:00:00.000Z", "SignatureVersion": "1", "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.pem", "UnsubscribeURL": "https://example.com",
    })


def ses_event_for(name: str, *, tenant: str, message_id: str, recipient: str | None = None,
                  ses_id: str | None = None, sent_at: str | None = None) -> dict[str, Any]:
    """A sample from tests/events/ addressed to one of our messages (as SES would tag it)."""
    from core.domain.models import batch_of_message, transaction_of_batch

    ev = load_event(name)
    batch = batch_of_message(message_id)
    ev["mail"]["tags"].update(tenant_id=[tenant], transaction_id=[transaction_of_batch(batch)], batch_id=[batch],
                              message_id=[message_id])
    if recipient:
        ev["mail"]["destination"] = [recipient]
    if ses_id:
        ev["mail"]["messageId"] = ses_id
    if sent_at:
        ev["mail"]["timestamp"] = sent_at
    return ev
