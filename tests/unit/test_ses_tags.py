"""SES tag values must match [A-Za-z0-9_-] and be at most 256 characters, or SES refuses the
whole SendEmail call (BadRequestException). Tenant ids travel as tags."""

import pytest

from core.adapters.ses import SesMailer
from core.domain.errors import InvalidInput
from core.domain.ids import check_tenant_id, ses_tag_value


@pytest.mark.parametrize("good", ["tenant-a", "ACME_01", "a" * 64])
def test_tenant_ids_that_work_as_ses_tags_are_accepted(good):
    assert check_tenant_id(good) == good


@pytest.mark.parametrize("bad", ["", "acme corp", "acme.com", "ünïcode", "a/b", "a" * 65, "x:y"])
def test_tenant_ids_that_ses_would_refuse_are_rejected(bad):
    with pytest.raises(InvalidInput):
        check_tenant_id(bad)


def test_tag_values_are_made_safe():
    assert ses_tag_value("acme.com corp") == "acme_com_corp"
    assert len(ses_tag_value("x" * 300)) == 256
    assert ses_tag_value("") == "_"


class _Client:
    def __init__(self):
        self.calls = []

    def send_email(self, **kw):
        self.calls.append(kw)
        return {"MessageId": "m-1"}


def test_every_tag_the_mailer_sends_is_valid_for_ses():
    client = _Client()
    SesMailer(client, "cs").send(sender="a@example.com", to="b@example.org", subject="s", html="h", reply_to=None,
                                 headers={}, tags={"tenant_id": "legacy tenant.1", "message_id": "tx_1-b00001-00001"})
    tags = {t["Name"]: t["Value"] for t in client.calls[0]["EmailTags"]}
    assert tags == {"tenant_id": "legacy_tenant_1", "message_id": "tx_1-b00001-00001"}


def test_a_message_botocore_refuses_before_the_call_is_refused_alone_not_in_doubt():
    """SES's own limits, checked by botocore before any call (an empty header value): that
    message fails with the reason; before, the error escaped as a 500 and left its chunk stuck."""
    import boto3

    from core.domain.errors import MessageRefused

    client = boto3.client("sesv2", region_name="eu-west-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="x", aws_secret_access_key="x")
    with pytest.raises(MessageRefused, match="Headers"):
        SesMailer(client, "cs").send(sender="a@example.com", to="b@example.org", subject="s", html="h",
                                     reply_to=None, headers={"X-Empty": ""}, tags={})


def test_a_request_the_platform_builds_wrongly_for_every_message_holds_sending():
    import boto3

    from core.domain.errors import SendingHeld

    client = boto3.client("sesv2", region_name="eu-west-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="x", aws_secret_access_key="x")
    with pytest.raises(SendingHeld, match="ConfigurationSetName"):
        SesMailer(client, 7).send(sender="a@example.com", to="b@example.org", subject="s", html="h",  # type: ignore[arg-type]
                                  reply_to=None, headers={}, tags={})
