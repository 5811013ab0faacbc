import subprocess
import sys

import pytest

from config.settings import SettingsError, load_settings
from core.schema import EVENTS_QUEUE, SEND_EVIDENCE_WINDOW_FLOOR, SES_EVENTS_STREAM
from infra.components.compute import FUNCTIONS


def test_a_batch_of_full_firehose_objects_fits_the_events_lambdas_timeout_and_memory_twice():
    """The worst batch the events Lambda gets: ``batch_size`` objects of the stream's full buffer.
    Measured here (one 5 MB object of 4,500 SES events of 1,175 bytes, recorded against moto):
    0.34 ms of CPU per event on a full core, 38 MB more peak memory per object held. On Lambda a
    function gets one vCPU at 1,769 MB (less below), and each call (25 message writes, or 100
    message reads) waits about 10 ms in region."""
    _, timeout, memory = FUNCTIONS["ses_events"]
    events = SES_EVENTS_STREAM.buffer_mb * 2**20 / 1175
    seconds_per_object = events * 0.34e-3 * max(1.0, 1769 / memory) + (events / 25 + events / 100) * 0.010
    assert 2 * EVENTS_QUEUE.batch_size * seconds_per_object <= timeout
    assert 2 * EVENTS_QUEUE.batch_size * 38 + 150 <= memory  # 150 MB: the runtime with boto3 and the handler


def test_defaults_load():
    s = load_settings()
    assert s.table_name == "emailplatform-main"
    assert s.bucket("uploads") == "emailplatform-uploads-eu-west-1"


@pytest.mark.parametrize("env,value,name", [
    ("batch_size", 0, "EMAILPLATFORM_BATCH_SIZE"),
    ("region", "mars", "EMAILPLATFORM_REGION"),
    ("ses_max_send_rate", -1, "EMAILPLATFORM_SES_MAX_SEND_RATE"),
    ("local_webhook_secret", "nope", "EMAILPLATFORM_LOCAL_WEBHOOK_SECRET"),
])
def test_bad_setting_names_the_setting(env, value, name):
    with pytest.raises(SettingsError) as err:
        load_settings(**{env: value})
    msg = str(err.value)
    assert name in msg and "\n" not in msg


def test_regions_must_differ():
    with pytest.raises(SettingsError, match="dr_region must differ"):
        load_settings(region="eu-west-1", dr_region="eu-west-1")


def test_process_start_fails_with_one_line(tmp_path):
    env = {"EMAILPLATFORM_BATCH_SIZE": "lots", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "controller", "--once"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert lines[-1].startswith("invalid setting EMAILPLATFORM_BATCH_SIZE")


def test_unsubscribe_links_follow_a_changed_api_port():
    from config.settings import load_settings

    assert load_settings(api_port=9999).public_base_url == "http://127.0.0.1:9999"
    assert load_settings(public_base_url="https://api.example.com").public_base_url == "https://api.example.com"


# --- staging and prod refuse local defaults, one line naming the setting ---------------------------

DEPLOYED = dict(
    environment="prod", unsubscribe_secret_id="emailplatform/unsubscribe-signing",
    public_base_url="https://api.mail.acme.io", default_from="noreply@mail.acme.io",
    opensearch_endpoint="https://search-emailplatform.eu-west-1.es.amazonaws.com",
)


def refusal(**overrides) -> str:
    with pytest.raises(SettingsError) as err:
        load_settings(**{**DEPLOYED, **overrides})
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_a_complete_deployed_configuration_loads(environment):
    s = load_settings(**{**DEPLOYED, "environment": environment})
    assert s.unsubscribe_secret_id == "emailplatform/unsubscribe-signing" and not s.callback_allow_loopback


def test_local_and_test_keep_their_defaults():
    assert load_settings(environment="test", callback_allow_loopback=True).public_base_url.startswith("http://127.")


def test_deployed_needs_the_unsubscribe_secret_id():
    msg = refusal(unsubscribe_secret_id=None)
    assert msg.startswith("invalid setting EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID: ") and "Secrets Manager" in msg


def test_deployed_refuses_an_unsubscribe_key_in_the_environment():
    msg = refusal(unsubscribe_secret="a-key-somebody-pasted-into-the-env")
    assert msg.startswith("invalid setting EMAILPLATFORM_UNSUBSCRIBE_SECRET: ")


@pytest.mark.parametrize("url", [None, "http://api.mail.acme.io", "https://127.0.0.1:8443", "https://localhost",
                                 "https://[::1]"])
def test_deployed_needs_a_public_https_base_url(url):
    assert refusal(public_base_url=url).startswith("invalid setting EMAILPLATFORM_PUBLIC_BASE_URL: ")


def test_deployed_refuses_the_example_sender():
    msg = refusal(default_from="noreply@example.com")
    assert msg.startswith("invalid setting EMAILPLATFORM_DEFAULT_FROM: ") and "noreply@example.com" in msg


def test_deployed_needs_opensearch():
    assert refusal(opensearch_endpoint=None).startswith("invalid setting EMAILPLATFORM_OPENSEARCH_ENDPOINT: ")


def test_deployed_refuses_an_aws_endpoint_override():
    assert refusal(aws_endpoint_url="http://127.0.0.1:5000").startswith(
        "invalid setting EMAILPLATFORM_AWS_ENDPOINT_URL: ")


def test_deployed_refuses_loopback_callbacks():
    assert refusal(callback_allow_loopback=True).startswith("invalid setting EMAILPLATFORM_CALLBACK_ALLOW_LOOPBACK: ")


def test_deployed_requires_https_callbacks():
    assert refusal(callback_require_https=False).startswith("invalid setting EMAILPLATFORM_CALLBACK_REQUIRE_HTTPS: ")


def test_deployed_refuses_an_evidence_window_shorter_than_an_events_record_can_hide():
    """An SES event a crashed consumer held, or whose write failed, is invisible for the events
    queue's visibility timeout, each of its delivery attempts, while newer events are recorded:
    a shorter window re-sent mail SES had accepted."""
    attempts = EVENTS_QUEUE.max_receive_count * (EVENTS_QUEUE.visibility_timeout + EVENTS_QUEUE.batching_window)
    msg = refusal(send_evidence_window_seconds=attempts)
    assert msg.startswith("invalid setting EMAILPLATFORM_SEND_EVIDENCE_WINDOW_SECONDS: ") and "visibility" in msg
    assert load_settings(**DEPLOYED, send_evidence_window_seconds=SEND_EVIDENCE_WINDOW_FLOOR)


def test_a_deployed_process_stops_with_one_line_naming_the_setting():
    env = {"EMAILPLATFORM_ENVIRONMENT": "staging", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "controller", "--once"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert lines[-1].startswith("invalid setting EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID: ")


def test_kms_key_settings_take_arns():
    s = load_settings(kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/mrk-1",
                      peer_kms_key_arn="arn:aws:kms:eu-central-1:123456789012:key/mrk-1")
    assert s.peer_kms_key_arn.startswith("arn:aws:kms:eu-central-1")
    with pytest.raises(SettingsError, match="EMAILPLATFORM_KMS_KEY_ARN"):
        load_settings(kms_key_arn="mrk-1")


def test_make_run_honours_explicit_callback_settings(monkeypatch):
    """`make run` defaults to loopback callbacks over HTTP only where the environment is silent."""
    from local.cli import _local_defaults

    monkeypatch.delenv("EMAILPLATFORM_CALLBACK_REQUIRE_HTTPS", raising=False)
    monkeypatch.delenv("EMAILPLATFORM_CALLBACK_ALLOW_LOOPBACK", raising=False)
    assert _local_defaults()["callback_require_https"] is False
    monkeypatch.setenv("EMAILPLATFORM_CALLBACK_REQUIRE_HTTPS", "true")
    monkeypatch.setenv("EMAILPLATFORM_CALLBACK_ALLOW_LOOPBACK", "false")
    from config.settings import load_settings

    strict = load_settings(**_local_defaults())
    assert strict.callback_require_https is True and strict.callback_allow_loopback is False


# --- CAN-SPAM footer: required where mail reaches real people, unless said otherwise ---------------

@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_deployed_environments_require_the_compliance_footer_by_default(environment):
    assert load_settings(**{**DEPLOYED, "environment": environment}).require_compliance_footer is True
    assert load_settings(**{**DEPLOYED, "environment": environment},
                         require_compliance_footer=False).require_compliance_footer is False


def test_local_and_test_do_not_require_the_footer_unless_asked(monkeypatch):
    assert load_settings(environment="test").require_compliance_footer is False
    assert load_settings(environment="local").require_compliance_footer is False
    monkeypatch.setenv("EMAILPLATFORM_REQUIRE_COMPLIANCE_FOOTER", "true")
    assert load_settings(environment="test").require_compliance_footer is True
    monkeypatch.delenv("EMAILPLATFORM_REQUIRE_COMPLIANCE_FOOTER")
    monkeypatch.setenv("EMAILPLATFORM_ENVIRONMENT", "prod")
    for k, v in DEPLOYED.items():
        monkeypatch.setenv(f"EMAILPLATFORM_{k.upper()}", v)
    assert load_settings().require_compliance_footer is True  # from the environment variables, as on AWS
