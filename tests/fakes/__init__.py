"""In-memory fakes of the services' ports (core/services/ports.py), one module per aggregate, with
the semantics of ``core.adapters.store.DynamoStore`` (core/adapters/repositories/) over one shared in-memory table
(tests/fakes/table.py). tests/integration/test_repository_contract.py runs the same cases against
both, so a service test on these fakes tests what the real store would do.

    store = FakeStore()                   # every repository over one table
    batches = FakeBatches(store.table)    # or one aggregate's, seeing the same items
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.domain.privacy import AddressHasher
from core.services.ports import FakeClock
from tests.fakes.base import FakeRepository
from tests.fakes.batches import FakeBatches
from tests.fakes.blobs import FakeBlobs
from tests.fakes.callbacks import FakeCallbacks
from tests.fakes.mailer import FakeMailer
from tests.fakes.messages import FakeMessages
from tests.fakes.queue import FakeQueue
from tests.fakes.ratelimit import FakeBooking, FakeRateLimiter
from tests.fakes.send_log import FakeSendLog
from tests.fakes.suppressions import FakeSuppressions
from tests.fakes.switches import FakeSwitches
from tests.fakes.table import FakeTable, FakeUpdate
from tests.fakes.templates import FakeTemplates
from tests.fakes.tenants import FakeTenants
from tests.fakes.transactions import FakeTransactions
from tests.fakes.uploads import FakeUploads
from tests.fakes.webhooks import FakeHttpResult, FakeSecrets, FakeWebhookHttp

# What bootstrap gives the real store (a keyed hash from the unsubscribe secret), with a test secret.
TEST_ADDRESS_HASHER = AddressHasher.from_secret("fake-store-unsubscribe-secret")
_DEFAULT: Any = object()


class FakeStore(FakeTransactions, FakeBatches, FakeMessages, FakeSendLog, FakeCallbacks, FakeTemplates,
                FakeUploads, FakeSuppressions, FakeTenants, FakeSwitches):
    """``CampaignStore``: every aggregate's fake over one table. ``address_hasher`` defaults to a
    keyed hash like production's; pass None for a store without one."""

    def __init__(self, table: FakeTable | None = None, address_hasher: Any = _DEFAULT):
        super().__init__(table, TEST_ADDRESS_HASHER if address_hasher is _DEFAULT else address_hasher)

    def fenced(self, epoch: int) -> FakeStore:
        """The same items; every update carries ``epoch`` and loses to a newer one (``Fenced``)."""
        return FakeStore(self.table.fenced(epoch), self.address_hasher)


if TYPE_CHECKING:  # mypy proves each fake implements its port, like core/bootstrap.py does for DynamoStore
    from core.services.ports import (
        BatchRepository,
        BlobStore,
        CallbackRepository,
        CampaignStore,
        Mailer,
        MessageRepository,
        RateLimiter,
        SecretStore,
        SendLogRepository,
        SendQueue,
        SuppressionRepository,
        SwitchRepository,
        TemplateRepository,
        TenantRepository,
        TransactionRepository,
        UploadRepository,
        WebhookHttp,
    )

    _: type[CampaignStore] = FakeStore
    _transactions: type[TransactionRepository] = FakeTransactions
    _batches: type[BatchRepository] = FakeBatches
    _messages: type[MessageRepository] = FakeMessages
    _send_log: type[SendLogRepository] = FakeSendLog
    _callbacks: type[CallbackRepository] = FakeCallbacks
    _templates: type[TemplateRepository] = FakeTemplates
    _uploads: type[UploadRepository] = FakeUploads
    _suppressions: type[SuppressionRepository] = FakeSuppressions
    _tenants: type[TenantRepository] = FakeTenants
    _switches: type[SwitchRepository] = FakeSwitches
    _blobs: type[BlobStore] = FakeBlobs
    _queue: type[SendQueue] = FakeQueue
    _limiter: type[RateLimiter] = FakeRateLimiter
    _mailer: type[Mailer] = FakeMailer
    _http: type[WebhookHttp] = FakeWebhookHttp
    _secrets: type[SecretStore] = FakeSecrets

__all__ = [
    "FakeBatches", "FakeBlobs", "FakeBooking", "FakeRateLimiter", "FakeCallbacks", "FakeClock", "FakeMailer", "FakeMessages", "FakeQueue",
    "FakeRepository", "FakeSendLog", "FakeStore", "FakeSuppressions", "FakeSwitches", "FakeTable", "FakeTemplates",
    "FakeTenants", "FakeTransactions", "FakeUpdate", "FakeUploads", "FakeHttpResult", "FakeSecrets",
    "FakeWebhookHttp", "TEST_ADDRESS_HASHER",
]
