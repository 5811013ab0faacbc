"""Structured JSON logs and the Prometheus metrics every runtime exports."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import structlog
from prometheus_client import Counter, Gauge, Histogram


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level), format="%(message)s")
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


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
PASS_SECONDS = Histogram(f"{NS}_controller_pass_seconds", "Duration of a controller pass", ["job"])
PASS_ERRORS = Counter(f"{NS}_controller_pass_errors_total", "Items a pass failed on", ["job", "kind"])
SCHEDULER_LAG = Gauge(f"{NS}_controller_scheduler_lag_seconds", "Delay between a job's due time and its start", ["job"])
CAMPAIGNS = Gauge(f"{NS}_campaigns_active", "Active campaigns by status", ["status"])
LEASE_HOLDER = Gauge(f"{NS}_controller_is_leader", "1 when this controller holds the lease", ["region", "holder"])
LEASE_LOST = Counter(f"{NS}_controller_lease_lost_total", "Times this controller lost its lease")
ROWS_INGESTED = Counter(f"{NS}_ingest_rows_total", "CSV rows accepted as messages")
ROWS_REFUSED = Counter(f"{NS}_ingest_rows_refused_total", "CSV rows refused", ["reason"])
BATCHES_DISPATCHED = Counter(f"{NS}_batches_dispatched_total", "Batches handed to the send queue")
QUEUE_DEPTH = Gauge(f"{NS}_queue_depth", "Messages in a queue", ["queue", "state"])
SENDS = Counter(f"{NS}_sends_total", "Messages by send outcome", ["outcome"])
SEND_THROTTLED = Counter(f"{NS}_ses_throttled_total", "SES throttling responses")
SES_EVENTS = Counter(f"{NS}_ses_events_total", "SES events handled", ["type", "outcome"])
CALLBACK_ATTEMPTS = Counter(f"{NS}_callback_attempts_total", "Callback delivery attempts", ["outcome"])
CALLBACK_LATENCY = Histogram(f"{NS}_callback_latency_seconds", "Callback HTTP round trip")
CALLBACK_BACKLOG = Gauge(f"{NS}_callback_backlog", "Callbacks due and not yet delivered")
CALLBACK_DEAD = Counter(f"{NS}_callback_dead_letters_total", "Callbacks that exhausted their retries")
REPUTATION_PAUSES = Counter(f"{NS}_reputation_pauses_total", "Campaigns paused by the reputation guard", ["reason"])
REPUTATION_ALARM = Gauge(f"{NS}_reputation_alarm", "1 while a tenant is over a bounce/complaint threshold", ["tenant", "kind"])
API_REQUESTS = Counter(f"{NS}_api_requests_total", "API requests", ["route", "status"])
# What the alert rules in ops/prometheus/rules.yml need from the controller. Timestamps come from
# the controller's clock, so Prometheus compares them with time(); role is leader|standby.
HEARTBEAT = Gauge(f"{NS}_controller_heartbeat_timestamp_seconds", "Unix time of this controller's last lease "
                  "renewal attempt", ["region", "role"])
CAMPAIGNS_STUCK = Gauge(f"{NS}_campaigns_stuck", "Active READY_TO_SEND campaigns whose summary has not changed "
                        "for the controller's stuck_after seconds")
EVENT_PIPELINE_LAG = Gauge(f"{NS}_ses_event_pipeline_lag_seconds", "Now minus the newest SES Send event the "
                           "region's event pipeline recorded, while SES events are queued (0 when none are)")
SEND_QUOTA = Gauge(f"{NS}_ses_max_send_rate", "Configured SES send rate across all workers (messages/s)")
