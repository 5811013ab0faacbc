"""HTTP → API Gateway REST proxy event adapter, so the embedded stack runs the Lambda handler code.

Like a Lambda execution environment, one handler process serves one request at a time: the
adapter accepts connections on many threads but invokes the handler under a lock. (The
resolver keeps the current event in class-level state, exactly as it may on Lambda, where an
environment never runs two invocations at once; sharing it between threads once answered a
wrong-key request with another tenant's data.) Like API Gateway REST, ``path`` stays
percent-encoded and ``pathParameters.proxy`` is decoded.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from handlers.context import LocalContext, scoped

MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit


def to_event(method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str) -> dict[str, Any]:
    parts = urlsplit(raw_path)
    multi = parse_qs(parts.query, keep_blank_values=True)
    try:
        text, b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, b64 = base64.b64encode(body).decode(), True
    request_id = str(uuid.uuid4())
    return {
        "resource": "/{proxy+}",
        "path": parts.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi.items()} or None,
        "multiValueQueryStringParameters": multi or None,
        "pathParameters": {"proxy": unquote(parts.path.lstrip("/"))},
        "stageVariables": None,
        "body": text if body else None,
        "isBase64Encoded": b64,
        "requestContext": {
            "requestId": request_id, "stage": "local", "httpMethod": method, "path": parts.path,
            "resourcePath": "/{proxy+}", "identity": {"sourceIp": source_ip}, "accountId": "000000000000",
            "requestTimeEpoch": int(time.time() * 1000),  # when the request arrived, as API Gateway sets it
        },
    }


# One lock for the process, not per server: the resolver's per-request state lives in the handler
# module, so two stacks in one process (primary and DR in the drill) share it and must take turns
# too (a request of one cleared the other's route arguments: a 500 in a failover drill).
_INVOKE = threading.Lock()


def serve(handler: Any, port: int, host: str = "127.0.0.1", deps: Any = None) -> ThreadingHTTPServer:

    class Adapter(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(413, {"Content-Type": "application/json"},
                            json.dumps({"error": {"code": "payload_too_large", "message": "body over 10 MB", "details": []}}).encode())
                return
            body = self.rfile.read(length) if length else b""
            event = to_event(self.command, self.path, dict(self.headers.items()), body, self.client_address[0])
            with _INVOKE, scoped(deps):
                resp = handler(event, LocalContext(event["requestContext"]["requestId"]))
            out = resp.get("body") or ""
            data = base64.b64decode(out) if resp.get("isBase64Encoded") else out.encode()
            hdrs = dict(resp.get("headers") or {})
            for k, vs in (resp.get("multiValueHeaders") or {}).items():
                hdrs[k] = vs[-1]
            self._reply(int(resp["statusCode"]), hdrs, data)

        def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = _handle

    server = ThreadingHTTPServer((host, port), Adapter)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="api-gateway", daemon=True).start()
    return server
