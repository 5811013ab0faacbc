"""API Gateway REST API per region (Lambda proxy, keys + usage plan, validation, WAF, access logs,
custom domain with optional mutual TLS) and the Route 53 failover records in front of both."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.components.base import child


@dataclass
class ApiArgs:
    prefix: str
    region: str
    function: aws.lambda_.Function
    key_arn: pulumi.Input[str]
    rate_limit: float
    burst_limit: int
    provider: Any
    domain_name: str | None = None
    certificate_arn: str | None = None
    truststore_uri: str | None = None


class Api(pulumi.ComponentResource):
    def __init__(self, name: str, args: ApiArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:Api", name, None, opts)
        o = child(self, args.provider)
        self.rest = aws.apigateway.RestApi(f"{name}-rest", name=f"{args.prefix}-api",
                                           endpoint_configuration={"types": "REGIONAL"}, opts=o)
        validator = aws.apigateway.RequestValidator(f"{name}-validator", rest_api=self.rest.id,
                                                    validate_request_body=True, validate_request_parameters=True, opts=o)
        proxy = aws.apigateway.Resource(f"{name}-proxy", rest_api=self.rest.id, parent_id=self.rest.root_resource_id,
                                        path_part="{proxy+}", opts=o)
        method = aws.apigateway.Method(f"{name}-any", rest_api=self.rest.id, resource_id=proxy.id, http_method="ANY",
                                       authorization="NONE", api_key_required=False,
                                       request_validator_id=validator.id, opts=o)
        integration = aws.apigateway.Integration(f"{name}-lambda", rest_api=self.rest.id, resource_id=proxy.id,
                                                 http_method=method.http_method, type="AWS_PROXY",
                                                 integration_http_method="POST", uri=args.function.invoke_arn, opts=o)
        aws.lambda_.Permission(f"{name}-invoke", action="lambda:InvokeFunction", function=args.function.name,
                               principal="apigateway.amazonaws.com",
                               source_arn=self.rest.execution_arn.apply(lambda a: f"{a}/*/*"), opts=o)
        deployment = aws.apigateway.Deployment(f"{name}-deployment", rest_api=self.rest.id,
                                               triggers={"redeploy": integration.id},
                                               opts=child(self, args.provider, depends_on=[integration]))
        access = aws.cloudwatch.LogGroup(f"{name}-access-logs", name=f"/aws/apigateway/{args.prefix}-api",
                                         retention_in_days=90, kms_key_id=args.key_arn, opts=o)
        self.stage = aws.apigateway.Stage(
            f"{name}-stage", rest_api=self.rest.id, deployment=deployment.id, stage_name="v1", xray_tracing_enabled=True,
            access_log_settings={"destination_arn": access.arn, "format": json.dumps({
                "requestId": "$context.requestId", "ip": "$context.identity.sourceIp", "method": "$context.httpMethod",
                "path": "$context.path", "status": "$context.status", "latencyMs": "$context.responseLatency",
                "apiKeyId": "$context.identity.apiKeyId", "waf": "$context.wafResponseCode"})}, opts=o)
        plan = aws.apigateway.UsagePlan(f"{name}-plan", name=f"{args.prefix}-default",
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
                   "statement": {"managed_rule_group_statement": {"vendor_name": "AWS", "name": group}},
                   "visibility_config": {"cloudwatch_metrics_enabled": True, "metric_name": group,
                                         "sampled_requests_enabled": True}}
                  for i, group in enumerate(["AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                                             "AWSManagedRulesAmazonIpReputationList"])],
                {"name": "rate-per-ip", "priority": 10, "action": {"block": {}},
                 "statement": {"rate_based_statement": {"limit": 2000, "aggregate_key_type": "IP"}},
                 "visibility_config": {"cloudwatch_metrics_enabled": True, "metric_name": "rate-per-ip",
                                       "sampled_requests_enabled": True}},
            ], opts=o)
        aws.wafv2.WebAclAssociation(f"{name}-waf-assoc", resource_arn=self.stage.arn, web_acl_arn=self.waf.arn, opts=o)
        self.domain = None
        if args.domain_name and args.certificate_arn:
            mtls = {"truststore_uri": args.truststore_uri} if args.truststore_uri else None
            self.domain = aws.apigateway.DomainName(
                f"{name}-domain", domain_name=args.domain_name, regional_certificate_arn=args.certificate_arn,
                endpoint_configuration={"types": "REGIONAL"}, security_policy="TLS_1_2",
                mutual_tls_authentication=mtls, opts=o)
            aws.apigateway.BasePathMapping(f"{name}-mapping", rest_api=self.rest.id, stage_name=self.stage.stage_name,
                                           domain_name=self.domain.domain_name, opts=o)
        self.register_outputs({"invoke_url": self.stage.invoke_url})


@dataclass
class FailoverDnsArgs:
    zone_id: str
    record_name: str
    primary: Api
    dr: Api
    health_path: str = "/v1/api/v1/health"


class FailoverDns(pulumi.ComponentResource):
    """PRIMARY/SECONDARY records with a health check on each region's API."""

    def __init__(self, name: str, args: FailoverDnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:FailoverDns", name, None, opts)
        for role, api in (("PRIMARY", args.primary), ("SECONDARY", args.dr)):
            if api.domain is not None:  # the regional custom domain (its certificate matches the name)
                fqdn, path = api.domain.domain_name, "/api/v1/health"
            else:
                fqdn, path = api.stage.invoke_url.apply(lambda u: u.split("/")[2]), args.health_path
            check = aws.route53.HealthCheck(f"{name}-{role.lower()}-health", type="HTTPS", fqdn=fqdn, port=443,
                                            resource_path=path, failure_threshold=3, request_interval=10,
                                            opts=pulumi.ResourceOptions(parent=self))
            record: dict[str, Any] = {"zone_id": args.zone_id, "name": args.record_name, "set_identifier": role.lower(),
                                      "failover_routing_policies": [{"type": role}], "health_check_id": check.id}
            if api.domain is not None:
                record.update(type="A", aliases=[{"name": api.domain.regional_domain_name,
                                                  "zone_id": api.domain.regional_zone_id,
                                                  "evaluate_target_health": True}])
            else:
                record.update(type="CNAME", ttl=30, records=[fqdn])
            aws.route53.Record(f"{name}-{role.lower()}", **record, opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({})
