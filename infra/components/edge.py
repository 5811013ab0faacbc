"""API Gateway REST API per region (Lambda proxy to the ``live`` alias, API key + usage plan,
validation, WAF, access logs, custom domains with optional mutual TLS) and the Route 53 failover
records in front of both.

What the caller must know:

* Usage-plan throttling applies only to methods that require an API key, so the proxy method
  requires one (``x-api-key``). Only the routes the app's OpenAPI marks ``security: []``
  (``infra/policy/public_routes.json``: health, the OpenAPI document, the unsubscribe page and its
  RFC 8058 one-click POST) have explicit keyless methods; a recipient's browser or mailbox
  provider has no API key. Each static resource on their paths also gets its own key-requiring
  ``{proxy+}``, so the app's other routes never depend on API Gateway falling back from a
  partially matched static path to the root proxy.
* Every method and integration is in the Deployment's triggers: a changed route redeploys.
* Stage access logs need the account's CloudWatch role for API Gateway (``aws.apigateway.Account``,
  one per account and region); the stage depends on it. It is an account-wide setting: two stacks
  in one account and region manage the same setting (last one wins, same managed policy).
* Mutual TLS: a custom domain with a truststore asks every caller for a client certificate,
  Route 53 health checkers included, which have none. With mTLS on, the execute-api endpoint of the
  main API is disabled (otherwise mTLS could be bypassed), so each region also gets a tiny separate
  REST API, the *public* API, exposing only the public routes (same ``live`` alias) on its own
  execute-api endpoint, without mTLS, behind the same WAF; the Route 53 health checks target that
  (``/v1/api/v1/health``). Unsubscribe links in mails (``EMAILPLATFORM_PUBLIC_BASE_URL``) must
  reach it too: with ``publicRecordName`` and ``apiDomain.<region>.public_certificate_arn`` it gets
  a custom domain without mTLS in each region, behind failover records of its own. Without mTLS
  the main API serves the public routes keyless and the health check targets its execute-api
  stage endpoint directly.
* Failover: the failover record name (``recordName``) must be served by an API Gateway custom
  domain of its own in each region, with a certificate covering that name
  (``apiDomain.<region>.failover_certificate_arn``), mapped to the regional stage; the records alias
  to those domains. The failover domain carries the same truststore as the regional one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.base import child

HEALTH_PATH = ("api", "v1", "health")  # GET /api/v1/health: what the Route 53 health checks call
# (method, path) of every route the app's OpenAPI marks `security: []` (tests/infra checks they agree)
PUBLIC_ROUTES: list[tuple[str, str]] = [
    (m, p) for m, p in json.loads((Path(__file__).resolve().parents[1] / "policy" / "public_routes.json").read_text())]
# Managed rules whose block we turn into count: SizeRestrictions_BODY blocks bodies over 8 KB, and a
# campaign submit with its recipients and variables is larger (the app caps JSON bodies itself).
WAF_COUNT_ONLY = {"AWSManagedRulesCommonRuleSet": [{"name": "SizeRestrictions_BODY", "action_to_use": {"count": {}}}]}
PUSH_TO_CLOUDWATCH = "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"


@dataclass
class ApiArgs:
    prefix: str
    region: str
    function: aws.lambda_.Function
    alias: aws.lambda_.Alias
    key_arn: pulumi.Input[str]
    rate_limit: float
    burst_limit: int
    provider: Any
    domain_name: str | None = None
    certificate_arn: str | None = None
    truststore_uri: str | None = None
    failover_domain_name: str | None = None  # the Route 53 failover record name, served here too
    failover_certificate_arn: str | None = None
    waf_rate_limit: int = 20_000  # requests per IP per 5 minutes; above one Message Centre backend's polling
    # the public (no-mTLS) name unsubscribe links use, served here with its own certificate
    public_domain_name: str | None = None
    public_certificate_arn: str | None = None


def _slug(parts: tuple[str, ...]) -> str:
    return "-".join(p.strip("{}+").replace(".", "-") for p in parts)


def _integrate(name: str, rest: aws.apigateway.RestApi, resource_id: pulumi.Input[str], method: aws.apigateway.Method,
               alias: aws.lambda_.Alias, o: pulumi.ResourceOptions) -> aws.apigateway.Integration:
    return aws.apigateway.Integration(name, rest_api=rest.id, resource_id=resource_id, http_method=method.http_method,
                                      type="AWS_PROXY", integration_http_method="POST", uri=alias.invoke_arn, opts=o)


def _public_routes(name: str, rest: aws.apigateway.RestApi, alias: aws.lambda_.Alias, o: pulumi.ResourceOptions,
                   keyed_proxies: bool, validator: Any = None,
                   ) -> list[tuple[aws.apigateway.Method, aws.apigateway.Integration]]:
    """Explicit keyless methods for PUBLIC_ROUTES; with ``keyed_proxies``, a key-requiring
    ``{proxy+}`` ANY under every static resource created on the way (not where a path variable
    is a sibling: API Gateway allows one variable child per resource)."""
    resources: dict[tuple[str, ...], pulumi.Input[str]] = {(): rest.root_resource_id}
    out: list[tuple[aws.apigateway.Method, aws.apigateway.Integration]] = []
    for method_name, path in PUBLIC_ROUTES:
        parts = tuple(path.strip("/").split("/"))
        for i in range(1, len(parts) + 1):
            if parts[:i] not in resources:
                resources[parts[:i]] = aws.apigateway.Resource(
                    f"{name}-path-{_slug(parts[:i])}", rest_api=rest.id, parent_id=resources[parts[:i - 1]],
                    path_part=parts[i - 1], opts=o).id
        variables = [p.strip("{}") for p in parts if p.startswith("{")]
        slug = "health" if parts == HEALTH_PATH else _slug(parts[2:])  # e.g. email-unsubscribe-token
        m = aws.apigateway.Method(f"{name}-{slug}-{method_name.lower()}", rest_api=rest.id,
                                  resource_id=resources[parts], http_method=method_name, authorization="NONE",
                                  api_key_required=False,
                                  request_parameters={f"method.request.path.{v}": True for v in variables} or None,
                                  request_validator_id=validator.id if validator is not None and variables else None,
                                  opts=o)
        suffix = "lambda" if slug == "health" else f"{method_name.lower()}-lambda"
        out.append((m, _integrate(f"{name}-{slug}-{suffix}", rest, resources[parts], m, alias, o)))
    if keyed_proxies:
        children = {k[:-1] for k in resources if k}
        variable_parent = {k[:-1] for k in resources if k and k[-1].startswith("{")}
        for parts in sorted(k for k in children if k and k not in variable_parent):
            proxy = aws.apigateway.Resource(f"{name}-path-{_slug(parts)}-proxy", rest_api=rest.id,
                                            parent_id=resources[parts], path_part="{proxy+}", opts=o)
            m = aws.apigateway.Method(f"{name}-{_slug(parts)}-proxy-any", rest_api=rest.id, resource_id=proxy.id,
                                      http_method="ANY", authorization="NONE", api_key_required=True,
                                      request_validator_id=validator.id if validator is not None else None, opts=o)
            out.append((m, _integrate(f"{name}-{_slug(parts)}-proxy-lambda", rest, proxy.id, m, alias, o)))
    return out


def _triggers(routes: list[tuple[aws.apigateway.Method, aws.apigateway.Integration]]) -> pulumi.Output[str]:
    """What makes a Deployment stale: any method's key requirement or authorization, any integration's target."""
    parts = [pulumi.Output.all(m.id, m.http_method, m.api_key_required, m.authorization, i.id, i.uri)
             for m, i in routes]
    return pulumi.Output.all(*parts).apply(lambda v: json.dumps(sorted("|".join(map(str, x)) for x in v)))


def _host(url: pulumi.Output[str]) -> pulumi.Output[str]:
    return url.apply(lambda u: u.split("/")[2])


class Api(pulumi.ComponentResource):
    def __init__(self, name: str, args: ApiArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Api", name, None, opts)
        o = child(self, args.provider)
        mtls = {"truststore_uri": args.truststore_uri} if args.truststore_uri else None
        custom_domain = bool(args.domain_name and args.certificate_arn)
        cloudwatch_role = aws.iam.Role(f"{name}-cloudwatch-role", assume_role_policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "apigateway.amazonaws.com"}}]}), opts=o)
        attach = aws.iam.RolePolicyAttachment(f"{name}-cloudwatch-push", role=cloudwatch_role.name,
                                              policy_arn=PUSH_TO_CLOUDWATCH, opts=child(cloudwatch_role, args.provider))
        self.account = aws.apigateway.Account(f"{name}-account", cloudwatch_role_arn=cloudwatch_role.arn,
                                              opts=child(self, args.provider, depends_on=[attach]))
        self.rest = aws.apigateway.RestApi(f"{name}-rest", name=f"{args.prefix}-api",
                                           endpoint_configuration={"types": "REGIONAL"},
                                           disable_execute_api_endpoint=bool(mtls and custom_domain), opts=o)
        validator = aws.apigateway.RequestValidator(f"{name}-validator", rest_api=self.rest.id,
                                                    validate_request_body=True, validate_request_parameters=True, opts=o)
        proxy = aws.apigateway.Resource(f"{name}-proxy", rest_api=self.rest.id, parent_id=self.rest.root_resource_id,
                                        path_part="{proxy+}", opts=o)
        method = aws.apigateway.Method(f"{name}-any", rest_api=self.rest.id, resource_id=proxy.id, http_method="ANY",
                                       authorization="NONE", api_key_required=True,
                                       request_validator_id=validator.id, opts=o)
        integration = _integrate(f"{name}-lambda", self.rest, proxy.id, method, args.alias, o)
        routes = [(method, integration), *_public_routes(name, self.rest, args.alias, o, True, validator)]
        aws.lambda_.Permission(f"{name}-invoke", action="lambda:InvokeFunction", function=args.function.name,
                               qualifier=args.alias.name, principal="apigateway.amazonaws.com",
                               source_arn=self.rest.execution_arn.apply(lambda a: f"{a}/*/*"), opts=o)
        deployment = aws.apigateway.Deployment(f"{name}-deployment", rest_api=self.rest.id,
                                               triggers={"redeploy": _triggers(routes)},
                                               opts=child(self, args.provider, depends_on=[i for _, i in routes]))
        access = aws.cloudwatch.LogGroup(f"{name}-access-logs", name=f"/aws/apigateway/{args.prefix}-api",
                                         retention_in_days=90, kms_key_id=args.key_arn, opts=o)
        self.stage = aws.apigateway.Stage(
            f"{name}-stage", rest_api=self.rest.id, deployment=deployment.id, stage_name="v1", xray_tracing_enabled=True,
            # the route template, never $context.path: a path can hold an address (/suppressions/{email})
            access_log_settings={"destination_arn": access.arn, "format": json.dumps({
                "requestId": "$context.requestId", "ip": "$context.identity.sourceIp", "method": "$context.httpMethod",
                "route": "$context.resourcePath", "status": "$context.status", "latencyMs": "$context.responseLatency",
                "apiKeyId": "$context.identity.apiKeyId", "waf": "$context.wafResponseCode"})},
            opts=child(self, args.provider, depends_on=[self.account]))
        self.plan = plan = aws.apigateway.UsagePlan(f"{name}-plan", name=f"{args.prefix}-default",
                                        api_stages=[{"api_id": self.rest.id, "stage": self.stage.stage_name}],
                                        throttle_settings={"rate_limit": args.rate_limit, "burst_limit": args.burst_limit},
                                        opts=o)
        key = aws.apigateway.ApiKey(f"{name}-message-centre", name=f"{args.prefix}-message-centre", opts=o)
        aws.apigateway.UsagePlanKey(f"{name}-plan-key", key_id=key.id, key_type="API_KEY", usage_plan_id=plan.id, opts=o)
        self.waf = aws.wafv2.WebAcl(
            f"{name}-waf", name=f"{args.prefix}-api", scope="REGIONAL", default_action={"allow": {}},
            visibility_config={"cloudwatch_metrics_enabled": True, "metric_name": f"{args.prefix}-api",
                               "sampled_requests_enabled": True},
            rules=[
                *[{"name": group, "priority": i, "override_action": {"none": {}},
                   "statement": {"managed_rule_group_statement": {
                       "vendor_name": "AWS", "name": group, "rule_action_overrides": WAF_COUNT_ONLY.get(group)}},
                   "visibility_config": {"cloudwatch_metrics_enabled": True, "metric_name": group,
                                         "sampled_requests_enabled": True}}
                  for i, group in enumerate(["AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                                             "AWSManagedRulesAmazonIpReputationList"])],
                {"name": "rate-per-ip", "priority": 10, "action": {"block": {}},
                 "statement": {"rate_based_statement": {"limit": args.waf_rate_limit,
                                                        "aggregate_key_type": "IP"}},
                 "visibility_config": {"cloudwatch_metrics_enabled": True, "metric_name": "rate-per-ip",
                                       "sampled_requests_enabled": True}},
            ], opts=o)
        aws.wafv2.WebAclAssociation(f"{name}-waf-assoc", resource_arn=self.stage.arn, web_acl_arn=self.waf.arn, opts=o)
        self.domain: aws.apigateway.DomainName | None = None
        self.failover_domain: aws.apigateway.DomainName | None = None
        if custom_domain:
            self.domain = aws.apigateway.DomainName(
                f"{name}-domain", domain_name=args.domain_name, regional_certificate_arn=args.certificate_arn,
                endpoint_configuration={"types": "REGIONAL"}, security_policy="TLS_1_2",
                mutual_tls_authentication=mtls, opts=o)
            aws.apigateway.BasePathMapping(f"{name}-mapping", rest_api=self.rest.id, stage_name=self.stage.stage_name,
                                           domain_name=self.domain.domain_name, opts=o)
        if args.failover_domain_name and args.failover_certificate_arn:
            self.failover_domain = aws.apigateway.DomainName(
                f"{name}-failover-domain", domain_name=args.failover_domain_name,
                regional_certificate_arn=args.failover_certificate_arn, endpoint_configuration={"types": "REGIONAL"},
                security_policy="TLS_1_2", mutual_tls_authentication=mtls, opts=o)
            aws.apigateway.BasePathMapping(f"{name}-failover-mapping", rest_api=self.rest.id,
                                           stage_name=self.stage.stage_name,
                                           domain_name=self.failover_domain.domain_name, opts=o)
        # what a Route 53 health checker and a recipient reach without a client certificate
        self.health_path = "/v1/" + "/".join(HEALTH_PATH)
        self.public_domain: aws.apigateway.DomainName | None = None
        self.url: pulumi.Output[str] = (pulumi.Output.concat("https://", self.domain.domain_name) if self.domain
                                        else self.stage.invoke_url)
        if mtls and custom_domain:
            # logical names kept from when it served only the health route
            public_rest = aws.apigateway.RestApi(f"{name}-health-rest", name=f"{args.prefix}-public",
                                                 endpoint_configuration={"types": "REGIONAL"}, opts=o)
            public_routes = _public_routes(f"{name}-health", public_rest, args.alias, o, False)
            aws.lambda_.Permission(f"{name}-health-invoke", action="lambda:InvokeFunction",
                                   function=args.function.name, qualifier=args.alias.name,
                                   principal="apigateway.amazonaws.com",
                                   source_arn=public_rest.execution_arn.apply(lambda a: f"{a}/*/*"), opts=o)
            public_deployment = aws.apigateway.Deployment(
                f"{name}-health-deployment", rest_api=public_rest.id, triggers={"redeploy": _triggers(public_routes)},
                opts=child(self, args.provider, depends_on=[i for _, i in public_routes]))
            public_stage = aws.apigateway.Stage(f"{name}-health-stage", rest_api=public_rest.id,
                                                deployment=public_deployment.id, stage_name="v1", opts=o)
            aws.wafv2.WebAclAssociation(f"{name}-public-waf-assoc", resource_arn=public_stage.arn,
                                        web_acl_arn=self.waf.arn, opts=o)
            self.health_host: pulumi.Output[str] = _host(public_stage.invoke_url)
            self.public_url: pulumi.Output[str] = public_stage.invoke_url
            if args.public_domain_name and args.public_certificate_arn:
                self.public_domain = aws.apigateway.DomainName(
                    f"{name}-public-domain", domain_name=args.public_domain_name,
                    regional_certificate_arn=args.public_certificate_arn, endpoint_configuration={"types": "REGIONAL"},
                    security_policy="TLS_1_2", opts=o)
                aws.apigateway.BasePathMapping(f"{name}-public-mapping", rest_api=public_rest.id,
                                               stage_name=public_stage.stage_name,
                                               domain_name=self.public_domain.domain_name, opts=o)
                self.public_url = pulumi.Output.concat("https://", self.public_domain.domain_name)
        else:
            self.health_host = _host(self.stage.invoke_url)
            self.public_url = self.url
        self.register_outputs({"url": self.url, "health_host": self.health_host, "public_url": self.public_url})


@dataclass
class FailoverDnsArgs:
    zone_id: str
    record_name: str
    primary: Api
    dr: Api
    provider: Any  # Route 53 is global: the primary region's provider
    public_record_name: str | None = None  # unsubscribe links' name: each region's public (no-mTLS) domain


class FailoverDns(pulumi.ComponentResource):
    """PRIMARY/SECONDARY alias records to each region's failover custom domain, each with a health
    check on that region's certificate-free health endpoint (see the module docstring)."""

    def __init__(self, name: str, args: FailoverDnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:FailoverDns", name, None, opts)
        self.health_checks: dict[str, aws.route53.HealthCheck] = {}
        for role, api in (("PRIMARY", args.primary), ("SECONDARY", args.dr)):
            if api.failover_domain is None:
                raise ValueError(f"{role}: the failover record {args.record_name} needs a custom domain in each "
                                 "region (apiDomain.<region>.failover_certificate_arn)")
            check = aws.route53.HealthCheck(f"{name}-{role.lower()}-health", type="HTTPS", fqdn=api.health_host,
                                            port=443, resource_path=api.health_path, failure_threshold=3,
                                            request_interval=10, opts=child(self, args.provider))
            self.health_checks[role] = check
            aws.route53.Record(f"{name}-{role.lower()}", zone_id=args.zone_id, name=args.record_name, type="A",
                               set_identifier=role.lower(), failover_routing_policies=[{"type": role}],
                               health_check_id=check.id,
                               aliases=[{"name": api.failover_domain.regional_domain_name,
                                         "zone_id": api.failover_domain.regional_zone_id,
                                         "evaluate_target_health": True}], opts=child(self, args.provider))
            if args.public_record_name:
                if api.public_domain is None:
                    raise ValueError(f"{role}: the public record {args.public_record_name} needs a public custom "
                                     "domain in each region (apiDomain.<region>.public_certificate_arn, with mTLS)")
                aws.route53.Record(f"{name}-public-{role.lower()}", zone_id=args.zone_id, name=args.public_record_name,
                                   type="A", set_identifier=f"public-{role.lower()}",
                                   failover_routing_policies=[{"type": role}], health_check_id=check.id,
                                   aliases=[{"name": api.public_domain.regional_domain_name,
                                             "zone_id": api.public_domain.regional_zone_id,
                                             "evaluate_target_health": True}], opts=child(self, args.provider))
        self.register_outputs({role: c.id for role, c in self.health_checks.items()})
