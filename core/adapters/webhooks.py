"""HTTP client for callbacks that connects only to the address it checked.

The host is resolved once; every resolved address must be public (``check_address``); the
connection goes to that checked address (SNI and Host keep the name), so a DNS answer that
changes between check and connect (rebinding) cannot reach an internal service. Redirects are
never followed: a 3xx is just a failed attempt.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from core.domain.errors import InvalidInput
from core.domain.urls import check_address, check_callback_url


@dataclass
class HttpResult:
    status: int | None
    retry_after: str | None = None
    error: str | None = None
    elapsed: float = 0.0


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class GuardedHttpClient:
    def __init__(self, *, require_https: bool, allow_loopback: bool, resolver=socket.getaddrinfo,  # noqa: ANN001
                 ssl_context: ssl.SSLContext | None = None):
        self.require_https = require_https
        self.allow_loopback = allow_loopback
        self.resolver = resolver
        self.ssl_context = ssl_context or ssl.create_default_context()

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> HttpResult:
        started = time.monotonic()
        try:
            scheme, host, port = check_callback_url(url, require_https=self.require_https,
                                                    allow_loopback=self.allow_loopback)
            infos = self.resolver(host, port, type=socket.SOCK_STREAM)
            addresses = [info[4][0] for info in infos]
            if not addresses:
                return HttpResult(None, error="host did not resolve")
            for address in addresses:
                check_address(address, allow_loopback=self.allow_loopback)
        except InvalidInput as exc:
            return HttpResult(None, error=f"refused: {exc.message}", elapsed=time.monotonic() - started)
        except OSError as exc:
            return HttpResult(None, error=f"dns: {exc}", elapsed=time.monotonic() - started)
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = _PinnedHTTPSConnection(host, port, addresses[0], timeout, self.ssl_context)
        else:
            conn = _PinnedHTTPConnection(host, port, addresses[0], timeout)
        try:
            conn.request("POST", path, body=body, headers={**headers, "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read(64 * 1024)
            return HttpResult(resp.status, resp.getheader("Retry-After"), elapsed=time.monotonic() - started)
        except (OSError, http.client.HTTPException) as exc:
            return HttpResult(None, error=f"{type(exc).__name__}: {exc}", elapsed=time.monotonic() - started)
        finally:
            conn.close()
