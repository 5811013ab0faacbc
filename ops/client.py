"""A small Message Centre-style client for the HTTP API (used by the demo, the e2e tests, the drill)."""

from __future__ import annotations

import time
from typing import Any

import requests


class ApiError(Exception):
    def __init__(self, status: int, body: Any):
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


class Client:
    def __init__(self, base: str, api_key: str):
        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.http.headers["X-API-Key"] = api_key

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200, 201, 202, 204), **kw: Any) -> Any:
        r = self.http.request(method, f"{self.base}{path}", timeout=30, **kw)
        body = r.json() if r.content and r.headers.get("Content-Type", "").startswith("application/json") else r.text
        if r.status_code not in expect:
            raise ApiError(r.status_code, body)
        return body

    @staticmethod
    def upload(form: dict[str, Any], data: bytes, filename: str = "file") -> requests.Response:
        """POST to a presigned S3 form, like a browser or Message Centre would."""
        r = requests.post(form["url"], data=form["fields"], files={"file": (filename, data)}, timeout=60)
        if r.status_code not in (200, 201, 204):
            raise ApiError(r.status_code, r.text)
        return r

    def create_template(self, name: str, subject: str, html: str) -> str:
        t = self.call("POST", "/templates", json={"name": name, "subject": subject})
        self.upload(t["upload"], html.encode(), "template.html")
        self.call("POST", f"/templates/{t['template_id']}/confirm")
        return t["template_id"]

    def upload_csv(self, csv_text: str) -> dict[str, Any]:
        u = self.call("POST", "/uploads", json={"filename": "recipients.csv"})
        self.upload(u["upload"], csv_text.encode(), "recipients.csv")
        return u

    def wait_for(self, tx_id: str, statuses: set[str], timeout: float = 120, on_poll: Any = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            c = self.call("GET", f"/campaigns/{tx_id}")
            if on_poll:
                on_poll(c)
            if c["status"] in statuses:
                return c
            if time.monotonic() > deadline:
                raise TimeoutError(f"campaign {tx_id} still {c['status']} after {timeout}s: {c['summary']}")
            time.sleep(0.5)
