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
    target = check_callback_url("https://hooks.example.com:8443/x", require_https=True, allow_loopback=False)
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 8443)
    assert target.url == "https://hooks.example.com:8443/x"


def public(url):
    return check_callback_url(url, require_https=False, allow_loopback=False)


@pytest.mark.parametrize("url,address", [
    ("http://2852039166/", "169.254.169.254"),  # one decimal number
    ("http://017700000001/", "127.0.0.1"),  # octal
    ("http://0x7f000001/", "127.0.0.1"),  # hex
    ("http://127.1/", "127.0.0.1"),  # two parts
    ("http://0x7f.0.1/", "127.0.0.1"),  # three parts, mixed radix
    ("http://0251.0376.0251.0376/", "169.254.169.254"),  # four octal parts
    ("http://10.0.0.1./", "10.0.0.1"),  # trailing root label
    ("http://0/", "0.0.0.0"),
    ("http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/", "127.0.0.1"),  # full-width (IDNA maps it)
])
def test_a_host_that_is_an_ipv4_number_in_any_form_is_that_address(url, address):
    with pytest.raises(InvalidInput, match="non-public") as err:
        public(url)
    assert address in err.value.message


@pytest.mark.parametrize("url", [
    "http://10.0.0.1 /", "http://example.com /hook", "https://hooks.example.com/a b", "https://hooks.example.com/\t",
    "https://hooks.example.com\n/", "https://hooks.\x00example.com/", "https://hooks.example.com/\x7f",
    "https://hooks.example.com/\u2028", " https://hooks.example.com/",
])
def test_whitespace_and_control_characters_are_refused(url):
    with pytest.raises(InvalidInput, match="whitespace or a control character"):
        public(url)


@pytest.mark.parametrize("url,embedded", [
    ("https://[2002:a9fe:a9fe::1]/", "169.254.169.254"),  # 6to4
    ("https://[2002:0a00:0001::]/", "10.0.0.1"),
    ("https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "10.0.0.1"),  # Teredo (client is XOR-ed)
    ("https://[64:ff9b::a9fe:a9fe]/", "169.254.169.254"),  # NAT64
    ("https://[64:ff9b::7f00:1]/", "127.0.0.1"),
    ("https://[::ffff:169.254.169.254]/", "169.254.169.254"),  # IPv4-mapped
    ("https://[::a9fe:a9fe]/", "169.254.169.254"),  # IPv4-compatible
])
def test_ipv6_forms_that_carry_a_non_public_ipv4_are_refused_naming_it(url, embedded):
    with pytest.raises(InvalidInput, match="non-public") as err:
        public(url)
    assert embedded in err.value.message


@pytest.mark.parametrize("addr", [
    "2002:a9fe:a9fe::1", "2002:7f00:1::", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "64:ff9b::a9fe:a9fe",
    "64:ff9b::a00:1", "64:ff9b:1::a00:1", "::a9fe:a9fe", "192.88.99.1", "fec0::1",
])
def test_tunnel_and_translation_forms_are_refused_at_connect(addr):
    with pytest.raises(InvalidInput, match="non-public"):
        check_address(addr, allow_loopback=True)


def test_6to4_relay_anycast_is_refused_at_submit():
    with pytest.raises(InvalidInput, match="192.88.99.0/24"):
        public("https://192.88.99.1/hook")


def test_translation_forms_of_a_public_address_pass():
    check_address("2002:5db8:d822::1", allow_loopback=False)  # 6to4 of 93.184.216.34
    check_address("64:ff9b::5db8:d822", allow_loopback=False)  # what DNS64 answers for an IPv4-only host


@pytest.mark.parametrize("url,msg", [
    ("https://a..example.com/", "empty label"),
    ("https://.example.com/", "empty label"),
    ("https://example.com../", "empty label"),
    (f"https://{'a' * 64}.example.com/", "at most 63"),
    ("https://" + ".".join(["a" * 63] * 4) + "/", "at most 253"),
    ("https://under_score.example.com/", "letters, digits"),
    ("https://-lead.example.com/", "letters, digits"),
    ("https://xn--zzzz.example.com/", "punycode"),
    ("https://1.2.3.4.5/", "neither a valid IPv4"),
    ("https://example.0x1/", "neither a valid IPv4"),
    ("https://256.1.1.1/", "neither a valid IPv4"),
    ("https://hooks.example.com:+443/", "port"),
    ("https://hooks.example.com:0/", "port"),
    ("https://hooks.example.com:70000/", "port"),
    ("https://[fe80::1%25eth0]/", "zone"),
    ("https://hooks.example.com\\@10.0.0.1/", "backslash"),
    ("https://@hooks.example.com/", "credentials"),
    ("https:///hook", "no host"),
])
def test_malformed_hosts_are_refused(url, msg):
    with pytest.raises(InvalidInput, match=msg):
        public(url)


def test_idn_hosts_become_punycode_and_the_url_is_normalised():
    target = check_callback_url("HTTPS://B\u00fccher.Example:443/pfad/\u00e4?q=\u00fc#frag", require_https=True,
                                allow_loopback=False)
    assert target.host == "xn--bcher-kva.example" and target.port == 443
    assert target.url == "https://xn--bcher-kva.example/pfad/%C3%A4?q=%C3%BC"


def test_a_loopback_number_is_normalised_when_loopback_is_allowed():
    target = check_callback_url("http://127.1:8080/hook", require_https=True, allow_loopback=True)
    assert target.url == "http://127.0.0.1:8080/hook" and str(target.address) == "127.0.0.1"


def test_the_normalised_url_parses_to_the_same_target():
    first = public("http://Hooks.Example.COM./a%20b?x=1")
    assert public(first.url) == first


@pytest.mark.parametrize("url", ["https://instance-data/", "https://intranet/hook", "https://metadata./x"])
def test_a_single_label_host_is_refused_at_submit(url):
    """It could only resolve through the resolver's search domains, i.e. to an internal name."""
    with pytest.raises(InvalidInput, match="no domain"):
        check_callback_url(url, require_https=True, allow_loopback=False)
