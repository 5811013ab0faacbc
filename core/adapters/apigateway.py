"""Tenant API keys as API Gateway usage-plan keys, so the usage plan's throttling applies to each
tenant (API Gateway refuses a request whose ``x-api-key`` is not a key of the plan before our
Lambda runs; the Lambda still checks the key's hash, tenant and scopes)."""

from __future__ import annotations

from typing import Any


class UsagePlanKeys:
    """One usage plan per region (primary and DR): a key works wherever the API answers."""

    def __init__(self, plans: dict[str, tuple[Any, str]]):
        self.plans = plans  # region → (apigateway client, usage plan id)

    def register(self, raw: str, name: str) -> list[str]:
        """Create the gateway key with the tenant key's value in every region; returns the key ids."""
        ids = []
        for client, plan_id in self.plans.values():
            key_id = client.create_api_key(name=name, value=raw, enabled=True)["id"]
            client.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")
            ids.append(key_id)
        return ids

    def disable(self, name: str) -> int:
        """Disable the gateway key in every region (revocation); returns how many were disabled."""
        done = 0
        for client, _ in self.plans.values():
            for item in client.get_api_keys(nameQuery=name, limit=500).get("items", []):
                if item.get("name") == name and item.get("enabled", True):
                    client.update_api_key(apiKey=item["id"], patchOperations=[
                        {"op": "replace", "path": "/enabled", "value": "false"}])
                    done += 1
        return done
