"""Which region's no-leader alarm notifies. Whether a region is active is a runtime flag; infra
creates the no-leader alarm with its actions on only in the region that starts active
(infra/components/operations.py). When the active region moves (failover, failback), the new
active region's alarm must notify and the old one's go quiet, or on-call is paged for the passive
region's standby, and nobody for the active one.

Wiring: call ``move_no_leader_alarm`` right after ``switch_active_region`` (runbooks/failover.py,
runbooks/failback.py); the DR controller's automatic failover runs the same steps."""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from core.adapters.aws import client

NO_LEADER_ALARM = "controller-no-leader"  # the AlarmSpec key in infra/components/operations.py


def no_leader_alarm(prefix: str, region: str) -> str:
    """The alarm's name as infra names it: ``<prefix>-<region>-controller-no-leader``."""
    return f"{prefix}-{region}-{NO_LEADER_ALARM}"


def _actions_enabled(cw: Any, name: str) -> bool | None:
    alarms = cw.describe_alarms(AlarmNames=[name]).get("MetricAlarms") or []
    return bool(alarms[0]["ActionsEnabled"]) if alarms else None


def move_no_leader_alarm(book: Any, settings: Settings, *, source: str, target: str,
                         source_reachable: bool = True) -> None:
    """Idempotent runbook steps: enable the no-leader alarm's actions in ``target`` (required), then
    disable them in ``source`` (best effort: the old region may be the one that is down; the step
    says so and the runbook goes on)."""
    target_cw = client(settings, "cloudwatch", target)
    target_name = no_leader_alarm(settings.name_prefix, target)
    if _actions_enabled(target_cw, target_name) is None:
        book.out(f"[skip ] {target}: no alarm {target_name} (a stack without infra's alarms, e.g. the embedded one)")
        return
    book.act(f"{target}: the no-leader alarm notifies ({target_name})",
             lambda: target_cw.enable_alarm_actions(AlarmNames=[target_name]) and None,
             done=lambda: _actions_enabled(target_cw, target_name) is True)
    source_name = no_leader_alarm(settings.name_prefix, source)
    if not source_reachable:
        book.out(f"[warn ] {source} unreachable: mute {source_name} once it answers "
                 f"(aws cloudwatch disable-alarm-actions --region {source} --alarm-names {source_name})")
        return
    source_cw = client(settings, "cloudwatch", source)
    try:
        book.act(f"{source}: the no-leader alarm is muted ({source_name})",
                 lambda: source_cw.disable_alarm_actions(AlarmNames=[source_name]) and None,
                 done=lambda: _actions_enabled(source_cw, source_name) is False)
    except Exception as exc:  # noqa: BLE001 - the old region failing must not stop a failover
        book.out(f"[warn ] {source}: could not mute {source_name} ({type(exc).__name__}); "
                 f"aws cloudwatch disable-alarm-actions --region {source} --alarm-names {source_name}")
