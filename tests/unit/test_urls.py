import pytest

from core.domain.errors import InvalidInput
from core.domain.urls import check_address, check_callback_url


@pytest.mark.parametrize("addr", [
    "10.0.0.1", "172.16.3.4", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "224.0.0.1",
])
def test_non_public_addresses_are_refused(addr):
    with pytest.raises(InvalidInput):
        check_address(addr, allow_loopback=False)


def test_public_addresses_pass():
    check_address("93.184.216.34", allow_loopback=False)
    check_address("2606:2800:220:1:248:1893:25c8:1946", allow_loopback=False)


def test_loopback_only_when_explicitly_allowed():
    check_address("127.0.0.1", allow_loopback=True)
    with pytest.raises(InvalidInput):
        check_address("10.0.0.1", allow_loopback=True)


@pytest.mark.parametrize("url,msg", [
    ("http://example.com/hook", "https"),
    ("ftp://example.com/hook", "http"),
    ("https://user:pw@example.com/", "credentials"),
    ("https://169.254.169.254/latest/meta-data", "non-public"),
    ("https://localhost/hook", "not a public"),
    ("https://[::1]/hook", "non-public"),
])
def test_submit_time_url_rules(url, msg):
    with pytest.raises(InvalidInput, match=msg):
        check_callback_url(url, require_https=True, allow_loopback=False)


def test_https_public_url_passes():
    assert check_callback_url("https://hooks.example.com:8443/x", require_https=True, allow_loopback=False) == (
        "https", "hooks.example.com", 8443)
