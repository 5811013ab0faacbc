"""One Settings object for every process: API Lambda, sender, event handler, controller, embedded stack.

Values come from environment variables prefixed ``EMAILPLATFORM_``. A bad value stops the
process at start-up with one line naming the setting (see ``load_settings``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import sys
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.schema import SEND_EVIDENCE_WINDOW_FLOOR

LOCAL_UNSUBSCRIBE_SECRET = "local-only-unsubscribe-secret"
DEPLOYED_ENVIRONMENTS = ("staging", "prod")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMAILPLATFORM_", extra="ignore")

    # --- where -----------------------------------------------------------------------
    environment: str = Field("local", pattern=r"^(local|test|staging|prod)$")
    region: str = "eu-west-1"
    dr_region: str = "eu-central-1"
    aws_endpoint_url: str | None = None  # moto server in the embedded stack; None on AWS
    # ≤ 24 characters: "<prefix>-ses-events-<account id>-ap-southeast-1" must fit S3's 63
    # (infra/components/storage.py bucket_name_problems says the same at preview)
    name_prefix: str = Field("emailplatform", pattern=r"^[a-z][a-z0-9-]{2,23}$")
    account_id: str | None = Field(None, pattern=r"^[0-9]{12}$")  # set on AWS: bucket names are global
    # this region's KMS key and the other region's, for the secrets the runtime creates (tenants'
    # webhook secrets: CreateSecret with KmsKeyId and a replica in dr_region under the peer key)
    kms_key_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:kms:")
    peer_kms_key_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:kms:")

    # --- sending ---------------------------------------------------------------------
    batch_size: int = Field(500, ge=1, le=5000)
    send_chunk_size: int = Field(100, ge=1, le=100)  # messages per send-log entry (and per in-doubt window)
    ses_max_send_rate: float = Field(14.0, gt=0, le=100000)  # messages per second, all workers
    ses_configuration_set: str = ""  # unset: the name prefix, as infra names it
    default_from: str = "noreply@example.com"
    send_evidence_window_seconds: int = Field(900, ge=1)  # in-doubt sends wait this long for SES evidence
    redispatch_after_seconds: int = Field(120, ge=1)  # a QUEUED batch no worker holds is sent again
    completion_window_seconds: int = Field(72 * 3600, ge=1)  # sent → completed without final outcome
    bounce_rate_threshold: float = Field(0.05, gt=0, lt=1)
    complaint_rate_threshold: float = Field(0.001, gt=0, lt=1)
    reputation_min_volume: int = Field(500, ge=1)

    # --- uploads ---------------------------------------------------------------------
    max_template_bytes: int = Field(512 * 1024, ge=1)
    max_csv_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    # Attachments: SES takes messages up to 40 MB, base64 makes attachments 4/3 larger, and the
    # text and HTML parts (≤ 2 × max_template_bytes) and headers need room: 28 MB of files at most.
    max_attachment_bytes: int = Field(10 * 1024 * 1024, ge=1, le=28 * 1024 * 1024)
    max_message_attachment_bytes: int = Field(25 * 1024 * 1024, ge=1, le=28 * 1024 * 1024)
    presign_expiry_seconds: int = Field(900, ge=60, le=7 * 24 * 3600)
    schedule_grace_seconds: int = Field(300, ge=0)
    max_schedule_days: int = Field(30, ge=1, le=365)  # how far ahead schedule.send_at may be
    # region → API Gateway usage plan id (stack output usage_plan_ids): where `keys create`/`revoke`
    # and the rotate_keys runbook also register/disable a tenant key (core/bootstrap.py
    # api_key_gateway), because the edge requires a usage-plan key in x-api-key
    usage_plan_ids: dict[str, str] = Field(default_factory=dict)

    # --- callbacks -------------------------------------------------------------------
    callback_timeout_seconds: float = Field(15.0, gt=0, le=60)
    callback_allow_loopback: bool = False  # embedded stack only: lets `make demo` receive callbacks
    callback_require_https: bool = True

    # --- regions ---------------------------------------------------------------------
    # the API refuses writes (503) in the passive region; it re-reads the replicated
    # PLATFORM/ACTIVE_REGION flag at most this often, and tells callers to retry after
    active_region_cache_seconds: float = Field(5.0, ge=0)
    passive_region_retry_after_seconds: int = Field(30, ge=1)

    # --- controller ------------------------------------------------------------------
    controller_interval_seconds: float = Field(2.0, gt=0)
    controller_pass_workers: int = Field(8, ge=1, le=64)  # campaigns a pass works on at once
    lease_seconds: float = Field(15.0, gt=0)
    recount_interval_seconds: float = Field(2.0, ge=0)  # unused: counts are live (kept for old environments)
    # a settled campaign's final recount applies only after this long without a count added
    # (longer than an events Lambda runs), so nothing it already saw is added twice
    recount_quiet_seconds: float = Field(120.0, ge=0)
    idempotency_ttl_seconds: int = Field(24 * 3600, ge=24 * 3600)

    # --- automated failover (controller/failover.py; runbooks/failover.md) -------------
    # Enabled only in the DR region's controller: it watches the other region and promotes its
    # own when ``failover_quorum`` independent signals have been bad for ``failover_grace_seconds``.
    # Failback stays manual. A hold (`runbooks/failover.py --hold-automation`) stops it durably.
    failover_automation: bool = False
    failover_grace_seconds: float = Field(120.0, gt=0)
    failover_quorum: int = Field(3, ge=2)  # bad signals needed; never one alone
    failover_check_interval_seconds: float = Field(5.0, gt=0)
    failover_api_url: str | None = None  # this region's API base URL (its health is checked before promoting)
    failover_peer_health_url: str | None = None  # the watched region's API health endpoint (full URL)
    failover_health_check_id: str | None = None  # Route 53 health check of the watched region's API
    failover_ses_window_seconds: float = Field(300.0, gt=0)  # no SES send this long while campaigns send: bad
    failover_event_topic_arn: str | None = None  # SNS topic (the alarms topic) told of every decision

    # --- ports (embedded stack) ------------------------------------------------------
    api_port: int = Field(8080, ge=1, le=65535)
    metrics_port: int = Field(9102, ge=1, le=65535)
    moto_port: int = Field(5000, ge=1, le=65535)
    sender_workers: int = Field(2, ge=1, le=64)
    event_workers: int = Field(3, ge=1, le=64)
    local_api_key: str | None = None
    local_webhook_secret: str | None = None
    public_base_url: str | None = None  # unset: the embedded API on api_port (unsubscribe links)
    unsubscribe_secret: str = Field(LOCAL_UNSUBSCRIBE_SECRET, min_length=16)
    # on AWS: the Secrets Manager secret (name or ARN) holding the unsubscribe signing key; read once
    # at bootstrap (core/bootstrap.py), where it replaces ``unsubscribe_secret``
    unsubscribe_secret_id: str | None = Field(None, min_length=1)

    # --- analytics -------------------------------------------------------------------
    opensearch_endpoint: str | None = None  # unset: the embedded SQLite store
    peer_opensearch_endpoint: str | None = None  # the other region's domain: erasures and retention purge it too
    # CAN-SPAM: templates must use {{ unsubscribe_url }} and {{ postal_address }}, tenants must have set
    # their postal address (PUT /compliance/identity) before a campaign is accepted. Unset: required
    # in staging and prod, not in local and test (an explicit value wins, e.g. false for a
    # transactional-only deployment)
    require_compliance_footer: bool = False
    analytics_db_path: str = ":memory:"

    # OAuth 2.0 bearer tokens (JWT) in addition to API keys, when an issuer is configured
    oauth_issuer: str | None = None
    oauth_audience: str | None = None
    oauth_jwks_url: str | None = None
    oauth_tenant_claim: str = "tenant_id"
    oauth_required: bool = False

    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("region", "dr_region")
    @classmethod
    def _region_shape(cls, v: str) -> str:
        parts = v.split("-")
        if len(parts) < 3 or not parts[-1].isdigit():
            raise ValueError(f"not an AWS region name: {v!r}")
        return v

    @field_validator("local_webhook_secret")
    @classmethod
    def _whsec(cls, v: str | None) -> str | None:
        """A Standard Webhooks secret: ``whsec_`` + base64 of 24-64 random bytes (refused here,
        not when the first callback is signed)."""
        if v is None:
            return v
        if not v.startswith("whsec_"):
            raise ValueError("must start with 'whsec_'")
        text = v.removeprefix("whsec_")
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be 'whsec_' followed by base64") from None
        if not key:
            raise ValueError("has no key after 'whsec_'")
        if not 24 <= len(key) <= 64:
            raise ValueError(f"must carry 24 to 64 bytes of key after 'whsec_' (has {len(key)})")
        return v

    @field_validator("local_api_key")
    @classmethod
    def _api_key_length(cls, v: str | None) -> str | None:
        if v is not None and len(v) < 20:
            raise ValueError(f"must be at least 20 characters long (has {len(v)})")
        return v

    @model_validator(mode="before")
    @classmethod
    def _configuration_set_from_prefix(cls, data: Any) -> Any:
        """Infra names the SES configuration set after the prefix (its event destination feeds
        that prefix's Firehose stream), so unset means the prefix: stacks sharing one SES never cross."""
        if isinstance(data, dict) and not data.get("ses_configuration_set"):
            prefix = data.get("name_prefix") or cls.model_fields["name_prefix"].default
            data = {**data, "ses_configuration_set": prefix}
        return data

    @model_validator(mode="before")
    @classmethod
    def _compliance_footer_where_deployed(cls, data: Any) -> Any:
        """Production is safe by default: a campaign without the CAN-SPAM footer is refused in
        staging and prod unless REQUIRE_COMPLIANCE_FOOTER says otherwise."""
        if isinstance(data, dict) and data.get("require_compliance_footer") in (None, ""):
            environment = data.get("environment") or cls.model_fields["environment"].default
            data = {**data, "require_compliance_footer": environment in DEPLOYED_ENVIRONMENTS}
        return data

    @model_validator(mode="after")
    def _regions_differ(self) -> Settings:
        if self.region == self.dr_region:
            raise ValueError("dr_region must differ from region")
        if self.public_base_url is None:
            self.public_base_url = f"http://127.0.0.1:{self.api_port}"
        return self

    @model_validator(mode="after")
    def _failover_automation_complete(self) -> Settings:
        if self.failover_automation and not self.failover_api_url:
            raise ValueError("failover_automation needs failover_api_url (this region's API, checked before promoting)")
        return self

    @model_validator(mode="after")
    def _deployed_refuses_local_defaults(self) -> Settings:
        """staging and prod refuse what only makes sense on a laptop, naming the first setting."""
        if self.environment not in DEPLOYED_ENVIRONMENTS:
            return self
        for name, problem in self._deployment_problems():
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("deployed_environment", "{problem}", {"problem": problem}),
                loc=(name,), input=getattr(self, name))])
        return self

    def _deployment_problems(self) -> list[tuple[str, str]]:
        env = self.environment
        out: list[tuple[str, str]] = []
        if not self.unsubscribe_secret_id:
            out.append(("unsubscribe_secret_id", f"must name the Secrets Manager secret holding the unsubscribe "
                                                 f"signing key in {env}"))
        if self.unsubscribe_secret != LOCAL_UNSUBSCRIBE_SECRET:
            out.append(("unsubscribe_secret", f"must not be set in {env}: the key comes from Secrets Manager "
                                              f"(EMAILPLATFORM_UNSUBSCRIBE_SECRET_ID)"))
        url = urlsplit(self.public_base_url or "")
        if url.scheme != "https" or not url.hostname:
            out.append(("public_base_url", f"must be an https:// URL in {env} (unsubscribe links), "
                                           f"not {self.public_base_url!r}"))
        elif _is_loopback(url.hostname):
            out.append(("public_base_url", f"must not point at a loopback host in {env}: {url.hostname!r}"))
        if self.default_from.rpartition("@")[2].lower().rstrip(".") in ("example.com", "example.org", "example.net"):
            out.append(("default_from", f"must be an address at the SES domain in {env}, "
                                        f"not {self.default_from!r}"))
        if not self.opensearch_endpoint:
            out.append(("opensearch_endpoint", f"must be set in {env} (the embedded SQLite store is local only)"))
        if self.aws_endpoint_url:
            out.append(("aws_endpoint_url", f"must be unset in {env} (it points the SDK away from AWS)"))
        if self.send_evidence_window_seconds < SEND_EVIDENCE_WINDOW_FLOOR:
            out.append(("send_evidence_window_seconds", f"must be at least {SEND_EVIDENCE_WINDOW_FLOOR} in {env}: "
                        "an SES event whose consumer crashed or failed comes back only after the events queue's "
                        "visibility timeout, once per delivery attempt, and a shorter window re-sends mail SES "
                        "had accepted"))
        if self.callback_allow_loopback:
            out.append(("callback_allow_loopback", f"must be false in {env}"))
        if not self.callback_require_https:
            out.append(("callback_require_https", f"must be true in {env}"))
        return out

    # Resource names derive from one prefix so infra and the embedded stack agree.
    @property
    def table_name(self) -> str:
        return f"{self.name_prefix}-main"

    def bucket(self, purpose: str, region: str | None = None) -> str:
        """Same names as infra/components/storage.py: the account id makes them globally unique on AWS."""
        if self.account_id:
            return f"{self.name_prefix}-{purpose}-{self.account_id}-{region or self.region}"
        return f"{self.name_prefix}-{purpose}-{region or self.region}"

    def queue(self, purpose: str) -> str:
        return f"{self.name_prefix}-{purpose}"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(SystemExit):
    """Raised at start-up with a one-line message naming the bad setting."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        name = f"EMAILPLATFORM_{loc.upper()}" if loc != "settings" else "settings"
        raise SettingsError(f"invalid setting {name}: {err['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        raise
