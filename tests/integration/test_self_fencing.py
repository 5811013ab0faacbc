"""Split-brain safety (issue 19): a region's senders stop by themselves when the replicated
active-region flag names the other region, or when no leader of their region has confirmed the
flag for a lease period. The real sender wiring (handlers/sender.py) against moto."""

from __future__ import annotations

from datetime import timedelta

from core.domain.models import parse_iso
from core.domain.statuses import BatchStatus
from handlers import sender as sender_handler
from runbooks.regions import _set_flag
from tests.helpers import RecordingMailer, leader, queued_campaign, recipients


def the_sender(deps, mailer):
    deps.mailer = mailer
    s = sender_handler._build(deps)
    s.store.gate.recheck_seconds = 0  # re-read the flag before every chunk (production: at most once a second)
    return s


def test_the_primary_stops_sending_by_itself_once_the_flag_names_dr(deps, tenant):
    s = deps.settings
    _set_flag(s, s.region, s.region)  # a two-region deployment, the primary active
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(30))  # three chunks of 10

    def failover_after_first_chunk(kw, before):
        if not before and len(mailer.sent) == 10:
            _set_flag(s, s.region, s.dr_region)  # DR promoted (the flag replicated here)

    mailer = RecordingMailer(deps.mailer, failover_after_first_chunk)
    out = the_sender(deps, mailer).send_batch(tx_id, batch.batch_id)

    # THEN the chunk under way finished, and no further chunk started
    assert out.state == "busy" and len(mailer.sent) == 10
    assert deps.store.get_batch(batch.batch_id, tx_id).status == BatchStatus.QUEUED  # DR's to finish
    mailer.fail = None
    assert the_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "busy"
    assert len(mailer.sent) == 10


def test_senders_stop_when_no_leader_has_confirmed_the_flag_for_a_lease_period(deps, tenant, clock):
    s = deps.settings
    _set_flag(s, s.region, s.region)
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(20))
    mailer = RecordingMailer(deps.mailer)

    # WHEN the region's leader stops renewing (dead, or cut off from the table) for a lease period
    clock.advance(s.lease_seconds + 1)
    assert the_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "busy"
    assert mailer.sent == []

    # AND a leader confirms the flag again THEN sending resumes, each recipient once
    leader(deps, "new-leader")
    out = the_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
    assert out.state == "sent" and set(mailer.per_recipient().values()) == {1} and len(mailer.sent) == 20


def test_a_claim_refused_between_two_leases_hands_the_batch_back_but_a_passive_region_writes_nothing(
        deps, tenant, clock):
    """A controller redeploy: the refused sender consumed the queue message, so it gives the batch
    back for a prompt re-dispatch (it used to wait until the batch counted as lost: up to an hour
    behind a busy queue). A passive region never writes: its write could win on the global table."""
    s = deps.settings
    _set_flag(s, s.region, s.region)
    tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(10))
    mailer = RecordingMailer(deps.mailer)
    clock.advance(s.lease_seconds + 1)  # between two leases
    assert the_sender(deps, mailer).send_batch(tx_id, batch.batch_id).state == "busy" and mailer.sent == []
    state = deps.store.dispatch_state(deps.store.get_batch(batch.batch_id, tx_id))
    assert state.get("released_at") and parse_iso(state["released_at"]) <= clock.now() + timedelta(seconds=5)
    assert deps.store.get_batch(batch.batch_id, tx_id).redispatch_at <= clock.now() + timedelta(seconds=5)

    other_tx, (other,) = queued_campaign(deps, "tenant-a", recipients(10))
    _set_flag(s, s.region, s.dr_region)  # now passive
    assert the_sender(deps, mailer).send_batch(other_tx, other.batch_id).state == "busy"
    assert not deps.store.dispatch_state(deps.store.get_batch(other.batch_id, other_tx)).get("released_at")
