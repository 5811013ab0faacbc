"""When a bounce or complaint rate is over a threshold: not the raw rate of a small sample, but
the lower end of its Wilson score interval, so one complaint among the first 500 mails (0.2 %,
over a 0.1 % threshold) does not stop a 20,000-mail campaign, while two do, and 10 % hard
bounces in 50 mails (over 5 %) do."""

from __future__ import annotations

import math

Z = 1.0  # one-sided: the true rate is above the bound with about 84 % confidence


def rate_lower_bound(events: int, total: int, z: float = Z) -> float:
    """The Wilson score interval's lower end for ``events`` out of ``total`` (0 for no data)."""
    if total <= 0:
        return 0.0
    p = events / total
    z2 = z * z
    centre = p + z2 / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    return max(0.0, (centre - spread) / (1 + z2 / total))


def rate_exceeds(events: int, total: int, threshold: float, z: float = Z) -> bool:
    return rate_lower_bound(events, total, z) > threshold
