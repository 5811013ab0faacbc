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


class RecordingMailer:
    """Wraps the real SES adapter (moto over HTTP) and remembers every accepted send."""

    def __init__(self, real: Any, fail: Any = None):
        self.real, self.fail = real, fail
        self.sent: list[dict[str, Any]] = []

    def send(self, **kw: Any) -> str:
        if self.fail:
            self.fail(kw, before=True)
        ses_id = self.real.send(**kw)
        self.sent.append({**kw, "ses_id": ses_id})
        if self.fail:
            self.fail(kw, before=False)
        return ses_id

    def per_recipient(self) -> dict[str, int]:
        from collections import Counter

        return dict(Counter(s["to"] for s in self.sent))


def send_single_batch(deps: Any, tx_id: str) -> tuple[Any, RecordingMailer]:
    """Ingest a one-batch campaign, release it and send it through a recording mailer: (batch, mailer)."""
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    (batch,) = deps.store.batches(tx_id)
    mailer = RecordingMailer(deps.mailer)
    batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    return batch, mailer


def batch_sender(deps: Any, mailer: Any, worker: str = "w1") -> Any:
    from core.services.attachments import AttachmentFiles
    from core.services.sending import BatchSender
    from core.services.templates import load_mail_source

    def loader(template_id: str, version: int) -> tuple[str, str, str | None]:
        return load_mail_source(deps.store, deps.blobs, deps.settings, template_id, version)

    return BatchSender(store=deps.store, mailer=mailer, limiter=deps.limiter, clock=deps.clock,
                       settings=deps.settings, template_loader=loader, worker=worker,
                       attachment_files=AttachmentFiles(deps.store, deps.blobs, deps.settings))


def queued_campaign(deps: Any, tenant_id: str, csv_text: str, **kw: Any) -> tuple[str, list[Any]]:
    tx_id = submit(deps, tenant_id, csv_text, **kw)
    c = leader(deps)
    c.ingest_pass()
    c.advance_pass()
    return tx_id, deps.store.batches(tx_id)
