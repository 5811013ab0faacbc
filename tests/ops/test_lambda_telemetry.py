"""What a Lambda invocation tells CloudWatch and X-Ray: EMF lines under the metric definitions'
names and labels (the same series Prometheus scrapes locally), the Lambda keys and correlation ids
on every log line, and a Tracer that stays a no-op off Lambda."""

from __future__ import annotations

import ast
import json

import pytest
import structlog
from prometheus_client import REGISTRY

from core import observability as obs
from handlers.context import LocalContext

NAMESPACE = "EmailPlatform/test"


@pytest.fixture
def on_lambda(monkeypatch):
    """The environment infra gives a function (tracing stays off: this is not a Lambda sandbox)."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "emailplatform-sender")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)


def emf_lines(out: str) -> list[dict]:
    docs = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    assert docs, out
    return docs


def published(docs: list[dict]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(metric, dimensions) → value, as CloudWatch will extract them."""
    out = {}
    for doc in docs:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        (dims,) = directive["Dimensions"]
        for m in directive["Metrics"]:
            assert m["Unit"] == obs.DEFINITIONS[m["Name"]].unit
            value = doc[m["Name"]]  # EMF takes a value or a list of values
            out[(m["Name"], tuple((d, doc[d]) for d in dims))] = sum(value) if isinstance(value, list) else value
    return out


def test_every_metric_has_one_definition_matching_what_prometheus_exports():
    for name, d in obs.DEFINITIONS.items():
        (family,) = [f for f in REGISTRY.collect() if f.name == d.family]
        assert family.type == d.kind, name
        assert d.unit in {"Count", "Seconds", "None", "Count/Second"}, name
        if d.emf:  # what a Lambda increments; the controller's metrics reach AWS through the ADOT collector
            assert d.kind == "counter" and "tenant" not in d.labels, name  # bounded dimensions only


def test_an_invocation_publishes_its_metrics_as_emf_under_the_prometheus_names(on_lambda, capsys):
    @obs.lambda_entry("sender")
    def handler(event, context):
        obs.SENDS.labels("sent").inc()
        obs.SENDS.labels("sent").inc()
        obs.SENDS.labels("refused").inc()
        obs.SEND_THROTTLED.inc()
        obs.ROWS_INGESTED.inc()  # the controller's: not EMF
        return {"batchItemFailures": []}

    before = REGISTRY.get_sample_value("emailplatform_sends_total", {"outcome": "sent"}) or 0
    assert handler({}, LocalContext("req-1")) == {"batchItemFailures": []}
    got = published(emf_lines(capsys.readouterr().out))
    assert got == {("emailplatform_sends_total", (("outcome", "sent"),)): 2.0,
                   ("emailplatform_sends_total", (("outcome", "refused"),)): 1.0,
                   ("emailplatform_ses_throttled_total", ()): 1.0}
    # the same increments reached the Prometheus registry (what the embedded stack scrapes)
    assert REGISTRY.get_sample_value("emailplatform_sends_total", {"outcome": "sent"}) == before + 2


def test_metrics_are_written_even_when_the_handler_raises(on_lambda, capsys):
    @obs.lambda_entry("api")
    def handler(event, context):
        obs.API_REQUESTS.labels("/api/v1/email/campaigns/<tx_id>", "500").inc()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        handler({}, LocalContext())
    got = published(emf_lines(capsys.readouterr().out))
    assert got == {("emailplatform_api_requests_total",
                    (("route", "/api/v1/email/campaigns/<tx_id>"), ("status", "500"))): 1.0}


def test_no_emf_off_lambda_or_when_disabled(monkeypatch, capsys):
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)

    @obs.lambda_entry("sender")
    def handler(event, context):
        obs.SENDS.labels("sent").inc()

    handler({}, LocalContext())
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "f")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    handler({}, LocalContext())
    assert '"_aws"' not in capsys.readouterr().out


def test_concurrent_invocations_keep_their_own_metrics(on_lambda):
    """The embedded stack runs several workers as threads of one process."""
    import threading

    lines: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def run(name: str, n: int) -> None:
        with obs.emf_invocation(sink=lines[name].append):
            barrier.wait()
            for _ in range(n):
                obs.SENDS.labels("held").inc()

    threads = [threading.Thread(target=run, args=("a", 3)), threading.Thread(target=run, args=("b", 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, n in (("a", 3), ("b", 5)):
        (doc,) = [json.loads(line) for line in lines[name]]
        assert doc["emailplatform_sends_total"] in (n, [n]) and doc["outcome"] == "held"


def test_log_lines_carry_the_lambda_keys_and_correlation_ids_only_inside_the_invocation(on_lambda):
    seen = {}

    @obs.lambda_entry("ses_events", correlation_id_path="requestContext.requestId")
    def handler(event, context):
        with obs.correlated(tenant_id="acme", transaction_id="tx_1", batch_id="tx_1-b0001", message_id=None):
            seen.update(structlog.contextvars.get_contextvars())
        seen["after_record"] = dict(structlog.contextvars.get_contextvars())

    handler({"requestContext": {"requestId": "api-req-9"}}, LocalContext("req-7"))
    assert seen["function_request_id"] == "req-7" and seen["function_name"] == "local"
    assert seen["correlation_id"] == "api-req-9" and seen["component"] == "ses_events"
    assert seen["cold_start"] in (True, False)
    assert (seen["tenant_id"], seen["transaction_id"], seen["batch_id"]) == ("acme", "tx_1", "tx_1-b0001")
    assert "message_id" not in seen  # None is not bound
    assert "tenant_id" not in seen["after_record"]  # ids end with their record
    assert structlog.contextvars.get_contextvars() == {}  # and the Lambda keys with the invocation

    handler({}, LocalContext("req-8"))
    assert seen["cold_start"] is False  # the second invocation in this process is warm


def test_correlation_ids_are_ids_only():
    with pytest.raises(AssertionError), obs.correlated(recipient="a@example.com"):
        pass


def test_tracer_is_a_no_op_off_lambda_and_when_disabled(monkeypatch):
    from aws_lambda_powertools import Tracer

    monkeypatch.delenv("LAMBDA_TASK_ROOT", raising=False)
    assert obs.tracer("emailplatform-sender").disabled
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    assert Tracer._is_tracer_disabled()


def test_the_real_handlers_publish_emf(deps, tenant, on_lambda, capsys):
    """The SES-events Lambda's outcomes reach CloudWatch under the name the alert rules use."""
    from handlers import ses_events
    from handlers.context import use
    from tests.conftest import ses_event_for, sns_envelope
    from tests.helpers import RecordingMailer, batch_sender, queued_campaign, recipients

    use(deps)
    try:
        tx_id, (batch,) = queued_campaign(deps, "tenant-a", recipients(2))
        mailer = RecordingMailer(deps.mailer)
        batch_sender(deps, mailer).send_batch(tx_id, batch.batch_id)
        capsys.readouterr()
        s = mailer.sent[0]
        body = sns_envelope(ses_event_for("ses_delivery.json", tenant="tenant-a", message_id=s["tags"]["message_id"],
                                          recipient=s["to"], ses_id=s["ses_id"]))
        record = {"messageId": "m0", "receiptHandle": "r0", "body": body, "attributes": {}, "messageAttributes": {},
                  "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:q",
                  "awsRegion": "eu-west-1"}
        assert ses_events.handler({"Records": [record]}, LocalContext())["batchItemFailures"] == []
        out = capsys.readouterr().out
        got = published(emf_lines(out))
        assert got[("emailplatform_ses_events_total", (("type", "Delivery"), ("outcome", "applied")))] == 1.0
        assert s["to"] not in out  # EMF lines carry dimensions, never an address
    finally:
        use(None)


def test_api_log_lines_carry_the_callers_tenant_and_the_campaign_in_the_path(deps, tenant, on_lambda, capsys,
                                                                            monkeypatch):
    from handlers import api
    from handlers.context import scoped
    from local.gateway import to_event

    seen: list[dict] = []
    real = api.app.resolve

    def spy(event, context):
        seen.append(structlog.contextvars.get_contextvars())
        return real(event, context)

    monkeypatch.setattr(api.app, "resolve", spy)
    event = to_event("GET", "/api/v1/email/campaigns/tx_missing", {"X-API-Key": tenant["api_key"]}, b"", "127.0.0.1")
    with scoped(deps):
        out = api.handler(event, LocalContext("req-api"))
    assert out["statusCode"] == 404
    (ctx,) = seen
    assert (ctx["tenant_id"], ctx["transaction_id"]) == ("tenant-a", "tx_missing")
    assert ctx["function_request_id"] == "req-api" and ctx["correlation_id"] == event["requestContext"]["requestId"]
    got = published(emf_lines(capsys.readouterr().out))
    assert got == {("emailplatform_api_requests_total",
                    (("route", "/api/v1/email/campaigns/<tx_id>"), ("status", "404"))): 1.0}


# -- which label values the code really publishes ---------------------------------------------
COMPUTED = "<computed>"  # a label value the code computes at run time (not a literal)


def published_label_values(packages: tuple[str, ...] = ("core", "handlers", "controller")) -> dict[str, dict[str, set[str]]]:
    """metric name → label → the values the code passes to ``.labels()`` (``COMPUTED`` where one is
    not a literal), read from the source: what a CloudWatch alarm's dimension value can match."""
    from pathlib import Path

    from prometheus_client.metrics import MetricWrapperBase

    root = Path(__file__).resolve().parents[2]
    objects = {var: m for var, m in vars(obs).items() if isinstance(m, MetricWrapperBase)}
    by_family = {d.family: d for d in obs.DEFINITIONS.values()}
    out: dict[str, dict[str, set[str]]] = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            names = ({v: v for v in objects} if path.name == "observability.py" and path.parent.name == "core" else
                     {a.asname or a.name: a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                      and n.module == "core.observability" for a in n.names if a.name in objects})
            for n in ast.walk(tree):
                if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "labels"
                        and isinstance(n.func.value, ast.Name) and n.func.value.id in names):
                    continue
                d = by_family[objects[names[n.func.value.id]]._name]
                args = list(zip(d.labels, n.args)) + [(k.arg, k.value) for k in n.keywords if k.arg]
                for label, arg in args:
                    literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                    out.setdefault(d.name, {}).setdefault(label, set()).add(arg.value if literal else COMPUTED)
    return out


def test_every_label_value_the_code_publishes_is_one_its_definition_lists():
    """A value outside a definition's closed set would be a series (a CloudWatch dimension value) no
    alarm, dashboard or check knows of."""
    found = published_label_values()
    assert found["emailplatform_sends_total"]["outcome"] >= {"sent", "refused", "held"}  # the scan sees the sender
    for name, labels in found.items():
        d = obs.DEFINITIONS[name]
        for label, values in labels.items():
            if label in d.values:
                assert values - {COMPUTED} <= set(d.values[label]), (name, label, values - set(d.values[label]))
