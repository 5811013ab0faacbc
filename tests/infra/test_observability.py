"""Alarms someone hears, on metrics somebody publishes, with dimensions that exist.

Under Pulumi's mocks (the recording monitor of test_infra.py). The platform's own metrics are
checked against their single definition in core/observability.py: a Lambda metric is published
as EMF with every label as a dimension, in the namespace the infra gives the Lambdas; a controller
metric reaches CloudWatch only through the ADOT collector of its region's task, under the
dimension sets that collector declares. AWS metrics are checked against the dimension sets AWS
publishes them with, and their values against the stack's own resources in the same region.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import observability as obs
from infra.policy import rules
from tests.infra.test_infra import CFG, REPO, named, of, run_program, stack_config

REGIONS = {"primary": CFG.primary_region, "dr": CFG.dr_region}
NAMESPACE = obs.emf_namespace(CFG.prefix)
# The dimension sets AWS publishes these metrics with (AWS documentation of each service's metrics).
AWS_METRICS: dict[tuple[str, str], list[frozenset[str]]] = {
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"): [frozenset({"QueueName"})],
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"): [frozenset({"QueueName"})],
    ("AWS/ApiGateway", "5XXError"): [frozenset({"ApiName"}), frozenset({"ApiName", "Stage"})],
    ("AWS/SES", "Reputation.BounceRate"): [frozenset()],
    ("AWS/SES", "Reputation.ComplaintRate"): [frozenset()],
    ("AWS/DynamoDB", "ReplicationLatency"): [frozenset({"TableName", "ReceivingRegion"})],
    ("AWS/Firehose", "DeliveryToS3.DataFreshness"): [frozenset({"DeliveryStreamName"})],
}
RULES_FILE = REPO / "ops" / "prometheus" / "rules.yml"


@pytest.fixture(scope="module")
def resources():
    return run_program(CFG)[0]


def role(r) -> str:
    return "dr" if (r.provider or "").endswith("::dr") else "primary"


def in_region(resources, typ, region_role):
    return [r for r in of(resources, typ) if role(r) == region_role]


def collector(resources, region_role) -> tuple[dict, dict]:
    """The region's controller task: its collector container and that collector's configuration."""
    (task,) = in_region(resources, "aws:ecs/taskDefinition:TaskDefinition", region_role)
    (sidecar,) = [c for c in json.loads(task.props["containerDefinitions"]) if c["name"] == "adot-collector"]
    env = {e["name"]: e["value"] for e in sidecar["environment"]}
    return sidecar, yaml.safe_load(env["AOT_CONFIG_CONTENT"])


def published(resources, region_role) -> dict[tuple[str, str], list[frozenset[str]]]:
    """(namespace, metric) → the dimension sets it is published with in this region."""
    out: dict[tuple[str, str], list[frozenset[str]]] = dict(AWS_METRICS)
    namespaces = {fn.props["environment"]["variables"]["POWERTOOLS_METRICS_NAMESPACE"]
                  for fn in in_region(resources, "aws:lambda/function:Function", region_role)}
    (lambda_ns,) = namespaces
    for d in obs.DEFINITIONS.values():
        if d.emf:  # core/observability.EmfBuffer: one dimension set, every label
            out[(lambda_ns, d.name)] = [frozenset(d.labels)]
    _, config = collector(resources, region_role)
    emf = config["exporters"]["awsemf"]
    (drop,) = config["processors"]["filter/alarms"]["metrics"]["metric"]  # OTTL: what is dropped
    forwarded = set(re.findall(r'name == "([a-z0-9_]+)"', drop)) if drop.startswith("not (") else set()
    for decl in emf["metric_declarations"]:
        (selector,) = decl["metric_name_selectors"]
        name = selector.lstrip("^").rstrip("$")
        assert name in forwarded, name
        out[(emf["namespace"], name)] = [frozenset(dims) for dims in decl["dimensions"]]
    return out


def metric_problems(resources, region_role, ns: str, name: str, dims: dict[str, Any]) -> list[str]:
    """Why CloudWatch would have no data for this metric in this region (empty: it will have)."""
    region = REGIONS[region_role]
    catalogue = published(resources, region_role)
    if (ns, name) not in catalogue:
        return [f"nobody publishes {ns} {name}"]
    if frozenset(dims) not in catalogue[(ns, name)]:
        return [f"{ns} {name} is not published with dimensions {sorted(dims)} (only {catalogue[(ns, name)]})"]
    problems = []
    d = obs.DEFINITIONS.get(name)
    for key, value in dims.items():
        if value == "*":  # a dashboard's wildcard: every value published
            continue
        if d is not None and key in d.values and value not in d.values[key]:
            problems.append(f"{name}: {key}={value} is never published ({d.values[key]})")
        if key == "region" and value != region:
            problems.append(f"{name}: region={value} in {region}")
        if key == "QueueName" and value not in {q.props["name"] for q in in_region(
                resources, "aws:sqs/queue:Queue", region_role)}:
            problems.append(f"{name}: no queue {value} in {region}")
        if key == "ApiName" and value not in {a.props["name"] for a in in_region(
                resources, "aws:apigateway/restApi:RestApi", region_role)}:
            problems.append(f"{name}: no REST API {value} in {region}")
        if key == "DeliveryStreamName" and value not in {f.props["name"] for f in in_region(
                resources, "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream", region_role)}:
            problems.append(f"{name}: no Firehose stream {value} in {region}")
        if key == "TableName" and value != named(resources, "data-table").props["name"]:
            problems.append(f"{name}: no table {value}")
        if key == "ReceivingRegion" and value != REGIONS["dr" if region_role == "primary" else "primary"]:
            problems.append(f"{name}: {region} replicates to the other region, not to {value}")
    return problems


def watched(alarm) -> list[tuple[str, str, dict[str, Any]]]:
    if alarm.props.get("metricName"):
        return [(alarm.props["namespace"], alarm.props["metricName"], alarm.props.get("dimensions") or {})]
    return [(q["metric"]["namespace"], q["metric"]["metricName"], q["metric"].get("dimensions") or {})
            for q in alarm.props["metricQueries"] if q.get("metric")]


def alarm_problems(resources) -> list[str]:
    return [f"{a.name}: {p}" for a in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
            for ns, name, dims in watched(a) for p in metric_problems(resources, role(a), ns, name, dims)]


def test_every_alarm_watches_a_metric_somebody_publishes_with_dimensions_that_exist(resources):
    alarms = of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
    assert {role(a) for a in alarms} == {"primary", "dr"}
    assert alarm_problems(resources) == []
    # the platform's own metrics are among them, from both sources
    ours = {name for a in alarms for ns, name, _ in watched(a) if ns == NAMESPACE}
    assert {d.name for d in obs.DEFINITIONS.values() if d.emf} & ours
    assert obs.DEFINITIONS["emailplatform_controller_heartbeat_age_seconds"].name in ours


def test_the_check_catches_an_alarm_on_nothing(resources):
    def change(field, value):
        def apply(r):
            r.props = {**r.props, field: value}
        return apply

    for name, field, value, expected in [
        ("primary-monitoring-controller-heartbeat", "dimensions", {"region": "eu-west-1", "holder": "x"},
         "not published with dimensions"),
        ("dr-monitoring-controller-heartbeat", "dimensions", {"region": "eu-west-1"}, "region=eu-west-1 in eu-central-1"),
        ("primary-monitoring-controller-lease-lost", "metricName", "controller_lease_lost_total", "nobody publishes"),
        ("primary-monitoring-controller-lease-lost", "namespace", "EmailPlatform", "nobody publishes"),
        ("dr-monitoring-replication-latency", "dimensions",
         {"TableName": "emailplatform-main", "ReceivingRegion": "eu-central-1"}, "replicates to the other region"),
        ("primary-monitoring-dlq-send", "dimensions", {"QueueName": "emailplatform-send-dlq"}, "no queue"),
        ("dr-monitoring-firehose-freshness-ses-events", "dimensions", {"DeliveryStreamName": "emailplatform-events"},
         "no Firehose stream"),
    ]:
        bad = copy.deepcopy(resources)
        change(field, value)(named(bad, name))
        found = alarm_problems(bad)
        assert found and all(name in p for p in found) and expected in found[0], (name, found)


def test_every_alarm_is_heard_through_a_subscribed_topic_of_its_region(resources):
    topics = {t.props["arn"]: t for t in of(resources, "aws:sns/topic:Topic")}
    subscribed = {s.props["topic"]: s.props for s in of(resources, "aws:sns/topicSubscription:TopicSubscription")}
    for a in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm"):
        assert a.props["alarmActions"] and a.props["okActions"] == a.props["alarmActions"], a.name
        for arn in a.props["alarmActions"]:
            assert role(topics[arn]) == role(a), a.name
            assert subscribed[arn]["protocol"] == "email" and subscribed[arn]["endpoint"] == CFG.alarm_email
    assert rules.alarms_notify(resources) == rules.alarm_topics_have_subscribers(resources) == []
    silent = copy.deepcopy(resources)
    named(silent, "dr-monitoring-api-5xx").props = {**named(silent, "dr-monitoring-api-5xx").props, "alarmActions": []}
    assert [v.message for v in rules.alarms_notify(silent)] == ["dr-monitoring-api-5xx has no alarm actions"]


def test_every_prometheus_alert_has_its_alarm_in_each_region_with_the_same_runbook(resources):
    alerts = [r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"] if "alert" in r]
    alarms = of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
    for alert in alerts:
        for region_role in REGIONS:
            mine = [a for a in alarms if role(a) == region_role
                    and a.props["alarmDescription"].startswith(alert["alert"] + ":")]
            assert mine, (alert["alert"], region_role)
            assert all(a.props["alarmDescription"].endswith(f"Runbook: {alert['labels']['runbook']}") for a in mine)
    for a in alarms:
        runbook = a.props["alarmDescription"].rsplit("Runbook: ", 1)[1]
        assert (REPO / runbook).is_file(), a.name


def test_a_dead_controller_alarms_and_every_alarm_says_what_silence_means(resources):
    for a in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm"):
        assert a.props["treatMissingData"] in ("breaching", "notBreaching"), a.name
    for region_role in REGIONS:
        heartbeat = named(resources, f"{region_role}-monitoring-controller-heartbeat")
        # every controller (leader or standby) heartbeats; no samples at all = no live controller.
        # A controller whose lease calls fail is still scraped: a count of samples never drops, so
        # the alarm reads the age (computed at the scrape): the freshest controller's must be recent
        assert heartbeat.props["metricName"] == "emailplatform_controller_heartbeat_age_seconds"
        assert heartbeat.props["dimensions"] == {"region": REGIONS[region_role]}  # any role
        assert heartbeat.props["treatMissingData"] == "breaching"
        assert heartbeat.props["statistic"] == "Minimum"
        assert heartbeat.props["comparisonOperator"] == "GreaterThanThreshold"
        assert heartbeat.props["threshold"] <= 60  # a renewal every lease_seconds/3 (5 s) keeps it far below
        assert heartbeat.props["period"] * heartbeat.props["evaluationPeriods"] <= 120
        assert heartbeat.props["actionsEnabled"] is True  # a dead standby matters too: nobody could fail over


def test_no_leader_notifies_in_the_region_that_starts_active_and_waits_for_a_failover_in_the_other(resources):
    for region_role, enabled in (("primary", True), ("dr", False)):
        a = named(resources, f"{region_role}-monitoring-controller-no-leader")
        assert a.props["dimensions"] == {"region": REGIONS[region_role], "role": "leader"}
        assert a.props["treatMissingData"] == "breaching" and a.props["statistic"] == "Minimum"
        # a stale leader (lease calls failing) alarms too, a fresh one elsewhere in the region wins
        assert a.props["metricName"] == "emailplatform_controller_heartbeat_age_seconds"
        assert a.props["comparisonOperator"] == "GreaterThanThreshold" and a.props["threshold"] <= 60
        assert a.props["actionsEnabled"] is enabled


def test_the_lease_lost_alarm_watches_the_counter_the_lease_increments(resources):
    from prometheus_client import REGISTRY

    lease_lost = [a for a in of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm") if "lease-lost" in a.name]
    assert len(lease_lost) == 2
    for a in lease_lost:
        assert (a.props["namespace"], a.props["metricName"]) == (NAMESPACE, "emailplatform_controller_lease_lost_total")
        assert a.props["statistic"] == "Sum"  # the collector turns the cumulative counter into deltas
    assert REGISTRY.get_sample_value("emailplatform_controller_lease_lost_total") is not None  # controller/lease.py


def test_replication_latency_is_watched_where_the_writes_come_from(resources):
    for region_role, peer in (("primary", CFG.dr_region), ("dr", CFG.primary_region)):
        (a,) = [a for a in in_region(resources, "aws:cloudwatch/metricAlarm:MetricAlarm", region_role)
                if a.props.get("metricName") == "ReplicationLatency"]
        assert a.props["dimensions"]["ReceivingRegion"] == peer
        assert a.props["alarmDescription"].startswith("EmailPlatformReplicationLag:")  # its Prometheus twin


def test_the_collector_remote_writes_to_its_regions_workspace_and_publishes_what_the_alarms_read(resources):
    policies = {r.name: json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")}
    for region_role, region in REGIONS.items():
        sidecar, config = collector(resources, region_role)
        (workspace,) = in_region(resources, "aws:amp/workspace:Workspace", region_role)
        assert config["exporters"]["prometheusremotewrite"]["endpoint"] == \
            workspace.props["prometheusEndpoint"] + "api/v1/remote_write"
        assert config["exporters"]["prometheusremotewrite"]["auth"]["authenticator"] == "sigv4auth"
        assert config["extensions"]["sigv4auth"] == {"region": region, "service": "aps"}
        receiver = config["receivers"]["prometheus"]
        assert not receiver.get("trim_metric_suffixes")  # counters keep the _total of their definitions
        (scrape,) = receiver["config"]["scrape_configs"]
        (target,) = scrape["static_configs"]
        assert target["targets"] == ["localhost:9102"] and scrape["metrics_path"] == "/metrics"
        assert target["labels"] == {"region": region} and scrape["honor_labels"] is True
        emf = config["exporters"]["awsemf"]
        assert emf["namespace"] == NAMESPACE and emf["region"] == region
        assert emf["dimension_rollup_option"] == "NoDimensionRollup"
        for decl in emf["metric_declarations"]:
            d = obs.DEFINITIONS[decl["metric_name_selectors"][0].lstrip("^")]
            assert not d.emf  # a controller metric
            for dims in decl["dimensions"]:
                assert set(dims) <= set(d.labels) | set(target["labels"]), (d.name, dims)
        (metrics_logs,) = [g for g in in_region(resources, "aws:cloudwatch/logGroup:LogGroup", region_role)
                           if g.props["name"] == emf["log_group_name"]]
        assert metrics_logs.props["kmsKeyId"]
        assert sidecar["essential"] is False and sidecar["command"] == ["--config=env:AOT_CONFIG_CONTENT"]
        # aps:RemoteWrite on this workspace only, for the task role only
        doc = policies[f"{region_role}-controller-telemetry-policy"]
        (aps,) = [s for s in doc["Statement"] if "aps:RemoteWrite" in s["Action"]]
        assert aps["Action"] == ["aps:RemoteWrite"] and aps["Resource"] == workspace.props["arn"]
        (logs,) = [s for s in doc["Statement"] if "logs:PutLogEvents" in s["Action"]]
        assert logs["Resource"] == [metrics_logs.props["arn"], metrics_logs.props["arn"] + ":*"]
        telemetry = named(resources, f"{region_role}-controller-telemetry-policy")
        assert telemetry.props["role"] == named(resources, f"{region_role}-controller-task-role").props["id"]
    granted = [n for n, doc in policies.items() for s in doc["Statement"]
               if any(str(a).startswith("aps:") for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))]
    assert sorted(granted) == ["dr-controller-telemetry-policy", "primary-controller-telemetry-policy"]


def test_lambdas_write_emf_where_the_alarms_look_and_may_trace(resources):
    for fn in of(resources, "aws:lambda/function:Function"):
        assert fn.props["environment"]["variables"]["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE, fn.name
        assert fn.props["tracingConfig"]["mode"] == "Active"
    docs = [json.loads(r.props["policy"]) for r in of(resources, "aws:iam/rolePolicy:RolePolicy")
            if r.name.endswith("-logs") and "-functions-" in r.name]
    assert len(docs) == 6
    for doc in docs:  # Active tracing needs the function's role to write segments
        assert any({"xray:PutTraceSegments", "xray:PutTelemetryRecords"} <= set(s["Action"]) for s in doc["Statement"])
    staging = stack_config("staging")
    assert obs.emf_namespace(staging.prefix) == "EmailPlatform/emailplatform-stg"  # stacks never share a namespace


def test_dashboard_widgets_name_metrics_with_their_real_dimensions(resources):
    for board in of(resources, "aws:cloudwatch/dashboard:Dashboard"):
        widgets = json.loads(board.props["dashboardBody"])["widgets"]
        assert len(widgets) >= 8
        for w in widgets:
            assert w["properties"]["region"] == REGIONS[role(board)]
            for m in w["properties"]["metrics"]:
                ns, name, *pairs = m
                dims = dict(zip(pairs[::2], pairs[1::2]))
                assert metric_problems(resources, role(board), ns, name, dims) == [], (board.name, w["properties"]["title"])


def test_readme_names_every_alert_and_its_runbook():
    readme = (Path(REPO) / "README.md").read_text()
    section = readme.split("## What to watch", 1)[1].split("\n## ", 1)[0]
    for g in yaml.safe_load(RULES_FILE.read_text())["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                assert r["alert"] in section and r["labels"]["runbook"] in section, r["alert"]


# -- Lambda-side alerts and panels on AWS -------------------------------------------------------
LAMBDA_METRICS = {d.name for d in obs.DEFINITIONS.values() if d.emf}
# Where the CloudWatch alarm of a Lambda-side alert reads an AWS metric instead of ours, and why.
AWS_STAND_INS: dict[str, set[tuple[str, str]]] = {
    # what SES reviews the account on; our ratio would only approximate it
    "EmailPlatformBounceRateHigh": {("AWS/SES", "Reputation.BounceRate")},
    "EmailPlatformComplaintRateHigh": {("AWS/SES", "Reputation.ComplaintRate")},
    # also counts what the API Lambda never answers (integration timeouts, throttling)
    "EmailPlatformApiErrors": {("AWS/ApiGateway", "5XXError")},
}
DASHBOARD = REPO / "ops" / "grafana" / "dashboard.json"


def metrics_read(expr: str, recorded: dict[str, str]) -> set[str]:
    """The metrics an expression reads, through the recording rules it uses."""
    found = set(re.findall(r"\bemailplatform_[a-z0-9_]+", expr))
    for name in re.findall(r"\bemailplatform:[a-z0-9_:]+", expr):
        found |= metrics_read(recorded[name], recorded)
    return found


def lambda_side_alerts() -> list[tuple[dict, set[str]]]:
    """The alerts whose condition reads a metric only the Lambdas publish (as EMF, to CloudWatch),
    with those metrics."""
    rules = [r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]]
    recorded = {r["record"]: r["expr"] for r in rules if "record" in r}
    return [(r, read) for r in rules if "alert" in r and (read := metrics_read(r["expr"], recorded) & LAMBDA_METRICS)]


def test_every_lambda_side_alert_can_fire_on_aws(resources):
    """Prometheus never sees the Lambdas' metrics on AWS (they are EMF in CloudWatch, not in AMP), so
    each such alert must be a CloudWatch alarm in every region over a metric the code really
    publishes: ours as EMF from a handler wrapped by lambda_entry, with a dimension value some
    ``.labels()`` call passes, or AWS's own stand-in named above."""
    import ast

    from tests.ops.test_lambda_telemetry import COMPUTED, published_label_values

    alerts = lambda_side_alerts()
    assert {a["alert"] for a, _ in alerts} >= {"EmailPlatformSendRateUnderQuota", "EmailPlatformBounceRateHigh",
                                           "EmailPlatformComplaintRateHigh", "EmailPlatformApiErrors"}
    values = published_label_values()
    alarms = of(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
    for alert, read in alerts:
        for region_role in REGIONS:
            mine = [a for a in alarms if role(a) == region_role
                    and a.props["alarmDescription"].startswith(alert["alert"] + ":")]
            assert mine and all(a.props["actionsEnabled"] for a in mine), (alert["alert"], region_role)
            watched_metrics = [m for a in mine for m in watched(a)]
            ours = {name for ns, name, _ in watched_metrics if ns == NAMESPACE and name in read}
            stand_ins = {(ns, name) for ns, name, _ in watched_metrics} & AWS_STAND_INS.get(alert["alert"], set())
            assert ours or stand_ins, (alert["alert"], region_role, watched_metrics)
            problems = [p for a in mine for ns, name, dims in watched(a)
                        for p in metric_problems(resources, region_role, ns, name, dims)]
            assert problems == [], (alert["alert"], problems)
            for ns, name, dims in watched_metrics:
                if ns == NAMESPACE and name in LAMBDA_METRICS:
                    for key, value in dims.items():
                        code = values.get(name, {}).get(key, set())
                        assert value in code or COMPUTED in code, f"{alert['alert']}: no code publishes {name} {key}={value}"
    # the EMF is written by the handlers the functions run
    for fn in of(resources, "aws:lambda/function:Function"):
        module, _, func = fn.props["handler"].rpartition(".")
        tree = ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())
        (entry,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == func]
        assert any(isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "lambda_entry"
                   for dec in entry.decorator_list), fn.props["handler"]


def cloudwatch_targets(panels: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for p in panels:
        out += [(p["title"], t) for t in p.get("targets", []) if t.get("datasource", {}).get("type") == "cloudwatch"]
        out += cloudwatch_targets(p.get("panels", []))
    return out


def test_grafana_reads_the_lambda_metrics_from_cloudwatch_where_they_are_published(resources):
    """On AWS the Grafana dashboard's Prometheus data source is AMP, which has the controller's
    series only; its CloudWatch row shows every Lambda metric the Prometheus panels show, under
    names and dimensions CloudWatch really has."""
    from tests.ops.test_alert_rules import dashboard_exprs

    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["cloudwatch"]["type"] == "datasource" and variables["cloudwatch"]["query"] == "cloudwatch"
    targets = cloudwatch_targets(dash["panels"])
    shown = set()
    for title, t in targets:
        if t.get("metricEditorMode") == 1:  # metric math over the panel's other queries
            ids = {o["id"] for p_title, o in targets if p_title == title and o.get("id")}
            assert set(re.findall(r"\b[a-z][a-z_]*\b", t["expression"])) - {"PERIOD"} <= ids, (title, t["expression"])
            continue
        for region_role, region in REGIONS.items():
            def fill(text: str, region: str = region) -> str:
                return text.replace("${prefix}", CFG.prefix).replace("${region}", region)

            dims = {k: fill(v) for k, v in t["dimensions"].items()}
            assert t["matchExact"] is True  # exactly the published dimension set, not a roll-up
            problems = metric_problems(resources, region_role, fill(t["namespace"]), t["metricName"], dims)
            assert problems == [], (title, problems)
        shown.add(t["metricName"])
    in_prometheus_panels = {m for e in dashboard_exprs() for m in re.findall(r"\bemailplatform_[a-z0-9_]+", e)}
    assert in_prometheus_panels & LAMBDA_METRICS <= shown
    assert LAMBDA_METRICS <= shown  # every metric a Lambda publishes has a panel on AWS


def test_failover_alarms_read_what_the_collector_forwards_and_wait_quietly_where_no_decider_runs(resources):
    for region_role in REGIONS:
        _, config = collector(resources, region_role)
        declared = [d["metric_name_selectors"][0] for d in config["exporters"]["awsemf"]["metric_declarations"]]
        for selector in declared:  # a regex: among the forwarded metrics it must pick its own only
            assert [n for n in (s.lstrip("^") for s in declared) if re.match(selector, n)] == [selector.lstrip("^")]
        for key in ("failover-promoted", "failover-signals-bad", "failover-held"):
            a = named(resources, f"{region_role}-monitoring-{key}")
            assert a.props["treatMissingData"] == "notBreaching" and a.props["actionsEnabled"] is True, a.name
    promoted = named(resources, "dr-monitoring-failover-promoted")
    assert (promoted.props["metricName"], promoted.props["statistic"]) == ("emailplatform_failover_promotions_total", "Sum")
    held = named(resources, "dr-monitoring-failover-held")
    assert held.props["period"] * held.props["evaluationPeriods"] == 6 * 3600 and held.props["statistic"] == "Minimum"
