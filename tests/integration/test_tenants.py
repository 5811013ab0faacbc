"""Tenants and their keys across restarts of the embedded stack (which re-asserts its tenant)."""

from __future__ import annotations

import pytest

from core.domain.errors import InvalidInput, Unauthorized
from core.services import auth
from core.services.tenants import create_tenant, ensure_tenant


def test_a_restart_never_unrevokes_the_local_key(deps):
    raw = "ep_local_key_for_restart_test"
    first = ensure_tenant(deps.store, deps.secrets, "tenant-r", api_key=raw)
    assert auth.authenticate(deps.store, raw).tenant_id == "tenant-r"
    assert auth.revoke_key(deps.store, "tenant-r", first["key_id"])
    again = ensure_tenant(deps.store, deps.secrets, "tenant-r", api_key=raw)  # what `make run` does at start
    assert again["key_id"] == first["key_id"] and again["key_revoked"]
    with pytest.raises(Unauthorized):
        auth.authenticate(deps.store, raw)


def test_a_new_tenant_gets_a_signing_secret_and_keys_only_known_scopes(deps):
    create_tenant(deps.store, deps.secrets, "tenant-new")
    assert deps.secrets.signing_secrets("tenant-new")[0].startswith("whsec_")
    with pytest.raises(InvalidInput, match="unknown scope"):
        auth.create_key(deps.store, "tenant-new", ["campaigns:reed"])
    raw, key = auth.create_key(deps.store, "tenant-new", ["templates:write", "campaigns:read"])
    assert key.scopes == ["campaigns:read", "templates:write"]
    assert auth.authenticate(deps.store, raw).scopes == {"campaigns:read", "templates:write"}
