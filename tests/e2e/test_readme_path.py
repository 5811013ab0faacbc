"""The README's first-campaign path, run as a newcomer pastes it: the bash block itself, against a
running stack (only its first line, the API address and key, is this stack's)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def newcomer_block() -> str:
    text = README.read_text()
    block = re.search(r"<!-- newcomer-path -->\n```bash\n(.*?)\n```", text, re.S)
    assert block, "README lost its newcomer-path block"
    return block.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's path uses curl")
def test_the_readme_first_campaign_block_works_as_pasted(stack, tmp_path):
    lines = newcomer_block().splitlines()
    assert lines[0].startswith("API=http://127.0.0.1:8080/api/v1/email KEY=")
    base = f"http://127.0.0.1:{stack.settings.api_port}/api/v1/email"
    script = "\n".join([f"API={base} KEY={stack.tenant['api_key']}", *lines[1:]])
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout.strip().splitlines()
    campaign, rejections = json.loads(out[-2]), json.loads(out[-1])
    assert campaign["status"] == "COMPLETED", out[-6:]
    assert campaign["summary"]["total_messages"] + campaign["summary"]["refused_at_ingest"] == 3
    assert campaign["summary"]["sent"] == campaign["summary"]["total_messages"] >= 1
    assert {r["line"]: r["reason"].split(":")[0] for r in rejections["items"]}[4] == "invalid_email"
