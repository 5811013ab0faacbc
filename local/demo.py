"""`make demo`: drive a whole campaign through the HTTP API of a running `make run` stack.

Starts its own stack when none answers on the API port, so it also works on its own.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import requests

from config.settings import load_settings
from local.progress import Progress
from ops.client import Client

TEMPLATE = """<html><body><h1>Hello {{ first_name }}!</h1>
<p>Your plan: <b>{{ plan }}</b>. <a href="https://example.com/offer">See the offer</a></p></body></html>"""


def recipients(n: int) -> str:
    sim = ["success", "bounce", "ooto", "complaint", "suppressionlist"]
    rows = ["email,first_name,plan"]
    rows += [f"{s}+{i}@simulator.amazonses.com,Sim{i},basic" for i, s in enumerate(sim)]
    rows += [f"user{i}@example.org,User {i},{'pro' if i % 3 else 'basic'}" for i in range(n)]
    rows += ["not-an-email,Bad,basic", "user1@example.org,Duplicate,basic"]
    return "\n".join(rows) + "\n"


def callback_receiver() -> tuple[HTTPServer, list[dict]]:
    got: list[dict] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, got


def main(argv: list[str] | None = None) -> int:
    import argparse
    import time
    import uuid

    from core.observability import configure_logging

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--recipients", type=int, default=300, help="recipients besides the simulator addresses")
    args = ap.parse_args(argv)
    settings = load_settings()
    configure_logging("WARNING")
    base = f"http://127.0.0.1:{settings.api_port}"
    stack = None
    try:
        requests.get(f"{base}/api/v1/health", timeout=2)
        key = os.environ.get("EMAILPLATFORM_LOCAL_API_KEY")
        if not key:
            print("a stack is running: set EMAILPLATFORM_LOCAL_API_KEY to its key (printed by `make run`)")
            return 2
    except requests.ConnectionError:
        from local.stack import Stack

        settings = load_settings(callback_allow_loopback=True, callback_require_https=False, sender_workers=2,
                                 ses_max_send_rate=200, controller_interval_seconds=0.5, completion_window_seconds=30)
        stack = Stack.start(settings)
        key = stack.tenant["api_key"]
    srv, callbacks = callback_receiver()
    progress = Progress("demo")
    try:
        c = Client(f"{base}/api/v1/email", key)
        progress.phase(f"uploading a template and {args.recipients + 7:,} rows")
        tid = c.create_template("Welcome", "Welcome {{ first_name }}", TEMPLATE)
        up = c.upload_csv(recipients(args.recipients))
        tx = c.call("POST", "/campaigns", headers={"Idempotency-Key": f"demo-{uuid.uuid4().hex}"}, json={
            "template_id": tid, "upload_id": up["upload_id"],
            "callback_url": f"http://127.0.0.1:{srv.server_port}/hook"})
        print(f"campaign {tx['transaction_id']} accepted ({args.recipients + 7:,} rows)")
        started = time.monotonic()
        latencies: list[float] = []  # how fast the API answers while the campaign runs
        done = threading.Event()

        def probe() -> None:
            while not done.wait(1.0):
                t0 = time.monotonic()
                c.call("GET", f"/campaigns/{tx['transaction_id']}")
                latencies.append(time.monotonic() - t0)

        threading.Thread(target=probe, daemon=True).start()

        def show(cv: dict) -> None:
            """Progress on stderr: the status is the phase, sends against the campaign's messages."""
            s = cv["summary"]
            note = (f"delivered {s['delivered']:,} bounced {s['bounced']:,} complained {s['complained']:,} "
                    f"opened {s['opened']:,} clicked {s['clicked']:,}")
            if cv["status"] != progress.phase_name:
                progress.phase(cv["status"], total=s["total_messages"] or None, done=s["sent"], unit="sent", note=note)
            else:
                progress.update(s["sent"], total=s["total_messages"] or None, note=note)

        final = c.wait_for(tx["transaction_id"], {"COMPLETED", "FAILED"}, timeout=300 + args.recipients / 10,
                           on_poll=show)
        elapsed = time.monotonic() - started
        settled = final  # the final recount: are the live counts exact?
        progress.phase("waiting for the final recount")
        while not settled["counts_final"] and time.monotonic() < started + elapsed + 600:
            time.sleep(2)
            settled = c.call("GET", f"/campaigns/{tx['transaction_id']}")
        done.set()
        progress.finish()
        rej = c.call("GET", f"/campaigns/{tx['transaction_id']}/rejections")
        s = settled["summary"]
        exact = settled["counts_final"] and final["summary"] == s
        adds_up = s["sent"] == s["total_messages"] - s["suppressed"] - s["failed"] \
            and s["delivered"] + s["bounced"] == s["sent"]
        latencies.sort()
        print(json.dumps({"final": final["status"], "summary": s,
                          "rejections": rej["items"][:5],
                          "callbacks_received": [(cb["sequence"], cb["status"]) for cb in callbacks]}, indent=2))
        print(f"{s['total_messages']:,} messages in {elapsed:.0f} s ({s['sent'] / max(elapsed, 1):.0f}/s); "
              f"counts at COMPLETED {'equal' if exact else 'DIFFER from'} the final recount; "
              f"{'they add up' if adds_up else 'they DO NOT add up'}; API while sending: "
              f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms "
              f"over {len(latencies)} reads" if latencies else "")
        return 0 if final["status"] == "COMPLETED" and exact and adds_up else 1
    finally:
        srv.shutdown()
        if stack:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
