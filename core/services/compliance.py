"""Per-tenant compliance report for a period: mails sent (by campaigns whose sending happened in
it), bounce and complaint rates against the SES limits, unsubscribes honoured and how long each
took from request to suppression, suppressions by reason, erasures completed and how long they
took. JSON for machines, an HTML page for people (like the campaign report)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from statistics import median
from typing import Any

from jinja2 import Environment, select_autoescape

from config.settings import Settings
from core.domain.compliance import FOOTER_VARIABLES, missing_footer
from core.domain.errors import InvalidInput
from core.domain.models import iso, parse_iso
from core.services.ports import ComplianceIdentities, TenantRepository

# What SES itself enforces on an account (its reputation dashboard): under review / sending paused
SES_BOUNCE_REVIEW, SES_BOUNCE_PAUSE = 0.05, 0.10
SES_COMPLAINT_REVIEW, SES_COMPLAINT_PAUSE = 0.001, 0.005


# the tenant's identity every mail needs when compliance is required (CAN-SPAM: who sends, and where)
REQUIRED_IDENTITY = {"postal_address": "postal address", "sender_name": "sender name"}
IDENTITY_ENDPOINT = "PUT /api/v1/email/compliance/identity"
FIX_IDENTITY = (f"Fix: an admin key calls {IDENTITY_ENDPOINT} with "
                '{"postal_address": "<street, city, postcode, country>", "sender_name": "<who sends the mail>"}, '
                "then submits the campaign again")


def check_footer(store: TenantRepository, settings: Settings, tenant_id: str, variables: Iterable[str]) -> None:
    """When the platform requires it (``require_compliance_footer``): the tenant has a postal
    address and a sender name, and the template shows the unsubscribe link and the postal
    address. 422 otherwise, naming what is missing."""
    if not getattr(settings, "require_compliance_footer", False):
        return
    identity = store.compliance_identity(tenant_id) or {}
    missing = [f for f in REQUIRED_IDENTITY if not str(identity.get(f) or "").strip()]
    if missing:  # e.g. a tenant that set only its postal address before the sender name was required
        raise InvalidInput("the tenant has no " + " and no ".join(REQUIRED_IDENTITY[f] for f in missing)
                           + ": every mail must say who sends it and carry a postal address (CAN-SPAM). "
                           + FIX_IDENTITY,
                           [{"loc": ["compliance_identity", f], "type": "missing", "fix": IDENTITY_ENDPOINT}
                            for f in missing])
    check_template_footer(settings, variables)


def check_template_footer(settings: Settings, variables: Iterable[str]) -> None:
    if not getattr(settings, "require_compliance_footer", False):
        return
    missing = missing_footer(variables)
    if missing:
        raise InvalidInput("the template lacks the required footer: it must use "
                           + " and ".join("{{ " + v + " }}" for v in missing)
                           + f" (the platform fills in {', '.join(FOOTER_VARIABLES)})",
                           [{"loc": ["template"], "missing": missing}])


def set_identity(repo: ComplianceIdentities, tenant_id: str, postal_address: str, sender_name: str, now: datetime) -> dict:
    """Both fields are required, whether or not the platform enforces the footer: an identity
    without a sender name would be refused at the next campaign where it is enforced."""
    if len(postal_address.strip()) < 10:
        raise InvalidInput("postal_address must be a full postal address (street, city, postcode, country)")
    if not (sender_name or "").strip():
        raise InvalidInput("sender_name is required: who the mail is from, as a person reads it (CAN-SPAM)",
                           [{"loc": ["body", "sender_name"], "type": "missing"}])
    return repo.put(tenant_id, {"postal_address": postal_address.strip(), "sender_name": sender_name.strip(),
                                "updated_at": iso(now)})


def _rate(n: int, d: int) -> float:
    return round(n / d, 5) if d else 0.0


def _within(ts: str | None, start: datetime, end: datetime) -> bool:
    if not ts:
        return False
    t = parse_iso(ts)
    return start <= t < end


def _seconds(values: list[float]) -> dict[str, float | None]:
    return {"median_seconds": round(median(values), 3) if values else None,
            "max_seconds": round(max(values), 3) if values else None}


MAIL_COUNTED = ("mail handed to SES by the campaigns whose first and last recorded send both fall in the "
                "period (campaign counts, not per-message times); delivered, bounced and complained are "
                "those campaigns' outcomes, whenever they arrived. The send times are approximate: when "
                "the counts were recorded (a send whose outcome was in doubt counts when it was resolved), "
                "and the last one may lag or step back by seconds between writers")
UNSUBSCRIBES_HOW = ("suppressed by the unsubscribe request itself (one-click, RFC 8058); the delay is the "
                    "suppression's creation time minus the request's arrival at the API, over the period's "
                    "unsubscribes that stored both. Each send chunk reads the suppression list just before "
                    "its SES calls, so a chunk already under way at the click may still mail the address once")


def compliance_report(*, campaigns: Iterable[dict[str, Any]], suppressions: Iterable[dict[str, Any]],
                      erasures: Iterable[dict[str, Any]], tenant_id: str, start: datetime,
                      end: datetime, settings: Settings) -> dict[str, Any]:
    """``campaigns``: the tenant's transaction items; ``suppressions``: its suppression items (plain
    and hashed); ``erasures``: its erasure jobs.

    Mail is counted per campaign by when it was sent (``first_sent_at``/``last_sent_at``, stamped
    with the sent count): a campaign whose sending crosses a boundary of the period, or that has
    no send times (sent before they were recorded), is reported apart, never guessed into it.
    The stamps are approximate (``DynamoStore.add_counts``: when the counts were recorded,
    last writer wins), so a campaign sent within seconds of a boundary may land on either side;
    the report's ``mail_counted.what`` says so."""
    if end <= start:
        raise InvalidInput("the period is empty: 'to' must be after 'from'")
    sent = delivered = hard = bounced = complained = n_campaigns = 0
    spanning = {"campaigns": 0, "sent": 0}
    undated = {"campaigns": 0, "sent": 0}
    for c in campaigns:
        n_sent = int(c.get("n_sent", 0))
        first, last = c.get("first_sent_at"), c.get("last_sent_at")
        if not (first and last):
            if n_sent and _within(c.get("created_at"), start, end):
                undated["campaigns"] += 1
                undated["sent"] += n_sent
            continue
        began, ended = parse_iso(first), parse_iso(last)
        if ended < start or began >= end:
            continue
        if not (start <= began and ended < end):
            spanning["campaigns"] += 1
            spanning["sent"] += n_sent
            continue
        n_campaigns += 1
        sent += n_sent
        delivered += int(c.get("n_delivered", 0))
        bounced += int(c.get("n_bounced", 0))
        hard += int(c.get("n_hard_bounced", 0))
        complained += int(c.get("n_complained", 0))
    by_reason: dict[str, int] = {}
    new_in_period: dict[str, int] = {}
    unsubscribe_delays: list[float] = []
    unmeasured = 0
    for s in suppressions:
        reason = str(s.get("reason") or "unknown")
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if _within(s.get("created_at"), start, end):
            new_in_period[reason] = new_in_period.get(reason, 0) + 1
            if reason == "unsubscribe":
                if s.get("requested_at"):  # two hosts' clocks: a skew never makes it negative
                    unsubscribe_delays.append(max(0.0, (parse_iso(s["created_at"])
                                                        - parse_iso(s["requested_at"])).total_seconds()))
                else:
                    unmeasured += 1
    done = [e for e in erasures if e.get("status") == "COMPLETED" and _within(e.get("completed_at"), start, end)]
    took = [(parse_iso(e["completed_at"]) - parse_iso(e["requested_at"])).total_seconds() for e in done]
    requested = sum(1 for e in erasures if _within(e.get("requested_at"), start, end))
    bounce_rate, complaint_rate = _rate(hard, sent), _rate(complained, sent)
    return {
        "tenant_id": tenant_id, "period": {"from": iso(start), "to": iso(end)},
        "mail": {"campaigns": n_campaigns, "sent": sent, "delivered": delivered, "bounced": bounced,
                 "hard_bounced": hard, "complained": complained},
        "mail_counted": {"what": MAIL_COUNTED, "spanning_period_boundary": spanning,
                         "without_send_times_created_in_period": undated},
        "reputation": {
            "bounce_rate": bounce_rate, "complaint_rate": complaint_rate,
            "platform_guard": {"bounce": settings.bounce_rate_threshold, "complaint": settings.complaint_rate_threshold},
            "ses_limits": {"bounce_review": SES_BOUNCE_REVIEW, "bounce_pause": SES_BOUNCE_PAUSE,
                           "complaint_review": SES_COMPLAINT_REVIEW, "complaint_pause": SES_COMPLAINT_PAUSE},
            "within_ses_limits": bounce_rate < SES_BOUNCE_REVIEW and complaint_rate < SES_COMPLAINT_REVIEW,
        },
        "unsubscribes": {
            "honoured": new_in_period.get("unsubscribe", 0),
            "request_to_suppression": {"measured": len(unsubscribe_delays), "not_measured": unmeasured,
                                       **_seconds(unsubscribe_delays)},
            "how": UNSUBSCRIBES_HOW,
        },
        "suppressions": {"total": sum(by_reason.values()), "by_reason": by_reason, "added_in_period": new_in_period},
        "erasures": {"requested": requested, "completed": len(done),
                     "median_seconds": round(median(took), 1) if took else None,
                     "max_seconds": round(max(took), 1) if took else None},
    }


_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
PAGE = _env.from_string("""<!doctype html><html><head><meta charset="utf-8">
<title>Compliance report {{ r.tenant_id }}</title>
<style>body{font-family:sans-serif;max-width:52em;margin:2em auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.bad{color:#c62828}.ok{color:#2e7d32}</style>
</head><body><h1>Compliance report</h1>
<p>Tenant <b>{{ r.tenant_id }}</b>, {{ r.period.from }} to {{ r.period.to }}</p>
<h2>Mail</h2><table>{% for k, v in r.mail.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% set m = r.mail_counted %}<p>Counted: {{ m.what }}. Not counted: {{ m.spanning_period_boundary.campaigns }}
campaign(s) whose sending crosses the period's start or end ({{ m.spanning_period_boundary.sent }} mails in
all), {{ m.without_send_times_created_in_period.campaigns }} created in the period without recorded send
times ({{ m.without_send_times_created_in_period.sent }} mails).</p>
<h2>Reputation</h2><table>
<tr><th>bounce rate (hard)</th><td>{{ "%.3f"|format(r.reputation.bounce_rate * 100) }} %</td>
<td>SES review at {{ r.reputation.ses_limits.bounce_review * 100 }} %</td></tr>
<tr><th>complaint rate</th><td>{{ "%.3f"|format(r.reputation.complaint_rate * 100) }} %</td>
<td>SES review at {{ r.reputation.ses_limits.complaint_review * 100 }} %</td></tr></table>
<p class="{{ 'ok' if r.reputation.within_ses_limits else 'bad' }}">{{ 'Within' if r.reputation.within_ses_limits
else 'Outside' }} SES limits.</p>
<h2>Unsubscribes</h2><p>{{ r.unsubscribes.honoured }} honoured in the period.
{% set d = r.unsubscribes.request_to_suppression %}{% if d.measured %}Request to suppression: median
{{ d.median_seconds }} s, longest {{ d.max_seconds }} s over {{ d.measured }} measured{% else %}No
unsubscribe in the period stored its request time{% endif %}{% if d.not_measured %} ({{ d.not_measured }}
without a stored request time){% endif %}. How: {{ r.unsubscribes.how }}.</p>
<h2>Suppressions</h2><table><tr><th>reason</th><th>total</th><th>added in period</th></tr>
{% for k, v in r.suppressions.by_reason.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td>
<td>{{ r.suppressions.added_in_period.get(k, 0) }}</td></tr>{% endfor %}</table>
<h2>Erasures</h2><p>{{ r.erasures.requested }} requested, {{ r.erasures.completed }} completed
{% if r.erasures.median_seconds is not none %}(median {{ r.erasures.median_seconds }} s,
longest {{ r.erasures.max_seconds }} s){% endif %}.</p></body></html>""")


def render_compliance(report: dict[str, Any]) -> str:
    return PAGE.render(r=report)
