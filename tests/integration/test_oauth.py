"""OAuth 2.0 bearer tokens (JWT) verified against a JWKS served over real HTTP on loopback."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from core.domain.errors import Forbidden, Unauthorized
from core.services.auth import BearerVerifier, authenticate_request, create_key

ISSUER, AUDIENCE = "https://login.example.com/", "email-platform"


@pytest.fixture(scope="module")
def signer():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield key, f"http://127.0.0.1:{srv.server_port}/jwks.json"
    srv.shutdown()


def token(key, **claims):
    body = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300, "sub": "svc-mc", "tenant_id": "tenant-a",
            **claims}
    return "Bearer " + jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


def test_bearer_tokens_are_verified_and_narrow_scopes(deps, signer):
    key, url = signer
    raw, _ = create_key(deps.store, "tenant-a")
    v = BearerVerifier(ISSUER, AUDIENCE, url)
    p = authenticate_request(deps.store, raw, token(key, scope="campaigns:read"), v)
    assert p.tenant_id == "tenant-a" and p.scopes == {"campaigns:read"}
    with pytest.raises(Forbidden):
        p.require("campaigns:write")
    assert authenticate_request(deps.store, raw, None, v).scopes >= {"campaigns:write"}  # optional by default
    with pytest.raises(Unauthorized, match="missing Authorization"):
        authenticate_request(deps.store, raw, None, v, bearer_required=True)


@pytest.mark.parametrize("claims,error", [
    ({"exp": int(time.time()) - 10}, Unauthorized),
    ({"aud": "someone-else"}, Unauthorized),
    ({"iss": "https://evil.example.com/"}, Unauthorized),
    ({"tenant_id": "tenant-b"}, Forbidden),
])
def test_bad_tokens_are_refused(deps, signer, claims, error):
    key, url = signer
    raw, _ = create_key(deps.store, "tenant-a")
    with pytest.raises(error):
        authenticate_request(deps.store, raw, token(key, **claims), BearerVerifier(ISSUER, AUDIENCE, url))


def test_a_token_signed_by_another_key_is_refused(deps, signer):
    _, url = signer
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw, _ = create_key(deps.store, "tenant-a")
    with pytest.raises(Unauthorized):
        authenticate_request(deps.store, raw, token(other), BearerVerifier(ISSUER, AUDIENCE, url))


def test_the_api_key_stays_mandatory(deps, signer):
    key, url = signer
    with pytest.raises(Unauthorized):
        authenticate_request(deps.store, None, token(key), BearerVerifier(ISSUER, AUDIENCE, url))


def test_a_token_without_scope_grants_nothing(deps, signer):
    key, url = signer
    raw, _ = create_key(deps.store, "tenant-a")
    p = authenticate_request(deps.store, raw, token(key), BearerVerifier(ISSUER, AUDIENCE, url))
    assert p.scopes == frozenset()
    with pytest.raises(Forbidden):
        p.require("campaigns:read")


def test_the_auth_cache_never_outlives_a_token_nor_a_few_seconds(deps, signer, monkeypatch):
    """A cached principal is dropped at the token's exp, and a revoked key is refused within 5 s."""
    from core.services import auth
    from handlers.routes import common

    key, url = signer
    raw, api_key = create_key(deps.store, "tenant-a")
    now = [time.time()]
    monkeypatch.setattr(common.time, "time", lambda: now[0])
    authn = common.Authenticator(deps.settings.model_copy(update={
        "oauth_issuer": ISSUER, "oauth_audience": AUDIENCE, "oauth_jwks_url": url}), deps.store)
    bearer = token(key, scope="campaigns:read", exp=int(now[0]) + 2)
    assert authn.authenticate({"X-API-Key": raw, "Authorization": bearer}).scopes == {"campaigns:read"}
    now[0] += 3  # past exp, inside the cache's own time: the cache must not answer
    monkeypatch.setattr("jwt.api_jwt.datetime", _FrozenDatetime(now[0]), raising=False)
    with pytest.raises(Unauthorized):
        authn.authenticate({"X-API-Key": raw, "Authorization": bearer})

    assert authn.authenticate({"X-API-Key": raw}).tenant_id == "tenant-a"
    auth.revoke_key(deps.store, "tenant-a", api_key.key_id)
    assert authn.authenticate({"X-API-Key": raw})  # cached, for a few seconds at most
    now[0] += common.AUTH_CACHE_SECONDS + 0.1
    with pytest.raises(Unauthorized, match="revoked"):
        authn.authenticate({"X-API-Key": raw})


class _FrozenDatetime:
    """PyJWT reads the time through ``datetime.now``; this one is the test's clock."""

    def __init__(self, at: float):
        from datetime import UTC, datetime

        self._at, self._dt = datetime.fromtimestamp(at, UTC), datetime

    def now(self, tz=None):
        return self._at

    def __getattr__(self, name):
        return getattr(self._dt, name)
