"""Deploy contract: the Lambda zip imports and serves with only its own contents and the environment
infra/program.py gives each function.

The artifact is built by the Makefile's own targets from requirements-lambda.txt, for this machine's
platform (the deployed one is arm64: its compiled wheels cannot load here). Each function runs in a
subprocess whose ``sys.path`` is the unpacked zip plus the standard library, with the environment
read from the Pulumi program under mocks. Overridden, and only these: the SDK endpoint (the moto
server), ``EMAILPLATFORM_ENVIRONMENT`` (prod refuses an endpoint override, see the test that the
unchanged environment loads as prod) and ``EMAILPLATFORM_OPENSEARCH_ENDPOINT`` (the mocks' domain
does not exist; analytics fall back to the embedded store). The rest a Lambda runtime provides
(credentials, ``AWS_REGION``).

The first run installs the pinned wheels (from the pip cache or PyPI) under build/contract/, keyed
by the lock file's hash; later runs only copy, zip and unzip (seconds).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from core import schema
from core.domain.statuses import MessageStatus
from tests.conftest import load_event
from tests.infra.test_infra import CFG, run_program

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements-lambda.txt"
FUNCTIONS = ("api", "sender", "ses_events")
MAX_ZIP_BYTES = 50 * 1024 * 1024  # direct upload (the Pulumi program uploads the file)
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024

# The Lambda runtime's role, reduced: import the handler at cold start, then one JSON event per line
# on stdin → one line ``@@RESULT@@ <json>`` on stdout (logs share stdout, as on Lambda).
DRIVER = r'''
import sys
artifact = sys.argv[1]
sys.path[:] = [artifact] + [p for p in sys.path if p.startswith(sys.argv[2])]
import importlib, json, traceback

class Context:
    function_name = sys.argv[3]
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:" + sys.argv[3]
    def __init__(self, n):
        self.aws_request_id = "req-%d" % n
    def get_remaining_time_in_millis(self):
        return 600000

def answer(obj):
    sys.stdout.write("@@RESULT@@ " + json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()

try:
    module = importlib.import_module(sys.argv[4])
    loaded = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
    answer({"ok": True, "outside": [f for f in loaded if not f.startswith((artifact, sys.argv[2]))]})
except BaseException as exc:
    answer({"ok": False, "error": traceback.format_exc()})
    raise SystemExit(1)
for n, line in enumerate(sys.stdin):
    try:
        answer({"ok": True, "response": module.handler(json.loads(line), Context(n))})
    except BaseException as exc:
        answer({"ok": False, "error": traceback.format_exc()})
'''


def _run(cmd: list[str], **kw: Any) -> None:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """`make lambda-zip` for this platform; the zip unpacked into a fresh directory."""
    key = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    platform_tag = f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}"
    deps_dir = REPO / "build" / "contract" / f"deps-{platform_tag}-{key}"
    out = tmp_path_factory.mktemp("lambda")
    zip_path = out / "lambda.zip"
    _run(["make", "--no-print-directory", "lambda-zip", "LAMBDA_PLATFORM=", f"LAMBDA_DEPS_DIR={deps_dir}",
          f"LAMBDA_DIR={out / 'build'}", f"LAMBDA_ZIP={zip_path}"], timeout=900)
    unpacked = out / "unzipped"
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        unzipped_bytes = sum(i.file_size for i in zf.infolist())
        zf.extractall(unpacked)
    assert zip_path.stat().st_size <= MAX_ZIP_BYTES, f"zip is {zip_path.stat().st_size} bytes"
    assert unzipped_bytes <= MAX_UNZIPPED_BYTES, f"unzipped {unzipped_bytes} bytes"
    assert "handlers/api.py" in names and "config/settings.py" in names
    assert not any(n.split("/")[0] in ("moto", "pulumi", "pulumi_aws", "pytest", "local", "tests", "infra")
                   for n in names)
    return unpacked


@pytest.fixture(scope="module")
def infra_env() -> dict[str, dict[str, str]]:
    """What infra/program.py sets: each primary function's variables and the controller's container."""
    cfg = dataclasses.replace(CFG, prefix=f"c{uuid.uuid4().hex[:10]}")
    resources, _ = run_program(cfg)
    env = {fn: next(dict(r.props["environment"]["variables"]) for r in resources
                    if r.type == "aws:lambda/function:Function" and r.name == f"primary-functions-{fn}")
           for fn in FUNCTIONS}
    (task,) = [r for r in resources if r.type == "aws:ecs/taskDefinition:TaskDefinition"
               and r.name.startswith("primary-")]
    env["controller"] = {e["name"]: e["value"] for e in json.loads(task.props["containerDefinitions"])[0]["environment"]}
    return {component: {k: _aws_shaped(v) for k, v in variables.items()} for component, variables in env.items()}


def _aws_shaped(value: str) -> str:
    """The mocks make ARNs as ``arn:aws:<type token>:<region>:<account>:<name>`` (``arn:aws:kms/key:…``,
    ``arn:aws:kms/replicaKey:…``); AWS's key ARNs are ``arn:aws:kms:<region>:<account>:key/<id>``.
    Nothing else is changed."""
    for token in ("arn:aws:kms/key:", "arn:aws:kms/replicaKey:"):
        if value.startswith(token):
            region, account, name = value.removeprefix(token).split(":", 2)
            return f"arn:aws:kms:{region}:{account}:key/{name}"
    return value


def local_overrides(moto_url: str) -> dict[str, str | None]:
    return {"EMAILPLATFORM_AWS_ENDPOINT_URL": moto_url, "EMAILPLATFORM_ENVIRONMENT": "test",
            "EMAILPLATFORM_OPENSEARCH_ENDPOINT": None, "EMAILPLATFORM_PEER_OPENSEARCH_ENDPOINT": None}


def runtime_env(variables: dict[str, str], moto_url: str) -> dict[str, str]:
    env = {**variables, **local_overrides(moto_url)}
    region = variables["EMAILPLATFORM_REGION"]
    env.update(AWS_REGION=region, AWS_DEFAULT_REGION=region, AWS_ACCESS_KEY_ID="local",
               AWS_SECRET_ACCESS_KEY="local", PATH="/usr/bin:/bin", TZ="UTC", LANG="C.UTF-8")
    return {k: v for k, v in env.items() if v is not None}


def settings_from(env: dict[str, str], monkeypatch) -> Any:
    """Settings as a process with exactly ``env`` would load them (nothing from this process's env)."""
    with monkeypatch.context() as m:
        for k in [k for k in os.environ if k.startswith("EMAILPLATFORM_")]:
            m.delenv(k)
        for k, v in env.items():
            if k.startswith("EMAILPLATFORM_"):
                m.setenv(k, v)
        return load_settings()


class LambdaProcess:
    """One function's execution environment: a cold start, then invocations."""

    def __init__(self, artifact: Path, function: str, module: str, env: dict[str, str], log: Path):
        stdlib = sysconfig.get_paths()["stdlib"].rsplit("/lib/", 1)[0]
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", DRIVER, str(artifact), stdlib, function, module],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, cwd=artifact)
        self.logpath = log
        self.cold_start = self._answer()

    def _answer(self) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith("@@RESULT@@ "):
                return json.loads(line.removeprefix("@@RESULT@@ "))
        raise AssertionError(f"the function exited: {self.logpath.read_text()[-3000:]}")

    def invoke(self, event: dict[str, Any]) -> Any:
        self.proc.stdin.write(json.dumps(event) + "\n")
        self.proc.stdin.flush()
        result = self._answer()
        assert result["ok"], result["error"]
        return result["response"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.log.close()


def api_event(method: str, path: str, key: str | None = None, body: Any = None,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST proxy event, as the stage's Lambda integration sends it."""
    h = {"Host": "api.example.com", "Content-Type": "application/json", **(headers or {})}
    if key:
        h["X-API-Key"] = key
    return {"resource": "/{proxy+}", "path": path, "httpMethod": method, "headers": h,
            "multiValueHeaders": {k: [v] for k, v in h.items()}, "queryStringParameters": None,
            "multiValueQueryStringParameters": None, "pathParameters": {"proxy": path.lstrip("/")},
            "stageVariables": None, "isBase64Encoded": False,
            "body": json.dumps(body) if body is not None else None,
            "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": method, "path": f"/v1{path}",
                               "stage": "v1", "requestId": str(uuid.uuid4()), "accountId": "123456789012",
                               "identity": {"sourceIp": "203.0.113.7", "userAgent": "contract-test"},
                               "requestTimeEpoch": 1767261600000}}


def sqs_event(bodies: list[str], queue: str) -> dict[str, Any]:
    """An SQS event source mapping's batch."""
    return {"Records": [{"messageId": str(uuid.uuid4()), "receiptHandle": f"rh-{i}", "body": b,
                         "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1767261600000",
                                        "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1767261600000"},
                         "messageAttributes": {}, "md5OfBody": hashlib.md5(b.encode()).hexdigest(),
                         "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:eu-west-1:123456789012:{queue}",
                         "awsRegion": "eu-west-1"} for i, b in enumerate(bodies)]}


def test_the_infra_environment_is_a_valid_production_configuration(infra_env, monkeypatch):
    """Unchanged, every function's and the controller's environment loads as prod."""
    for component, env in infra_env.items():
        s = settings_from(env, monkeypatch)
        assert s.environment == "prod" and s.unsubscribe_secret_id and s.kms_key_arn and s.peer_kms_key_arn, component
        assert s.public_base_url.startswith("https://"), component


def test_every_handler_imports_from_the_zip_alone(artifact, infra_env, moto_server, tmp_path):
    for fn in FUNCTIONS:
        lam = LambdaProcess(artifact, fn, f"handlers.{fn}", runtime_env(infra_env[fn], moto_server.url),
                            tmp_path / f"{fn}.log")
        try:
            assert lam.cold_start["ok"], lam.cold_start.get("error")
            assert lam.cold_start["outside"] == [], f"{fn} loaded modules from outside the zip"
        finally:
            lam.close()


def test_a_campaign_goes_through_the_packaged_handlers(artifact, infra_env, moto_server, tmp_path, monkeypatch):
    from controller.jobs import Controller
    from core.adapters.aws import client
    from core.bootstrap import bootstrap
    from core.services.tenants import ensure_tenant
    from local.bootstrap import create_resources

    envs = {c: runtime_env(e, moto_server.url) for c, e in infra_env.items()}
    settings = settings_from(envs["controller"], monkeypatch)
    # GIVEN what `pulumi up` and the SRE procedure leave behind: the resources, the unsubscribe key
    create_resources(settings)
    key = secrets.token_urlsafe(32)
    client(settings, "secretsmanager").create_secret(Name=settings.unsubscribe_secret_id, SecretString=key)
    ses = client(settings, "ses")
    sent_before = ses.get_send_quota()["SentLast24Hours"]
    deps = bootstrap(settings)
    assert deps.settings.unsubscribe_secret == key
    tenant = ensure_tenant(deps.store, deps.secrets, "acme")
    lambdas = {fn: LambdaProcess(artifact, fn, f"handlers.{fn}", envs[fn], tmp_path / f"{fn}.log") for fn in FUNCTIONS}
    try:
        api = lambdas["api"]
        health = api.invoke(api_event("GET", "/api/v1/health"))
        assert health["statusCode"] == 200 and json.loads(health["body"]) == {"status": "ok"}
        listed = api.invoke(api_event("GET", "/api/v1/email/campaigns", tenant["api_key"]))
        assert listed["statusCode"] == 200, listed
        assert api.invoke(api_event("GET", "/api/v1/email/campaigns"))["statusCode"] == 401

        # WHEN Message Centre registers a template, uploads recipients and submits
        s3 = client(settings, "s3")
        t = api.invoke(api_event("POST", "/api/v1/email/templates", tenant["api_key"],
                                 {"name": "Welcome", "subject": "Welcome {{ first_name }}"}))
        assert t["statusCode"] == 201, t
        t = json.loads(t["body"])
        s3.put_object(Bucket=settings.bucket("templates"), Key=t["upload"]["fields"]["key"],
                      Body=b"<p>Hello {{ first_name }}</p>", ContentType="text/html")
        confirmed = api.invoke(api_event("POST", f"/api/v1/email/templates/{t['template_id']}/confirm",
                                         tenant["api_key"]))
        assert confirmed["statusCode"] == 200, confirmed
        u = api.invoke(api_event("POST", "/api/v1/email/uploads", tenant["api_key"], {}))
        assert u["statusCode"] == 201, u
        u = json.loads(u["body"])
        rows = io.StringIO()
        w = csv.writer(rows)
        w.writerow(["email", "first_name"])
        recipients = [f"user{i}@customer.example.org" for i in range(3)]
        w.writerows([r, f"User{i}"] for i, r in enumerate(recipients))
        bucket, csv_key = u["csv_file_url"].removeprefix("s3://").split("/", 1)
        s3.put_object(Bucket=bucket, Key=csv_key, Body=rows.getvalue().encode(), ContentType="text/csv")
        submitted = api.invoke(api_event("POST", "/api/v1/email/campaigns", tenant["api_key"],
                                         {"template_id": t["template_id"], "upload_id": u["upload_id"]},
                                         {"Idempotency-Key": str(uuid.uuid4())}))
        assert submitted["statusCode"] == 202, submitted
        tx_id = json.loads(submitted["body"])["transaction_id"]

        # AND the controller (its own environment) ingests and dispatches
        controller = Controller(deps, "contract-controller")
        messages: list[dict[str, Any]] = []
        for _ in range(5):
            controller.run_once()
            messages += deps.send_queue.receive(10, wait_seconds=0)
            if messages:
                break
        assert messages, "the controller dispatched nothing"

        # AND the send queue's event source mapping hands the message to the packaged sender
        out = lambdas["sender"].invoke(sqs_event([m["Body"] for m in messages], settings.queue("send")))
        assert out == {"batchItemFailures": []}

        # THEN SES accepted one mail per recipient, and the API reports the campaign sent
        assert ses.get_send_quota()["SentLast24Hours"] - sent_before == len(recipients)
        for _ in range(3):
            controller.run_once()
        status = json.loads(api.invoke(api_event("GET", f"/api/v1/email/campaigns/{tx_id}", tenant["api_key"]))["body"])
        assert status["status"] in ("SENT", "COMPLETED"), status

        # AND the packaged events handler records SES's Delivery event as it arrives on AWS: Firehose
        # wrote it to the events bucket, S3 notified the events queue of the object (SES → Firehose → S3 → SQS)
        batch = deps.store.batches(tx_id)[0]
        message = next(iter(deps.store.message_statuses(batch.batch_id)))
        delivery = load_event("ses_delivery.json")
        delivery["mail"]["tags"].update(tenant_id=["acme"], transaction_id=[tx_id], batch_id=[batch.batch_id],
                                        message_id=[message["message_id"]])
        delivery["mail"]["destination"] = [message.get("email") or recipients[0]]
        events_bucket = settings.bucket(schema.SES_EVENTS_STREAM.bucket)
        notification = load_event("s3_object_created.json")
        created = notification["Records"][0]["s3"]
        body = json.dumps(delivery).encode() + b"\n"  # Firehose: one newline-terminated record per event
        s3.put_object(Bucket=events_bucket, Key=created["object"]["key"], Body=body)
        created["bucket"].update(name=events_bucket, arn=f"arn:aws:s3:::{events_bucket}")
        created["object"]["size"] = len(body)
        out = lambdas["ses_events"].invoke(sqs_event([json.dumps(notification)], settings.queue("ses-events")))
        assert out == {"batchItemFailures": []}
        # THEN the message is delivered, and the object, read and recorded, is deleted (the bucket holds
        # only what is in flight)
        assert deps.store.get_message(batch.batch_id, message["message_id"]).status == MessageStatus.DELIVERED
        with pytest.raises(s3.exceptions.ClientError):
            s3.head_object(Bucket=events_bucket, Key=created["object"]["key"])
    finally:
        for lam in lambdas.values():
            lam.close()
