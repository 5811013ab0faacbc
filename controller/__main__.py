"""`python -m controller`: run the controller daemon until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import threading

from prometheus_client import start_http_server

from config.settings import get_settings
from controller.jobs import Controller
from core.bootstrap import bootstrap, worker_name
from core.observability import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(prog="controller")
    parser.add_argument("--once", action="store_true", help="run every pass once and exit")
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args()
    settings = get_settings()
    configure_logging(settings.log_level)
    controller = Controller(bootstrap(settings), worker_name())
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
