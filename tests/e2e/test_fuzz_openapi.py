"""Fuzz every operation of the generated OpenAPI spec (schemathesis strategies driven by hypothesis)
with schemathesis's response checks: no 5xx, no status code the document does not declare,
declared content types and error schema, unsupported methods refused, authentication enforced."""

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis import checks
from schemathesis.core.failures import FailureGroup

# Every response check schemathesis has, except: positive_data_acceptance (schema-valid data can
# still be refused by the rules, e.g. an unknown template id is a 404), the stateful
# use_after_free/ensure_resource_availability (need links between operations), and
# max_response_time (this is not a load test).
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance,
          checks.negative_data_rejection, checks.missing_required_header, checks.unsupported_method,
          checks.ignored_auth]


def test_no_input_causes_a_server_error_or_an_undocumented_answer(stack):
    base = f"http://127.0.0.1:{stack.settings.api_port}"
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/email/openapi.json")
    headers = {"X-API-Key": stack.tenant["api_key"]}
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 20
    failures = []
    for op in operations:

        @given(case=op.as_strategy())
        @hsettings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                   database=None)
        def fuzz(case):
            try:
                response = case.call_and_validate(base_url=base, headers={**(case.headers or {}), **headers},
                                                  timeout=30, checks=CHECKS)
            except (FailureGroup, AssertionError) as exc:
                failures.append(f"{case.method} {case.formatted_path}: {str(exc)[:400]}")
                return
            if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith(
                    "application/json"):
                assert set(response.json()) == {"error"}, response.text[:300]

        fuzz()
    assert not failures, "\n".join(failures[:10])
