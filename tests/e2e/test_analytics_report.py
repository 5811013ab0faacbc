"""After a real campaign, the analytics endpoint and the HTML report show its events; the report's
chart is checked in a real headless browser (Debian's chromium) by its pixels."""

import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from ops.client import ApiError
from tests.e2e.test_api import HTML, other_client

SERIES_RGB = {"Delivery": (0x2E, 0x7D, 0x32), "Open": (0x15, 0x65, 0xC0), "Bounce": (0xC6, 0x28, 0x28)}


@pytest.fixture(scope="module")
def finished(api):
    tid = api.create_template("Report", "Hi {{ first_name }}", HTML)
    rows = ["email,first_name"] + [f"r{i}@example.org,R{i}" for i in range(60)]
    rows += ["bounce@simulator.amazonses.com,B", "complaint@simulator.amazonses.com,C"]
    up = api.upload_csv("\n".join(rows) + "\n")
    tx = api.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})
    final = api.wait_for(tx["transaction_id"], {"COMPLETED"}, timeout=180)
    return tx["transaction_id"], final


def test_analytics_shows_the_campaigns_real_events(api, stack, finished):
    tx_id, final = finished
    a = api.call("GET", f"/campaigns/{tx_id}/analytics?bucket_seconds=5")
    assert a["counts"]["Send"] == 62
    assert a["counts"]["Delivery"] == final["summary"]["delivered"]  # one Delivery event per delivered message
    assert a["counts"]["Bounce"] >= 1 and a["counts"]["Complaint"] == 1
    assert 0 < a["rates"]["delivery"] <= 1 and a["rates"]["bounce"] > 0
    assert sum(b.get("Send", 0) for b in a["over_time"]) == 62
    assert a["bounce_reasons"][0]["bounce_type"] == "Permanent"
    with pytest.raises(ApiError) as e:
        other_client(stack, tenant="tenant-analytics-intruder").call("GET", f"/campaigns/{tx_id}/analytics")
    assert e.value.status == 404


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_chart_renders_in_a_real_browser(api, finished, tmp_path):
    tx_id, _ = finished
    html = api.call("GET", f"/campaigns/{tx_id}/report")
    assert "<svg id=\"chart\"" in html and tx_id in html
    page = tmp_path / "report.html"
    page.write_text(html)
    browser = _chromium()
    assert browser, "chromium is not installed (.ci/run installs Debian's chromium)"
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1000,900",
                        f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    chart = img.crop(_chart_box(img))  # only the chart's own area: the legend uses the same colours
    pixels = Counter(chart.get_flattened_data())
    # a series may show only as the ring of its markers around a smaller series' (same count, same bucket)
    drawn = {name for name, rgb in SERIES_RGB.items() if pixels.get(rgb, 0) > 8}
    assert {"Delivery", "Bounce"} <= drawn, f"chart series not drawn: {drawn}"
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, "bench/out/report.png")  # kept for a human look



def _chart_box(img):
    """The chart's own rectangle: rows and columns dense with its background colour (#f3f6fa)."""
    w, h = img.size
    px = img.load()
    bg = (0xF3, 0xF6, 0xFA)
    rows = [y for y in range(h) if sum(px[x, y] == bg for x in range(0, w, 4)) > 40]
    cols = [x for x in range(w) if sum(px[x, y] == bg for y in range(0, h, 4)) > 20]
    assert rows and cols, "no chart area on the page"
    return min(cols), min(rows), max(cols) + 1, max(rows) + 1
