"""The report chart's markers: a small series stays visible where another has the same count."""

from core.services.analytics import chart


def test_two_series_with_the_same_count_in_a_bucket_show_as_a_ring_around_a_dot():
    over_time = [{"bucket": "2026-01-01T10:00:00Z", "Delivery": 50, "Bounce": 1, "Complaint": 1},
                 {"bucket": "2026-01-01T10:00:05Z", "Delivery": 10}]
    c = chart(over_time)
    at = {m["type"]: m for m in c["markers"] if m["x"] == c["markers"][0]["x"]}
    bounce, complaint = at["Bounce"], at["Complaint"]
    assert (bounce["x"], bounce["y"]) == (complaint["x"], complaint["y"])  # same place
    drawn = [m["type"] for m in c["markers"]]
    # the one drawn first is the larger one, so the later dot leaves a ring of it visible
    first, later = sorted((bounce, complaint), key=lambda m: drawn.index(m["type"]))
    assert float(first["r"]) > float(later["r"]) >= 3
    assert [line["type"] for line in c["lines"]][0] == "Delivery"  # the biggest series is drawn first
