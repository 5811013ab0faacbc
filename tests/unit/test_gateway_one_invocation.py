"""The embedded API Gateway runs one invocation of a handler at a time, like a Lambda execution
environment, even when two stacks in one process (primary and DR) serve the same handler: the
resolver keeps per-request state in the handler's module."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from local.gateway import serve
from local.moto import free_port


def test_two_servers_of_one_handler_never_run_it_at_once():
    running, peak, lock = 0, 0, threading.Lock()

    def handler(event, context):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": "ok"}

    servers = [serve(handler, free_port()) for _ in range(2)]
    try:
        urls = [f"http://127.0.0.1:{s.server_address[1]}/api/v1/health" for s in servers]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: requests.get(urls[i % 2], timeout=10).status_code, range(16)))
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
    assert answers == [200] * 16
    assert peak == 1
