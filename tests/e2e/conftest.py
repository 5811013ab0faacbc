import pytest

from local.moto import free_port
from local.ses_simulator import Rates
from local.stack import Stack
from tests.conftest import make_settings


@pytest.fixture(scope="session")
def aws_calls():
    """Every AWS call the e2e stack makes, attributed to the component that made it."""
    from core.adapters.aws import CallCounter

    return CallCounter()


# package scope: the stack (its controller, senders and simulated SES) stops once the e2e tests are
# done instead of polling the moto server through the tiers that run after them
def start_e2e_stack(moto_server, aws_calls) -> Stack:
    """The e2e stack: a fresh name prefix (its own table and buckets) on the session's moto server,
    its AWS calls counted for the least-privilege test."""
    # batch_size 50 / chunk 10: test_campaign's 300 recipients make 6 batches of 5 chunks.
    # recount_quiet_seconds 10 (default 120): a settled campaign leaves the active index (and every
    # controller pass) 10 s after its final recount instead of 2 min. The period must outlast the
    # gap between a message's status write and its count addition (ms in the embedded workers).
    settings = make_settings(moto_server.url, api_port=free_port(), metrics_port=free_port(), batch_size=50,
                             send_chunk_size=10, controller_interval_seconds=0.5, sender_workers=3, recount_interval_seconds=1.0,
                             recount_quiet_seconds=10, completion_window_seconds=3600,
                             public_base_url="http://127.0.0.1:8080", redispatch_after_seconds=20,
                             # the simulator bounces ~5 %: keep the reputation guard (tested on its
                             # own in tests/integration/test_reputation.py) from pausing e2e campaigns
                             reputation_min_volume=10_000_000)
    return Stack.start(settings, metrics=False, rates=Rates(delivery=0.95, open=0.4, click=0.1), counter=aws_calls)


@pytest.fixture(scope="package")
def stack(moto_server, aws_calls):
    s = start_e2e_stack(moto_server, aws_calls)
    yield s
    s.stop()


@pytest.fixture(scope="package")
def api(stack):
    from ops.client import Client

    return Client(f"http://127.0.0.1:{stack.settings.api_port}/api/v1/email", stack.tenant["api_key"])
