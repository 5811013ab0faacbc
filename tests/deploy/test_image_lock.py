"""The controller image installs the pinned runtime lock, never a fresh resolution."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_image_installs_the_lock_without_resolving():
    docker = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --no-deps -r requirements-lambda.txt" in docker
    assert re.search(r"pip install --no-cache-dir --no-deps \.", docker)
    assert not re.search(r"pip install --no-cache-dir \.(?!\S)", docker.replace("--no-deps .", ""))


def test_every_runtime_dependency_is_pinned_in_the_lock():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {line.split("==")[0].lower() for line in (ROOT / "requirements-lambda.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert {_name(d) for d in deps} - pinned == set()
