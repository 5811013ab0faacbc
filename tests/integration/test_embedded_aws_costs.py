"""The embedded AWS's cheaper paths (local/moto_costs.py, local/moto.py ``serve``) answer what moto
itself would: a server of its own checks every fast DynamoDB answer against moto's serializer
(``EMAILPLATFORM_MOTO_CHECK_ANSWERS=1`` fails a call whose answers differ), SNS notifications stay
signed with a certificate the server publishes, and waitress answers what werkzeug answered."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from local.moto import MotoServer

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def checked_server():
    mp = pytest.MonkeyPatch()
    mp.setenv("EMAILPLATFORM_MOTO_CHECK_ANSWERS", "1")
    server = MotoServer().start()
    mp.undo()
    yield server
    server.stop()


def _client(server: MotoServer, service: str):  # noqa: ANN202
    return boto3.client(service, endpoint_url=server.url, region_name=REGION, aws_access_key_id="x",
                        aws_secret_access_key="x")


def test_every_fast_dynamodb_answer_is_what_moto_would_answer(checked_server):
    ddb = _client(checked_server, "dynamodb")
    ddb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("PK", "SK", "G")],
                     KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
                     GlobalSecondaryIndexes=[{"IndexName": "by-g", "KeySchema": [{"AttributeName": "G", "KeyType": "HASH"}],
                                              "Projection": {"ProjectionType": "KEYS_ONLY"}}])
    every_type = {"s": {"S": "x"}, "n": {"N": "1.50"}, "b": {"B": b"\x00\x01"}, "ss": {"SS": ["a", "b"]},
                  "ns": {"NS": ["1", "2"]}, "bs": {"BS": [b"\x02"]}, "null": {"NULL": True}, "bool": {"BOOL": False},
                  "l": {"L": [{"S": "a"}, {"M": {"k": {"N": "3"}}}]}, "m": {"M": {}}}
    for i in range(5):
        ddb.put_item(TableName="t", Item={"PK": {"S": "p"}, "SK": {"S": f"s{i}"}, "G": {"S": "g"}, **every_type},
                     ReturnConsumedCapacity="TOTAL")
    got = ddb.get_item(TableName="t", Key={"PK": {"S": "p"}, "SK": {"S": "s0"}}, ReturnConsumedCapacity="INDEXES")
    assert got["Item"]["b"] == {"B": b"\x00\x01"} and got["Item"]["bs"] == {"BS": [b"\x02"]}
    assert got["Item"]["n"] == {"N": "1.50"} and got["ConsumedCapacity"]["TableName"] == "t"
    page = ddb.query(TableName="t", KeyConditionExpression="PK = :p", ExpressionAttributeValues={":p": {"S": "p"}},
                     Limit=2, ReturnConsumedCapacity="TOTAL")
    assert page["Count"] == 2 and page["LastEvaluatedKey"] == {"PK": {"S": "p"}, "SK": {"S": "s1"}}
    assert ddb.query(TableName="t", IndexName="by-g", KeyConditionExpression="G = :g",
                     ExpressionAttributeValues={":g": {"S": "g"}}, Select="COUNT")["Count"] == 5
    assert ddb.scan(TableName="t", FilterExpression="SK = :s", ExpressionAttributeValues={":s": {"S": "s3"}})["Count"] == 1
    old = ddb.update_item(TableName="t", Key={"PK": {"S": "p"}, "SK": {"S": "s1"}}, UpdateExpression="ADD c :one",
                          ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_NEW")
    assert old["Attributes"]["c"] == {"N": "1"}
    assert ddb.delete_item(TableName="t", Key={"PK": {"S": "p"}, "SK": {"S": "s4"}}, ReturnValues="ALL_OLD")["Attributes"]
    # moto's result holds a legacy ConsumedCapacityUnits that DynamoDB never sends: dropped
    assert set(ddb.delete_item(TableName="t", Key={"PK": {"S": "p"}, "SK": {"S": "gone"}})) == {"ResponseMetadata"}
    batch = ddb.batch_get_item(RequestItems={"t": {"Keys": [{"PK": {"S": "p"}, "SK": {"S": f"s{i}"}} for i in range(3)]}},
                               ReturnConsumedCapacity="TOTAL")
    assert len(batch["Responses"]["t"]) == 3 and batch["UnprocessedKeys"] == {}
    assert isinstance(batch["ConsumedCapacity"][0]["CapacityUnits"], float)  # a double on the wire, as moto writes it
    assert ddb.batch_write_item(RequestItems={"t": [{"PutRequest": {"Item": {"PK": {"S": "q"}, "SK": {"S": "1"}}}}]}
                                )["UnprocessedItems"] == {}
    ddb.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": {"PK": {"S": "q"}, "SK": {"S": "2"}}}}])
    assert len(ddb.transact_get_items(TransactItems=[{"Get": {"TableName": "t", "Key": {"PK": {"S": "q"}, "SK": {"S": "2"}}}}]
                                      )["Responses"]) == 1
    with pytest.raises(ClientError) as lost:  # an error keeps moto's own answer
        ddb.put_item(TableName="t", Item={"PK": {"S": "q"}, "SK": {"S": "2"}}, ConditionExpression="attribute_not_exists(PK)")
    assert lost.value.response["Error"]["Code"] == "ConditionalCheckFailedException"


def test_stream_records_answer_what_moto_would_answer(checked_server):
    ddb, streams = _client(checked_server, "dynamodb"), _client(checked_server, "dynamodbstreams")
    arn = ddb.create_table(TableName="streamed", BillingMode="PAY_PER_REQUEST",
                           AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
                           KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
                           StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
                           )["TableDescription"]["LatestStreamArn"]
    ddb.put_item(TableName="streamed", Item={"PK": {"S": "a"}, "b": {"B": b"\x00"}, "n": {"N": "2"}})
    ddb.update_item(TableName="streamed", Key={"PK": {"S": "a"}}, UpdateExpression="ADD n :one",
                    ExpressionAttributeValues={":one": {"N": "1"}})
    ddb.delete_item(TableName="streamed", Key={"PK": {"S": "a"}})
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = streams.get_records(ShardIterator=it)["Records"]
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    assert records[1]["dynamodb"]["NewImage"]["n"] == {"N": "3"} and records[0]["dynamodb"]["NewImage"]["b"] == {"B": b"\x00"}
    assert records[0]["dynamodb"]["ApproximateCreationDateTime"].year >= 2024  # epoch seconds on the wire


def test_sns_notifications_stay_signed_with_the_one_certificate_of_their_subscription():
    """In process (moto's server does not serve the certificate it names): the patched SNS signs
    every notification with the key of the certificate it published once for the subscription."""
    from moto import mock_aws
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns import models
    from moto.sns.models import sns_backends

    from local.moto_costs import patch_sns_signing

    patch_sns_signing()
    with mock_aws():
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topic = sns.create_topic(Name="events")["TopicArn"]
        queue = sqs.create_queue(QueueName="events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        for i in range(3):
            sns.publish(TopicArn=topic, Message=f"m{i}")
            # moto's key cache is shared by all subscriptions (128): once evicted, the kept key still signs
            models.Subscription.private_key.cache_clear()
        notes = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]]
        published = sns_backends[DEFAULT_ACCOUNT_ID][REGION]._message_public_keys
        assert len(notes) == 3 and len({n["SigningCertURL"] for n in notes}) == 1 and len(published) == 1
        cert = x509.load_pem_x509_certificate(published[notes[0]["SigningCertURL"].rsplit("/", 1)[1]])
        for n in notes:
            signed = "".join(f"{k}\n{n[k]}\n" for k in ("Message", "MessageId", "Timestamp", "TopicArn", "Type"))
            cert.public_key().verify(base64.b64decode(n["Signature"]), signed.encode(), padding.PKCS1v15(),
                                     hashes.SHA256())  # raises when a signature does not verify


def test_every_fast_sqs_answer_is_what_moto_would_answer(checked_server):
    sqs = _client(checked_server, "sqs")
    queue = sqs.get_queue_url(QueueName=sqs.create_queue(QueueName="answers")["QueueUrl"].rsplit("/", 1)[1])["QueueUrl"]
    sent = sqs.send_message(QueueUrl=queue, MessageBody="plain", MessageAttributes={
        "s": {"DataType": "String", "StringValue": "v"}, "n": {"DataType": "Number", "StringValue": "1.5"},
        "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    assert sent["MessageId"] and sent["MD5OfMessageAttributes"]
    batch = sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": "a", "MessageBody": "one"},
                                                            {"Id": "b", "MessageBody": "two", "DelaySeconds": 0}])
    assert {e["Id"] for e in batch["Successful"]} == {"a", "b"}
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                              MessageSystemAttributeNames=["All"])["Messages"]
    first = next(m for m in got if m["Body"] == "plain")
    assert first["MessageAttributes"]["b"]["BinaryValue"] == b"\x00\x01" and "SentTimestamp" in first["Attributes"]
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
    others = [m for m in got if m is not first]
    assert sqs.change_message_visibility_batch(QueueUrl=queue, Entries=[
        {"Id": "x", "ReceiptHandle": others[0]["ReceiptHandle"], "VisibilityTimeout": 0}])["Successful"] == [{"Id": "x"}]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=others[1]["ReceiptHandle"])
    gone = sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": "y", "ReceiptHandle": "not-a-handle"}])
    assert gone.get("Failed") or gone.get("Successful")  # moto's own answer to an unknown handle, either way
    again = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)["Messages"]
    assert sorted(m["Body"] for m in again) == sorted([first["Body"], others[0]["Body"]])  # visible again, not deleted


def test_a_queue_with_a_retention_period_delivers_its_fresh_messages(checked_server):
    sqs = _client(checked_server, "sqs")
    queue = sqs.create_queue(QueueName="short", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="fresh")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=queue)["Messages"]] == ["fresh"]


def test_object_keys_keep_their_encoded_characters(checked_server):
    """Waitress passes the raw path on as werkzeug did (RAW_URI): S3 decodes a key once, not twice."""
    s3 = _client(checked_server, "s3")
    s3.create_bucket(Bucket="odd-keys", CreateBucketConfiguration={"LocationConstraint": REGION})
    for name in ("a%20b.csv", "what?.csv", "plus+sign.csv", "a b.csv"):
        s3.put_object(Bucket="odd-keys", Key=name, Body=name.encode())
        assert s3.get_object(Bucket="odd-keys", Key=name)["Body"].read() == name.encode()
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="odd-keys")["Contents"]) == sorted(
        ["a%20b.csv", "what?.csv", "plus+sign.csv", "a b.csv"])


def test_an_empty_object_can_be_put_and_read(checked_server):
    """boto3 sends ``Expect: 100-continue`` with ``Content-Length: 0``: waitress alone never answered."""
    s3 = _client(checked_server, "s3")
    s3.create_bucket(Bucket="empty-things", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="empty-things", Key="e.csv", Body=b"")
    assert s3.get_object(Bucket="empty-things", Key="e.csv")["Body"].read() == b""


def test_queue_attributes_count_what_the_queue_holds_after_sends(checked_server):
    """A send reads its queue's attributes without the counts; GetQueueAttributes still counts."""
    sqs = _client(checked_server, "sqs")
    queue = sqs.create_queue(QueueName="counted")["QueueUrl"]
    fifo = sqs.create_queue(QueueName="counted.fifo", Attributes={"FifoQueue": "true",
                                                                  "ContentBasedDeduplication": "true"})["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=queue, MessageBody=f"m{i}")
        sqs.send_message(QueueUrl=fifo, MessageBody="same", MessageGroupId="g")  # deduplicated by content
    sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, VisibilityTimeout=60)
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    got = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=names)["Attributes"]
    assert got == {"ApproximateNumberOfMessages": "2", "ApproximateNumberOfMessagesNotVisible": "1"}
    assert sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=names)["Attributes"]["ApproximateNumberOfMessages"] == "1"


def test_an_index_query_sees_every_write_that_moves_an_item_in_or_out_of_the_index(checked_server):
    """The server keeps each index's members beside the table; with the check on it compares them
    with the whole table on every index query, so any write path that forgets them fails here."""
    ddb = _client(checked_server, "dynamodb")
    ddb.create_table(TableName="sparse", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("PK", "SK", "due", "at")],
                     KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
                     GlobalSecondaryIndexes=[{"IndexName": "due-at", "KeySchema": [
                         {"AttributeName": "at", "KeyType": "RANGE"}, {"AttributeName": "due", "KeyType": "HASH"}],
                         "Projection": {"ProjectionType": "KEYS_ONLY"}}])

    def due(kind: str = "BATCH") -> list[str]:
        page = ddb.query(TableName="sparse", IndexName="due-at", KeyConditionExpression="due = :d",
                         ExpressionAttributeValues={":d": {"S": kind}})
        return [i["SK"]["S"] for i in page["Items"]]

    def key(sk: str) -> dict:
        return {"PK": {"S": "p"}, "SK": {"S": sk}}

    for i in range(3):
        ddb.put_item(TableName="sparse", Item={**key(f"m{i}"), "data": {"S": "x"}})  # not in the index
    assert due() == []  # the first query builds the members
    ddb.put_item(TableName="sparse", Item={**key("b1"), "due": {"S": "BATCH"}, "at": {"S": "2"}})
    ddb.update_item(TableName="sparse", Key=key("m0"), UpdateExpression="SET due = :d, #a = :a",
                    ExpressionAttributeNames={"#a": "at"}, ExpressionAttributeValues={":d": {"S": "BATCH"}, ":a": {"S": "1"}})
    assert due() == ["m0", "b1"]  # sorted by the index's sort key
    ddb.update_item(TableName="sparse", Key=key("m0"), UpdateExpression="SET due = :d",
                    ExpressionAttributeValues={":d": {"S": "CALLBACK"}})  # moves to another partition
    assert due() == ["b1"] and due("CALLBACK") == ["m0"]
    ddb.update_item(TableName="sparse", Key=key("b1"), UpdateExpression="REMOVE due")  # leaves the index
    with pytest.raises(ClientError):  # a lost condition changes nothing
        ddb.update_item(TableName="sparse", Key=key("m1"), UpdateExpression="SET due = :d, #a = :a",
                        ConditionExpression="attribute_exists(nothing)", ExpressionAttributeNames={"#a": "at"},
                        ExpressionAttributeValues={":d": {"S": "BATCH"}, ":a": {"S": "3"}})
    ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": "sparse", "Item": {**key("t1"), "due": {"S": "BATCH"}, "at": {"S": "4"}}}},
        {"Delete": {"TableName": "sparse", "Key": key("m0")}}])
    ddb.batch_write_item(RequestItems={"sparse": [
        {"PutRequest": {"Item": {**key("w1"), "due": {"S": "BATCH"}, "at": {"S": "5"}}}}]})
    assert due() == ["t1", "w1"] and due("CALLBACK") == []
    ddb.delete_item(TableName="sparse", Key=key("t1"))
    ddb.put_item(TableName="sparse", Item={**key("w1"), "data": {"S": "replaced"}})  # a put that drops the keys
    assert due() == []
    # the index re-created under its name with another partition key: its members start afresh
    ddb.put_item(TableName="sparse", Item={**key("r1"), "due": {"S": "BATCH"}, "at": {"S": "6"}})
    assert due() == ["r1"]
    ddb.update_table(TableName="sparse", GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "due-at"}}])
    ddb.update_table(TableName="sparse", AttributeDefinitions=[{"AttributeName": "at", "AttributeType": "S"}],
                     GlobalSecondaryIndexUpdates=[{"Create": {
                         "IndexName": "due-at", "KeySchema": [{"AttributeName": "at", "KeyType": "HASH"}],
                         "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    by_at = ddb.query(TableName="sparse", IndexName="due-at", KeyConditionExpression="#a = :a",
                      ExpressionAttributeNames={"#a": "at"}, ExpressionAttributeValues={":a": {"S": "6"}})
    assert [i["SK"]["S"] for i in by_at["Items"]] == ["r1"]
