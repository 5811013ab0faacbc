"""deliver_due over fakes of its ports: isolation of failures, ordering, concurrency, shutdown."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from core.domain.errors import Fenced, StaleWrite
from core.domain.models import CallbackRecord
from core.services.callbacks import deliver_due
from core.services.ports import FakeClock
from core.services.tenants import new_webhook_secret

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


class FakeCallbackStore:
    """The callback part of the store: conditional on the attempt count, like DynamoStore."""

    def __init__(self, broken: set[str] = frozenset()):
        self.records: dict[tuple[str, int], CallbackRecord] = {}
        self.broken = broken
        self.lock = threading.Lock()

    def add(self, tx_id, seq, url="https://hooks.example.com/cb", *, tenant="t", **fields):
        cb = CallbackRecord(transaction_id=tx_id, tenant_id=tenant, seq=seq, webhook_id=f"msg_{tx_id}_{seq}",
                            url=url, payload={"transaction_id": tx_id, "sequence": seq},
                            next_attempt_at=fields.pop("next_attempt_at", NOW), **fields)
        self.records[(tx_id, seq)] = cb
        return cb

    def due(self, kind, now, limit=100):
        due = sorted((c for c in self.records.values() if c.state == "PENDING" and c.next_attempt_at <= now),
                     key=lambda c: (c.next_attempt_at, c.transaction_id, c.seq))
        return [{"transaction_id": c.transaction_id, "seq": c.seq, "url": c.url} for c in due[:limit]]

    def callbacks(self, tx_id):
        if tx_id in self.broken:
            raise RuntimeError("item cannot be read")
        return sorted((c for (t, _), c in self.records.items() if t == tx_id), key=lambda c: c.seq)

    def get_callback(self, tx_id, seq):
        return self.records[(tx_id, seq)]

    def save_callback_attempt(self, cb, expected_attempts):
        with self.lock:
            if len(self.records[(cb.transaction_id, cb.seq)].attempts) != expected_attempts:
                raise StaleWrite("attempt already recorded")
            self.records[(cb.transaction_id, cb.seq)] = cb

    def state(self, tx_id):
        return [c.state for c in self.callbacks(tx_id)]


class FakeSecrets:
    def __init__(self, by_tenant=None):
        self.by_tenant = by_tenant or {}
        self.default = [new_webhook_secret()]

    def signing_secrets(self, tenant_id):
        return self.by_tenant.get(tenant_id, self.default)


class FakeHttp:
    """Answers from a script per URL path (default 200); raises for paths in ``explode``."""

    def __init__(self, answers=None, explode=()):
        self.answers = answers or {}
        self.explode = set(explode)
        self.calls: list[tuple[str, str]] = []  # (url, webhook-id)

    def post(self, url, body, headers, timeout):
        self.calls.append((url, headers["webhook-id"]))
        if urlsplit(url).path in self.explode:
            raise RuntimeError("adapter bug")
        status = self.answers.get(urlsplit(url).path, 200)
        return SimpleNamespace(status=status, error=None, retry_after=None, elapsed=0.01)


def run(store, http, secrets=None, **kw):
    return deliver_due(store=store, http=http, secrets=secrets or FakeSecrets(), clock=FakeClock(NOW),
                       timeout=kw.pop("timeout", 1.0), **kw)


def test_one_failing_callback_never_stops_the_pass_for_others():
    store = FakeCallbackStore(broken={"tx_unreadable"})
    store.add("tx_unreadable", 1)
    store.add("tx_boom", 1, "https://a.example.com/boom")
    store.add("tx_ok", 1, "https://b.example.com/ok")
    http = FakeHttp(explode={"/boom"})
    run(store, http)
    assert store.state("tx_ok") == ["DELIVERED"]
    assert store.state("tx_boom") == ["PENDING"]  # unknown outcome: tried again next pass


def test_an_unusable_stored_secret_is_recorded_as_a_failed_attempt():
    store = FakeCallbackStore()
    store.add("tx_bad_secret", 1, tenant="t-bad")
    store.add("tx_ok", 1, tenant="t-ok")
    http = FakeHttp()
    run(store, http, FakeSecrets({"t-bad": ["whsec_"]}))
    bad = store.get_callback("tx_bad_secret", 1)
    assert bad.state == "PENDING" and "cannot sign" in bad.attempts[0]["error"]
    assert bad.next_attempt_at > NOW
    assert store.state("tx_ok") == ["DELIVERED"] and [w for _, w in http.calls] == ["msg_tx_ok_1"]


def test_a_later_callback_waits_while_an_earlier_one_is_retrying():
    store = FakeCallbackStore()
    retry_at = NOW + timedelta(minutes=5)
    store.add("tx", 1, attempts=[{"status": 500}], next_attempt_at=retry_at)
    store.add("tx", 2)
    http = FakeHttp()
    assert run(store, http) == 0
    assert http.calls == [] and store.state("tx") == ["PENDING", "PENDING"]
    assert store.get_callback("tx", 2).next_attempt_at == retry_at  # out of the due index until then
    assert store.due("CALLBACK", NOW) == []


def test_once_the_earlier_one_is_delivered_the_later_one_follows_in_order():
    store = FakeCallbackStore()
    store.add("tx", 1, attempts=[{"status": 500}])
    store.add("tx", 2)
    store.add("tx", 3)
    http = FakeHttp()
    assert run(store, http) == 3
    assert [w for _, w in http.calls] == ["msg_tx_1", "msg_tx_2", "msg_tx_3"]


def test_a_failed_earlier_attempt_holds_back_the_rest_of_the_campaign():
    store = FakeCallbackStore()
    store.add("tx", 1, "https://hooks.example.com/fails")
    store.add("tx", 2, "https://hooks.example.com/fails")
    http = FakeHttp({"/fails": 500})
    assert run(store, http) == 1
    assert [w for _, w in http.calls] == ["msg_tx_1"]
    first, second = store.callbacks("tx")
    assert second.attempts == [] and second.next_attempt_at == first.next_attempt_at


@pytest.mark.parametrize("earlier,later", [("DELIVERED", "DELIVERED"), ("DEAD", "DELIVERED"),
                                           ("DISABLED", "DISABLED")])
def test_an_earlier_callback_that_is_settled_lets_the_later_one_go(earlier, later):
    store = FakeCallbackStore()
    store.add("tx", 1, state=earlier, next_attempt_at=None)
    store.add("tx", 2)
    run(store, FakeHttp())
    assert store.state("tx") == [earlier, later]


class SlowHostHttp:
    """slow.example.com holds every request until the fast host's requests have all been answered."""

    def __init__(self, fast_total):
        self.fast_total = fast_total
        self.lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight: Counter[str] = Counter()
        self.finished: list[str] = []
        self.fast_answered = threading.Event()

    def post(self, url, body, headers, timeout):
        host = urlsplit(url).hostname
        with self.lock:
            self.in_flight[host] += 1
            self.most_in_flight[host] = max(self.most_in_flight[host], self.in_flight[host])
        try:
            if host == "slow.example.com":
                self.fast_answered.wait(timeout=5)  # a cap for a broken implementation, not a delay
            return SimpleNamespace(status=200, error=None, retry_after=None, elapsed=0.0)
        finally:
            with self.lock:
                self.in_flight[host] -= 1
                self.finished.append(host)
                if self.finished.count("fast.example.com") == self.fast_total:
                    self.fast_answered.set()


def test_a_slow_receiver_gets_at_most_per_host_workers_and_does_not_delay_others():
    store = FakeCallbackStore()
    for i in range(6):  # due first
        store.add(f"tx_slow_{i}", 1, "https://slow.example.com/cb", next_attempt_at=NOW - timedelta(seconds=10))
    for i in range(3):
        store.add(f"tx_fast_{i}", 1, "https://fast.example.com/cb")
    http = SlowHostHttp(fast_total=3)
    assert run(store, http, workers=4, per_host=2) == 9
    assert http.most_in_flight["slow.example.com"] == 2
    assert http.finished[:3] == ["fast.example.com"] * 3
    assert all(c.state == "DELIVERED" for c in store.records.values())


def test_no_attempt_starts_once_stopping():
    store = FakeCallbackStore()
    for i in range(3):
        store.add(f"tx_{i}", 1, f"https://h{i}.example.com/cb")
    http = FakeHttp()
    assert run(store, http, workers=1, should_stop=lambda: len(http.calls) >= 1) == 1
    assert sum(c.state == "PENDING" and not c.attempts for c in store.records.values()) == 2


def test_no_attempt_starts_that_could_not_end_before_the_deadline():
    store = FakeCallbackStore()
    store.add("tx", 1)
    http = FakeHttp()
    assert run(store, http, timeout=5.0, deadline=time.monotonic() + 1.0) == 0
    assert http.calls == []


def test_losing_the_lease_stops_the_pass_with_fenced():
    class FencedStore(FakeCallbackStore):
        def save_callback_attempt(self, cb, expected_attempts):
            raise Fenced("not the leader")

    store = FencedStore()
    store.add("tx", 1)
    with pytest.raises(Fenced):
        run(store, FakeHttp())
