"""`emailplatform up` (what `make run` starts): health and metrics within 60 s, clean Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from local.moto import free_port


def test_up_serves_health_and_metrics_and_stops_cleanly_on_ctrl_c():
    api, metrics, moto = free_port(), free_port(), free_port()
    env = {**os.environ, "EMAILPLATFORM_API_PORT": str(api), "EMAILPLATFORM_METRICS_PORT": str(metrics),
           "EMAILPLATFORM_MOTO_PORT": str(moto), "EMAILPLATFORM_LOCAL_API_KEY": "ep_known_local_key_0001"}
    exe = Path(sys.executable).with_name("emailplatform")
    proc = subprocess.Popen([str(exe), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{api}/api/v1/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "no health answer within 60 s"
            time.sleep(0.3)
        text = requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        assert "# TYPE emailplatform_controller_pass_seconds histogram" in text
        r = requests.get(f"http://127.0.0.1:{api}/api/v1/email/campaigns", headers={"X-API-Key": "ep_known_local_key_0001"})
        assert r.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        out = proc.stdout.read()
        assert '"api_key": "ep_known_local_key_0001"' in out and '"webhook_secret": "whsec_' in out
        time.sleep(0.5)
        import socket

        with socket.socket() as s:  # the moto child is gone: its port is free again
            assert s.connect_ex(("127.0.0.1", moto)) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
