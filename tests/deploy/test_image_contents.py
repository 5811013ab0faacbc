"""The controller image ships only what the controller runs, and that is enough to run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = ("config", "core", "controller", "runbooks", "ops", "handlers", "local", "infra", "bench")


def _copied(dockerfile: str) -> list[str]:
    """The sources of the Dockerfile's COPY lines (paths in the repository)."""
    out: list[str] = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            out += line.split()[1:-1]
    return out


def test_the_image_holds_the_controller_runbooks_and_admin_cli_and_nothing_else(tmp_path):
    sources = _copied((ROOT / "Dockerfile").read_text())
    tops = {Path(s).parts[0] for s in sources if (ROOT / Path(s).parts[0]).is_dir()}
    assert tops == {"config", "core", "controller", "runbooks", "ops"}
    for src in sources:
        target = tmp_path / src
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / src, target)
    # Import every module the image's entrypoints run, from the copy alone, and list where each of
    # our modules came from: the editable install must not have lent one from the repository.
    probe = f"""
import importlib, json, pkgutil, sys
sys.path.insert(0, {str(tmp_path)!r})
import controller.__main__, ops.cli
for pkg in ("runbooks",):
    for m in pkgutil.iter_modules([{str(tmp_path)!r} + "/" + pkg]):
        importlib.import_module(f"{{pkg}}.{{m.name}}")
ours = {{n: getattr(m, "__file__", "") for n, m in sys.modules.items() if n.split(".")[0] in {OURS!r}}}
print(json.dumps(ours))
"""
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert {n.split(".")[0] for n in loaded} <= {"config", "core", "controller", "runbooks", "ops"}
    assert all((f or "").startswith(str(tmp_path)) for f in loaded.values()), loaded
