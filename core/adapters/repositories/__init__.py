"""One repository per aggregate over the single table (``core.adapters.dynamodb.DynamoTable``),
each implementing its port in ``core.services.ports``; keys come from ``core.schema``.
``core.adapters.store.DynamoStore`` composes them into the one store the services are given."""

from core.adapters.repositories.batches import DynamoBatches
from core.adapters.repositories.callbacks import DynamoCallbacks
from core.adapters.repositories.messages import DynamoMessages
from core.adapters.repositories.send_log import DynamoSendLog
from core.adapters.repositories.suppressions import DynamoSuppressions
from core.adapters.repositories.switches import DynamoSwitches
from core.adapters.repositories.templates import DynamoTemplates
from core.adapters.repositories.tenants import DynamoTenants
from core.adapters.repositories.transactions import DynamoTransactions
from core.adapters.repositories.uploads import DynamoUploads

__all__ = [
    "DynamoBatches",
    "DynamoCallbacks",
    "DynamoMessages",
    "DynamoSendLog",
    "DynamoSuppressions",
    "DynamoSwitches",
    "DynamoTemplates",
    "DynamoTenants",
    "DynamoTransactions",
    "DynamoUploads",
]
