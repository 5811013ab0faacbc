"""`python -m controller`: run the controller daemon until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import threading

from prometheus_client import start_http_server

from config.settings import get_settings
from controller.jobs import Controller
from core.bootstrap import bootstrap, worker_name
from core.observability import configure_logging, log


def prepare_analytics(analytics: object) -> bool:
    """At every start, leader or not: the analytics store's index template, retention policy and
    write index exist (``ensure_index`` is idempotent; the SQLite store has none). A failure is
    logged and the controller runs on: campaigns do not wait for analytics. False then."""
    ensure = getattr(analytics, "ensure_index", None)
    if ensure is None:
        return True
    try:
        ensure()
    except Exception as exc:  # noqa: BLE001 - any failure: log it, keep sending
        log.error("analytics index setup failed", error=str(exc)[:300])
        return False
    log.info("analytics index ready")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(prog="controller")
    parser.add_argument("--once", action="store_true", help="run every pass once and exit")
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args()
    settings = get_settings()
    configure_logging(settings.log_level)
    deps = bootstrap(settings)
    prepare_analytics(deps.analytics)
    controller = Controller(deps, worker_name())
    if args.once:
        controller.run_once()
        controller.lease.release()
        return
    start_http_server(args.metrics_port or settings.metrics_port, addr="0.0.0.0")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    controller.start()
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
