"""API keys: stored as SHA-256 hashes, each mapped to one tenant and a set of scopes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from core.domain.errors import Forbidden, InvalidInput, Unauthorized
from core.domain.models import ApiKey, new_id
from core.services.ports import TenantRepository

SCOPES = ("campaigns:read", "campaigns:write", "templates:write", "suppressions:write", "privacy:read",
          "privacy:write", "audit:read", "admin")


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]
    expires_at: float | None = None  # a bearer token's ``exp``: nothing may cache the principal longer

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this API key lacks the {scope!r} scope")


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidInput(f"unknown scope(s) {unknown}; the scopes are {list(SCOPES)}")
    return sorted(set(scopes))


class GatewayKeys(Protocol):
    """Where API keys must also exist for the edge to let requests through (API Gateway usage plans)."""

    def register(self, raw: str, name: str) -> list[str]: ...
    def disable(self, name: str) -> int: ...


def gateway_key_name(key: ApiKey) -> str:
    return f"{key.tenant_id}.{key.key_id}"


def create_key(store: TenantRepository, tenant_id: str, scopes: list[str] | None = None, raw: str | None = None,
               gateway: GatewayKeys | None = None) -> tuple[str, ApiKey]:
    """Create a key; the raw value is returned once and never stored (only its hash, and the
    gateway's own copy when the edge requires keys)."""
    scopes = check_scopes(scopes) if scopes else list(SCOPES)
    raw = raw or "ep_" + secrets.token_urlsafe(32)
    key = ApiKey(key_id=new_id("key_"), tenant_id=tenant_id, scopes=scopes)
    if gateway is not None:  # first at the edge: a key the edge refuses is of no use
        gateway.register(raw, gateway_key_name(key))
    store.put_api_key(hash_key(raw), key)
    return raw, key


def revoke_key(store: TenantRepository, tenant_id: str, key_id: str, gateway: GatewayKeys | None = None) -> bool:
    for key_hash, key in store.api_keys(tenant_id):
        if key.key_id == key_id:
            store.revoke_api_key(key_hash)
            if gateway is not None:
                gateway.disable(gateway_key_name(key))
            return True
    return False


def authenticate(store: TenantRepository, raw: str | None) -> Principal:
    if not raw:
        raise Unauthorized("missing X-API-Key header")
    key = store.api_key(hash_key(raw))
    if key is None or key.revoked:
        raise Unauthorized("unknown or revoked API key")
    return Principal(key.tenant_id, key.key_id, frozenset(key.scopes))


class BearerVerifier:
    """Verifies OAuth 2.0 JWT access tokens against the issuer's JWKS (keys cached by PyJWT)."""

    def __init__(self, issuer: str, audience: str, jwks_url: str, tenant_claim: str = "tenant_id"):
        import jwt

        self.issuer, self.audience, self.tenant_claim = issuer, audience, tenant_claim
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300)

    def claims(self, token: str) -> dict[str, Any]:
        import jwt

        try:
            key = self.jwks.get_signing_key_from_jwt(token).key
            return jwt.decode(token, key, algorithms=["RS256", "ES256", "PS256"], audience=self.audience,
                              issuer=self.issuer, options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"bearer token rejected: {exc}") from None


def authenticate_request(store: TenantRepository, api_key: str | None, authorization: str | None,
                         verifier: BearerVerifier | None, bearer_required: bool = False) -> Principal:
    """API key always; a bearer token too when OAuth is configured (mandatory if required).

    The token must name the key's tenant; its scopes narrow the key's, and a token without a
    ``scope`` claim grants nothing (least privilege). The principal expires with the token.
    """
    principal = authenticate(store, api_key)
    if verifier is None:
        return principal
    token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
    if token is None:
        if bearer_required:
            raise Unauthorized("missing Authorization: Bearer token")
        return principal
    claims = verifier.claims(token)
    if claims.get(verifier.tenant_claim) != principal.tenant_id:
        raise Forbidden("the bearer token belongs to another tenant than the API key")
    token_scopes = set(str(claims.get("scope") or "").split())
    exp = claims.get("exp")
    return Principal(principal.tenant_id, f"{principal.key_id}+{claims.get('sub', 'jwt')}",
                     frozenset(principal.scopes & token_scopes),
                     float(exp) if isinstance(exp, int | float) else None)
