"""Tests for snn.store: the key layout, S3Store and the run tables (DynamoDB under moto, and the
in-memory table of the direct engine, which must behave the same)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from snn import store
from snn.engines import local
from snn.errors import EventError
from snn.store import (
    DynamoRunTable,
    MemoryRunTable,
    MemoryStore,
    MissingObject,
    S3Store,
    StaleCommit,
    costs_in_order,
    new_record,
)
from snn.template import Template

from ..conftest import ROOT

REGION = "us-east-1"

# --- the key layout ----------------------------------------------------------------------------


def test_key_layout() -> None:
    assert store.run_prefix("run-1") == "runs/run-1/"
    assert store.epoch_prefix("run-1", 12) == "runs/run-1/epoch/0000012/"
    assert (
        store.matrix_key("run-1", 3, "W", 2, 5)
        == "runs/run-1/epoch/0000003/W/layer002/shard00005.npy"
    )
    assert (
        store.matrix_key("r", 0, "dA_prev", 10, 0)
        == "runs/r/epoch/0000000/dA_prev/layer010/shard00000.npy"
    )
    assert store.output_gradient_key("r", 7) == "runs/r/epoch/0000007/dAL.npy"
    assert store.data_key("run-1", "train", "x") == "runs/run-1/data/train_x.npy"
    assert store.data_key("run-1", "test", "y") == "runs/run-1/data/test_y.npy"
    assert store.parameters_key("r") == "runs/r/parameters.json"
    assert store.model_key("r") == "runs/r/model.npz"
    assert (
        store.upload_key("a" * 64, "train_catvnoncat.h5")
        == f"uploads/{'a' * 64}/train_catvnoncat.h5"
    )


def test_matrix_keys_are_under_their_epoch_prefix() -> None:
    for name in store.MATRIX_NAMES:
        assert store.matrix_key("r", 4, name, 1, 0).startswith(store.epoch_prefix("r", 4))
    # 0000001/ is not a prefix of 0000010/ nor of 0000011/
    assert not store.matrix_key("r", 10, "W", 1, 0).startswith(store.epoch_prefix("r", 1))


def test_shard_keys_sort_in_neuron_order() -> None:
    shards = [100, 2, 10, 0, 99_999]
    by_key = sorted(shards, key=lambda s: store.matrix_key("r", 0, "A", 1, s))
    assert by_key == sorted(shards)
    epochs = [10, 2, 100, 9_999_999]
    by_key = sorted(epochs, key=lambda e: store.matrix_key("r", e, "A", 1, 0))
    assert by_key == sorted(epochs)


@pytest.mark.parametrize(
    "run_id", ["", "a/b", "..", "../x", "a b", "x" * 61, "-a", "_a", "a.b", "a\n", None, 7, b"ab"]
)
def test_check_run_id_rejects(run_id: Any) -> None:
    with pytest.raises(EventError, match="invalid run_id"):
        store.check_run_id(run_id)
    with pytest.raises(EventError):
        store.matrix_key(run_id, 0, "W", 1, 0)


@pytest.mark.parametrize("run_id", ["run-1_A", "a", "0", "x" * 60])
def test_check_run_id_accepts(run_id: str) -> None:
    assert store.check_run_id(run_id) == run_id


@pytest.mark.parametrize("epoch", [-1, True, False, 1.0, "0", None, 10_000_000])
def test_matrix_key_rejects_bad_epoch(epoch: Any) -> None:
    with pytest.raises(EventError, match="epoch"):
        store.matrix_key("r", epoch, "W", 1, 0)


@pytest.mark.parametrize(("layer", "shard"), [(0, 0), (-1, 0), (True, 0), (1, -1), (1, False)])
def test_matrix_key_rejects_bad_layer_or_shard(layer: Any, shard: Any) -> None:
    with pytest.raises(EventError):
        store.matrix_key("r", 0, "W", layer, shard)


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown matrix"):
        store.matrix_key("r", 0, "V", 1, 0)
    with pytest.raises(ValueError):
        store.data_key("r", "valid", "x")
    with pytest.raises(ValueError):
        store.upload_key("A" * 64, "f.h5")
    with pytest.raises(ValueError):
        store.upload_key("a" * 64, "../f.h5")


# --- S3Store under moto --------------------------------------------------------------------------


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        store.reset_clients()
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="matrices")
        client.create_bucket(Bucket="other")
        yield client
    store.reset_clients()


def _awkward_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, 1.7976931348623157e308, 0.1])
    return {
        "random": rng.normal(size=(7, 13)),
        "special": special.reshape(2, 4),
        "column": rng.normal(size=(5, 1)),
        "sliced": rng.normal(size=(6, 6))[1:5:2],  # not contiguous
        "fortran": np.asfortranarray(rng.normal(size=(3, 4))),
        "ints": np.arange(12, dtype=np.int64).reshape(3, 4),
        "empty": np.zeros((0, 3)),
    }


def test_s3_put_get_round_trip_is_bit_exact(s3: Any) -> None:
    objects = S3Store("matrices", s3)
    for name, array in _awkward_arrays().items():
        key = f"runs/r/{name}.npy"
        objects.put(key, array)
        back = objects.get(key)
        assert back.dtype == array.dtype and back.shape == array.shape
        assert back.tobytes() == array.tobytes(), name
        assert objects.get_bytes(key) == store.to_npy(array)
    assert (
        objects.get_cached("runs/r/random.npy").tobytes() == _awkward_arrays()["random"].tobytes()
    )
    objects.put_bytes("runs/r/raw", b"\x00\xffbytes")
    assert objects.get_bytes("runs/r/raw") == b"\x00\xffbytes"


def test_s3_missing_key(s3: Any) -> None:
    objects = S3Store("matrices", s3)
    with pytest.raises(MissingObject, match=r"runs/r/nothing\.npy"):
        objects.get("runs/r/nothing.npy")
    with pytest.raises(EventError):  # what the handlers reject an event with
        objects.get_cached("runs/r/nothing.npy")


def _keys(s3: Any, bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_s3_delete_prefix_deletes_only_that_prefix(s3: Any) -> None:
    objects = S3Store("matrices", s3)
    doomed = [store.matrix_key("r", 1, "W", 1, s) for s in range(3)] + [
        store.output_gradient_key("r", 1)
    ]
    kept = [
        store.matrix_key("r", 0, "W", 1, 0),
        store.matrix_key("r", 10, "W", 1, 0),  # epoch 10 is not under epoch 1's prefix
        store.matrix_key("r", 11, "W", 1, 0),
        store.matrix_key("r2", 1, "W", 1, 0),  # another run, same epoch
        store.data_key("r", "train", "x"),
    ]
    for key in doomed + kept:
        objects.put_bytes(key, key.encode())
    S3Store("other", s3).put_bytes(doomed[0], b"other bucket")

    assert objects.delete_prefix(store.epoch_prefix("r", 1)) == len(doomed)
    assert _keys(s3, "matrices") == sorted(kept)
    assert _keys(s3, "other") == [doomed[0]]
    assert objects.delete_prefix(store.epoch_prefix("r", 1)) == 0  # again: nothing left


def test_s3_delete_prefix_pages_through_more_than_1000_objects(s3: Any) -> None:
    objects = S3Store("matrices", s3)
    prefix = store.epoch_prefix("r", 3)
    for i in range(1003):
        s3.put_object(Bucket="matrices", Key=f"{prefix}x{i:05d}", Body=b"")
    objects.put_bytes(store.epoch_prefix("r", 4) + "kept", b"")
    assert objects.delete_prefix(prefix) == 1003
    assert _keys(s3, "matrices") == [store.epoch_prefix("r", 4) + "kept"]


def test_memory_store_behaves_the_same() -> None:
    objects = MemoryStore()
    a = np.arange(6.0).reshape(2, 3)
    objects.put("runs/r/epoch/0000001/a", a)
    objects.put("runs/r/epoch/0000010/a", a)
    assert objects.get("runs/r/epoch/0000001/a") is a
    with pytest.raises(MissingObject):
        objects.get("runs/r/none")
    assert objects.delete_prefix("runs/r/epoch/0000001/") == 1
    assert list(objects.objects) == ["runs/r/epoch/0000010/a"]


# --- the run tables ------------------------------------------------------------------------------


def run_table_definition() -> dict[str, Any]:
    """The run table as template.yaml defines it."""
    _, props = Template.load(ROOT / "template.yaml").one("AWS::DynamoDB::Table")
    return local._table_definition(props)


@pytest.fixture(params=["dynamodb", "memory"])
def runs(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryRunTable()
        return
    request.getfixturevalue("aws_env")
    with mock_aws():
        store.reset_clients()
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(TableName="runs", **run_table_definition())
        yield DynamoRunTable("runs", client)
    store.reset_clients()


def test_create_is_idempotent(runs: Any) -> None:
    first = new_record("r", '{"p": 1}', n_x=12288)
    assert runs.create("r", first) == first
    again = new_record("r", '{"p": 2}', n_x=3)
    assert runs.create("r", again) == first  # the existing record, not the new one
    assert runs.get("r") == first
    assert runs.get("other") is None


def test_record_shape(runs: Any) -> None:
    runs.create("r", new_record("r", "{}", n_x=48))
    record = runs.get("r")
    assert record["status"] == "RUNNING" and record["committed_epoch"] == 0
    assert record["costs"] == {} and record["n_x"] == 48
    assert isinstance(record["committed_epoch"], int)


@pytest.mark.parametrize("cost", [0.1 + 0.2, 1 / 3, 0.6931471805599453, 5e-324, 1e300])
def test_record_cost_is_exact(runs: Any, cost: float) -> None:
    runs.create("r", new_record("r", "{}"))
    runs.record_cost("r", 0, 0.5)
    runs.record_cost("r", 1, cost)
    costs = costs_in_order(runs.get("r"))
    assert costs == [0.5, cost]
    assert isinstance(costs[1], float) and costs[1].hex() == cost.hex()
    runs.record_cost("r", 1, cost)  # a retried loss writes the same value again
    assert costs_in_order(runs.get("r")) == [0.5, cost]


def test_costs_are_ordered_by_epoch_not_by_text(runs: Any) -> None:
    runs.create("r", new_record("r", "{}"))
    for epoch in range(12):
        runs.record_cost("r", epoch, float(epoch))
    assert costs_in_order(runs.get("r")) == [float(e) for e in range(12)]


def test_costs_of_a_range_and_a_long_run(runs: Any) -> None:
    runs.create("r", new_record("r", "{}"))
    runs.create("s", new_record("s", "{}"))
    for epoch in range(2500):
        runs.record_cost("r", epoch, epoch / 7)
    runs.record_cost("s", 0, 9.0)
    assert runs.costs("r", range(10, 13)) == {10: 10 / 7, 11: 11 / 7, 12: 12 / 7}
    assert runs.costs("r", range(2499, 2600)) == {2499: 2499 / 7}
    assert runs.costs("r", range(5, 5)) == {}
    assert costs_in_order(runs.get("r")) == [e / 7 for e in range(2500)]
    assert runs.get("r", ("committed_epoch",)) == {"committed_epoch": 0}
    assert costs_in_order(runs.get("s")) == [9.0]


def test_create_puts_back_the_costs_of_a_saved_record(runs: Any) -> None:
    saved = new_record("r", "{}") | {"costs": {"0": repr(0.5), "1": repr(1 / 3)}}
    runs.create("r", saved)
    assert costs_in_order(runs.get("r")) == [0.5, 1 / 3]


def test_commit_advances_once(runs: Any) -> None:
    runs.create("r", new_record("r", "{}"))
    assert runs.commit("r", 0) == 1
    after_first = runs.get("r")
    assert after_first["committed_epoch"] == 1

    assert runs.commit("r", 0) == 1  # a duplicate: a no-op that answers the same
    assert runs.get("r") == after_first  # updated_at included: nothing was written

    with pytest.raises(StaleCommit, match="at epoch 1; cannot commit epoch 2"):
        runs.commit("r", 2)  # newer than the run
    assert runs.commit("r", 1) == 2
    with pytest.raises(StaleCommit, match="at epoch 2; cannot commit epoch 0"):
        runs.commit("r", 0)  # older than the duplicate
    assert runs.get("r")["committed_epoch"] == 2
    assert issubclass(StaleCommit, EventError)


def test_update_sets_fields(runs: Any) -> None:
    runs.create("r", new_record("r", "{}"))
    runs.update("r", {"status": "FAILED", "error": "E", "matrix": {"a": 1}, "none": None})
    record = runs.get("r")
    assert (record["status"], record["error"], record["matrix"], record["none"]) == (
        "FAILED",
        "E",
        {"a": 1},
        None,
    )


def test_dynamodb_stores_costs_as_exact_text(aws_env: None) -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(TableName="runs", **run_table_definition())
        table = DynamoRunTable("runs", client)
        table.create("r", new_record("r", "{}"))
        table.record_cost("r", 0, 0.1 + 0.2)
        item = client.get_item(TableName="runs", Key=store.run_key("r"))["Item"]
        assert "costs" not in item and item["committed_epoch"] == {"N": "0"}
        cost = client.get_item(
            TableName="runs", Key={"run_id": {"S": "r"}, "entry": {"S": "cost#0000000"}}
        )["Item"]
        assert cost["cost"] == {"S": "0.30000000000000004"}
        with pytest.raises(MissingObject, match="unknown run"):
            table.commit("nobody", 0)
