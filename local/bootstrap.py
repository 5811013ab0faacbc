"""Create every resource described in ``core.schema`` on the moto server. Idempotent."""

from __future__ import annotations

import json
import threading
from typing import Any

from botocore.exceptions import ClientError

from config.settings import Settings
from core import schema
from core.adapters.aws import client
from core.observability import log
from local.ses_simulator import Rates, event_destination_name, v1_event_type

_ADMIN_CLIENTS: dict[tuple[str | None, str, str], Any] = {}
_ADMIN_CLIENTS_LOCK = threading.Lock()


def _admin_client(settings: Settings, service: str, region: str) -> Any:
    """The client creating resources on this endpoint and region, built once per process: a boto3
    client costs ~12 ms of CPU to build, and every test creates its resources (six clients) anew.
    Shared clients are thread-safe; these carry no call counter (creating resources is not a
    component's work)."""
    key = (settings.aws_endpoint_url, region, service)
    with _ADMIN_CLIENTS_LOCK:
        if key not in _ADMIN_CLIENTS:
            _ADMIN_CLIENTS[key] = client(settings, service, region)
        return _ADMIN_CLIENTS[key]


EMBEDDED_ACCOUNT = "123456789012"  # moto's account


def create_resources(settings: Settings, region: str | None = None, rates: Rates | None = None) -> dict[str, Any]:
    """``rates``: the simulated SES's delivery/open/click/complaint rates for this configuration
    set (``Rates()`` if None), carried by its event destination (see local/ses_simulator.py)."""
    region = region or settings.region
    ddb = _admin_client(settings, "dynamodb", region)
    s3 = _admin_client(settings, "s3", region)
    sqs = _admin_client(settings, "sqs", region)
    ses = _admin_client(settings, "sesv2", region)
    t = schema.MAIN_TABLE
    try:
        ddb.create_table(
            TableName=settings.table_name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in t.string_attributes],
            KeySchema=[{"AttributeName": t.hash_key, "KeyType": "HASH"}, {"AttributeName": t.range_key, "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {"IndexName": ix.name,
                 "KeySchema": [{"AttributeName": ix.hash_key, "KeyType": "HASH"},
                               {"AttributeName": ix.range_key, "KeyType": "RANGE"}],
                 "Projection": ({"ProjectionType": "ALL"} if ix.include is None
                                else {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(ix.include)})}
                for ix in t.indexes
            ],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": t.stream_view},
        )
        ddb.update_time_to_live(TableName=settings.table_name,
                                TimeToLiveSpecification={"Enabled": True, "AttributeName": t.ttl_attribute})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    for b in schema.BUCKETS:
        name = settings.bucket(b.purpose, region)
        try:
            kw: dict[str, Any] = {"Bucket": name}
            if region != "us-east-1":
                kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
            s3.create_bucket(**kw)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        if b.replicated:  # replication needs versions; the events bucket keeps none (a delete removes)
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={
            "Rules": [_lifecycle_rule(r) for r in schema.lifecycle_rules(b)]})
    arns = {}
    for q in schema.QUEUES:
        attrs = {"FifoQueue": "true"} if q.fifo else {}
        dlq_url = sqs.create_queue(QueueName=q.dlq_name(settings.name_prefix), Attributes=attrs)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = sqs.create_queue(QueueName=q.name(settings.name_prefix), Attributes={
            **attrs, "VisibilityTimeout": str(q.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": q.max_receive_count}),
        })["QueueUrl"]
        arns[q.purpose] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    domain = settings.default_from.split("@")[-1]
    try:
        ses.create_email_identity(EmailIdentity=domain)
    except ClientError as exc:
        if not exc.response["Error"]["Code"].endswith("AlreadyExistsException"):
            raise
    try:
        ses.create_configuration_set(ConfigurationSetName=settings.ses_configuration_set)
    except ClientError as exc:
        if not exc.response["Error"]["Code"].endswith("AlreadyExistsException"):
            raise
    stream_arn = _event_stream(settings, region, arns)
    _event_destination(settings, region, stream_arn, rates or Rates())
    return {"queues": arns, "streams": {schema.SES_EVENTS_STREAM.purpose: stream_arn}}


def _event_stream(settings: Settings, region: str, queues: dict[str, str]) -> str:
    """SES events' way in, as infra builds it: a Firehose stream writing objects to the events
    bucket, whose ObjectCreated notifications go to the events queue. Returns the stream's ARN."""
    stream = schema.SES_EVENTS_STREAM
    firehose = _admin_client(settings, "firehose", region)
    s3 = _admin_client(settings, "s3", region)
    name = stream.name(settings.name_prefix)
    bucket = settings.bucket(stream.bucket, region)
    try:
        firehose.create_delivery_stream(
            DeliveryStreamName=name, DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": f"arn:aws:iam::{EMBEDDED_ACCOUNT}:role/{name}-firehose",
                "BucketARN": f"arn:aws:s3:::{bucket}", "Prefix": stream.prefix,
                "ErrorOutputPrefix": stream.error_prefix, "CompressionFormat": "UNCOMPRESSED",
                "BufferingHints": {"IntervalInSeconds": stream.buffer_seconds, "SizeInMBs": stream.buffer_mb}})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": queues[stream.queue], "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": stream.prefix}]}}}]})
    return firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]["DeliveryStreamARN"]


def _lifecycle_rule(r: schema.LifecycleRule) -> dict[str, Any]:
    """A ``core.schema`` lifecycle rule as S3's API takes it (moto stores it; expiry is AWS's job)."""
    rule: dict[str, Any] = {"ID": r.id, "Status": "Enabled",
                            "Filter": {"Tag": {"Key": r.tag[0], "Value": r.tag[1]}} if r.tag else {"Prefix": ""}}
    if r.expire_days:
        rule["Expiration"] = {"Days": r.expire_days}
    if r.noncurrent_days:
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": r.noncurrent_days}
    if r.abort_multipart_days:
        rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": r.abort_multipart_days}
    return rule


def _event_destination(settings: Settings, region: str, stream_arn: str, rates: Rates) -> None:
    """The configuration set publishes every SES event type to the SES events stream, as infra's
    ConfigurationSetEventDestination does (the SES v1 call: moto implements only that one)."""
    ses = _admin_client(settings, "ses", region)
    name = event_destination_name(settings.ses_configuration_set, rates)
    try:
        ses.create_configuration_set_event_destination(
            ConfigurationSetName=settings.ses_configuration_set,
            EventDestination={"Name": name, "Enabled": True,
                              "MatchingEventTypes": [v1_event_type(t) for t in schema.SES_EVENT_TYPES],
                              "KinesisFirehoseDestination": {
                                  "IAMRoleARN": f"arn:aws:iam::{EMBEDDED_ACCOUNT}:role/{settings.name_prefix}-ses-events",
                                  "DeliveryStreamARN": stream_arn}})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EventDestinationAlreadyExists":
            raise
        current = ses.describe_configuration_set(ConfigurationSetName=settings.ses_configuration_set,
                                                 ConfigurationSetAttributeNames=["eventDestinations"])
        names = [d.get("Name") for d in current.get("EventDestinations") or [] if d]
        if name not in names:  # moto cannot update a destination: another rate setting stays in effect
            log.warning("ses event destination of other rates in effect", configuration_set=settings.ses_configuration_set,
                        wanted=name, in_effect=names)
