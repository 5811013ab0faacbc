"""The embedded AWS (moto server, patched by local/moto.py) keeps DynamoDB's promises that the
platform relies on: all-or-nothing transactions with their cancellation reasons, and conditional
writes that two concurrent callers cannot both win."""

from __future__ import annotations

import threading

import pytest
from botocore.exceptions import ClientError

from core.adapters.aws import client


@pytest.fixture
def table(settings):
    ddb = client(settings, "dynamodb")
    name = f"{settings.name_prefix}-contract"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}])
    return ddb, name


def test_a_transaction_that_loses_a_condition_changes_nothing(table):
    ddb, name = table
    ddb.put_item(TableName=name, Item={"PK": {"S": "a"}, "v": {"N": "1"}})
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": {"PK": {"S": "b"}}}},
            {"Update": {"TableName": name, "Key": {"PK": {"S": "a"}}, "UpdateExpression": "SET v = :n",
                        "ConditionExpression": "v = :old",
                        "ExpressionAttributeValues": {":n": {"N": "3"}, ":old": {"N": "2"}}}},
        ])
    reasons = [r["Code"] for r in exc.value.response["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed"]
    assert "Item" not in ddb.get_item(TableName=name, Key={"PK": {"S": "b"}})
    assert ddb.get_item(TableName=name, Key={"PK": {"S": "a"}})["Item"]["v"] == {"N": "1"}


def test_concurrent_conditional_writes_never_both_win(table):
    ddb, name = table
    ddb.put_item(TableName=name, Item={"PK": {"S": "n"}, "v": {"N": "0"}})
    wins = []
    lock = threading.Lock()

    def bump() -> None:
        mine = 0
        for _ in range(40):
            v = ddb.get_item(TableName=name, Key={"PK": {"S": "n"}}, ConsistentRead=True)["Item"]["v"]["N"]
            try:
                ddb.update_item(TableName=name, Key={"PK": {"S": "n"}}, UpdateExpression="SET v = :new",
                                ConditionExpression="v = :old",
                                ExpressionAttributeValues={":new": {"N": str(int(v) + 1)}, ":old": {"N": v}})
                mine += 1
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
        with lock:
            wins.append(mine)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = int(ddb.get_item(TableName=name, Key={"PK": {"S": "n"}}, ConsistentRead=True)["Item"]["v"]["N"])
    assert final == sum(wins) and final > 0


def test_concurrent_updates_each_return_the_image_they_replaced(table):
    """The old image an update returns is the one it replaced: the live campaign counts are
    built from it (moto read it before taking its lock: 302 sent of 300)."""
    ddb, name = table
    ddb.put_item(TableName=name, Item={"PK": {"S": "c"}, "n": {"N": "0"}})
    olds: list[int] = []

    def bump() -> None:
        for _ in range(25):
            r = ddb.update_item(TableName=name, Key={"PK": {"S": "c"}}, UpdateExpression="ADD n :one",
                                ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="UPDATED_OLD")
            olds.append(int(r["Attributes"]["n"]["N"]))

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(olds) == list(range(200))
