"""What every runbook shares: argument parsing, per-region dependencies, and steps that are
logged, checked, dry-run by default and safe to re-run (each action first checks whether it is
already done)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from config.settings import Settings, load_settings
from core.adapters.privacy import AuditRepository
from core.bootstrap import Deps, bootstrap
from core.observability import configure_logging, log
from core.services import audit


class RunbookFailed(SystemExit):
    pass


class Runbook:
    def __init__(self, name: str, execute: bool, out: Callable[[str], None] = print, deps: Deps | None = None):
        self.name, self.execute, self.out, self.deps = name, execute, out, deps
        self.steps: list[dict[str, Any]] = []

    def reveal(self, what: str, secret: dict[str, Any]) -> None:
        """Show a new secret to the operator, once, on ``out`` (stdout): never logged, never in the
        step report (``--json``), like ``emailplatform-admin keys create`` prints a created key."""
        self.out(f"[secret] {what} (shown once, store it now): {json.dumps(secret)}")

    def audit(self, tenant_id: str, action: str, target: dict[str, str] | None = None) -> None:
        """Write an action done on a tenant to its audit log (source ``runbook``, actor the OS user;
        ``target`` holds ids, never a secret)."""
        if self.deps is None:
            raise RuntimeError(f"{self.name}: an audited action needs the runbook's deps")
        d = self.deps
        audit.record_operator_action(AuditRepository(d.store.table), d.store, d.clock, tenant_id,
                                     f"{self.name} {action}", target or {}, source="runbook")

    def _record(self, kind: str, title: str, outcome: str, detail: Any = None) -> None:
        self.steps.append({"kind": kind, "step": title, "outcome": outcome, "detail": detail})
        log.info("runbook step", runbook=self.name, kind=kind, step=title, outcome=outcome, detail=detail,
                 execute=self.execute)
        suffix = f" — {detail}" if detail not in (None, "", {}) else ""
        self.out(f"[{kind:5}] {title}: {outcome}{suffix}")

    def check(self, title: str, fn: Callable[[], Any], *, required: bool = True) -> Any:
        """A read-only check; runs in dry-run too. A failing required check stops the runbook."""
        try:
            result = fn()
        except Exception as exc:
            result = False
            detail: Any = f"{type(exc).__name__}: {exc}"
        else:
            detail = result if not isinstance(result, bool) else None
        ok = result is not False
        self._record("check", title, "ok" if ok else ("FAILED" if required else "warning"), detail)
        if not ok and required:
            raise RunbookFailed(f"{self.name}: check failed: {title}")
        return result

    def act(self, title: str, fn: Callable[[], Any], *, done: Callable[[], bool] | None = None) -> Any:
        """An action: skipped when already done, described in dry-run, performed with --execute."""
        if done is not None and done():
            self._record("act", title, "already done")
            return None
        if not self.execute:
            self._record("act", title, "dry-run (would do)")
            return None
        result = fn()
        self._record("act", title, "done", result)
        return result

    def report(self) -> dict[str, Any]:
        return {"runbook": self.name, "execute": self.execute, "steps": self.steps}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--execute", action="store_true", help="act (default: dry-run, checks only)")
    p.add_argument("--region", help="region to act on (default: EMAILPLATFORM_REGION)")
    p.add_argument("--json", action="store_true", help="print the step report as JSON at the end")
    return p


def region_deps(args: argparse.Namespace, settings: Settings | None = None, region: str | None = None) -> Deps:
    settings = settings or load_settings()
    region = region or args.region or settings.region
    return bootstrap(settings.model_copy(update={"region": region}) if region != settings.region else settings,
                     region=region)


def run(book: Runbook, body: Callable[[], None], as_json: bool = False) -> int:
    configure_logging("WARNING")
    try:
        body()
        code = 0
    except RunbookFailed as exc:
        book.out(str(exc))
        code = 1
    if as_json:
        print(json.dumps(book.report(), default=str, indent=2))
    return code


def main_guard(main: Callable[[list[str] | None], int]) -> None:
    sys.exit(main(None))
