"""The emulated DynamoDB (snn.engines.local.emulator.dynamodb): requests made one at a time, and
the item requests served without the HTTP detour, each answering exactly as moto's HTTP path
answers, errors included; what moto refuses is left to moto."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import boto3
import moto
import pytest

from snn.engines.local import emulator
from tests.helpers import ROOT


def test_serialise_answers_dynamodb_requests_one_at_a_time(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb.responses import DynamoHandler

    from snn.engines.local.embedded import table_definition
    from snn.stores import DynamoRunTable, new_record
    from snn.template import Template

    real = DynamoHandler.call_action
    busy, most = [0], [0]
    lock = threading.Lock()

    def probe(self: Any) -> Any:
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        try:
            time.sleep(0.002)  # long enough for requests to meet, were they let in together
            return real(self)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(DynamoHandler, "call_action", probe)
    _, props = Template.load(ROOT / "template.yaml").one("AWS::DynamoDB::Table")

    def hammer(table: DynamoRunTable) -> list[str]:
        errors: list[str] = []

        def write(first: int) -> None:
            try:
                for epoch in range(first, first + 15):
                    table.record_cost("r", epoch, epoch / 3)
            except Exception as exc:
                errors.append(repr(exc))

        def read() -> None:
            try:
                for _ in range(10):
                    table.get("r")
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=write, args=(k * 100,)) for k in range(3)]
        threads += [threading.Thread(target=read) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return errors

    with moto.mock_aws():
        client = boto3.client("dynamodb")
        for name in ("plain", "serialised"):
            client.create_table(TableName=name, **table_definition(props))
            DynamoRunTable(name, client).create("r", new_record("r", "{}"))
        most[0] = 0
        assert hammer(DynamoRunTable("plain", client)) == []
        assert most[0] > 1  # moto alone lets requests in side by side

        undo = emulator.dynamodb.serialise()
        try:
            most[0] = 0
            assert hammer(DynamoRunTable("serialised", client)) == []
            assert most[0] == 1
            assert len(DynamoRunTable("serialised", client).costs("r", range(0, 300))) == 45
        finally:
            undo()
        assert DynamoHandler.call_action is probe


def exercise_dynamodb(client: Any) -> list[Any]:
    """The GetItem requests of the stages, and what a caller sees of each."""
    from snn.engines.local.embedded import table_definition
    from snn.template import Template

    _, props = Template.load(ROOT / "template.yaml").one("AWS::DynamoDB::Table")
    client.create_table(TableName="runs", **table_definition(props))
    key = {"run_id": {"S": "r"}, "entry": {"S": "run"}}
    client.put_item(
        TableName="runs",
        Item={
            **key,
            "status": {"S": "RUNNING"},
            "committed_epoch": {"N": "12"},
            "confusion": {"M": {"tp": {"N": "3"}, "fn": {"N": "1"}}},
            "flag": {"BOOL": True},
            "nothing": {"NULL": True},
        },
    )
    seen: list[Any] = []
    for kwargs in (
        {},
        {"ConsistentRead": True},
        {
            "ProjectionExpression": "#s, #e, #c.#t",
            "ExpressionAttributeNames": {
                "#s": "status",
                "#e": "committed_epoch",
                "#c": "confusion",
                "#t": "tp",
            },
        },
        {"ProjectionExpression": "flag, absent"},
    ):
        answer = client.get_item(TableName="runs", Key=key, **kwargs)
        seen.append({k: v for k, v in answer.items() if k != "ResponseMetadata"})
    missing = client.get_item(TableName="runs", Key={**key, "entry": {"S": "none"}})
    seen.append({k: v for k, v in missing.items() if k != "ResponseMetadata"})
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_item(TableName="no-table", Key=key)
    return seen


@contextmanager
def served() -> Iterator[tuple[Any, Any, Callable[[], None]]]:
    """In a fresh emulator: a session whose DynamoDB item requests are served without the HTTP
    detour, the ItemRequests that serve them, and its uninstall."""
    with moto.mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        items = emulator.dynamodb.ItemRequests(emulator.ACCOUNT, emulator.REGION)
        yield session, items, items.install(session)


def on_moto(exercise: Callable[[Any], list[Any]]) -> list[Any]:
    """What `exercise` gets from moto's own HTTP path, in a fresh emulator."""
    with moto.mock_aws():
        return exercise(boto3.client("dynamodb"))


def test_item_requests_answer_as_moto_http_answers(aws_env: None) -> None:
    expected = on_moto(exercise_dynamodb)
    with served() as (session, items, uninstall):
        got = exercise_dynamodb(session.client("dynamodb"))
        assert items.served == 5  # the missing table took moto's path, for its error
        uninstall()
        session.client("dynamodb").get_item(
            TableName="runs", Key={"run_id": {"S": "r"}, "entry": {"S": "run"}}
        )
        assert items.served == 5
    assert got == expected
    assert "Item" not in got[-1]


def exercise_item_writes(client: Any) -> list[Any]:
    """PutItem, UpdateItem, DeleteItem and Query as the stores make them and beyond: conditions
    that hold and fail, what is returned, moto's refusals; what a caller sees of each (the
    answer, or the error's class, its parsed response and its status)."""
    seen: list[Any] = []

    def call(operation: str, **kwargs: Any) -> None:
        try:
            answer = getattr(client, operation)(**kwargs)
            seen.append((operation, {k: v for k, v in answer.items() if k != "ResponseMetadata"}))
        except client.exceptions.ClientError as error:
            response = {k: v for k, v in error.response.items() if k != "ResponseMetadata"}
            status = error.response["ResponseMetadata"]["HTTPStatusCode"]
            seen.append((operation, type(error).__name__, response, status))

    client.create_table(
        TableName="t",
        KeySchema=[
            {"AttributeName": "k", "KeyType": "HASH"},
            {"AttributeName": "e", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "k", "AttributeType": "S"},
            {"AttributeName": "e", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    key = {"k": {"S": "a"}, "e": {"S": "1"}}
    absent = "attribute_not_exists(k)"
    item = {**key, "b": {"B": b"\x00\x01"}, "n": {"N": "1.50"}, "m": {"M": {"x": {"NULL": True}}}}
    call("put_item", TableName="t", Item=item, ConditionExpression=absent)
    call("put_item", TableName="t", Item=key, ConditionExpression=absent)
    call(
        "put_item",
        TableName="t",
        Item=key,
        ConditionExpression=absent,
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )
    for value in ("x", "y"):
        call(
            "put_item",
            TableName="t",
            Item={"k": {"S": "a"}, "e": {"S": "2"}, "v": {"S": value}},
            ReturnValues="ALL_OLD",
            ReturnConsumedCapacity="TOTAL",
        )
    call("put_item", TableName="nowhere", Item=key)
    call("put_item", TableName="t", Item={"k": {"S": ""}, "e": {"S": "1"}})
    call(
        "put_item",
        TableName="t",
        Item=key,
        ConditionExpression="#x = :v",
        ExpressionAttributeNames={"#x": "v", "#unused": "q"},
        ExpressionAttributeValues={":v": {"S": "x"}},
    )
    add = {":c": {"N": "3"}, ":one": {"N": "1"}}
    call(
        "update_item",
        TableName="t",
        Key=key,
        UpdateExpression="SET c = :c, n = n + :one",
        ExpressionAttributeValues=add,
        ReturnValues="ALL_NEW",
    )
    refused = {":c": {"N": "4"}, ":old": {"N": "9"}}
    for returned in ({}, {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}):
        call(
            "update_item",
            TableName="t",
            Key=key,
            UpdateExpression="SET c = :c",
            ConditionExpression="c = :old",
            ExpressionAttributeValues=refused,
            **returned,
        )
    call(
        "update_item",
        TableName="t",
        Key={"k": {"S": "nobody"}, "e": {"S": "1"}},
        UpdateExpression="SET c = :c",
        ConditionExpression="attribute_exists(k)",
        ExpressionAttributeValues={":c": {"N": "4"}},
    )
    call(
        "update_item",
        TableName="t",
        Key={"k": {"S": "a"}},
        UpdateExpression="SET c = :c",
        ExpressionAttributeValues={":c": {"N": "4"}},
    )
    for i in range(5):
        call("put_item", TableName="t", Item={"k": {"S": "q"}, "e": {"S": f"{i:03d}"}})
    query = {"KeyConditionExpression": "k = :k", "ExpressionAttributeValues": {":k": {"S": "q"}}}
    call(
        "query",
        TableName="t",
        KeyConditionExpression="#k = :k AND #e BETWEEN :a AND :b",
        ExpressionAttributeNames={"#k": "k", "#e": "e"},
        ExpressionAttributeValues={":k": {"S": "q"}, ":a": {"S": "001"}, ":b": {"S": "003"}},
        ProjectionExpression="#e",
        ConsistentRead=True,
    )
    call("query", TableName="t", Limit=2, **query)
    call(
        "query",
        TableName="t",
        Limit=2,
        ExclusiveStartKey={"k": {"S": "q"}, "e": {"S": "001"}},
        ScanIndexForward=False,
        **query,
    )
    call("query", TableName="t", Select="COUNT", **query)
    call(
        "query",
        TableName="t",
        KeyConditionExpression="z = :k",
        ExpressionAttributeValues={":k": {"S": "q"}},
    )
    call(
        "delete_item",
        TableName="t",
        Key={"k": {"S": "q"}, "e": {"S": "000"}},
        ReturnValues="ALL_OLD",
    )
    call(
        "delete_item",
        TableName="t",
        Key={"k": {"S": "q"}, "e": {"S": "001"}},
        ConditionExpression="v = :x",
        ExpressionAttributeValues={":x": {"S": "no"}},
    )
    call("scan", TableName="t")
    return seen


def test_item_writes_answer_as_moto_http_answers(aws_env: None) -> None:
    """PutItem, UpdateItem, DeleteItem and Query answered by moto's handler without the HTTP
    detour: the same answers and the same errors, raised as the same botocore exceptions
    (ConditionalCheckFailedException with the item when asked for it)."""
    expected = on_moto(exercise_item_writes)
    with served() as (session, items, uninstall):
        got = exercise_item_writes(session.client("dynamodb"))
        uninstall()
    assert items.handled == {"DeleteItem": 2, "PutItem": 13, "Query": 5, "UpdateItem": 5}
    assert got == expected
    kinds = {entry[1] for entry in got if len(entry) == 4}
    assert {"ConditionalCheckFailedException", "ResourceNotFoundException"} <= kinds
    assert any(len(e) == 4 and "Item" in e[2] for e in got)  # the item of a refused write


def test_served_writes_are_made_one_at_a_time(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.dynamodb.responses import DynamoHandler

    inside: list[bool] = []
    real = DynamoHandler.call_action

    def probe(self: Any) -> Any:
        operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        if operation in emulator.dynamodb.HANDLED:  # (moto's path is serialised apart)
            inside.append(emulator.dynamodb._lock._is_owned())  # type: ignore[attr-defined]
        return real(self)

    monkeypatch.setattr(DynamoHandler, "call_action", probe)
    with served() as (session, _, _):
        exercise_item_writes(session.client("dynamodb"))
    assert len(inside) == 25 and all(inside)


@pytest.mark.parametrize(
    "paths",
    [
        [["status"], ["committed_epoch"], ["run_id"]],
        [["absent"]],
        [["nothing"], ["confusion"]],  # moto drops a null met before a map: so must the copy
        [["confusion", "tp"], ["confusion", "fn"]],
        [["confusion"], ["confusion", "tp"]],
        [["series[1]"]],
        [["series[9]"], ["flag"]],
        [["series[0]", "v"]],
    ],
)
def test_project_is_moto_item_project(paths: list[list[str]]) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    attrs = {
        "run_id": {"S": "r"},
        "status": {"S": "RUNNING"},
        "committed_epoch": {"N": "12"},
        "nothing": {"NULL": True},
        "confusion": {"M": {"tp": {"N": "3"}, "fn": {"N": "1.50"}}},
        "flag": {"BOOL": True},
        "series": {"L": [{"M": {"v": {"S": "a"}}}, {"N": "2"}]},
        "blob": {"B": b"\x00"},
    }
    item = Item(hash_key=DynamoType({"S": "r"}), range_key=None, attrs=attrs)
    projected = emulator.dynamodb.project(item, paths)
    assert Item.to_json(SimpleNamespace(attrs=projected)) == item.project(paths).to_json()


def exercise_refused_reads(client: Any) -> list[Any]:
    """GetItem requests that moto refuses, each for its own reason: what a caller sees."""
    from snn.engines.local.embedded import table_definition
    from snn.template import Template

    _, props = Template.load(ROOT / "template.yaml").one("AWS::DynamoDB::Table")
    client.create_table(TableName="runs", **table_definition(props))
    key = {"run_id": {"S": "r"}, "entry": {"S": "run"}}
    client.put_item(TableName="runs", Item={**key, "status": {"S": "RUNNING"}})
    seen: list[Any] = []
    for kwargs in (
        {"ProjectionExpression": "#s", "ExpressionAttributeNames": {"#s": "status", "#u": "x"}},
        {"ExpressionAttributeNames": {"#s": "status"}},
        {"ProjectionExpression": "#s", "ExpressionAttributeNames": {}},
        {"ProjectionExpression": "status, status"},
        {"ProjectionExpression": "name"},  # a reserved word
        {"ProjectionExpression": "1st"},
        {"Key": {"run_id": {"S": ""}, "entry": {"S": "run"}}},
        {"Key": {"run_id": {"S": "r"}, "other": {"S": "run"}}},
        {"Key": {"run_id": {"S": "r"}}},
        {
            "ProjectionExpression": "#s",
            "AttributesToGet": ["status"],
            "ExpressionAttributeNames": {"#s": "status"},
        },
    ):
        try:
            client.get_item(TableName="runs", **{"Key": key, **kwargs})
            seen.append("answered")
        except client.exceptions.ClientError as error:
            seen.append((type(error).__name__, error.response["Error"]))
    return seen


def test_item_requests_leave_what_moto_refuses_to_moto(aws_env: None) -> None:
    expected = on_moto(exercise_refused_reads)
    with served() as (session, items, _):
        got = exercise_refused_reads(session.client("dynamodb"))
    assert items.served == 0
    assert got == expected
    assert "answered" not in got
