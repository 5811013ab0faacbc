"""Route 53 during a failover (runbooks/regions.py): Route 53 treats a *disabled* health check as
healthy, so forcing the primary unhealthy takes Disabled and Inverted together (AWS docs, "Disabled"
in UpdateHealthCheck); failback clears both. moto stores the flags; AWS applies their meaning."""

from __future__ import annotations

import uuid

from core.adapters.aws import client
from runbooks.regions import force_unhealthy, forced_unhealthy, overridden


def test_forcing_unhealthy_sets_disabled_and_inverted_and_failback_clears_both(settings):
    r53 = client(settings, "route53")
    hc = r53.create_health_check(CallerReference=uuid.uuid4().hex, HealthCheckConfig={
        "Type": "HTTPS", "FullyQualifiedDomainName": "api.eu-west-1.example.com", "Port": 443,
        "ResourcePath": "/api/v1/health", "RequestInterval": 30, "FailureThreshold": 3})["HealthCheck"]["Id"]
    assert not overridden(r53, hc)

    force_unhealthy(r53, hc)
    config = r53.get_health_check(HealthCheckId=hc)["HealthCheck"]["HealthCheckConfig"]
    assert (config["Disabled"], config["Inverted"]) == (True, True) and forced_unhealthy(r53, hc)

    force_unhealthy(r53, hc, forced=False)
    assert not overridden(r53, hc)
