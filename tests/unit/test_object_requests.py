"""The local engine's S3 object requests, served by moto's S3 backend directly, answer as moto's
HTTP path answers, and a run gives the same bytes either way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from snn import store as keys
from snn.engines import local, stack
from snn.engines.object_requests import ObjectRequests
from snn.store import MissingObject, S3Store

from ..conftest import ROOT
from .handler_steps import tiny_parameters


@pytest.fixture
def session(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def exercise(client: Any) -> list[Any]:
    """Every served operation, and what a caller sees of each."""
    client.create_bucket(Bucket="snn-bucket")
    seen: list[Any] = []
    for i in range(5):
        client.put_object(
            Bucket="snn-bucket", Key=f"runs/r/epoch/{i:07d}/W", Body=bytes([i]) * (10 + i)
        )
    client.put_object(Bucket="snn-bucket", Key="other", Body=b"x")
    body = client.get_object(Bucket="snn-bucket", Key="runs/r/epoch/0000003/W")
    seen.append((body["Body"].read(), body["ContentLength"]))
    with pytest.raises(client.exceptions.NoSuchKey) as missing:
        client.get_object(Bucket="snn-bucket", Key="runs/r/none")
    seen.append(missing.value.response["Error"]["Code"])
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket="snn-bucket", Prefix="runs/r/", PaginationConfig={"PageSize": 2}
    )
    listed = [[(o["Key"], o["Size"]) for o in page.get("Contents", [])] for page in pages]
    seen.append(listed)
    deleted = client.delete_objects(
        Bucket="snn-bucket", Delete={"Objects": [{"Key": k} for k, _ in listed[0]], "Quiet": False}
    )
    seen.append(sorted(d["Key"] for d in deleted["Deleted"]))
    after = client.list_objects_v2(Bucket="snn-bucket", Prefix="runs/")
    seen.append([o["Key"] for o in after["Contents"]])
    seen.append(client.head_object(Bucket="snn-bucket", Key="other")["ContentLength"])  # not served
    with pytest.raises(client.exceptions.NoSuchBucket):
        client.get_object(Bucket="nobucket", Key="k")
    return seen


def test_served_answers_equal_moto_http_answers(session: Any) -> None:
    expected = exercise(session.client("s3"))
    with mock_aws():
        served_session = boto3.session.Session(region_name="us-east-1")
        objects = ObjectRequests(local.ACCOUNT)
        objects.install(served_session)
        assert exercise(served_session.client("s3")) == expected
    assert objects.served == {
        "PutObject": 6,
        "GetObject": 3,
        "ListObjectsV2": 4,
        "DeleteObjects": 1,
    }


def test_objects_are_stored_in_moto_s3(session: Any) -> None:
    """What the served path writes, moto's own path reads, and the other way round."""
    objects = ObjectRequests(local.ACCOUNT)
    plain = session.client("s3")
    objects.install(session)
    served = session.client("s3")
    plain.create_bucket(Bucket="snn-bucket")
    served.put_object(Bucket="snn-bucket", Key="a", Body=b"served")
    plain.put_object(Bucket="snn-bucket", Key="p", Body=b"plain")
    assert plain.get_object(Bucket="snn-bucket", Key="a")["Body"].read() == b"served"
    assert served.get_object(Bucket="snn-bucket", Key="p")["Body"].read() == b"plain"
    assert objects.served["PutObject"] == 1 and objects.served["GetObject"] == 1


def test_the_engine_serves_object_requests_and_can_be_told_not_to(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with local.EmbeddedStack(ROOT / "template.yaml") as embedded:
        assert embedded.objects is not None
        store = S3Store(embedded.stack.bucket)
        store.put("k", np.arange(3.0))
        np.testing.assert_array_equal(store.get("k"), np.arange(3.0))
        with pytest.raises(MissingObject):
            store.get("nothing")
        assert embedded.objects.served["GetObject"] == 2
    monkeypatch.setenv("SNN_LOCAL_S3", "http")
    with local.EmbeddedStack(ROOT / "template.yaml") as embedded:
        assert embedded.objects is None


@pytest.mark.xdist_group("embedded")
def test_a_run_is_the_same_bytes_either_way(
    aws_env: None, synthetic_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tiny_parameters()
    results = []
    for mode in ("served", "http"):
        monkeypatch.setenv("SNN_LOCAL_S3", mode)
        with local.EmbeddedStack(ROOT / "template.yaml") as embedded:
            st = embedded.stack
            event = stack.upload_inputs(st, "same", p, synthetic_dir)
            stack.follow_run(st, "same", stack.start(st, event, "same"))
            record = st.runs.get("same")
            model = st.objects.get_bytes(keys.model_key("same"))
        results.append((record["costs"], record["train_accuracy"], model))
    assert results[0] == results[1]
