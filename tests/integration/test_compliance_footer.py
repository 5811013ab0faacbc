"""CAN-SPAM footer: with the platform requiring it, a tenant without a postal address or a sender
name, or a template without the unsubscribe link and postal address, cannot send; every mail shows
both."""

from __future__ import annotations

import pytest

from core.adapters.privacy import IdentityRepository
from core.bootstrap import bootstrap
from core.domain.errors import InvalidInput
from core.services import campaigns, compliance
from core.services.tenants import ensure_tenant
from local.bootstrap import create_resources
from tests.conftest import make_settings
from tests.helpers import (
    RecordingMailer,
    active_template,
    batch_sender,
    leader,
    send_single_batch,
    upload,
)

FOOTER = ('<p>Hello {{ first_name }}</p><footer>{{ sender_name }}, {{ postal_address }} · '
          '<a href="{{ unsubscribe_url }}">unsubscribe</a></footer>')


@pytest.fixture
def strict(moto_server, clock):
    s = make_settings(moto_server.url, require_compliance_footer=True, public_base_url="https://mail.example.com")
    create_resources(s)
    d = bootstrap(s, clock=clock)
    ensure_tenant(d.store, d.secrets, "tenant-a")
    return d


def test_a_tenant_without_postal_address_or_a_template_without_footer_cannot_send(strict):
    d = strict
    with pytest.raises(InvalidInput, match="lacks the required footer: it must use"):
        active_template(d, "tenant-a", "<p>Hello {{ first_name }}</p>")
    tid = active_template(d, "tenant-a", FOOTER)
    up = upload(d, "tenant-a", "email,first_name\na@example.org,Ann\n")
    with pytest.raises(InvalidInput, match="no postal address"):
        campaigns.submit_campaign(d.store, d.blobs, d.settings, d.clock, "tenant-a",
                                  {"template_id": tid, "upload_id": up})
    compliance.set_identity(IdentityRepository(d.store.table), "tenant-a", "1 Main Street, Springfield 12345, US",
                            "Acme News", d.clock.now())
    tx_id = campaigns.submit_campaign(d.store, d.blobs, d.settings, d.clock, "tenant-a",
                                      {"template_id": tid, "upload_id": up})["transaction_id"]
    c = leader(d)
    c.ingest_pass()  # the CSV needs no column for what the platform provides
    c.advance_pass()
    (batch,) = d.store.batches(tx_id)
    mailer = RecordingMailer(d.mailer)
    batch_sender(d, mailer).send_batch(tx_id, batch.batch_id)
    (mail,) = mailer.sent
    assert "1 Main Street, Springfield 12345, US" in mail["html"] and "Acme News" in mail["html"]
    assert 'href="https://mail.example.com/api/v1/email/unsubscribe/' in mail["html"]


def test_a_tenant_without_a_sender_name_cannot_send_when_compliance_is_required(strict):
    d = strict
    tid = active_template(d, "tenant-a", FOOTER)
    up = upload(d, "tenant-a", "email,first_name\na@example.org,Ann\n")
    # a tenant that set only its postal address, before the sender name was required
    IdentityRepository(d.store.table).put("tenant-a", {"postal_address": "1 Main Street, Springfield 12345, US"})
    with pytest.raises(InvalidInput, match="no sender name: every mail must say who sends it") as refused:
        campaigns.submit_campaign(d.store, d.blobs, d.settings, d.clock, "tenant-a",
                                  {"template_id": tid, "upload_id": up})
    assert refused.value.http_status == 422
    # the refusal says how to fix it: which endpoint, with what
    assert "Fix: an admin key calls PUT /api/v1/email/compliance/identity with" in refused.value.message
    assert '"sender_name": "<who sends the mail>"' in refused.value.message
    assert refused.value.details == [{"loc": ["compliance_identity", "sender_name"], "type": "missing",
                                      "fix": "PUT /api/v1/email/compliance/identity"}]
    compliance.set_identity(IdentityRepository(d.store.table), "tenant-a", "1 Main Street, Springfield 12345, US",
                            "Acme News", d.clock.now())
    assert campaigns.submit_campaign(d.store, d.blobs, d.settings, d.clock, "tenant-a",
                                     {"template_id": tid, "upload_id": up})["transaction_id"]


def test_the_platform_variables_render_even_when_the_footer_is_not_required(deps, tenant):
    tid = active_template(deps, "tenant-a", FOOTER)
    up = upload(deps, "tenant-a", "email,first_name,unsubscribe_url\na@example.org,Ann,https://evil.example/\n")
    tx_id = campaigns.submit_campaign(deps.store, deps.blobs, deps.settings, deps.clock, "tenant-a",
                                      {"template_id": tid, "upload_id": up})["transaction_id"]
    batch, mailer = send_single_batch(deps, tx_id)
    (mail,) = mailer.sent
    assert "/api/v1/email/unsubscribe/" in mail["html"] and "evil.example" not in mail["html"]  # never a CSV's


def test_the_identity_cannot_be_set_without_a_sender_name(deps, tenant):
    """Whether or not the platform enforces the footer: an identity saved without a sender name
    would be refused at the next campaign where it is."""
    repo = IdentityRepository(deps.store.table)
    for blank in ("", "   "):
        with pytest.raises(InvalidInput, match="sender_name is required") as refused:
            compliance.set_identity(repo, "tenant-a", "1 Main Street, Springfield 12345, US", blank, deps.clock.now())
        assert refused.value.details == [{"loc": ["body", "sender_name"], "type": "missing"}]
    assert repo.get("tenant-a") is None  # nothing half-written
