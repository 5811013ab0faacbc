"""Per-tenant webhook signing secrets in Secrets Manager (rotation keeps the previous one).

On AWS a tenant's secret is created encrypted with this region's key and replicated to the other
region under that region's key, so after a failover the DR region can still sign callbacks.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError


class SecretsManagerStore:
    def __init__(self, client: Any, prefix: str, *, kms_key_id: str | None = None,
                 replica_region: str | None = None, replica_kms_key_id: str | None = None):
        """``kms_key_id``: this region's key for new secrets (None: the account's default key).
        ``replica_region`` + ``replica_kms_key_id``: new secrets get a replica there, under that key."""
        self.client = client
        self.prefix = prefix
        self.kms_key_id = kms_key_id
        self.replica_region = replica_region
        self.replica_kms_key_id = replica_kms_key_id

    def _create_options(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.kms_key_id:
            kw["KmsKeyId"] = self.kms_key_id
        if self.replica_region and self.replica_kms_key_id:
            kw["AddReplicaRegions"] = [{"Region": self.replica_region, "KmsKeyId": self.replica_kms_key_id}]
        return kw

    def _name(self, tenant_id: str) -> str:
        return f"{self.prefix}/webhook-signing/{tenant_id}"

    def signing_secrets(self, tenant_id: str) -> list[str]:
        """Current secret first, then the previous one while a rotation overlaps."""
        try:
            raw = self.client.get_secret_value(SecretId=self._name(tenant_id))["SecretString"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                return []
            raise
        data = json.loads(raw)
        return [s for s in (data.get("current"), data.get("previous")) if s]

    def set_secret(self, tenant_id: str, secret: str, keep_previous: bool = True) -> None:
        prev = self.signing_secrets(tenant_id)
        body = json.dumps({"current": secret, "previous": prev[0] if (prev and keep_previous and prev[0] != secret) else None})
        try:
            self.client.put_secret_value(SecretId=self._name(tenant_id), SecretString=body)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            self.client.create_secret(Name=self._name(tenant_id), SecretString=body, **self._create_options())

    def drop_previous(self, tenant_id: str) -> None:
        cur = self.signing_secrets(tenant_id)
        if cur:
            self.client.put_secret_value(SecretId=self._name(tenant_id), SecretString=json.dumps({"current": cur[0]}))
