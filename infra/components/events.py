"""SES events' way to the events queue in one region, as ``core.schema.SES_EVENTS_STREAM`` describes
it (local/bootstrap.py builds the same on the embedded stack): the configuration set's event
destination puts every event to an Amazon Data Firehose stream; the stream writes the events of each
buffering interval as one object (JSON lines, uncompressed: core/services/event_sources.py reads
them) under ``events/`` in the region's SES events bucket; the bucket's ObjectCreated notifications
go to the events queue, which the ses_events Lambda consumes.

What AWS checks and moto does not, and how it is met (infra/policy/rules.py states each):

* SES assumes the destination's role to put records: the role trusts ``ses.amazonaws.com`` for this
  account's configuration set only (``aws:SourceAccount``, ``aws:SourceArn``) and may put records to
  this stream only.
* Firehose assumes the stream's role to write the bucket: trusted by ``firehose.amazonaws.com`` for
  this account (``sts:ExternalId``, the account id, as Firehose's documentation has it); S3 on this bucket, the key through S3 only, its own log stream.
* S3 validates the queue when the notification configuration is put ("Unable to validate the
  following destination configurations"): the queue policy letting ``s3.amazonaws.com`` send for
  this bucket is created first (``depends_on``), and the queue's key lets S3 use it
  (infra/components/security.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from core import schema
from infra.components.base import child

# infra's event destination; the embedded stack's name carries its simulated rates (local/ses_simulator.py)
EVENT_DESTINATION = "to-firehose"
FIREHOSE_LOG_STREAM = "DestinationDelivery"  # the log stream Firehose writes delivery errors to


def configuration_set_arn(region: str, account_id: str, name: str) -> str:
    """What SES names as ``aws:SourceArn`` when it assumes a role for this configuration set."""
    return f"arn:aws:ses:{region}:{account_id}:configuration-set/{name}"


@dataclass
class SesEventStreamArgs:
    prefix: str
    region: str
    account_id: pulumi.Input[str]
    key_arn: pulumi.Input[str]  # this region's key: the stream at rest, the objects, the queue
    bucket: aws.s3.Bucket  # the SES events bucket (schema: not replicated, unversioned, days of expiry)
    queue: aws.sqs.Queue  # the SES events queue
    configuration_set: aws.sesv2.ConfigurationSet
    provider: Any
    stream: schema.EventStream = schema.SES_EVENTS_STREAM
    log_retention_days: int = 30
    # The name the queue's policy had when SNS delivered to it (a child of the queue). An SQS queue
    # has one policy: as an alias it is rewritten in place. As a new resource the old one would be
    # deleted after it was created, taking the queue's policy with it (S3 then drops notifications).
    queue_policy_was: str | None = None


class SesEventStream(pulumi.ComponentResource):
    def __init__(self, name: str, args: SesEventStreamArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("emailPlatform:index:SesEventStream", name, None, opts)
        spec, prov = args.stream, args.provider
        o = child(self, prov)
        account = pulumi.Output.from_input(args.account_id)

        # S3 → the events queue: the queue's policy first, S3 checks it when the notification is put
        self.queue_policy = aws.sqs.QueuePolicy(
            f"{name}-queue-policy", queue_url=args.queue.id,
            policy=pulumi.Output.all(args.queue.arn, args.bucket.arn, account).apply(lambda a: json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Sid": "S3NotifiesSesEventObjects", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage", "Resource": a[0],
                    "Condition": {"ArnLike": {"aws:SourceArn": a[1]}, "StringEquals": {"aws:SourceAccount": a[2]}}}]})),
            opts=child(self, prov, aliases=[pulumi.Alias(name=args.queue_policy_was, parent=args.queue)]
                       if args.queue_policy_was else None))
        self.notification = aws.s3.BucketNotification(
            f"{name}-notification", bucket=args.bucket.id,
            queues=[{"id": "ses-events-objects", "queue_arn": args.queue.arn, "events": ["s3:ObjectCreated:*"],
                     "filter_prefix": spec.prefix}],
            opts=child(self, prov, depends_on=[self.queue_policy]))

        # Firehose → the bucket: delivery errors (the role, the bucket, the key) go to its log stream
        stream_name = spec.name(args.prefix)
        self.log_group = aws.cloudwatch.LogGroup(f"{name}-logs", name=f"/aws/kinesisfirehose/{stream_name}",
                                                 retention_in_days=args.log_retention_days, kms_key_id=args.key_arn,
                                                 opts=o)
        log_stream = aws.cloudwatch.LogStream(f"{name}-log-stream", name=FIREHOSE_LOG_STREAM,
                                              log_group_name=self.log_group.name, opts=child(self.log_group, prov))
        self.firehose_role = aws.iam.Role(f"{name}-firehose-role", assume_role_policy=account.apply(
            lambda a: json.dumps({"Version": "2012-10-17", "Statement": [{
                "Sid": "FirehoseDeliversSesEvents", "Effect": "Allow", "Principal": {"Service": "firehose.amazonaws.com"},
                # Firehose names the account as the external id when it assumes the role (its docs'
                # trust policy for an S3 destination); it is the confused-deputy guard it documents
                "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": a}}}]})), opts=o)
        firehose_policy = aws.iam.RolePolicy(
            f"{name}-firehose-policy", role=self.firehose_role.id,
            policy=pulumi.Output.all(args.bucket.arn, args.key_arn, self.log_group.arn).apply(
                lambda a: json.dumps(firehose_policy_document(a[0], a[1], a[2], args.region))),
            opts=child(self.firehose_role, prov))
        self.stream = aws.kinesis.FirehoseDeliveryStream(
            f"{name}-stream", name=stream_name, destination="extended_s3",
            server_side_encryption={"enabled": True, "key_type": "CUSTOMER_MANAGED_CMK", "key_arn": args.key_arn},
            extended_s3_configuration={
                "role_arn": self.firehose_role.arn, "bucket_arn": args.bucket.arn,
                "prefix": spec.prefix, "error_output_prefix": spec.error_prefix,
                "buffering_interval": spec.buffer_seconds, "buffering_size": spec.buffer_mb,
                "compression_format": "UNCOMPRESSED", "kms_key_arn": args.key_arn,
                "cloudwatch_logging_options": {"enabled": True, "log_group_name": self.log_group.name,
                                               "log_stream_name": log_stream.name}},
            # Firehose assumes the role when the stream is created: its permissions must be there
            opts=child(self, prov, depends_on=[firehose_policy]))

        # SES → the stream, through a role SES assumes for this configuration set only
        source_arn = pulumi.Output.all(account, args.configuration_set.configuration_set_name).apply(
            lambda a: configuration_set_arn(args.region, a[0], a[1]))
        self.ses_role = aws.iam.Role(f"{name}-ses-role", assume_role_policy=pulumi.Output.all(account, source_arn).apply(
            lambda a: json.dumps({"Version": "2012-10-17", "Statement": [{
                "Sid": "SesPublishesEvents", "Effect": "Allow", "Principal": {"Service": "ses.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": a[0], "aws:SourceArn": a[1]}}}]})), opts=o)
        ses_policy = aws.iam.RolePolicy(
            f"{name}-ses-policy", role=self.ses_role.id, policy=self.stream.arn.apply(lambda arn: json.dumps({
                "Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Action": ["firehose:PutRecord", "firehose:PutRecordBatch"], "Resource": arn}]})),
            opts=child(self.ses_role, prov))
        self.destination = aws.sesv2.ConfigurationSetEventDestination(
            f"{name}-destination", configuration_set_name=args.configuration_set.configuration_set_name,
            event_destination_name=EVENT_DESTINATION,
            event_destination={"enabled": True, "matching_event_types": list(schema.SES_EVENT_TYPES),
                               "kinesis_firehose_destination": {"delivery_stream_arn": self.stream.arn,
                                                                "iam_role_arn": self.ses_role.arn}},
            opts=child(self, prov, depends_on=[ses_policy]))
        self.register_outputs({"stream": self.stream.arn, "notification": self.notification.id})


def firehose_policy_document(bucket_arn: str, key_arn: str, log_group_arn: str, region: str) -> dict[str, Any]:
    """What the stream's role does: writes (and, for multipart uploads, reads back) objects of the
    bucket, encrypted with the key through S3 only, and logs delivery errors."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
         "Resource": [f"{bucket_arn}/*"]},
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
         "Resource": [bucket_arn]},
        {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": [key_arn],
         "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}},
        {"Effect": "Allow", "Action": ["logs:PutLogEvents"], "Resource": [f"{log_group_arn}:*"]},
    ]}
