"""The embedded stack: moto (AWS), bootstrap, API gateway adapter, controller, workers, metrics.

Used by `emailplatform up` (`make run`), the e2e tests, the demo and the benchmarks. State lives
in the moto server's memory and is gone when it stops. With ``prometheus=True``
(`EMAILPLATFORM_PROMETHEUS=1 make run`) a real Prometheus scrapes it with ops/prometheus/rules.yml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

from config.settings import Settings
from controller.jobs import Controller
from core.bootstrap import Deps, bootstrap
from core.observability import log
from core.services.tenants import ensure_tenant
from handlers import api
from handlers.context import use
from local.bootstrap import create_resources
from local.gateway import serve
from local.moto import MotoServer, _die_with_parent
from local.ses_simulator import Rates, SimulatingMailer
from local.workers import EventsWorker, SendWorker

LOCAL_TENANT = "local-tenant"
OPS_PROMETHEUS = Path(__file__).resolve().parent.parent / "ops" / "prometheus"


class LocalPrometheus:
    """Debian's `prometheus` (`make prometheus` installs it) as a child process on loopback that
    scrapes the stack's metrics port and evaluates ops/prometheus/rules.yml. Config and storage
    live in a temporary directory that ``stop`` removes; the child dies with its parent.

    ``rules`` replaces the rules text (tests shorten ``for:``); ``interval`` sets both the scrape
    and the evaluation interval (e.g. "1s"); ``metric_relabel`` is added to every scrape job's
    ``metric_relabel_configs`` (a test keeps only its own stack's series). ``start`` blocks until Prometheus is ready and raises
    RuntimeError if it is not installed or not ready within ``timeout``."""

    def __init__(self, metrics_port: int, *, port: int = 9090, interval: str | None = None,
                 rules: str | None = None, metric_relabel: list[dict[str, Any]] | None = None):
        self.metrics_port, self.port, self.interval, self.rules = metrics_port, port, interval, rules
        self.metric_relabel = metric_relabel or []
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None

    def config(self, rules_path: Path) -> dict[str, Any]:
        import yaml

        config = yaml.safe_load((OPS_PROMETHEUS / "prometheus.yml").read_text())
        config["rule_files"] = [str(rules_path)]
        for job in config["scrape_configs"]:
            for static in job.get("static_configs", []):
                static["targets"] = [f"127.0.0.1:{self.metrics_port}"]
            if self.metric_relabel:
                job["metric_relabel_configs"] = [*job.get("metric_relabel_configs", []), *self.metric_relabel]
        if self.interval:
            config["global"].update(scrape_interval=self.interval, evaluation_interval=self.interval)
        return config

    def start(self, timeout: float = 30.0) -> LocalPrometheus:
        import yaml

        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not os.access(binary, os.X_OK):
            raise RuntimeError("prometheus is not installed (`make prometheus` installs Debian's package)")
        self.workdir = Path(tempfile.mkdtemp(prefix="emailplatform-prometheus-"))
        rules = self.workdir / "rules.yml"
        rules.write_text(self.rules if self.rules is not None else (OPS_PROMETHEUS / "rules.yml").read_text())
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config(rules), sort_keys=False))
        with open(self.workdir / "prometheus.log", "wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={self.workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.workdir / "prometheus.log").read_text(errors="replace")[-500:]
                self.stop()
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {tail}")
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1)
                log.info("prometheus up", url=self.url, scrapes=f"127.0.0.1:{self.metrics_port}")
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus did not get ready on {self.url} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None



def _nothing() -> None:
    """A stop step for a part this stack does not run."""


@dataclass
class Stack:
    settings: Settings
    deps: Deps
    simulator: SimulatingMailer  # the SES client of deps, wrapped: what SES was asked to send
    moto: MotoServer | None = None  # None: the stack runs against an endpoint it did not start
    controller: Controller | None = None
    tenant: dict[str, str] = field(default_factory=dict)
    prometheus: LocalPrometheus | None = None
    sweeper: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _servers: list[Any] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings, *, api_server: bool = True, controller: bool = True, workers: bool = True,
              metrics: bool = True, rates: Rates | None = None, moto: MotoServer | None = None,
              clock: Any = None, counter: Any = None, prometheus: bool = False, prometheus_port: int = 9090,
              ) -> Stack:
        if settings.aws_endpoint_url is None:
            moto = moto or MotoServer(settings.moto_port).start()
            settings = settings.model_copy(update={"aws_endpoint_url": moto.url})
        else:
            moto = None
        create_resources(settings, rates=rates)  # SES publishes its events from the moto server (local.moto)
        deps = bootstrap(settings, clock=clock, counter=counter)
        simulator = SimulatingMailer(deps.mailer)
        deps.mailer = simulator  # type: ignore[assignment]
        stack = cls(settings, deps, simulator, moto=moto)
        use(deps)
        stack.tenant = ensure_tenant(deps.store, deps.secrets, LOCAL_TENANT, api_key=settings.local_api_key,
                                     webhook_secret=settings.local_webhook_secret)
        if api_server:
            stack._servers.append(serve(api.handler, settings.api_port, deps=deps))
        if metrics:
            server, thread = start_http_server(settings.metrics_port, addr="127.0.0.1")
            stack._servers.append(server)
        if controller:
            from core.bootstrap import worker_name

            stack.controller = Controller(deps, f"{worker_name()}:embedded")
            stack.controller.start()
        if workers:
            _ = deps.send_queue.url, deps.events_queue.url  # an event source mapping knows its queue already
            for i in range(settings.sender_workers):
                stack._threads.append(SendWorker(f"sender-{i}", deps.send_queue, stack._stop, batch=1, deps=deps))
            for i in range(settings.event_workers):
                stack._threads.append(EventsWorker(f"ses-events-{i}", deps.events_queue, stack._stop, deps=deps))
            for t in stack._threads:
                t.start()
        if controller:  # moto never expires TTL items: the sweeper plays DynamoDB's TTL (local/retention.py)
            from local.retention import TtlSweeper

            stack.sweeper = TtlSweeper(settings)
            stack.sweeper.start()
        if prometheus and metrics:
            try:  # optional: the stack is fully usable without it
                stack.prometheus = LocalPrometheus(settings.metrics_port, port=prometheus_port).start()
            except RuntimeError as exc:
                log.warning("prometheus not started", error=str(exc)[:300])
        log.info("embedded stack up", api=f"http://127.0.0.1:{settings.api_port}",
                 metrics=f"http://127.0.0.1:{settings.metrics_port}/metrics", aws=settings.aws_endpoint_url)
        return stack

    def kill_compute(self) -> None:
        """Simulate losing this region's compute (API, controller, senders) without any clean-up:
        the lease is not released, in-flight work stays where it was. AWS-managed parts (the SES
        event pipeline and its events Lambda) keep running."""
        if self.controller:
            self.controller.stopping.set()
            if self.controller.scheduler is not None:
                self.controller.scheduler.shutdown(wait=False)
        for t in self._threads:
            if isinstance(t, SendWorker):
                t.halt()
        if self.simulator:
            self.simulator.cut()
        for s in self._servers:
            s.shutdown()
            s.server_close()
        self._servers.clear()
        log.warning("region compute killed", region=self.settings.region)

    def restart_compute(self) -> None:
        """Bring a killed region's compute back: a new controller, API server and senders."""
        from core.bootstrap import worker_name

        assert self.deps is not None and self.simulator is not None
        self.simulator.resume()
        self._servers.append(serve(api.handler, self.settings.api_port, deps=self.deps))
        self.controller = Controller(self.deps, f"{worker_name()}:embedded:restarted")
        self.controller.start()
        for i in range(self.settings.sender_workers):
            w = SendWorker(f"sender-r{i}", self.deps.send_queue, self._stop, batch=1, deps=self.deps)
            self._threads.append(w)
            w.start()

    def stop(self) -> None:
        """Stop everything, in order; a failing step never leaves the others (or moto) running."""
        self._stop.set()
        def servers() -> None:
            for s in self._servers:
                s.shutdown()
                s.server_close()

        def workers() -> None:
            for t in self._threads:
                t.join(timeout=15)

        steps: list[tuple[str, Callable[[], object]]] = [
            ("prometheus", self.prometheus.stop if self.prometheus else _nothing),
            ("ttl sweeper", self.sweeper.stop if self.sweeper else _nothing),
            ("controller", self.controller.stop if self.controller else _nothing),
            ("workers", workers),
            ("simulator", self.simulator.stop),
            ("servers", servers),
            ("handlers", lambda: use(None)),
            ("moto", self.moto.stop if self.moto else _nothing),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:
                log.warning("stop step failed", step=name, error=str(exc)[:200])
        log.info("embedded stack stopped")
