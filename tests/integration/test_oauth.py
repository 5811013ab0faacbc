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
