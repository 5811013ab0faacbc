"""Switching the active region: the shared procedure behind failover and failback."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from botocore.exceptions import ClientError

from config.settings import Settings
from core import schema
from core.adapters.aws import client
from core.adapters.dynamodb import serialize
from core.services.regions import AWAITING_QUIET_OF, AWAITING_SINCE, active_region_flag
from ops.client import Client
from runbooks.common import Runbook


def probe_lag(settings: Settings, source: str, target: str, timeout: float = 30.0) -> float:
    """Write a probe in ``source`` and time its arrival in ``target`` (works on global tables too)."""
    src, dst = client(settings, "dynamodb", source), client(settings, "dynamodb", target)
    stamp = f"{time.time():.6f}"
    key = serialize(schema.replication_probe_key(source))
    src.put_item(TableName=settings.table_name, Item={**key, "stamp": {"S": stamp}})
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        item = dst.get_item(TableName=settings.table_name, Key=key, ConsistentRead=True).get("Item")
        if item and item["stamp"]["S"] == stamp:
            return round(time.monotonic() - started, 3)
        time.sleep(0.1)
    raise TimeoutError(f"no replication {source} → {target} within {timeout}s")


def s3_backlog(settings: Settings, source: str, target: str) -> int:
    """Objects in the source buckets not yet in their target twins (on AWS: also see the S3
    replication metrics OperationsPendingReplication in CloudWatch)."""
    s3 = client(settings, "s3", source)
    missing = 0
    for b in schema.REPLICATED_BUCKETS:
        pages = s3.get_paginator("list_objects_v2")
        have = {o["Key"] for p in pages.paginate(Bucket=settings.bucket(b.purpose, target)) for o in p.get("Contents", [])}
        missing += sum(1 for p in pages.paginate(Bucket=settings.bucket(b.purpose, source))
                       for o in p.get("Contents", []) if o["Key"] not in have)
    return missing


def _lease(settings: Settings, region: str) -> dict[str, Any]:
    ddb = client(settings, "dynamodb", region)
    item = ddb.get_item(TableName=settings.table_name, Key={k: {"S": v} for k, v in schema.lease_key(region).items()},
                        ConsistentRead=True).get("Item") or {}
    return {k: list(v.values())[0] for k, v in item.items()}


def _flag(settings: Settings, region: str) -> str | None:
    ddb = client(settings, "dynamodb", region)
    item = ddb.get_item(TableName=settings.table_name, Key={k: {"S": v} for k, v in schema.ACTIVE_REGION_KEY.items()},
                        ConsistentRead=True).get("Item")
    return item["region"]["S"] if item else None


def _set_flag(settings: Settings, region: str, active: str, awaiting_quiet: str | None = None) -> None:
    """Write the flag naming ``active`` in ``region``'s replica, unless it names ``active`` already
    (conditional: a flag whose wait for the old region's quiet was lifted is never re-armed)."""
    item = active_region_flag(active, datetime.now(UTC), awaiting_quiet)
    try:
        client(settings, "dynamodb", region).put_item(
            TableName=settings.table_name, Item={k: {"S": str(v)} for k, v in item.items()},
            ConditionExpression="attribute_not_exists(#r) OR #r <> :active",
            ExpressionAttributeNames={"#r": "region"}, ExpressionAttributeValues={":active": {"S": active}})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise


def _flag_item(settings: Settings, region: str) -> dict[str, Any]:
    ddb = client(settings, "dynamodb", region)
    item = ddb.get_item(TableName=settings.table_name, Key={k: {"S": v} for k, v in schema.ACTIVE_REGION_KEY.items()},
                        ConsistentRead=True).get("Item") or {}
    return {k: list(v.values())[0] for k, v in item.items()}


def source_sends(settings: Settings, source: str, since: datetime, now: datetime) -> int:
    """Messages ``source``'s SES accepted between ``since`` and ``now`` (CloudWatch ``AWS/SES``
    ``Send``, read in that region; published a minute or two late)."""
    points = client(settings, "cloudwatch", source).get_metric_statistics(
        Namespace="AWS/SES", MetricName="Send", StartTime=since, EndTime=now, Period=60, Statistics=["Sum"])
    return int(sum(p["Sum"] for p in points.get("Datapoints", [])))


def release_senders(settings: Settings, target: str, since: str) -> None:
    """Let ``target`` send: remove the flag's wait for the old region's quiet, only if it is still
    the wait that began at ``since`` (conditional; a newer flag is never touched)."""
    client(settings, "dynamodb", target).update_item(
        TableName=settings.table_name, Key={k: {"S": v} for k, v in schema.ACTIVE_REGION_KEY.items()},
        UpdateExpression=f"REMOVE {AWAITING_QUIET_OF}, {AWAITING_SINCE}",
        ConditionExpression="#r = :target AND #s = :since",
        ExpressionAttributeNames={"#r": "region", "#s": AWAITING_SINCE},
        ExpressionAttributeValues={":target": {"S": target}, ":since": {"S": since}})


def confirm_source_stopped(book: Runbook, settings: Settings, *, source: str, target: str, window_seconds: float,
                           accept_risk: bool = False) -> None:
    """Let ``target``'s senders start after a failover whose old region could not be told: only
    when ``source``'s SES accepted nothing for ``window_seconds`` since the flag was written, or
    with ``accept_risk`` (the operator knows the old region is not sending: both regions may send
    the same batch otherwise)."""
    flag = book.check(f"{target}'s active-region flag", lambda: _flag_item(settings, target) or False)
    if flag.get("region") != target:
        book.check(f"the flag names {target}", lambda: False)
    since = flag.get(AWAITING_SINCE)
    if not flag.get(AWAITING_QUIET_OF) or not since:
        book.act(f"{target}'s senders may send", lambda: None, done=lambda: True)
        return
    started = datetime.fromisoformat(since)
    now = datetime.now(UTC)
    quiet = book.check(f"{source}'s SES sends since the flag moved ({since}), over {window_seconds:.0f}s",
                       lambda: source_sends(settings, source, started, now), required=False)
    long_enough = now - started >= timedelta(seconds=window_seconds)
    if not (quiet == 0 and long_enough) and not accept_risk:
        book.check(f"{source} seen quiet for a whole window (or --accept-risk)", lambda: False)
    book.act(f"let {target}'s senders start (the wait for {source}'s quiet is lifted)",
             lambda: release_senders(settings, target, since),
             done=lambda: not _flag_item(settings, target).get(AWAITING_QUIET_OF))


# The manual hold of automatic failover (runbooks/failover.py --hold-automation): a replicated
# item the DR controller's decider reads before every decision.
FAILOVER_HOLD_KEY = schema.FAILOVER_HOLD_KEY


def automation_hold(settings: Settings, region: str) -> dict[str, Any] | None:
    ddb = client(settings, "dynamodb", region)
    item = ddb.get_item(TableName=settings.table_name, Key={k: {"S": v} for k, v in FAILOVER_HOLD_KEY.items()},
                        ConsistentRead=True).get("Item")
    return {k: list(v.values())[0] for k, v in item.items()} if item else None


def set_automation_hold(settings: Settings, region: str, reason: str | None, by: str = "operator") -> None:
    """Hold (``reason`` given) or release (None) automatic failover, in ``region``'s replica."""
    ddb = client(settings, "dynamodb", region)
    key = {k: {"S": v} for k, v in FAILOVER_HOLD_KEY.items()}
    if reason is None:
        ddb.delete_item(TableName=settings.table_name, Key=key)
        return
    ddb.put_item(TableName=settings.table_name, Item={**key, "reason": {"S": reason}, "by": {"S": by},
                                                      "held_at": {"S": datetime.now(UTC).isoformat()}})


def _alive(lease: dict[str, Any]) -> bool:
    exp = lease.get("expires_at")
    return isinstance(exp, str) and datetime.fromisoformat(exp.replace("Z", "+00:00")) > datetime.now(UTC)


def _overrides(r53: Any, health_check_id: str) -> tuple[bool, bool]:
    config = r53.get_health_check(HealthCheckId=health_check_id)["HealthCheck"]["HealthCheckConfig"]
    return bool(config.get("Disabled")), bool(config.get("Inverted"))


def forced_unhealthy(r53: Any, health_check_id: str) -> bool:
    return all(_overrides(r53, health_check_id))


def overridden(r53: Any, health_check_id: str) -> bool:
    """Disabled or inverted: the checkers' verdict is not what Route 53 answers."""
    return any(_overrides(r53, health_check_id))


def force_unhealthy(r53: Any, health_check_id: str, forced: bool = True) -> str:
    """Route 53 considers a *disabled* health check healthy, and an inverted one the opposite of
    what its checkers see: disabled and inverted together is unhealthy whatever the endpoint
    answers. Inverting alone would turn a dead primary's check healthy and send DNS back to it.
    ``forced=False`` restores the checkers' verdict (failback)."""
    return r53.update_health_check(HealthCheckId=health_check_id, Disabled=forced, Inverted=forced)["HealthCheck"]["Id"]


def switch_active_region(book: Runbook, settings: Settings, *, source: str, target: str, target_api: str,
                         health_check_id: str | None = None, canary_key: str | None = None,
                         wait_seconds: float = 60.0, source_reachable: bool = True,
                         require_caught_up: bool = False, after_switch: Callable[[], Any] | None = None) -> None:
    """The one procedure that moves the platform to ``target``: the failover and failback
    runbooks and the automatic failover (controller/failover.py) all run it. ``require_caught_up``
    (failback) stops unless a probe written in ``source`` reaches ``target``; ``after_switch`` runs
    right after the flag is set (the DR controller renews its lease at once)."""
    ddb_target = client(settings, "dynamodb", target)
    book.check(f"{target} table is ACTIVE",
               lambda: ddb_target.describe_table(TableName=settings.table_name)["Table"]["TableStatus"] == "ACTIVE")
    if source_reachable:
        book.check(f"replication lag {source} → {target} (seconds)", lambda: probe_lag(settings, source, target),
                   required=require_caught_up)
        book.check(f"S3 objects not yet replicated to {target}", lambda: s3_backlog(settings, source, target),
                   required=False)
    else:
        book.check(f"{source} reachable", lambda: False, required=False)
    book.check(f"{target} API healthy",
               lambda: requests.get(f"{target_api.rstrip('/')}/api/v1/health", timeout=5).status_code == 200)
    book.check(f"{target} controller passive (no live lease) or already active",
               lambda: (not _alive(_lease(settings, target))) or _flag(settings, target) == target)

    regions = [target, source] if source_reachable else [target]
    # The old region cannot be told (its replica lags or is gone): until it is seen quiet, the
    # flag keeps the target from sending (core/services/regions.py AWAITING_QUIET_OF).
    awaiting = None if source_reachable else source

    def switch() -> None:
        for r in regions:
            _set_flag(settings, r, target, awaiting)

    book.act(f"set the active region to {target}", switch,
             done=lambda: _flag(settings, target) == target)
    if after_switch is not None and book.execute:
        after_switch()
    if health_check_id:
        r53 = client(settings, "route53")
        book.act(f"Route 53: force {source}'s health check unhealthy (disabled + inverted) so DNS fails over",
                 lambda: force_unhealthy(r53, health_check_id), done=lambda: forced_unhealthy(r53, health_check_id))
    else:
        book.check("Route 53 health-check override", lambda: "no --health-check-id given (embedded stack: no DNS)",
                   required=False)
    if not book.execute:
        return
    waiting = _flag_item(settings, target).get(AWAITING_QUIET_OF)
    if waiting:
        book.check(f"{target}'s senders wait for evidence that {waiting} stopped sending",
                   lambda: (f"until {waiting}'s SES is quiet for a window: the DR controller's failover watch "
                            f"lifts the wait, or `python -m runbooks.failover --confirm-source-stopped`"),
                   required=False)
        return  # its controller takes the lease once the wait is lifted; no canary can go out before

    def leader() -> str:
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            lease = _lease(settings, target)
            if _alive(lease):
                return f"{lease.get('holder')} epoch {lease.get('epoch')}"
            time.sleep(0.5)
        raise TimeoutError(f"no controller took the {target} lease within {wait_seconds}s")

    book.check(f"{target} controller took the lease", leader)
    if source_reachable:
        book.check(f"{source} controller stood down", lambda: not _alive(_lease(settings, source)) or
                   _flag(settings, source) == target)
    if canary_key:
        def canary() -> str:
            c = Client(f"{target_api.rstrip('/')}/api/v1/email", canary_key)
            tid = c.create_template("canary", "canary", "<p>canary {{ email }}</p>")
            up = c.upload_csv("email\nsuccess@simulator.amazonses.com\n")
            tx = c.call("POST", "/campaigns", json={"template_id": tid, "upload_id": up["upload_id"]})
            return c.wait_for(tx["transaction_id"], {"COMPLETED"}, timeout=wait_seconds * 2)["status"]

        book.check(f"canary campaign through {target}", canary)
