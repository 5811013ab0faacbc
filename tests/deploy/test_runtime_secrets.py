"""What the deployed runtime reads and creates in Secrets Manager, against the moto server.

moto accepts ``AddReplicaRegions`` and describes the replica, but does not keep a replica's
``KmsKeyId`` (it reports the default key); the request itself is checked for the peer key.
"""

from __future__ import annotations

import pytest

from config.settings import SettingsError
from core.adapters.aws import client
from core.bootstrap import bootstrap
from core.services.tenants import create_tenant
from local.bootstrap import create_resources
from tests.conftest import make_settings

PRIMARY_KEY = "arn:aws:kms:eu-west-1:123456789012:key/mrk-0123456789abcdef0123456789abcdef"
PEER_KEY = "arn:aws:kms:eu-central-1:123456789012:key/mrk-0123456789abcdef0123456789abcdef"


def requests_to(c, operation: str) -> list[dict]:
    """Parameters of every ``operation`` call the client makes from now on."""
    seen: list[dict] = []
    c.meta.events.register(f"provide-client-params.secretsmanager.{operation}",
                           lambda params, **_: seen.append(dict(params)))
    return seen


def test_the_unsubscribe_key_comes_from_secrets_manager(moto_server):
    settings = make_settings(moto_server.url)
    secret_id = f"{settings.name_prefix}/unsubscribe-signing"
    client(settings, "secretsmanager").create_secret(Name=secret_id, SecretString="  k3y-from-secrets-manager-0123456789\n")
    d = bootstrap(settings.model_copy(update={"unsubscribe_secret_id": secret_id}))
    assert d.settings.unsubscribe_secret == "k3y-from-secrets-manager-0123456789"
    assert d.settings.unsubscribe_secret_id == secret_id
    assert settings.unsubscribe_secret == "local-only-unsubscribe-secret"  # the caller's settings are untouched


def test_without_a_secret_id_the_configured_key_is_used(moto_server):
    settings = make_settings(moto_server.url, unsubscribe_secret="a-test-key-of-enough-length")
    assert bootstrap(settings).settings.unsubscribe_secret == "a-test-key-of-enough-length"


@pytest.mark.parametrize("value,message", [(None, "does not exist or has no value"), ("short", "at least 16")])
def test_a_missing_or_weak_unsubscribe_secret_stops_start_up_with_one_line(moto_server, value, message):
    settings = make_settings(moto_server.url)
    secret_id = f"{settings.name_prefix}/unsubscribe-signing"
    if value is not None:
        client(settings, "secretsmanager").create_secret(Name=secret_id, SecretString=value)
    with pytest.raises(SettingsError) as err:
        bootstrap(settings.model_copy(update={"unsubscribe_secret_id": secret_id}))
    assert str(err.value).startswith("invalid setting EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID: ")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_tenant_webhook_secret_is_encrypted_with_the_regional_key_and_replicated_to_dr(moto_server):
    """After a failover the DR region signs callbacks with the same secret, decrypted with its own key."""
    settings = make_settings(moto_server.url, kms_key_arn=PRIMARY_KEY, peer_kms_key_arn=PEER_KEY)
    create_resources(settings)
    d = bootstrap(settings)
    creates = requests_to(d.secrets.client, "CreateSecret")
    create_tenant(d.store, d.secrets, "acme")

    (request,) = creates
    assert request["KmsKeyId"] == PRIMARY_KEY
    assert request["AddReplicaRegions"] == [{"Region": "eu-central-1", "KmsKeyId": PEER_KEY}]
    name = f"{settings.name_prefix}/webhook-signing/acme"
    described = d.secrets.client.describe_secret(SecretId=name)
    assert described["KmsKeyId"] == PRIMARY_KEY
    assert [(r["Region"], r["Status"]) for r in described["ReplicationStatus"]] == [("eu-central-1", "InSync")]
    dr = bootstrap(settings.model_copy(update={"region": "eu-central-1", "dr_region": "eu-west-1"}))
    assert dr.secrets.signing_secrets("acme") == d.secrets.signing_secrets("acme") != []


def test_without_keys_a_tenant_secret_is_created_as_before(moto_server):
    """The embedded stack and tests set no KMS keys: no KmsKeyId, no replica."""
    settings = make_settings(moto_server.url)
    create_resources(settings)
    d = bootstrap(settings)
    creates = requests_to(d.secrets.client, "CreateSecret")
    create_tenant(d.store, d.secrets, "acme")
    (request,) = creates
    assert "KmsKeyId" not in request and "AddReplicaRegions" not in request
