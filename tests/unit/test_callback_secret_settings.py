"""Secrets that sign callbacks (and the local API key) are refused where they enter: Settings."""

import base64

import pytest

from config.settings import SettingsError, load_settings
from core.services.tenants import new_webhook_secret


@pytest.mark.parametrize("secret,reason", [
    ("whsec_", "no key"),
    ("whsec_!!!!not base64!!!!", "base64"),
    ("whsec_a", "base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
])
def test_an_empty_or_non_base64_webhook_secret_is_refused_in_one_line(secret, reason):
    with pytest.raises(SettingsError) as err:
        load_settings(local_webhook_secret=secret)
    msg = str(err.value)
    assert msg.startswith("invalid setting EMAILPLATFORM_LOCAL_WEBHOOK_SECRET") and reason in msg
    assert "\n" not in msg


def test_a_generated_webhook_secret_is_accepted():
    secret = new_webhook_secret()
    assert load_settings(local_webhook_secret=secret).local_webhook_secret == secret


def test_a_short_local_api_key_is_refused_in_one_line():
    with pytest.raises(SettingsError) as err:
        load_settings(local_api_key="ep_short_key")
    msg = str(err.value)
    assert msg.startswith("invalid setting EMAILPLATFORM_LOCAL_API_KEY") and "at least 20" in msg
    assert "\n" not in msg


def test_a_long_enough_local_api_key_is_accepted():
    assert load_settings(local_api_key="ep_" + "k" * 17).local_api_key == "ep_" + "k" * 17
