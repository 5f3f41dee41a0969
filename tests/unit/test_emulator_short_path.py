"""botocore's short path (snn.engines.local.emulator.short_path): for the requests the emulator
answers, no endpoint resolution and no user agent, and nothing else a handler or moto sees
changes; only the session it is installed on, and undone."""

from __future__ import annotations

from typing import Any

import boto3
import moto
import pytest

from snn.engines.local import emulator


def short_path_session(serve: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    """A session whose S3 object and DynamoDB item requests are served (or not), with the short
    path; and what each `before-call` and `before-send` saw (url path, body, headers...)."""
    from snn.engines.local.emulator import s3_requests, short_path

    session = boto3.session.Session(region_name="us-east-1")
    seen: list[dict[str, Any]] = []

    def before_call(params: dict[str, Any], model: Any, **_: Any) -> None:
        body = params["body"]
        seen.append(
            {
                "at": "call",
                "op": model.name,
                "path": params["url_path"],
                "query": params["query_string"],
                "method": params["method"],
                "body": body if isinstance(body, bytes | str) else None,
            }
        )

    def before_send(request: Any, **_: Any) -> None:
        seen.append(
            {
                "at": "send",
                "url": request.url,
                "body": request.body,
                "headers": sorted(
                    k
                    for k in request.headers
                    if not k.lower().startswith(("x-amz-date", "authorization", "amz-sdk"))
                ),
            }
        )

    for service in ("s3", "dynamodb"):  # before the emulator's: they see every request
        session.events.register(f"before-call.{service}", before_call)
    session.events.register("before-send", before_send)
    if serve:
        s3_requests.ObjectRequests(emulator.ACCOUNT).install(session)
        emulator.dynamodb.ItemRequests(emulator.ACCOUNT, emulator.REGION).install(session)
    short_path.install(session, {"s3": s3_requests.SERVED, "dynamodb": emulator.dynamodb.SERVED})
    return session, seen


def exercise_short_path(session: Any) -> None:
    """Served and unserved requests of S3 and DynamoDB, and one refused by validation."""
    s3, ddb = session.client("s3"), session.client("dynamodb")
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="runs/r/neurons/epoch-1/a b.npy", Body=b"\x93NUMPY")
    assert s3.get_object(Bucket="bkt", Key="runs/r/neurons/epoch-1/a b.npy")["Body"].read()
    s3.list_objects_v2(Bucket="bkt", Prefix="runs/")
    s3.head_object(Bucket="bkt", Key="runs/r/neurons/epoch-1/a b.npy")  # not served
    ddb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="t", Item={"k": {"S": "a"}, "v": {"N": "1"}})
    assert ddb.get_item(TableName="t", Key={"k": {"S": "a"}}, ProjectionExpression="v")["Item"]
    # served operations that the emulator leaves to moto after all: sent as botocore sends them
    assert ddb.get_item(TableName="t", Key={"k": {"S": "a"}}, AttributesToGet=["v"])["Item"]
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.get_item(TableName="nowhere", Key={"k": {"S": "a"}})
    from botocore.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="Key"):
        ddb.get_item(TableName="t")


def test_the_short_path_changes_nothing_a_handler_or_moto_sees(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every `before-call` sees the same request (path, query, method, body) with or without
    the short path, and what is sent to moto after all is what botocore sends; only the
    endpoint resolution of the served requests is gone."""
    from botocore.regions import EndpointRulesetResolver

    resolved: list[str] = []
    real = EndpointRulesetResolver.construct_endpoint

    def counted(self: Any, operation_model: Any, *args: Any, **kwargs: Any) -> Any:
        resolved.append(operation_model.name)
        return real(self, operation_model, *args, **kwargs)

    monkeypatch.setattr(EndpointRulesetResolver, "construct_endpoint", counted)
    runs = {}
    for short in (False, True):
        resolved.clear()
        with moto.mock_aws():
            session, seen = short_path_session()
            if not short:  # the same session, without the mixin
                session.events.unregister("creating-client-class.s3", unique_id="snn-short-path-s3")
                session.events.unregister(
                    "creating-client-class.dynamodb", unique_id="snn-short-path-dynamodb"
                )
            exercise_short_path(session)
        runs[short] = (list(seen), list(resolved))
    (plain, plain_resolved), (short, short_resolved) = runs[False], runs[True]
    assert short == plain
    assert [e["op"] for e in short if e["at"] == "call"].count("GetItem") == 3
    assert sorted(plain_resolved) == sorted(
        [
            *("CreateBucket", "PutObject", "GetObject", "ListObjectsV2", "HeadObject"),
            *("CreateTable", "PutItem", "GetItem", "GetItem", "GetItem", "GetItem"),
        ]
    )  # (botocore resolves the endpoint of a request that then fails validation)
    # resolved only for what was sent: the unserved requests and the two left to moto
    assert sorted(short_resolved) == [
        "CreateBucket",
        "CreateTable",
        "GetItem",
        "GetItem",
        "HeadObject",
    ]


def test_the_short_path_is_for_the_session_it_is_installed_on_and_undone(aws_env: None) -> None:
    from botocore.client import BaseClient

    from snn.engines.local.emulator import short_path

    assert short_path.fits()
    session = boto3.session.Session(region_name="us-east-1")
    undo = short_path.install(session, {"s3": {"GetObject"}})
    client = session.client("s3")
    assert isinstance(client, short_path.ShortPath) and client.short == {"GetObject"}
    assert not isinstance(session.client("dynamodb"), short_path.ShortPath)
    other = boto3.session.Session(region_name="us-east-1").client("s3")
    assert not isinstance(other, short_path.ShortPath)
    undo()
    assert not isinstance(session.client("s3"), short_path.ShortPath)
    assert all(
        getattr(BaseClient, step) is not getattr(short_path.ShortPath, step)
        for step in ("_resolve_endpoint_ruleset", "_convert_to_request_dict", "_make_request")
    )
