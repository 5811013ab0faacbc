"""The automatic-failover metrics: defined with every other metric in core/observability.py, and
published by the DR controller's watch as the failover alert rules read them (a promotion is an
increase from 0; signals bad against the quorum; a hold; nothing stale once this region is active)."""

from __future__ import annotations

import ast
from pathlib import Path

from prometheus_client import REGISTRY

from controller.failover import Action, Promotion
from core import observability as obs
from core import schema
from core.services.ports import FakeClock
from tests.unit.test_failover_decider import DR, PRIMARY, T0, FakeTable, FixedSignal, watch

ROOT = Path(__file__).resolve().parents[2]
METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_every_metric_is_defined_in_core_observability_only():
    """One place: a metric constructed anywhere else would exist locally under a name no alarm,
    dashboard or EMF definition knows."""
    elsewhere = []
    for package in ("config", "core", "controller", "handlers", "local", "runbooks", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "core" / "observability.py":
                continue
            tree = ast.parse(path.read_text(), str(path))
            imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                        and (n.module or "").startswith("prometheus_client") for a in n.names}
            for n in ast.walk(tree):
                if isinstance(n, ast.Call):
                    name = n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                    if name in METRIC_TYPES and (name in imported or isinstance(n.func, ast.Attribute)
                                                 and getattr(n.func.value, "id", "") == "prometheus_client"):
                        elsewhere.append(f"{path.relative_to(ROOT)}:{n.lineno}")
    assert elsewhere == []
    for name in ("emailplatform_failover_promotions_total", "emailplatform_failover_signal_bad",
                 "emailplatform_failover_signals_bad", "emailplatform_failover_quorum",
                 "emailplatform_failover_quorum_bad_since_timestamp_seconds", "emailplatform_failover_held"):
        assert name in obs.DEFINITIONS and not obs.DEFINITIONS[name].emf  # the controller's: through the collector


def test_the_watch_publishes_what_the_failover_alerts_read():
    table, clock = FakeTable(), FakeClock(T0)
    table.put({**schema.ACTIVE_REGION_KEY, "region": PRIMARY})
    before = {o: value("emailplatform_failover_promotions_total", region=DR, outcome=o) or 0.0
              for o in obs.FAILOVER_OUTCOMES}
    api = FixedSignal("api", "bad")
    heartbeat = FixedSignal("heartbeat", "ok")
    w, _, _ = watch(table, clock, [heartbeat, api, FixedSignal("ses", "unknown")], [Promotion(True, [])])

    # GIVEN a watch that just started: every promotion series exists (at its value so far)
    for o in obs.FAILOVER_OUTCOMES:
        assert value("emailplatform_failover_promotions_total", region=DR, outcome=o) == before[o]
    assert value("emailplatform_failover_quorum", region=DR) == 2

    # one signal of three bad: below the quorum
    assert w.run_once().action is Action.WATCH
    assert value("emailplatform_failover_signals_bad", region=DR) == 1
    assert value("emailplatform_failover_signal_bad", region=DR, signal="api") == 1
    assert value("emailplatform_failover_signal_bad", region=DR, signal="ses") == 0  # unknown is not bad
    assert value("emailplatform_failover_held", region=DR) == 0
    assert value("emailplatform_failover_quorum_bad_since_timestamp_seconds", region=DR) == 0

    # an operator holds the automation
    table.put({"PK": "PLATFORM", "SK": "FAILOVER_HOLD", "reason": "maintenance"})
    assert w.run_once().action is Action.HELD
    assert value("emailplatform_failover_held", region=DR) == 1
    del table.items[("PLATFORM", "FAILOVER_HOLD")]

    # a quorum, then the grace: one promotion counted
    heartbeat.health = api.health
    assert w.run_once().action is Action.SUSPECT
    assert value("emailplatform_failover_quorum_bad_since_timestamp_seconds", region=DR) == clock.now().timestamp()
    clock.advance(20)
    assert w.run_once().action is Action.PROMOTE
    assert value("emailplatform_failover_promotions_total", region=DR, outcome="promoted") == before["promoted"] + 1
    assert value("emailplatform_failover_promotions_total", region=DR, outcome="failed") == before["failed"]

    # this region is active now: nothing watched, nothing stale left bad or held
    table.put({"PK": "PLATFORM", "SK": "FAILOVER_HOLD", "reason": "after the failover"})
    assert w.run_once().action is Action.STANDBY
    assert value("emailplatform_failover_signals_bad", region=DR) == 0
    assert value("emailplatform_failover_signal_bad", region=DR, signal="heartbeat") == 0
    assert value("emailplatform_failover_held", region=DR) == 0
    assert value("emailplatform_failover_quorum_bad_since_timestamp_seconds", region=DR) == 0
