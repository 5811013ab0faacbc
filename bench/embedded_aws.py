"""Cost of one DynamoDB call on the embedded AWS as the table grows: moto's own server against
the patched one (local/moto.py). Prints milliseconds per TransactWriteItems call and per Query of
one partition: on DynamoDB neither depends on what else the table holds."""

from __future__ import annotations

import subprocess
import sys
import time

import boto3

from local.moto import MotoServer, free_port
from local.progress import Progress


def _client(url: str):  # noqa: ANN202
    return boto3.client("dynamodb", endpoint_url=url, region_name="eu-west-1", aws_access_key_id="x",
                        aws_secret_access_key="x")


def per_call_ms(url: str, sizes: list[int], calls: int = 20, progress: Progress | None = None,
                label: str = "") -> list[tuple[float, float]]:
    ddb = _client(url)
    ddb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}])
    out, have = [], 0
    for size in sizes:
        if progress:
            progress.phase(f"{label}: filling the table to {size:,} items", total=size, done=have, unit="items")
        for i in range(have, size, 25):
            if progress:
                progress.update(i)
            ddb.batch_write_item(RequestItems={"t": [
                {"PutRequest": {"Item": {"PK": {"S": f"m{j}"}, "data": {"S": "x" * 200}}}}
                for j in range(i, min(i + 25, size))]})
        have = size
        started = time.perf_counter()
        for n in range(calls):
            ddb.transact_write_items(TransactItems=[
                {"Put": {"TableName": "t", "Item": {"PK": {"S": f"tx{size}-{n}"}},
                         "ConditionExpression": "attribute_not_exists(PK)"}},
                {"Update": {"TableName": "t", "Key": {"PK": {"S": "m0"}}, "UpdateExpression": "SET v = :v",
                            "ExpressionAttributeValues": {":v": {"N": str(n)}}}}])
        transact_ms = (time.perf_counter() - started) / calls * 1000
        started = time.perf_counter()
        for _ in range(calls):
            ddb.query(TableName="t", KeyConditionExpression="PK = :k", ExpressionAttributeValues={":k": {"S": "m0"}})
        out.append((transact_ms, (time.perf_counter() - started) / calls * 1000))
    return out


def main() -> int:
    sizes = [1_000, 5_000, 20_000]
    plain_port = free_port()
    plain = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(plain_port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    patched = MotoServer().start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _client(f"http://127.0.0.1:{plain_port}").list_tables()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        progress = Progress("bench embedded_aws")
        before = per_call_ms(f"http://127.0.0.1:{plain_port}", sizes, progress=progress, label="moto")
        after = per_call_ms(patched.url, sizes, progress=progress, label="patched")
        progress.finish()
    finally:
        plain.terminate()
        patched.stop()
    print("embedded AWS: ms per call by items in the table (TransactWriteItems; Query of one partition)")
    print(f"  {'items':>8} {'tx moto':>10} {'tx patched':>11} {'query moto':>11} {'query patched':>14}")
    for size, (bt, bq), (at, aq) in zip(sizes, before, after):
        print(f"  {size:>8} {bt:>10.1f} {at:>11.1f} {bq:>11.1f} {aq:>14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
