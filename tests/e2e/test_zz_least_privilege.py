"""Least privilege that cannot drift: what each component really did on AWS during the e2e run
must be allowed by its IAM policy in infra/, and its policy must grant nothing it never used
beyond the documented list. Runs last in the e2e tier; exercises a full campaign itself too."""

import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

from infra.policies import COMPONENT_ACTIONS, NOT_EXERCISED_LOCALLY, action_for
from tests.e2e.test_api import HTML

ERASED = "lp.erased@example.org"


def _erase(api):
    """An erasure of a suppressed person whose rows are in stored CSVs: the controller lists, reads,
    rewrites and deletes object versions and swaps the plain suppression for its hash. Done here so
    the test does not depend on test_privacy having run on the same stack."""
    api.call("PUT", f"/suppressions/{ERASED}", json={})
    job = api.call("POST", "/privacy/erasures", json={"email": ERASED}, expect=(202,))
    deadline = time.monotonic() + 180
    while api.call("GET", f"/privacy/erasures/{job['erasure_id']}")["status"] != "COMPLETED":
        assert time.monotonic() < deadline, "erasure did not complete"
        time.sleep(0.5)


def _exercise(api):
    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        tid = api.create_template("LP", "S {{ first_name }}", HTML)
        up = api.upload_csv("email,first_name\nsuccess@simulator.amazonses.com,A\nbounce@simulator.amazonses.com,B\n"
                            f"{ERASED},C\n")
        tx = api.call("POST", "/campaigns", headers={"Idempotency-Key": "lp-1"}, json={
            "template_id": tid, "upload_id": up["upload_id"], "callback_url": f"http://127.0.0.1:{srv.server_port}/cb"})
        later = api.call("POST", "/campaigns", json={  # a campaign not released yet takes a test send
            "template_id": tid, "upload_id": up["upload_id"],
            "schedule": {"send_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}})
        api.call("POST", f"/campaigns/{later['transaction_id']}/test-send",
                 json={"to": "success@simulator.amazonses.com", "data": {"first_name": "T"}})
        api.call("POST", f"/campaigns/{later['transaction_id']}/cancel")
        api.wait_for(tx["transaction_id"], {"COMPLETED"}, timeout=180)
        api.call("GET", "/privacy/subjects/success@simulator.amazonses.com")  # reads the tenant's CSVs (S3 lists)
        api.call("PUT", "/suppressions/x@example.org", json={})
        api.call("DELETE", "/suppressions/x@example.org")
        api.call("POST", "/webhook-secret/rotate")
        _erase(api)
    finally:
        srv.shutdown()


def test_each_component_uses_exactly_what_its_policy_grants(api, aws_calls):
    _exercise(api)
    for component, granted in COMPONENT_ACTIONS.items():
        used = {action_for(op) for op in aws_calls.by_component.get(component, set())}
        assert used, f"no AWS call attributed to {component}"
        missing = used - set(granted)
        assert not missing, f"{component} performs {sorted(missing)} which its IAM policy does not grant"
        unused = set(granted) - used - NOT_EXERCISED_LOCALLY.get(component, set())
        assert not unused, f"{component}'s policy grants {sorted(unused)} which it never used"
