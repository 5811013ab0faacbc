"""Custom headers and metadata columns a campaign may declare (core.domain.headers)."""

import pytest

from core.domain.errors import InvalidInput
from core.domain.headers import check_custom_headers, check_metadata_columns


def test_ordinary_custom_headers_pass():
    h = {"X-Campaign": "spring-2026", "X-Entity-Ref-ID": "a1b2", "Precedence": "bulk", "Keywords": "a, b c"}
    assert check_custom_headers(h) == h
    assert check_custom_headers(None) == {}


@pytest.mark.parametrize("name,value,why", [
    ("X-Ok", "a\r\nBcc: victim@example.com", "line break"),
    ("X-Ok", "a\nb", "line break"),
    ("X-Ok", "caf\u00e9", "printable ASCII"),
    ("X-Ok", "nul\x00", "printable ASCII"),
    ("X-Ok", "v" * 871, "longer than 870"),
    ("X Bad", "v", "not a valid field name"),
    ("X-Bad:", "v", "not a valid field name"),
    ("X-\u00e9", "v", "not a valid field name"),
    ("", "v", "not a valid field name"),
    ("X" * 127, "v", "not a valid field name"),
    ("From", "boss@example.com", "cannot be overridden"),
    ("subject", "x", "cannot be overridden"),
    ("List-Unsubscribe", "<https://evil.example>", "cannot be overridden"),
    ("Message-ID", "<a@b>", "cannot be overridden"),
    ("Date", "Mon", "cannot be overridden"),
    ("Content-Type", "text/plain", "cannot be overridden"),
    ("X-SES-CONFIGURATION-SET", "other", "cannot be overridden"),
    ("Content-Language", "en", "cannot be overridden"),  # MIME structure: every Content-* header
    ("Resent-Reply-To", "a@example.com", "cannot be overridden"),
    ("X-Empty", "", "empty value"),  # SES's MessageHeader.Value is 1-870 characters: the call would fail
    ("X-Tab", "a\tb", "printable ASCII"),  # SES's pattern [ -~]* has no tab
])
def test_injection_malformed_and_platform_headers_are_refused_naming_the_header(name, value, why):
    with pytest.raises(InvalidInput, match=why) as e:
        check_custom_headers({name: value})
    assert e.value.http_status == 422


def test_the_same_header_twice_and_too_many_headers_are_refused():
    with pytest.raises(InvalidInput, match="twice"):
        check_custom_headers({"X-A": "1", "x-a": "2"})
    with pytest.raises(InvalidInput, match="at most 10"):
        check_custom_headers({f"X-H{i}": "v" for i in range(11)})


def test_metadata_columns_may_not_be_email_rendered_or_repeated():
    assert check_metadata_columns(["crm_id", " order "], {"first_name"}) == ["crm_id", "order"]
    for cols, why in ((["email"], "email column"), (["first_name"], "used by the template"),
                      (["a", "a"], "twice"), (["bad\nname"], "not a valid")):
        with pytest.raises(InvalidInput, match=why):
            check_metadata_columns(cols, {"first_name"})
