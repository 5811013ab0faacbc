"""HTTP client for callbacks that connects only to the address it checked, within one deadline.

The URL goes through the same parser as at submit (``check_callback_url``); the host is
resolved once; every resolved address must be public (``check_address``); the connection goes
to a checked address, the first that answers (SNI and Host keep the name), so a DNS answer that changes between
check and connect (rebinding) cannot reach an internal service. Redirects are never followed:
a 3xx is just a failed attempt.

``timeout`` is the budget of the whole attempt (connect, TLS, send, headers, body), not of each
socket operation: every operation gets only the time left, so a receiver that drips its answer
byte by byte cannot hold a worker longer than the budget. Only DNS resolution (the system
resolver) is outside that control; its time is still charged to the budget.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from core.domain.errors import InvalidInput
from core.domain.urls import check_address, check_callback_url

MAX_RESPONSE_BYTES = 64 * 1024
_SEND_CHUNK = 16 * 1024


@dataclass
class HttpResult:
    status: int | None
    retry_after: str | None = None
    error: str | None = None
    elapsed: float = 0.0


class AttemptTimeout(TimeoutError):
    """The attempt's total deadline passed."""


class _Deadline:
    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; raises AttemptTimeout when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise AttemptTimeout("timed out (attempt deadline)")
        return left


class _DeadlineSocket:
    """What http.client needs of a socket, with each operation limited to the time left.

    Like ``socket.makefile``, the socket really closes only once the response's reader is closed
    too (http.client closes the connection before the body of a ``Connection: close`` answer).
    """

    def __init__(self, sock: socket.socket, deadline: _Deadline):
        self._sock = sock
        self._deadline = deadline
        self._readers = 0
        self._closing = False

    def sendall(self, data: Any) -> None:
        view = memoryview(data if isinstance(data, bytes | bytearray) else bytes(data))
        for start in range(0, len(view), _SEND_CHUNK):
            self._sock.settimeout(self._deadline.left())
            self._sock.sendall(view[start:start + _SEND_CHUNK])

    def recv_into(self, buffer: Any) -> int:
        self._sock.settimeout(self._deadline.left())
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self), buffer_size=4096)

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closing and self._readers <= 0:
            self._sock.close()

    def close(self) -> None:
        self._closing = True
        if self._readers <= 0:
            self._sock.close()


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket):
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self._sock.reader_closed()
        super().close()


class _PinnedConnection(http.client.HTTPConnection):
    """Connects to the first of ``addresses`` (all already checked) that answers, while Host and
    SNI name ``host``."""

    def __init__(self, host: str, port: int, addresses: list[str], deadline: _Deadline,
                 context: ssl.SSLContext | None):
        super().__init__(host, port, timeout=deadline.left())
        self._addresses = addresses
        self._deadline = deadline
        self._context = context
        self.default_port = 443 if context is not None else 80  # Host header omits the default port

    def connect(self) -> None:
        sock = self._connect_first()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                sock.settimeout(self._deadline.left())  # CPython bounds the whole handshake by it
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self._deadline)

    def _connect_first(self) -> socket.socket:
        error: OSError | None = None
        for address in dict.fromkeys(self._addresses):
            try:
                return socket.create_connection((address, self.port), self._deadline.left())
            except AttemptTimeout:
                raise
            except OSError as exc:
                error = exc
        raise error or OSError("no address to connect to")


class GuardedHttpClient:
    def __init__(self, *, require_https: bool, allow_loopback: bool, resolver=socket.getaddrinfo,  # noqa: ANN001
                 ssl_context: ssl.SSLContext | None = None):
        self.require_https = require_https
        self.allow_loopback = allow_loopback
        self.resolver = resolver
        self.ssl_context = ssl_context or ssl.create_default_context()

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> HttpResult:
        """One attempt, finished within ``timeout`` seconds (+ DNS). Never raises for I/O."""
        started = time.monotonic()
        deadline = _Deadline(timeout)

        def result(status: int | None, retry_after: str | None = None, error: str | None = None) -> HttpResult:
            return HttpResult(status, retry_after, error, elapsed=time.monotonic() - started)

        try:
            target = check_callback_url(url, require_https=self.require_https, allow_loopback=self.allow_loopback)
            infos = self.resolver(target.host, target.port, type=socket.SOCK_STREAM)
            addresses = [info[4][0] for info in infos]
            if not addresses:
                return result(None, error="host did not resolve")
            for address in addresses:
                check_address(address, allow_loopback=self.allow_loopback)
        except InvalidInput as exc:
            return result(None, error=f"refused: {exc.message}")
        except (OSError, UnicodeError) as exc:
            return result(None, error=f"dns: {exc}")
        context = self.ssl_context if target.scheme == "https" else None
        conn: _PinnedConnection | None = None
        resp: http.client.HTTPResponse | None = None
        try:
            conn = _PinnedConnection(target.host, target.port, addresses, deadline, context)
            conn.request("POST", target.target, body=body, headers={**headers, "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read(MAX_RESPONSE_BYTES)
            return result(resp.status, resp.getheader("Retry-After"))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if time.monotonic() >= deadline.at:
                return result(None, error=f"timed out after {timeout:g} s ({type(exc).__name__})")
            return result(None, error=f"{type(exc).__name__}: {exc}")
        finally:
            if resp is not None:
                resp.close()
            if conn is not None:
                conn.close()
