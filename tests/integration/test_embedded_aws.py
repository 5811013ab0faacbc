"""The embedded AWS (moto server, patched by local/moto.py) keeps DynamoDB's promises that the
platform relies on: all-or-nothing transactions with their cancellation reasons, and conditional
writes that two concurrent callers cannot both win."""

from __future__ import annotations

import socket
import threading

import pytest
from botocore.exceptions import ClientError

from core.adapters.aws import client
from local.moto import MotoServer


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


def test_partiql_insert_creates_only_and_anything_else_is_refused(table):
    """The controller's fenced bulk puts: INSERT creates an item whose key is free, answers
    DuplicateItem (and writes nothing) otherwise; PartiQL the patch does not run is refused."""
    ddb, name = table
    ddb.put_item(TableName=name, Item={"PK": {"S": "a"}, "v": {"S": "old"}})
    insert = f"INSERT INTO \"{name}\" VALUE {{'PK': ?, 'it''s': ?}}"

    answer = ddb.batch_execute_statement(Statements=[
        {"Statement": insert, "Parameters": [{"S": "a"}, {"S": "new"}]},
        {"Statement": insert, "Parameters": [{"S": "b"}, {"S": "new"}]},
    ])["Responses"]

    assert answer == [{"TableName": name, "Error": {"Code": "DuplicateItem",
                                                     "Message": "Duplicate primary key exists in table"}},
                      {"TableName": name}]
    assert ddb.get_item(TableName=name, Key={"PK": {"S": "a"}})["Item"] == {"PK": {"S": "a"}, "v": {"S": "old"}}
    assert ddb.get_item(TableName=name, Key={"PK": {"S": "b"}})["Item"] == {"PK": {"S": "b"}, "it's": {"S": "new"}}
    for refused in ([{"Statement": f"UPDATE \"{name}\" SET v = 'x' WHERE PK = 'a'"}],
                    [{"Statement": f"INSERT INTO \"{name}\" VALUE {{'PK': 'c'}}"}],
                    [{"Statement": insert, "Parameters": [{"S": "c"}]}],
                    [{"Statement": insert, "Parameters": [{"S": "d"}, {"S": "1"}]}] * 2):
        with pytest.raises(ClientError) as exc:
            ddb.batch_execute_statement(Statements=refused)
        assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert "Item" not in ddb.get_item(TableName=name, Key={"PK": {"S": "d"}})


def test_partiql_update_is_a_conditional_update_of_an_existing_item(table):
    """The events Lambda's batched message writes (DynamoTable.update_each) as DynamoDB runs them:
    the WHERE names the key and the expected state; a false WHERE or a missing item is that
    statement's ConditionalCheckFailed (with the item, for ALL_OLD), and nothing is created."""
    ddb, name = table
    ddb.put_item(TableName=name, Item={"PK": {"S": "a"}, "v": {"S": "old"}, "n": {"N": "1"}})
    update = f'UPDATE "{name}" SET "v"=? REMOVE "n" WHERE "PK"=? AND "v"=? AND "gone" IS MISSING'

    first = ddb.batch_execute_statement(Statements=[
        {"Statement": update, "Parameters": [{"S": "new"}, {"S": "a"}, {"S": "old"}],
         "ReturnValuesOnConditionCheckFailure": "ALL_OLD"},
        {"Statement": update, "Parameters": [{"S": "new"}, {"S": "b"}, {"S": "old"}],
         "ReturnValuesOnConditionCheckFailure": "ALL_OLD"},
        {"Statement": f'UPDATE "{name}" SET "v"=? WHERE "v"=?', "Parameters": [{"S": "x"}, {"S": "new"}]},
    ])["Responses"]
    again = ddb.batch_execute_statement(Statements=[
        {"Statement": update, "Parameters": [{"S": "newer"}, {"S": "a"}, {"S": "old"}],
         "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}])["Responses"]

    assert first[0] == {"TableName": name}
    assert first[1]["Error"]["Code"] == "ConditionalCheckFailed" and "Item" not in first[1]["Error"]
    assert first[2]["Error"]["Code"] == "ValidationError"  # no key in the WHERE
    assert again[0]["Error"]["Code"] == "ConditionalCheckFailed"
    assert again[0]["Error"]["Item"] == {"PK": {"S": "a"}, "v": {"S": "new"}}
    assert ddb.get_item(TableName=name, Key={"PK": {"S": "a"}})["Item"] == {"PK": {"S": "a"}, "v": {"S": "new"}}
    assert "Item" not in ddb.get_item(TableName=name, Key={"PK": {"S": "b"}})  # an UPDATE never creates


def test_a_query_reads_its_partition_not_the_whole_table(table):
    """moto listed and sorted every item of the table for each Query: the embedded stack slowed
    down as campaigns accumulated (local/moto.py patch_query_cost). Here a query must not be
    slower with 3,000 other items stored than with 30, measured as work, not time: the number of
    items the server compares is what the patch changes, so the test counts them in-process."""
    import boto3
    from moto import mock_aws
    from moto.dynamodb.models.dynamo_type import DynamoType

    from local.moto import patch_query_cost

    patch_query_cost()
    compared = 0
    original_eq = DynamoType.__eq__

    def counting_eq(self, other):  # noqa: ANN001, ANN202
        nonlocal compared
        compared += 1
        return original_eq(self, other)

    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="eu-west-1")
        ddb.create_table(TableName="q", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"},
                                               {"AttributeName": "SK", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"},
                                    {"AttributeName": "SK", "KeyType": "RANGE"}])

        def work(others: int) -> tuple[int, int]:
            nonlocal compared
            for i in range(others):
                ddb.put_item(TableName="q", Item={"PK": {"S": f"other#{i}"}, "SK": {"S": "x"}})
            compared = 0
            DynamoType.__eq__ = counting_eq  # type: ignore[method-assign]
            try:
                got = ddb.query(TableName="q", KeyConditionExpression="PK = :p",
                                ExpressionAttributeValues={":p": {"S": "mine"}})["Count"]
            finally:
                DynamoType.__eq__ = original_eq  # type: ignore[method-assign]
            return got, compared

        for i in range(5):
            ddb.put_item(TableName="q", Item={"PK": {"S": "mine"}, "SK": {"S": f"{i:03d}"}})
        small = work(30)
        large = work(3_000)
    assert small[0] == large[0] == 5
    assert large[1] <= small[1] + 5, (small, large)


def test_a_moto_server_refuses_a_port_something_already_listens_on():
    """Another stack's moto on the port answered our health check while ours died on it, and the
    stack ran on that other server's state: starting on a taken port is now an error that says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MotoServer(taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="already in use"):
            server.start()
        assert server.proc is None  # nothing was started
