"""The embedded stack: moto (AWS), bootstrap, API gateway adapter, controller, workers, metrics.

Used by `emailplatform up` (`make run`), the e2e tests, the demo and the benchmarks. State lives
in the moto server's memory and is gone when it stops.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import start_http_server

from config.settings import Settings
from controller.jobs import Controller
from core import schema
from core.adapters.aws import client
from core.bootstrap import Deps, bootstrap
from core.observability import log
from core.services.tenants import ensure_tenant
from handlers import api
from handlers.context import use
from local.bootstrap import create_resources
from local.gateway import serve
from local.moto import MotoServer
from local.ses_simulator import Rates, SimulatingMailer
from local.workers import EventsWorker, SendWorker

LOCAL_TENANT = "local-tenant"


@dataclass
class Stack:
    settings: Settings
    moto: MotoServer | None = None
    deps: Deps | None = None
    controller: Controller | None = None
    tenant: dict[str, str] = field(default_factory=dict)
    simulator: SimulatingMailer | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _servers: list[Any] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings, *, api_server: bool = True, controller: bool = True, workers: bool = True,
              metrics: bool = True, rates: Rates | None = None, moto: MotoServer | None = None,
              clock: Any = None, counter: Any = None) -> Stack:
        stack = cls(settings)
        if settings.aws_endpoint_url is None:
            stack.moto = moto or MotoServer(settings.moto_port).start()
            settings = settings.model_copy(update={"aws_endpoint_url": stack.moto.url})
            stack.settings = settings
        resources = create_resources(settings)
        deps = bootstrap(settings, clock=clock, counter=counter)
        sns = client(settings, "sns")
        if counter is not None:
            counter.attach(sns)
        stack.simulator = SimulatingMailer(deps.mailer, sns,
                                           resources["topics"][schema.SES_EVENTS_TOPIC.purpose], rates)
        deps.mailer = stack.simulator  # type: ignore[assignment]
        stack.deps = deps
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
        self.simulator._cut = False
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
        steps = [
            ("controller", lambda: self.controller and self.controller.stop()),
            ("workers", lambda: [t.join(timeout=15) for t in self._threads]),
            ("simulator", lambda: self.simulator and self.simulator.stop()),
            ("servers", lambda: [(s.shutdown(), s.server_close()) for s in self._servers]),
            ("handlers", lambda: use(None)),
            ("moto", lambda: self.moto and self.moto.stop()),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:
                log.warning("stop step failed", step=name, error=str(exc)[:200])
        log.info("embedded stack stopped")
