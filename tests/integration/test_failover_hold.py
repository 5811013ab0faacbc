"""The manual hold of automatic failover (`runbooks/failover.py --hold-automation`): stored durably
where the DR controller's decider reads it, and respected by it. Against moto."""

from __future__ import annotations

from datetime import datetime

import pytest

from controller.failover import (
    Action,
    FailoverDecider,
    FailoverWatch,
    Health,
    Observation,
    Promotion,
)
from core.adapters.aws import client
from core.adapters.dynamodb import DynamoTable
from runbooks import failover
from runbooks.regions import _set_flag, automation_hold


class Bad:
    def __init__(self, name: str):
        self.name = name

    def observe(self, now: datetime) -> Observation:
        return Observation(self.name, Health.BAD, "down")


@pytest.fixture
def dr_table(deps):
    from local.bootstrap import create_resources

    s = deps.settings
    create_resources(s.model_copy(update={"region": s.dr_region, "dr_region": s.region}))
    return DynamoTable(client(s, "dynamodb", s.dr_region), s.table_name)


def run(argv, settings):
    lines: list[str] = []
    return failover.main(argv, settings=settings, out=lines.append), lines


def test_a_hold_is_stored_in_dr_and_the_decider_respects_it_until_released(deps, dr_table, clock):
    s = deps.settings
    _set_flag(s, s.dr_region, s.region)  # DR's replica: the primary is active
    promoted: list[object] = []
    watch = FailoverWatch(table=dr_table, region=s.dr_region, watched=s.region, signals=[Bad("heartbeat"), Bad("api")],
                          decider=FailoverDecider(2, grace_seconds=10), promote=lambda v: promoted.append(v) or
                          Promotion(True, []), notify=lambda kind, detail: None, clock=clock)

    # dry-run: nothing stored
    code, lines = run(["--hold-automation", "CHG-42 primary maintenance"], s)
    assert code == 0 and any("dry-run" in line for line in lines)
    assert automation_hold(s, s.dr_region) is None

    code, lines = run(["--hold-automation", "CHG-42 primary maintenance", "--execute"], s)
    assert code == 0, lines
    assert automation_hold(s, s.dr_region)["reason"] == "CHG-42 primary maintenance"
    assert automation_hold(s, s.region)["reason"] == "CHG-42 primary maintenance"
    assert run(["--hold-automation", "CHG-42 primary maintenance", "--execute"], s)[1][0].endswith("already done")

    for _ in range(5):  # the primary is down for maintenance: every pass is held, nothing promoted
        assert watch.run_once().action is Action.HELD
        clock.advance(10)
    assert promoted == []

    code, _ = run(["--release-automation", "--execute"], s)
    assert code == 0 and automation_hold(s, s.dr_region) is None
    assert watch.run_once().action is Action.SUSPECT  # a whole grace again after the release
    clock.advance(10)
    assert watch.run_once().action is Action.PROMOTE and len(promoted) == 1
