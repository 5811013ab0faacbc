"""Structured JSON logs, and the metrics every runtime exports: defined once, exported to
Prometheus everywhere and, from the Lambdas, to CloudWatch as EMF."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import structlog
from prometheus_client import Counter, Gauge, Histogram

from core.log_privacy import redact_personal_data

F = TypeVar("F", bound=Callable[..., Any])


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level), format="%(message)s")
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_personal_data,  # no address or placeholder value in plain text (core/log_privacy.py)
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


if not structlog.is_configured():
    # Processes that never call configure_logging (the Lambdas) keep structlog's defaults, with the
    # redaction of addresses and row data added before the renderer: no log line is exempt.
    _defaults = structlog.get_config()["processors"]
    structlog.configure(processors=[*_defaults[:-1], redact_personal_data, _defaults[-1]])

log = structlog.get_logger("emailplatform")

# Which runtime component is running on this thread (api, sender, ses_events, controller). AWS
# calls are attributed to it, which lets tests check each component's IAM policy against reality.
component: ContextVar[str] = ContextVar("component", default="unattributed")


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    token = component.set(name)
    try:
        yield
    finally:
        component.reset(token)

NS = "emailplatform"


# --- one definition per metric, two backends --------------------------------------------------
#
# Each metric is defined once, below. The embedded stack and the controller export it to
# Prometheus (`/metrics`, scraped locally and by the ADOT collector on ECS); a Lambda invocation
# also writes the metrics marked ``emf`` as CloudWatch embedded metric format (EMF) log lines
# (aws-lambda-powertools' EMF provider), under the same name, with its labels as dimensions.
# So `emailplatform_sends_total{outcome="sent"}` in Prometheus is `emailplatform_sends_total`
# with dimension `outcome=sent` in CloudWatch (namespace: emf_namespace(prefix)).
# tests/infra checks every CloudWatch alarm against these definitions.

EMF_NAMESPACE_ROOT = "EmailPlatform"


def emf_namespace(name_prefix: str) -> str:
    """The CloudWatch namespace of a stack's metrics (one per stack: two stacks may share an account)."""
    return f"{EMF_NAMESPACE_ROOT}/{name_prefix}"


@dataclass(frozen=True)
class MetricDef:
    """A metric's name (the series name as scraped; counters end in ``_total``), labels (the
    CloudWatch dimensions), CloudWatch unit, and where it is published: ``emf`` for the Lambdas'
    metrics (every label is a dimension). ``values`` lists a label's values where they are a
    closed set, so an alarm's dimension value can be checked."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    unit: str = "Count"
    emf: bool = False
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


DEFINITIONS: dict[str, MetricDef] = {}  # by name
_FAMILIES: dict[str, MetricDef] = {}  # by Prometheus family name (a counter without _total)


class _EmfCounter(Counter):
    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        super().inc(amount, exemplar)
        _emf_record(self, amount)


class _EmfGauge(Gauge):
    def set(self, value: float) -> None:
        super().set(value)
        _emf_record(self, value)


class _EmfHistogram(Histogram):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        super().observe(amount, exemplar)
        _emf_record(self, amount)


_KINDS = {"counter": _EmfCounter, "gauge": _EmfGauge, "histogram": _EmfHistogram}


def metric(name: str, kind: str, help: str, labels: tuple[str, ...] = (), unit: str = "Count",
           emf: bool = False, values: Mapping[str, tuple[str, ...]] | None = None) -> Any:
    """Define a metric (once) and return its Prometheus object; the call sites use it as usual."""
    d = MetricDef(name, kind, help, tuple(labels), unit, emf, dict(values or {}))
    assert d.name.startswith(f"{NS}_") and name not in DEFINITIONS, name
    assert set(d.values) <= set(d.labels), name
    DEFINITIONS[name], _FAMILIES[d.family] = d, d
    return _KINDS[kind](name, help, list(labels))


SEND_OUTCOMES = ("sent", "suppressed", "render_failed", "attachment_failed", "in_doubt", "held", "refused",
                 "not_resent_after_failover")
ROLES = ("leader", "standby")
QUEUES = ("send", "ses_events", "send-dlq", "ses_events-dlq")

PASS_SECONDS = metric(f"{NS}_controller_pass_seconds", "histogram", "Duration of a controller pass", ("job",),
                      unit="Seconds")
PASS_ERRORS = metric(f"{NS}_controller_pass_errors_total", "counter", "Items a pass failed on", ("job", "kind"))
SCHEDULER_LAG = metric(f"{NS}_controller_scheduler_lag_seconds", "gauge", "Delay between a job's due time and "
                       "its start", ("job",), unit="Seconds")
CAMPAIGNS = metric(f"{NS}_campaigns_active", "gauge", "Active campaigns by status", ("status",))
LEASE_HOLDER = metric(f"{NS}_controller_is_leader", "gauge", "1 when this controller holds the lease",
                      ("region", "holder"), unit="None")
LEASE_LOST = metric(f"{NS}_controller_lease_lost_total", "counter", "Times this controller lost its lease")
ROWS_INGESTED = metric(f"{NS}_ingest_rows_total", "counter", "CSV rows accepted as messages")
ROWS_REFUSED = metric(f"{NS}_ingest_rows_refused_total", "counter", "CSV rows refused", ("reason",))
BATCHES_DISPATCHED = metric(f"{NS}_batches_dispatched_total", "counter", "Batches handed to the send queue")
QUEUE_DEPTH = metric(f"{NS}_queue_depth", "gauge", "Messages in a queue", ("queue", "state"),
                     values={"queue": QUEUES, "state": ("visible", "in_flight")})
SENDS = metric(f"{NS}_sends_total", "counter", "Messages by send outcome", ("outcome",), emf=True,
               values={"outcome": SEND_OUTCOMES})
SEND_THROTTLED = metric(f"{NS}_ses_throttled_total", "counter", "SES throttling responses", emf=True)
SES_EVENTS = metric(f"{NS}_ses_events_total", "counter", "SES events handled", ("type", "outcome"), emf=True,
                    values={"outcome": ("applied", "kept", "duplicate", "ignored", "malformed")})
CALLBACK_ATTEMPTS = metric(f"{NS}_callback_attempts_total", "counter", "Callback delivery attempts", ("outcome",))
CALLBACK_LATENCY = metric(f"{NS}_callback_latency_seconds", "histogram", "Callback HTTP round trip",
                          unit="Seconds")
CALLBACK_BACKLOG = metric(f"{NS}_callback_backlog", "gauge", "Callbacks due and not yet delivered")
CALLBACK_DEAD = metric(f"{NS}_callback_dead_letters_total", "counter", "Callbacks that exhausted their retries")
REPUTATION_PAUSES = metric(f"{NS}_reputation_pauses_total", "counter", "Campaigns paused by the reputation guard",
                           ("reason",))
REPUTATION_ALARM = metric(f"{NS}_reputation_alarm", "gauge", "1 while a tenant is over a bounce/complaint "
                          "threshold", ("tenant", "kind"), unit="None")
API_REQUESTS = metric(f"{NS}_api_requests_total", "counter", "API requests", ("route", "status"), emf=True)
SES_CONFIG_ERRORS = metric(f"{NS}_ses_config_errors_total", "counter", "SES errors about the account or its "
                           "configuration (sending held)", ("code",), emf=True)
ANALYTICS_INDEXED = metric(f"{NS}_analytics_events_indexed_total", "counter", "Events written to the analytics store",
                           ("store",), emf=True, values={"store": ("opensearch", "sqlite")})
ANALYTICS_FAILURES = metric(f"{NS}_analytics_index_failures_total", "counter", "Events the analytics store refused",
                            ("store",), emf=True, values={"store": ("opensearch", "sqlite")})
ANALYTICS_LAG = metric(f"{NS}_analytics_lag_seconds", "gauge", "Event time to indexing time of the last event",
                       ("store",), unit="Seconds")
# What the alert rules in ops/prometheus/rules.yml need from the controller. Timestamps come from
# the controller's clock, so Prometheus compares them with time(); role is leader|standby.
HEARTBEAT = metric(f"{NS}_controller_heartbeat_timestamp_seconds", "gauge", "Unix time of this controller's "
                   "last lease renewal attempt", ("region", "role"), unit="None", values={"role": ROLES})
# What the CloudWatch heartbeat alarms read (infra/components/operations.py): CloudWatch cannot
# compare a value with the current time, and a stale timestamp gauge is still exported (and counted)
# at every scrape. The age is computed when scraped, so it grows while lease calls fail or hang.
HEARTBEAT_AGE = metric(f"{NS}_controller_heartbeat_age_seconds", "gauge", "Seconds since this controller's last "
                       "lease call that completed (computed at each scrape)", ("region", "role"), unit="Seconds",
                       values={"role": ROLES})
CAMPAIGNS_STUCK = metric(f"{NS}_campaigns_stuck", "gauge", "Active READY_TO_SEND campaigns whose summary has not "
                         "changed for the controller's stuck_after seconds")
EVENT_PIPELINE_LAG = metric(f"{NS}_ses_event_pipeline_lag_seconds", "gauge", "Now minus the newest SES Send event "
                            "the region's event pipeline recorded, while SES events are queued (0 when none are)",
                            unit="Seconds")
SEND_QUOTA = metric(f"{NS}_ses_max_send_rate", "gauge", "Configured SES send rate across all workers (messages/s)",
                    unit="Count/Second")
REPLICATION_LAG = metric(f"{NS}_replication_lag_seconds", "gauge", "Seconds of this region's writes the other "
                         "region's table copy does not show yet, from the leader's lease renewals as that copy "
                         "shows them (controller/jobs.py replication_pass)", ("receiving_region",), unit="Seconds")
# Automatic failover (controller/failover.py): published by a controller whose decider runs (the DR
# region's, EMAILPLATFORM_FAILOVER_AUTOMATION), labelled with that controller's region. The watch
# creates every promotion series at 0 when it starts, so the first promotion is an increase (for
# Prometheus' increase() and for the collector's counter-to-delta conversion alike).
FAILOVER_OUTCOMES = ("promoted", "failed")
FAILOVER_SIGNAL_NAMES = ("heartbeat", "route53", "api", "ses")
FAILOVER_PROMOTIONS = metric(f"{NS}_failover_promotions_total", "counter", "Automatic failovers decided by this "
                             "controller, by outcome", ("region", "outcome"), values={"outcome": FAILOVER_OUTCOMES})
FAILOVER_SIGNAL_BAD = metric(f"{NS}_failover_signal_bad", "gauge", "1 while a failover signal says the watched "
                             "region is down", ("region", "signal"), unit="None",
                             values={"signal": FAILOVER_SIGNAL_NAMES})
FAILOVER_SIGNALS_BAD = metric(f"{NS}_failover_signals_bad", "gauge", "How many failover signals say the watched "
                              "region is down (the decider promotes at failover_quorum)", ("region",))
FAILOVER_QUORUM = metric(f"{NS}_failover_quorum", "gauge", "Bad signals the failover decider needs before its "
                         "grace period starts (failover_quorum)", ("region",))
FAILOVER_QUORUM_BAD_SINCE = metric(f"{NS}_failover_quorum_bad_since_timestamp_seconds", "gauge", "Since when a "
                                   "quorum of failover signals has been bad (0: not now)", ("region",), unit="None")
FAILOVER_HELD = metric(f"{NS}_failover_held", "gauge", "1 while an operator holds automatic failover",
                       ("region",), unit="None")
FAILOVER_UNFINISHED_SINCE = metric(f"{NS}_failover_unfinished_since_timestamp_seconds", "gauge", "Since when a "
                                   "failover decision has been in progress, or failed after the flag moved here "
                                   "(0: none unfinished)", ("region",), unit="None")
FAILOVER_AWAITING_QUIET = metric(f"{NS}_failover_awaiting_quiet", "gauge", "1 while this region is promoted but "
                                 "its senders wait for evidence that the old region stopped sending",
                                 ("region",), unit="None")


# --- EMF: what one Lambda invocation publishes ---------------------------------------------------

class EmfBuffer:
    """The ``emf`` metrics one invocation recorded: counters summed, gauges last value, histogram
    observations kept (EMF takes up to 100 values per metric and line)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, tuple[str, ...]], list[float]] = {}

    def add(self, d: MetricDef, labelvalues: tuple[str, ...], value: float) -> None:
        with self._lock:
            current = self._values.setdefault((d.name, labelvalues), [])
            if d.kind == "counter":
                current[:] = [(current[0] if current else 0.0) + value]
            elif d.kind == "gauge":
                current[:] = [value]
            else:
                current.append(value)

    def documents(self, namespace: str) -> list[dict[str, Any]]:
        """EMF documents: one per distinct set of dimension values (EMF gives every metric of a
        document the same dimension values). No ``service`` dimension: the dimensions are the labels."""
        # Powertools' non-shared Metrics (the EMF provider): concurrent invocations in one process
        # (the embedded stack's threads) never mix their metric sets
        from aws_lambda_powertools.metrics import EphemeralMetrics

        with self._lock:
            values, self._values = self._values, {}
        groups: dict[tuple[tuple[str, str], ...], list[tuple[MetricDef, list[float]]]] = {}
        for (name, labelvalues), vals in sorted(values.items()):
            d = DEFINITIONS[name]
            groups.setdefault(tuple(zip(d.labels, labelvalues)), []).append((d, vals))
        docs = []
        for dims, metrics in groups.items():
            for start in range(0, max(len(v) for _, v in metrics), 100):
                emf = EphemeralMetrics(namespace=namespace, service="")
                for key, value in dims:
                    emf.add_dimension(key, value)
                for d, vals in metrics:
                    for v in vals[start:start + 100]:
                        emf.add_metric(name=d.name, unit=d.unit, value=v)
                if emf.metric_set:
                    docs.append(dict(emf.serialize_metric_set()))
        return docs


_emf: ContextVar[EmfBuffer | None] = ContextVar("emf", default=None)


def _emf_record(m: Any, value: float) -> None:
    buffer = _emf.get()
    if buffer is None:
        return
    d = _FAMILIES.get(m._name)
    if d is not None and d.emf:
        buffer.add(d, tuple(m._labelvalues), value)


def emf_enabled() -> bool:
    """Only a real Lambda writes EMF (locally the same metrics are scraped from /metrics);
    POWERTOOLS_METRICS_DISABLED turns it off there too."""
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and not is_metrics_disabled()


def current_emf_namespace() -> str:
    return os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or emf_namespace(
        os.environ.get("EMAILPLATFORM_NAME_PREFIX", NS))


@contextmanager
def emf_invocation(sink: Callable[[str], None] | None = None) -> Iterator[EmfBuffer]:
    """Collect this invocation's metrics and write them as EMF lines at its end (to stdout, which
    Lambda ships to CloudWatch Logs, where they become metrics). A timeout loses them, as with
    any EMF library. ``sink`` replaces stdout and forces writing (tests)."""
    buffer = EmfBuffer()
    token = _emf.set(buffer)
    try:
        yield buffer
    finally:
        _emf.reset(token)
        if sink is not None or emf_enabled():
            write = sink or (lambda line: print(line, flush=True))
            for doc in buffer.documents(current_emf_namespace()):
                write(json.dumps(doc, separators=(",", ":")))


# --- Lambda entrypoints: context in every log line, X-Ray, EMF ----------------------------------

# Correlation ids a log line may carry (never an address: logs hold ids, not personal data).
CORRELATION_IDS = ("tenant_id", "transaction_id", "batch_id", "message_id")


@contextmanager
def correlated(**ids: Any) -> Iterator[None]:
    """Bind correlation ids (tenant, transaction, batch, message) to every log line of this block.
    Context-local: the embedded stack's threads never see each other's ids."""
    unknown = set(ids) - set(CORRELATION_IDS)
    assert not unknown, unknown
    with structlog.contextvars.bound_contextvars(**{k: str(v) for k, v in ids.items() if v}):
        yield


_started: set[str] = set()  # components whose first invocation in this process has run
_tracers: dict[str, Any] = {}


def tracer(service: str) -> Any:
    """Powertools Tracer (X-Ray). It disables itself outside Lambda and with
    POWERTOOLS_TRACE_DISABLED=true, so locally and in tests it is a no-op."""
    if service not in _tracers:
        from aws_lambda_powertools import Tracer

        _tracers[service] = Tracer(service=service)
    return _tracers[service]


def lambda_keys(component: str, event: Any, context: Any, correlation_id_path: str | None = None) -> dict[str, Any]:
    """What Powertools Logger's inject_lambda_context adds to a line (same key names): function,
    request id, cold start, X-Ray trace id and the event's correlation id."""
    from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
    from aws_lambda_powertools.utilities import jmespath_utils

    keys: dict[str, Any] = {}
    if context is not None:
        ctx = build_lambda_context_model(context)
        keys = {"function_name": ctx.function_name, "function_request_id": ctx.function_request_id}
    keys["cold_start"] = component not in _started
    _started.add(component)
    trace = os.environ.get("_X_AMZN_TRACE_ID", "")
    if trace.startswith("Root="):
        keys["xray_trace_id"] = trace.split(";", 1)[0].removeprefix("Root=")
    if correlation_id_path and isinstance(event, dict):
        with suppress(Exception):
            cid = jmespath_utils.query(envelope=correlation_id_path, data=event)
            if cid:
                keys["correlation_id"] = cid
    return keys


def lambda_entry(component: str, *, correlation_id_path: str | None = None) -> Callable[[F], F]:
    """Decorate a Lambda handler: AWS calls attributed to ``component``; every structlog line of
    the invocation carries the Lambda keys; the invocation is an X-Ray segment (Tracer; neither
    the response nor the event is recorded: they may hold addresses); its EMF metrics are written
    when it returns or raises."""
    service = os.environ.get("POWERTOOLS_SERVICE_NAME") or f"{NS}-{component}"

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def entry(event: Any, context: Any) -> Any:
            with acting_as(component), emf_invocation(), structlog.contextvars.bound_contextvars(
                    component=component, **lambda_keys(component, event, context, correlation_id_path)):
                return fn(event, context)

        return cast(F, tracer(service).capture_lambda_handler(entry, capture_response=False))

    return wrap
