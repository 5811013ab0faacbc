"""Build campaigns through the real services (no HTTP) for integration tests."""

from __future__ import annotations

from typing import Any

from controller.jobs import Controller
from core.services import campaigns, templates

HTML = "<p>Hello {{ first_name }}</p>"


def active_template(deps: Any, tenant_id: str, html: str = HTML, subject: str = "Hi {{ first_name }}") -> str:
    t = templates.create_template(deps.store, deps.blobs, deps.settings, tenant_id, "t", subject)
    tv = deps.store.get_template_version(t["template_id"], 1)
    deps.blobs.put(deps.settings.bucket("templates"), tv.s3_key, html.encode(), "text/html")
    templates.confirm_template(deps.store, deps.blobs, deps.settings, tenant_id, t["template_id"])
    return t["template_id"]


def upload(deps: Any, tenant_id: str, csv_text: str | bytes) -> str:
    u = campaigns.create_upload(deps.store, deps.blobs, deps.settings, tenant_id, None)
    key = u["csv_file_url"].split("/", 3)[3]
    data = csv_text.encode() if isinstance(csv_text, str) else csv_text
    deps.blobs.put(deps.settings.bucket("uploads"), key, data)
    return u["upload_id"]


def recipients(n: int, start: int = 0, domain: str = "example.org") -> str:
    return "email,first_name\n" + "".join(f"user{i}@{domain},User{i}\n" for i in range(start, start + n))


def submit(deps: Any, tenant_id: str, csv_text: str | bytes, **extra: Any) -> str:
    tid = extra.pop("template_id", None) or active_template(deps, tenant_id)
    up = upload(deps, tenant_id, csv_text)
    out = campaigns.submit_campaign(deps.store, deps.blobs, deps.settings, deps.clock, tenant_id,
                                    {"template_id": tid, "upload_id": up, **extra})
    return out["transaction_id"]


def leader(deps: Any, name: str = "test-controller") -> Controller:
    c = Controller(deps, name)
    assert c.heartbeat()
    return c
