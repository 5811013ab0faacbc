"""Automatic failover end to end (issue 19), on the drill's two embedded regions with short
periods: a partition DR must ride out, then the primary's compute killed mid-send. Sends are
counted on the SES side (every message the embedded SES accepted, in both regions)."""

from __future__ import annotations

import pytest

from local import drill

GRACE = 3.0


@pytest.fixture(scope="module")
def regions():
    # a lease of 2 s: the heartbeat goes bad within 2 s of a death; chunks of 10 finish well within
    # their send-by time (4 leases) even on a loaded machine; small batches resume in DR at once
    r = drill.start_regions(grace=GRACE, lease_seconds=2, evidence_window=5, redispatch_after=3, rate=80,
                            ses_window=60, batch_size=15, chunk_size=5)
    yield r
    r.stop()


def test_a_cut_link_between_the_controllers_never_promotes_dr(regions):
    # GIVEN the primary sending a campaign WHEN only the controllers' link is cut for 3+ grace periods
    part = drill.partition_scenario(regions, recipients=30, watch_seconds=GRACE * 3 + 2)

    # THEN DR saw the heartbeat go bad (the one signal the cut takes away) and stayed passive
    assert "heartbeat" in part["bad_signals"]
    assert part["promotions"] == 0 and part["active_region"] == regions.p.region
    assert regions.decisions() == []
    # AND the primary finished the campaign alone: nothing sent twice, nothing lost
    assert part["sent_by_dr"] == 0
    assert (part["sent_twice"], part["lost"]) == (0, 0)


def test_killing_the_primary_mid_send_fails_over_by_itself_with_nothing_sent_twice_or_lost(regions):
    kill = drill.kill_scenario(regions, recipients=45)

    assert kill["outcome"] == "promoted"
    assert kill["detect_s"] is not None and kill["promoted_s"] <= GRACE + 60
    assert kill["decide_s"] >= kill["detect_s"] + GRACE  # never before the grace period was over
    assert kill["sent_by_dr"] > 0
    assert (kill["sent_twice"], kill["lost"]) == (0, 0)
    record = regions.decisions()[-1]
    assert record["promoted_region"] == regions.d.region and "bad for" in record["why"]
    assert {s["signal"] for s in record["signals"]} == {"heartbeat", "api", "ses"}
