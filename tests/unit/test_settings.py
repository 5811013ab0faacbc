import subprocess
import sys

import pytest

from config.settings import SettingsError, load_settings


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
