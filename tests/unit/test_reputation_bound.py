"""The reputation guard's rule: over the threshold beyond chance, not by one unlucky mail."""

import pytest

from core.domain.reputation import rate_exceeds, rate_lower_bound


@pytest.mark.parametrize("events,total,threshold,over", [
    (1, 515, 0.001, False),   # one complaint in the first ~500 mails of a large campaign
    (2, 515, 0.001, True),    # two are a signal
    (5, 50, 0.05, True),      # 10 % hard bounces in 50 mails, over SES-minded 5 %
    (1, 50, 0.05, False),     # 2 %
    (600, 20_000, 0.05, False),  # 3 %, the embedded SES's simulated bounces
    (0, 0, 0.001, False),
])
def test_a_rate_is_over_its_threshold_only_beyond_chance(events, total, threshold, over):
    assert rate_exceeds(events, total, threshold) is over


def test_the_bound_approaches_the_rate_as_the_volume_grows():
    assert rate_lower_bound(1, 1000) < rate_lower_bound(100, 100_000) < 0.001
    assert abs(rate_lower_bound(10_000, 1_000_000) - 0.01) < 0.0002
