"""Service tests on the in-memory fakes (tests/fakes): no AWS, no moto, no sleeping. The fakes keep
DynamoStore's semantics (tests/integration/test_repository_contract.py runs both), so these many
fast cases test what the services do with the real store."""

from __future__ import annotations

from typing import Any

import pytest

from config.settings import Settings, load_settings
from core.services.ports import FakeClock
from tests.fakes import FakeBlobs, FakeMailer, FakeQueue, FakeStore
from tests.services.builders import NOW


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings(environment="test", name_prefix="svc", callback_require_https=True,
                         callback_allow_loopback=False, recount_quiet_seconds=120, redispatch_after_seconds=120,
                         completion_window_seconds=3600)


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """Per test: a test may change a copy (``settings.model_copy(update=…)``)."""
    return base_settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def blobs() -> FakeBlobs:
    return FakeBlobs()


@pytest.fixture
def queue() -> FakeQueue:
    return FakeQueue()


@pytest.fixture
def mailer() -> FakeMailer:
    return FakeMailer()


@pytest.fixture
def ports(store: FakeStore, blobs: FakeBlobs, settings: Settings, clock: FakeClock) -> dict[str, Any]:
    """What ``submit_campaign`` takes, by name."""
    return {"store": store, "blobs": blobs, "settings": settings, "clock": clock}
