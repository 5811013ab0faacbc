"""The campaign store: every aggregate's repository (``core.adapters.repositories``) over one table.

Services are given this one object (``deps.store``) and name the narrowest port they need
(``core.services.ports``). Writes that change a status are conditional on the status and version
read before; a transaction status change writes its callback (the outbox entry) in the same
DynamoDB transaction, so a change never exists without its callback.
"""

from __future__ import annotations

from typing import Any

from core.adapters.dynamodb import DynamoTable
from core.adapters.repositories import (
    DynamoBatches,
    DynamoCallbacks,
    DynamoMessages,
    DynamoSendLog,
    DynamoSuppressions,
    DynamoSwitches,
    DynamoTemplates,
    DynamoTenants,
    DynamoTransactions,
    DynamoUploads,
)


class DynamoStore(DynamoTransactions, DynamoBatches, DynamoMessages, DynamoSendLog, DynamoCallbacks,
                  DynamoTemplates, DynamoUploads, DynamoSuppressions, DynamoTenants, DynamoSwitches):
    """All repositories over one ``DynamoTable`` (implements ``core.services.ports.CampaignStore``)."""

    def __init__(self, table: DynamoTable, address_hasher: Any = None):
        self.table = table
        # core.domain.privacy.AddressHasher: erased people are suppressed by a keyed hash only
        self.address_hasher = address_hasher

    def fenced(self, epoch: int) -> DynamoStore:
        """The same store whose writes carry the leader's fencing epoch (core/adapters/dynamodb.py)."""
        return DynamoStore(self.table.fenced(epoch), self.address_hasher)


__all__ = ["DynamoStore"]
