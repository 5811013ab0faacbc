"""The unsubscribe token: what one module signs, the same module opens; nothing else opens."""

import pytest

from core.domain.errors import NotFound
from core.domain.unsubscribe import open_unsubscribe_token, sign_unsubscribe_token


def test_a_signed_token_opens_to_what_was_signed():
    token = sign_unsubscribe_token("s3cret", "acme", "Ünïcode+tag@example.org", "tx_1-b00001-00001")
    assert open_unsubscribe_token("s3cret", token) == ("acme", "Ünïcode+tag@example.org", "tx_1-b00001-00001")


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),  # signature edited
    lambda t: "A" + t[1:],  # payload edited
    lambda t: t.partition(".")[0],  # no signature
    lambda t: "",  # nothing
    lambda t: "%%%." + t.partition(".")[2],  # not base64
])
def test_an_edited_or_forged_token_is_not_found(mangle):
    token = sign_unsubscribe_token("s3cret", "acme", "a@example.org", "m1")
    with pytest.raises(NotFound):
        open_unsubscribe_token("s3cret", mangle(token))


def test_another_secret_opens_nothing():
    with pytest.raises(NotFound):
        open_unsubscribe_token("other", sign_unsubscribe_token("s3cret", "acme", "a@example.org", "m1"))
