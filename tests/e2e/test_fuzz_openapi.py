"""Fuzz every operation of the generated OpenAPI spec (schemathesis strategies driven by hypothesis):
no input may cause a 5xx, and every JSON error has the one error shape."""

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings


def test_no_input_causes_a_server_error(stack):
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
            response = case.call(base_url=base, headers={**(case.headers or {}), **headers}, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")
            elif response.status_code >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
                assert set(response.json()) == {"error"}, response.text[:300]

        fuzz()
    assert not failures, "\n".join(failures[:10])
