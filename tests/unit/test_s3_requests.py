"""The local engine's S3 object requests, served by moto's S3 backend directly
(snn.engines.local.emulator.s3_requests), answer as moto's HTTP path answers, and a run gives
the same bytes either way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from snn.engines import local
from snn.engines.local.emulator.s3_requests import SERVED, ObjectRequests
from snn.stores import CorruptObject, MissingObject, S3Store
from tests.helpers import ROOT, assert_same_run, spec, tiny_parameters


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
            Bucket="snn-bucket", Key=f"scratch/r/step/{i:09d}/W", Body=bytes([i]) * (10 + i)
        )
    client.put_object(Bucket="snn-bucket", Key="other", Body=b"x")
    body = client.get_object(Bucket="snn-bucket", Key="scratch/r/step/000000003/W")
    seen.append((body["Body"].read(), body["ContentLength"]))
    with pytest.raises(client.exceptions.NoSuchKey) as missing:
        client.get_object(Bucket="snn-bucket", Key="scratch/r/none")
    seen.append(missing.value.response["Error"]["Code"])
    seen.append(missing.value.response["ResponseMetadata"]["HTTPStatusCode"])
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket="snn-bucket", Prefix="scratch/r/", PaginationConfig={"PageSize": 2}
    )
    listed = [[(o["Key"], o["Size"]) for o in page.get("Contents", [])] for page in pages]
    seen.append(listed)
    empty = client.list_objects_v2(Bucket="snn-bucket", Prefix="nothing/")
    seen.append((empty["KeyCount"], "Contents" in empty, empty["IsTruncated"]))
    deleted = client.delete_objects(
        Bucket="snn-bucket", Delete={"Objects": [{"Key": k} for k, _ in listed[0]], "Quiet": False}
    )
    seen.append(sorted(d["Key"] for d in deleted["Deleted"]))
    client.delete_objects(  # (moto's HTTP path lists them even so; AWS and the served path not)
        Bucket="snn-bucket", Delete={"Objects": [{"Key": listed[1][0][0]}], "Quiet": True}
    )
    after = client.list_objects_v2(Bucket="snn-bucket", Prefix="scratch/")
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
    assert set(objects.served) == SERVED
    assert objects.served == {
        "PutObject": 6,
        "GetObject": 3,
        "ListObjectsV2": 5,
        "DeleteObjects": 2,
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


def test_a_quiet_delete_lists_no_deleted_keys(session: Any) -> None:
    """As AWS answers a quiet DeleteObjects: only the keys it could not delete."""
    objects = ObjectRequests(local.ACCOUNT)
    objects.install(session)
    client = session.client("s3")
    client.create_bucket(Bucket="snn-bucket")
    client.put_object(Bucket="snn-bucket", Key="a", Body=b"1")
    quiet = client.delete_objects(
        Bucket="snn-bucket", Delete={"Objects": [{"Key": "a"}, {"Key": "b"}], "Quiet": True}
    )
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert client.list_objects_v2(Bucket="snn-bucket")["KeyCount"] == 0


def test_uninstall_puts_moto_http_path_back(session: Any) -> None:
    objects = ObjectRequests(local.ACCOUNT)
    objects.install(session)
    client = session.client("s3")
    client.create_bucket(Bucket="snn-bucket")
    client.put_object(Bucket="snn-bucket", Key="a", Body=b"1")
    objects.uninstall(session)
    after = session.client("s3")  # (a client keeps the hooks it was made with)
    after.put_object(Bucket="snn-bucket", Key="b", Body=b"2")
    assert after.get_object(Bucket="snn-bucket", Key="a")["Body"].read() == b"1"
    assert objects.served == {
        "PutObject": 1,
        "GetObject": 0,
        "ListObjectsV2": 0,
        "DeleteObjects": 0,
    }


def test_requests_side_by_side_are_all_served_and_counted(session: Any) -> None:
    """Handlers run side by side in Map states: the backend answers each, and the count of
    served requests loses none."""
    objects = ObjectRequests(local.ACCOUNT)
    objects.install(session)
    client = session.client("s3")
    client.create_bucket(Bucket="snn-bucket")
    store = S3Store("snn-bucket", client)
    errors: list[str] = []

    def work(lane: int) -> None:
        try:
            for i in range(25):
                key = f"scratch/r/{lane}/{i}.npy"
                store.put(key, np.full((2, 2), float(lane * 100 + i)))
                assert store.get(key)[0, 0] == lane * 100 + i
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(lane,)) for lane in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert objects.served["PutObject"] == objects.served["GetObject"] == 150
    assert len(store.keys_under("scratch/r/")) == 150


@pytest.mark.xdist_group("embedded")
def test_the_engine_serves_object_requests_and_can_be_told_not_to(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with local.EmbeddedStack(ROOT / "template.yaml") as embedded:
        assert embedded.s3_requests is not None
        store = S3Store(embedded.stack.bucket)
        store.put("k", np.arange(3.0))
        np.testing.assert_array_equal(store.get("k"), np.arange(3.0))
        with pytest.raises(MissingObject, match="no object nothing"):
            store.get("nothing")
        store.put_bytes("big", bytes(1000))
        assert store.get_bytes("big", max_bytes=10) == bytes(11)
        store.put_bytes("bad.npy", b"not a matrix")
        with pytest.raises(CorruptObject, match=r"bad\.npy"):
            store.get("bad.npy")
        assert embedded.s3_requests.served["GetObject"] == 4
    monkeypatch.setenv("SNN_LOCAL_S3", "http")
    with local.EmbeddedStack(ROOT / "template.yaml") as embedded:
        assert embedded.s3_requests is None


@pytest.mark.xdist_group("embedded")
@pytest.mark.slow
def test_a_run_is_the_same_bytes_either_way(
    aws_env: None, synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tiny_parameters(epochs=1)
    results = []
    for mode in ("served", "http"):
        monkeypatch.setenv("SNN_LOCAL_S3", mode)
        results.append(local.train(spec(p, synthetic_dir, "same"), template=ROOT / "template.yaml"))
    served, http = results
    assert_same_run(served, http)
    assert served.neurons == http.neurons
    assert served.confusion_matrix == http.confusion_matrix
    assert (
        served.extra["executions"][0]["history_events"]
        == (http.extra["executions"][0]["history_events"])
    )
