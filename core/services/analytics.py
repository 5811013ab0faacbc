"""Campaign analytics: event documents, the report an analytics store answers, and the HTML page.

Two stores implement the same port: OpenSearch (production) and SQLite (the embedded stack).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from jinja2 import Environment, PackageLoader, select_autoescape

from core.services.ports import CampaignStore

EVENT_TYPES = ("Send", "Delivery", "Bounce", "Complaint", "Open", "Click", "Reject", "DeliveryDelay", "Rendering Failure")


def event_document(parsed: Any, message_metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """The document from DESIGN: ids, type, time, recipient, metadata (about the event), and the
    message's own metadata (the campaign's metadata columns of its CSV row). Its id is the event's id."""
    return {
        "event_id": parsed.event_id,
        "tenant_id": parsed.tenant_id,
        "transaction_id": parsed.transaction_id,
        "message_id": parsed.message_id,
        "event_type": parsed.event_type,
        "timestamp": parsed.at,
        "recipient_email": parsed.recipient,
        "metadata": {
            "user_agent": parsed.detail.get("user_agent"), "ip_address": parsed.detail.get("ip"),
            "link_url": parsed.detail.get("link"), "bounce_type": parsed.detail.get("bounce_type"),
            "bounce_subtype": parsed.detail.get("bounce_subtype"), "diagnostic": parsed.detail.get("diagnostic"),
        },
        "message_metadata": dict(message_metadata or {}),
    }


class AnalyticsStore(Protocol):
    def index_event(self, doc: dict[str, Any]) -> None: ...
    def index_many(self, docs: list[dict[str, Any]]) -> None: ...
    def counts(self, tenant_id: str, tx_id: str) -> dict[str, int]: ...
    def over_time(self, tenant_id: str, tx_id: str, bucket_seconds: int) -> list[dict[str, Any]]: ...
    def bounce_reasons(self, tenant_id: str, tx_id: str, top: int) -> list[dict[str, Any]]: ...
    def top_links(self, tenant_id: str, tx_id: str, top: int) -> list[dict[str, Any]]: ...


def _rate(n: int, d: int) -> float:
    return round(n / d, 4) if d else 0.0


def campaign_analytics(store: CampaignStore, analytics: AnalyticsStore, tenant_id: str, tx_id: str,
                       bucket_seconds: int | None = None) -> dict[str, Any]:
    """Counts by type, rates, events over time, bounce reasons, top links (tenant-scoped).

    Without ``bucket_seconds`` the buckets fit the campaign's lifetime (about 40 of them).
    """
    tx = store.get_transaction(tx_id, tenant_id)  # 404 for another tenant's id
    if bucket_seconds is None:
        span = (tx.updated_at - tx.created_at).total_seconds()
        bucket_seconds = max(1, int(span // 40))
    counts = analytics.counts(tenant_id, tx_id)
    sent = counts.get("Send", 0)
    delivered = counts.get("Delivery", 0)
    return {
        "transaction_id": tx_id,
        "status": tx.status.value,
        "counts": {t: counts.get(t, 0) for t in EVENT_TYPES},
        "rates": {"delivery": _rate(delivered, sent), "bounce": _rate(counts.get("Bounce", 0), sent),
                  "complaint": _rate(counts.get("Complaint", 0), sent), "open": _rate(counts.get("Open", 0), delivered),
                  "click": _rate(counts.get("Click", 0), delivered)},
        "over_time": analytics.over_time(tenant_id, tx_id, bucket_seconds),
        "bounce_reasons": analytics.bounce_reasons(tenant_id, tx_id, 10),
        "top_links": analytics.top_links(tenant_id, tx_id, 10),
    }


_env = Environment(loader=PackageLoader("core", "templates"), autoescape=select_autoescape(["html"]))

SERIES = (("Delivery", "#2e7d32"), ("Open", "#1565c0"), ("Click", "#6a1b9a"), ("Bounce", "#c62828"),
          ("Complaint", "#ef6c00"))


def chart(over_time: list[dict[str, Any]], width: int = 720, height: int = 260) -> dict[str, Any]:
    """Polyline coordinates for an inline SVG: no script, renders anywhere (and in headless tests).

    The biggest series is drawn first so a small one (a few bounces) stays visible on top, and
    markers sit only where a bucket has events; each marker is smaller than the one drawn before
    it, so two series with the same count in a bucket show as a ring around a dot, not one dot.
    """
    pad = 40
    xs = [datetime.fromisoformat(p["bucket"].replace("Z", "+00:00")).timestamp() for p in over_time] or [0.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    peak = max([p.get(t, 0) for p in over_time for t, _ in SERIES] + [1])
    lines, markers = [], []
    ordered = sorted(SERIES, key=lambda s: -sum(p.get(s[0], 0) for p in over_time))
    for drawn, (t, color) in enumerate(ordered):
        radius = f"{3 + len(ordered) - 1 - drawn:.0f}"
        pts = [(pad + (x - x0) / (x1 - x0) * (width - 2 * pad), height - pad - p.get(t, 0) / peak * (height - 2 * pad),
                p.get(t, 0)) for x, p in zip(xs, over_time)]
        if pts:
            lines.append({"type": t, "color": color,
                          "points": " ".join(f"{a:.1f},{b:.1f}" for a, b, _ in (pts if len(pts) > 1 else pts * 2))})
            markers += [{"color": color, "type": t, "x": f"{a:.1f}", "y": f"{b:.1f}", "r": radius} for a, b, n in pts if n]
    return {"width": width, "height": height, "pad": pad, "peak": peak, "lines": lines, "markers": markers,
            "start": over_time[0]["bucket"] if over_time else "", "end": over_time[-1]["bucket"] if over_time else ""}


def render_report(data: dict[str, Any], summary: dict[str, Any]) -> str:
    return _env.get_template("report.html.j2").render(a=data, summary=summary, chart=chart(data["over_time"]))
