"""What every fake repository holds: the shared in-memory table and the address hasher."""

from __future__ import annotations

from typing import Any

from tests.fakes.table import FakeTable


class FakeRepository:
    """One aggregate's fake over the shared state. Give several repositories the same ``table``
    to have them see each other's writes, as the real ones do over the one DynamoDB table."""

    def __init__(self, table: FakeTable | None = None, address_hasher: Any = None):
        self.table = table if table is not None else FakeTable()
        # core.domain.privacy.AddressHasher: erased people are suppressed by a keyed hash only
        self.address_hasher = address_hasher
