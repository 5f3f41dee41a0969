"""The stores behind the key layout: matrices in S3 (under moto) or in memory, the run table in
DynamoDB (under moto) or in memory. Each contract runs against both, since every engine runs the
same stage code on one or the other."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws

from snn import keys, stores
from snn.engines.local.embedded import table_definition
from snn.errors import EventError
from snn.stores import (
    ConditionFailed,
    CorruptObject,
    DynamoRunTable,
    MemoryRunTable,
    MemoryStore,
    MissingObject,
    S3Store,
    costs_in_order,
    new_record,
    to_npy,
)
from snn.stores import runs as runs_module
from snn.template import Template
from tests.helpers import FAKE_AWS_ENV, ROOT

REGION = "us-east-1"


# --- the matrix stores ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulated() -> Iterator[None]:
    """One emulated account for the module (starting one takes a while); each test makes its
    own bucket or table in it."""
    with pytest.MonkeyPatch.context() as env:
        for k, v in FAKE_AWS_ENV.items():
            env.setenv(k, v)
        for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
            env.delenv(k, raising=False)
        with mock_aws():
            stores.reset_clients()
            yield
    stores.reset_clients()


_names = itertools.count()


@dataclass
class Buckets:
    s3: Any
    name: str
    other: str

    def store(self, bucket: str | None = None) -> S3Store:
        return S3Store(bucket or self.name, self.s3)


@pytest.fixture
def s3(emulated: None) -> Iterator[Buckets]:
    S3Store.forget_cached()
    client = boto3.client("s3", region_name=REGION)
    n = next(_names)
    buckets = Buckets(client, f"matrices-{n}", f"other-{n}")
    client.create_bucket(Bucket=buckets.name)
    client.create_bucket(Bucket=buckets.other)
    yield buckets
    S3Store.forget_cached()


@pytest.fixture(params=["s3", "memory"])
def matrices(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryStore()
    return request.getfixturevalue("s3").store()


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


def test_put_get_round_trip_is_bit_exact(matrices: Any) -> None:
    for name, array in _awkward_arrays().items():
        key = f"scratch/r/{name}.npy"
        matrices.put(key, array)
        for back in (matrices.get(key), matrices.get_cached(key), *matrices.get_many([key])):
            assert back.dtype == array.dtype and back.shape == array.shape, name
            assert back.tobytes() == array.tobytes(), name
    matrices.put_bytes("runs/r/raw", b"\x00\xffbytes")
    assert matrices.get_bytes("runs/r/raw") == b"\x00\xffbytes"


def test_s3_stores_matrices_as_npy_objects(s3: Buckets) -> None:
    objects = s3.store()
    array = _awkward_arrays()["random"]
    objects.put("scratch/r/a.npy", array)
    assert objects.get_bytes("scratch/r/a.npy") == to_npy(array)
    stored = s3.s3.get_object(Bucket=s3.name, Key="scratch/r/a.npy")["Body"].read()
    assert stored == to_npy(array)


def test_a_missing_object_names_its_key(matrices: Any) -> None:
    for read in (matrices.get, matrices.get_cached, matrices.get_bytes):
        with pytest.raises(MissingObject, match=r"scratch/r/nothing\.npy"):
            read("scratch/r/nothing.npy")
    matrices.put("scratch/r/a.npy", np.zeros(2))
    with pytest.raises(MissingObject, match=r"scratch/r/nothing\.npy"):
        matrices.get_many(["scratch/r/a.npy", "scratch/r/nothing.npy"])
    assert issubclass(MissingObject, EventError)  # what the handlers reject an event with


@pytest.mark.parametrize(
    "data",
    [b"not a matrix", b"", b"\x93NUMPY\x01\x00garbage", to_npy(np.zeros(3))[:-5]],
    ids=["text", "empty", "bad-header", "truncated"],
)
def test_a_non_npy_object_is_corrupt_and_named(matrices: Any, data: bytes) -> None:
    key = "scratch/r/step/000000000/W/layer001/shard00000.npy"
    matrices.put_bytes(key, data)
    for read in (matrices.get, matrices.get_cached):
        with pytest.raises(CorruptObject, match=r"shard00000\.npy is not a readable \.npy"):
            read(key)
    with pytest.raises(CorruptObject, match=r"shard00000\.npy"):
        matrices.get_many([key, key])
    assert issubclass(CorruptObject, EventError)


def test_a_pickled_object_is_never_unpickled(matrices: Any) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    matrices.put_bytes("scratch/r/pickle.npy", buf.getvalue())
    with pytest.raises(CorruptObject, match=r"scratch/r/pickle\.npy"):
        matrices.get("scratch/r/pickle.npy")


def test_get_many_keeps_the_order_of_its_keys(matrices: Any) -> None:
    names = [keys.matrix_key("r", 0, "A", 1, s) for s in range(40)]
    for s, key in enumerate(names):
        matrices.put(key, np.full((1, 3), float(s)))
    order = [*names[::-1], names[5], names[5]]  # read side by side, returned in this order
    got = matrices.get_many(order)
    assert [float(a[0, 0]) for a in got] == [float(names.index(k)) for k in order]
    assert matrices.get_many([]) == []
    assert [float(a[0, 0]) for a in matrices.get_many(names[3:4])] == [3.0]


@pytest.mark.parametrize(("size", "limit"), [(100, 10), (100, 99), (100, 100), (100, 500), (0, 0)])
def test_get_bytes_reads_at_most_one_byte_over_max_bytes(
    matrices: Any, size: int, limit: int
) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    matrices.put_bytes("uploads/big", data)
    assert matrices.get_bytes("uploads/big") == data
    assert matrices.get_bytes("uploads/big", max_bytes=limit) == data[: limit + 1]


def test_keys_under_and_delete_prefix_reach_only_that_prefix(matrices: Any) -> None:
    doomed = [keys.matrix_key("r", 1, "W", 1, s) for s in range(3)]
    doomed.append(keys.output_gradient_key("r", 1))
    kept = [
        keys.matrix_key("r", 0, "W", 1, 0),
        keys.matrix_key("r", 10, "W", 1, 0),  # epoch 10 is not under epoch 1's prefix
        keys.matrix_key("r", 11, "W", 1, 0),
        keys.matrix_key("r2", 1, "W", 1, 0),  # another run, same epoch
        keys.data_key("r", "train", "x"),
    ]
    for key in doomed + kept:
        matrices.put_bytes(key, key.encode())
    assert matrices.keys_under(keys.step_prefix("r", 1)) == set(doomed)
    assert matrices.keys_under(keys.scratch_prefix("r")) == set(doomed + kept[:3])
    assert matrices.keys_under("nothing/") == set()

    assert matrices.delete_prefix(keys.step_prefix("r", 1)) == len(doomed)
    assert matrices.keys_under("") == set(kept)
    assert matrices.delete_prefix(keys.step_prefix("r", 1)) == 0  # again: nothing left
    for key in kept:
        assert matrices.get_bytes(key) == key.encode()


def test_s3_delete_prefix_stays_in_its_bucket(s3: Buckets) -> None:
    key = keys.matrix_key("r", 1, "W", 1, 0)
    s3.store().put_bytes(key, b"this bucket")
    s3.store(s3.other).put_bytes(key, b"other bucket")
    assert s3.store().delete_prefix(keys.step_prefix("r", 1)) == 1
    assert s3.store(s3.other).keys_under("") == {key}


def test_s3_listing_and_deleting_page_through_more_than_1000_objects(s3: Buckets) -> None:
    from moto.s3.models import s3_backends

    objects = s3.store()
    prefix = keys.step_prefix("r", 3)
    many = {f"{prefix}x{i:05d}" for i in range(1003)}
    backend = s3_backends["123456789012"]["aws"]  # written behind the API: a thousand puts are slow
    for key in many:
        backend.put_object(s3.name, key, b"")
    objects.put_bytes(keys.step_prefix("r", 4) + "kept", b"")
    assert objects.keys_under(prefix) == many
    assert objects.delete_prefix(prefix) == 1003
    assert objects.keys_under("") == {keys.step_prefix("r", 4) + "kept"}


def test_s3_get_cached_keeps_a_read_only_copy_per_bucket_and_key(s3: Buckets) -> None:
    key = keys.data_key("r", "train", "x")
    s3.store().put(key, np.ones(3))
    s3.store(s3.other).put(key, np.zeros(3))
    first = s3.store().get_cached(key)
    assert s3.store().get_cached(key) is first  # a warm container reads it once
    assert not first.flags.writeable
    assert np.array_equal(s3.store(s3.other).get_cached(key), np.zeros(3))
    s3.s3.delete_object(Bucket=s3.name, Key=key)
    assert s3.store().get_cached(key) is first
    S3Store.forget_cached()
    with pytest.raises(MissingObject):
        s3.store().get_cached(key)


def test_s3_cache_is_bounded(s3: Buckets) -> None:
    objects = s3.store()
    for i in range(3 * S3Store.MAX_CACHED):
        objects.put(f"runs/r/data/{i}.npy", np.full(2, i))
        objects.get_cached(f"runs/r/data/{i}.npy")
        assert len(S3Store._cache) <= S3Store.MAX_CACHED


@pytest.mark.parametrize(("status", "code"), [(403, "AccessDenied"), (500, "InternalError")])
def test_s3_a_key_read_without_list_permission_is_missing(
    s3: Buckets, status: int, code: str
) -> None:
    """Without s3:ListBucket, S3 answers a missing key with 403 AccessDenied, not 404: that is a
    missing object too; any other error is not."""
    from botocore.awsrequest import AWSResponse
    from botocore.exceptions import ClientError

    def refuse(**_: Any) -> Any:
        error = {"Error": {"Code": code, "Message": "no"}, "ResponseMetadata": {}}
        return AWSResponse("", status, {}, None), error

    s3.s3.meta.events.register("before-call.s3.GetObject", refuse)
    try:
        if code == "AccessDenied":
            with pytest.raises(MissingObject, match=r"no object runs/r/x\.npy .*access denied"):
                s3.store().get("runs/r/x.npy")
        else:
            with pytest.raises(ClientError, match=code):
                s3.store().get("runs/r/x.npy")
    finally:
        s3.s3.meta.events.unregister("before-call.s3.GetObject", refuse)


def test_memory_store_keeps_the_array_itself() -> None:
    objects = MemoryStore()
    a = np.arange(6.0).reshape(2, 3)
    objects.put("scratch/r/step/000000001/a", a)
    assert objects.get("scratch/r/step/000000001/a") is a


# --- the run tables ------------------------------------------------------------------------------


def run_table_definition() -> dict[str, Any]:
    """The run table as template.yaml defines it, as the local engine creates it."""
    _, props = Template.load(ROOT / "template.yaml").one("AWS::DynamoDB::Table")
    return table_definition(props)


@dataclass
class Table:
    client: Any
    name: str

    def item(self, run_id: str, entry: str = keys.RUN_ENTRY) -> dict[str, Any]:
        return self.client.get_item(TableName=self.name, Key=keys.item_key(run_id, entry))["Item"]


@pytest.fixture
def dynamodb(emulated: None) -> Table:
    client = boto3.client("dynamodb", region_name=REGION)
    name = f"runs-{next(_names)}"
    client.create_table(TableName=name, **run_table_definition())
    return Table(client, name)


@pytest.fixture
def served_dynamodb(emulated: None) -> Iterator[Table]:
    """The run table behind a client whose item requests the local engine's emulator answers
    itself (GetItem, PutItem, UpdateItem, Query: moto's answers without the HTTP detour, on
    botocore's short path): the contract must hold there too."""
    from snn.engines.local import emulator

    session = boto3.session.Session(region_name=REGION)
    items = emulator.dynamodb.ItemRequests(emulator.ACCOUNT, emulator.REGION)
    uninstall = items.install(session)
    undo = emulator.short_path.install(session, {"dynamodb": emulator.dynamodb.SERVED})
    client = session.client("dynamodb")
    name = f"runs-{next(_names)}"
    client.create_table(TableName=name, **run_table_definition())
    yield Table(client, name)
    undo()
    uninstall()
    assert items.served + sum(items.handled.values()) > 0  # the contract ran on the served path


@pytest.fixture(params=["dynamodb", "served-dynamodb", "memory"])
def runs(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryRunTable()
    table = request.getfixturevalue(request.param.replace("-", "_"))
    return DynamoRunTable(table.name, table.client)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write stamps a new updated_at (the real clock has one-second steps): a write that
    happened shows, even within a second."""
    ticks = itertools.count()
    monkeypatch.setattr(runs_module, "now", lambda: f"2030-01-01T00:00:{next(ticks):06d}Z")


def test_create_returns_the_record_and_the_first_create_wins(runs: Any) -> None:
    """create returns the record as stored, without its costs (Init reads no costs)."""
    first = new_record("r", '{"p": 1}', n_x=12288)
    assert runs.create("r", first) == first
    again = new_record("r", '{"p": 2}', n_x=3)
    runs.record_cost("r", 0, 0.5)
    assert runs.create("r", again) == first  # the existing one, unchanged
    assert runs.get("r") == {**first, "costs": {"0": "0.5"}}
    assert runs.get("other") is None


def test_a_number_comes_back_as_the_number_it_was(runs: Any) -> None:
    """Floats (accuracies, the best validation cost) bit for bit, ints as ints, on every table;
    a non-finite number is refused before anything is written."""
    runs.create("r", new_record("r", "{}"))
    values = {"train_accuracy": 0.72, "best_validation_cost": 0.1 + 0.2}
    values |= {"tiny": 1.5e-130, "zero": 0.0}
    runs.update("r", {**values, "best_epoch": 7})
    record = runs.get("r")
    for field, value in values.items():
        assert type(record[field]) is float and record[field] == value, field
    assert type(record["best_epoch"]) is int and record["best_epoch"] == 7
    if isinstance(runs, DynamoRunTable):
        for wrong in (float("nan"), float("inf"), 5e-324):
            with pytest.raises(ValueError, match="only finite numbers"):
                runs.update("r", {"best_validation_cost": wrong})
        assert runs.get("r")["best_validation_cost"] == values["best_validation_cost"]


def test_record_shape(runs: Any) -> None:
    runs.create("r", new_record("r", "{}", n_x=48, train_key="uploads/a/b"))
    record = runs.get("r")
    assert record["run_id"] == "r" and record["parameters"] == "{}"
    assert record["status"] == "RUNNING" and record["committed_epoch"] == 0
    assert record["committed_step"] == 0 and isinstance(record["committed_step"], int)
    assert record["costs"] == {} and record["n_x"] == 48 and record["train_key"] == "uploads/a/b"
    assert isinstance(record["committed_epoch"], int) and isinstance(record["n_x"], int)
    assert record["created_at"] == record["updated_at"]


def test_get_reads_only_the_fields_asked_for(runs: Any) -> None:
    runs.create("r", new_record("r", "{}", n_x=48))
    runs.record_cost("r", 0, 0.5)
    assert runs.get("r", ("committed_epoch",)) == {"committed_epoch": 0}
    assert runs.get("r", ("status", "n_x", "absent")) == {"status": "RUNNING", "n_x": 48}
    assert runs.get("r", ("status", "costs")) == {"status": "RUNNING", "costs": {"0": "0.5"}}
    assert runs.get("r", ("run_id",)) == {"run_id": "r"}
    assert runs.get("nobody", ("status",)) is None


@pytest.mark.parametrize("cost", [0.1 + 0.2, 1 / 3, 0.6931471805599453, 5e-324, 1e300])
def test_record_cost_is_exact(runs: Any, cost: float) -> None:
    runs.create("r", new_record("r", "{}"))
    runs.record_cost("r", 0, 0.5)
    runs.record_cost("r", 1, cost)
    costs = costs_in_order(runs.get("r"))
    assert costs == [0.5, cost]
    assert isinstance(costs[1], float) and costs[1].hex() == cost.hex()
    assert runs.costs("r", range(2)) == {0: 0.5, 1: cost}


def test_record_cost_again_with_the_same_value_is_fine_and_another_is_refused(
    runs: Any,
) -> None:
    runs.create("r", new_record("r", "{}"))
    runs.record_cost("r", 0, 1 / 3)
    runs.record_cost("r", 0, 1 / 3)  # a retried Loss writes the same value again
    with pytest.raises(ConditionFailed, match=r"cost#0000000 is already 0\.3333333333333333, not"):
        runs.record_cost("r", 0, 1 / 3 + 1e-16)
    with pytest.raises(ConditionFailed, match=r"run r: cost#0000000 is already"):
        runs.record_cost("r", 0, 0.25)
    assert runs.costs("r", range(1)) == {0: 1 / 3}
    assert issubclass(ConditionFailed, EventError)


def test_costs_are_ordered_by_epoch_not_by_text(runs: Any) -> None:
    runs.create("r", new_record("r", "{}"))
    for epoch in (11, 2, 10, 0, 1, 3, 4, 5, 6, 7, 8, 9):
        runs.record_cost("r", epoch, float(epoch))
    assert costs_in_order(runs.get("r")) == [float(e) for e in range(12)]


def test_costs_of_a_range_and_of_a_long_run(runs: Any) -> None:
    runs.create("r", new_record("r", "{}"))
    runs.create("s", new_record("s", "{}"))
    n = 300  # each write is a request to the emulator
    for epoch in range(n):
        runs.record_cost("r", epoch, epoch / 7)
    runs.record_cost("s", 0, 9.0)
    assert runs.costs("r", range(10, 13)) == {10: 10 / 7, 11: 11 / 7, 12: 12 / 7}
    assert runs.costs("r", range(n - 1, n + 100)) == {n - 1: (n - 1) / 7}
    assert runs.costs("r", range(5, 5)) == {}
    assert costs_in_order(runs.get("r")) == [e / 7 for e in range(n)]
    assert runs.get("r", ("committed_epoch",)) == {"committed_epoch": 0}
    assert costs_in_order(runs.get("s")) == [9.0]
    assert runs.costs("s", range(0, n)) == {0: 9.0}


def test_create_puts_back_the_costs_of_a_saved_record(runs: Any) -> None:
    costs = {"0": repr(0.5), "1": repr(1 / 3)}
    saved = new_record("r", "{}", committed_epoch=2, committed_step=2)
    assert runs.create("r", {**saved, "costs": costs}) == saved
    assert costs_in_order(runs.get("r")) == [0.5, 1 / 3]
    assert runs.get("r") == {**saved, "costs": costs}


def test_commit_advances_once(runs: Any, clock: None) -> None:
    runs.create("r", new_record("r", "{}"))
    assert runs.commit("r", 0) == 1
    after_first = runs.get("r")
    assert after_first["committed_step"] == 1
    assert after_first["committed_epoch"] == 0  # steps only: the epoch is a field of its own
    assert after_first["updated_at"] != after_first["created_at"]

    assert runs.commit("r", 0) == 1  # a duplicate: a no-op that answers the same
    assert runs.get("r") == after_first  # updated_at included: nothing was written

    with pytest.raises(ConditionFailed, match="at step 1; cannot commit step 2"):
        runs.commit("r", 2)  # newer than the run
    assert runs.get("r") == after_first
    assert runs.commit("r", 1) == 2
    with pytest.raises(ConditionFailed, match="at step 2; cannot commit step 0"):
        runs.commit("r", 0)  # older than the duplicate
    assert runs.get("r")["committed_step"] == 2


def test_commit_writes_its_fields_in_the_same_write(runs: Any, clock: None) -> None:
    """Commit of an epoch's last step closes the epoch: its fields go with the step, once."""
    runs.create("r", new_record("r", "{}"))
    closing = {"committed_epoch": 1, "best_epoch": 0, "best_validation_cost": 0.25}
    assert runs.commit("r", 0, closing) == 1
    after = runs.get("r")
    assert (after["committed_epoch"], after["best_epoch"], after["committed_step"]) == (1, 0, 1)
    # (a float comes back as the float from memory, as its exact text from DynamoDB)
    assert float(after["best_validation_cost"]) == 0.25
    # a replay, even with other fields, writes nothing
    assert runs.commit("r", 0, {"committed_epoch": 7, "stopped": "x"}) == 1
    assert runs.get("r") == after
    # refused, its fields are not written either
    with pytest.raises(ConditionFailed, match="at step 1; cannot commit step 3"):
        runs.commit("r", 3, {"committed_epoch": 9})
    assert runs.get("r") == after


@pytest.mark.parametrize("status", ["FAILED", "SUCCEEDED"])
def test_commit_of_a_run_that_is_not_running_is_refused(
    runs: Any, clock: None, status: str
) -> None:
    runs.create("r", new_record("r", "{}"))
    runs.commit("r", 0)
    runs.update("r", {"status": status})
    before = runs.get("r")
    with pytest.raises(ConditionFailed, match=f"run r is {status}, not RUNNING") as refused:
        runs.commit("r", 1)
    assert refused.value.record["status"] == status
    assert runs.get("r") == before
    assert runs.commit("r", 0) == 1  # the replay of a commit made before: still a no-op
    assert runs.get("r") == before


def test_commit_of_an_unknown_run(runs: Any) -> None:
    with pytest.raises(MissingObject, match="unknown run"):
        runs.commit("nobody", 0)


def test_update_sets_fields(runs: Any, clock: None) -> None:
    runs.create("r", new_record("r", "{}"))
    created = runs.get("r")
    fields = {
        "status": "FAILED",
        "error": "E",
        "matrix": {"a": 1, "b": {"c": "d"}},
        "none": None,
        "flag": True,
        "count": 7,
    }
    runs.update("r", fields)
    record = runs.get("r")
    assert {k: record[k] for k in fields} == fields
    assert record["updated_at"] != created["updated_at"]
    assert record["created_at"] == created["created_at"]


def test_update_of_an_unknown_run(runs: Any) -> None:
    with pytest.raises(MissingObject, match="unknown run"):
        runs.update("nobody", {"status": "FAILED"})
    with pytest.raises(MissingObject, match="unknown run"):
        runs.update("nobody", {"status": "FAILED"}, when={"status": "RUNNING"})
    assert runs.get("nobody") is None


def test_update_when_the_record_is_as_expected(runs: Any, clock: None) -> None:
    runs.create("r", new_record("r", "{}", execution="r"))
    runs.update("r", {"execution": "r-e0000004"}, when={"status": "RUNNING", "execution": "r"})
    assert runs.get("r")["execution"] == "r-e0000004"
    # a tuple: any of its values; None: the field is absent
    runs.update("r", {"note": "a"}, when={"execution": ("x", "r-e0000004"), "absent": None})
    assert runs.get("r")["note"] == "a"
    runs.update("r", {"note": "b"}, when={"absent": ("y", None)})
    assert runs.get("r")["note"] == "b"


@pytest.mark.parametrize(
    "when",
    [
        {"status": "FAILED"},
        {"status": "RUNNING", "execution": "other"},
        {"execution": ("a", "b")},
        {"execution": None},  # present, not absent
        {"absent": "x"},  # absent, not equal
        {"committed_epoch": 1},
    ],
)
def test_update_is_refused_with_nothing_written_when_the_record_is_not_as_expected(
    runs: Any, clock: None, when: dict[str, Any]
) -> None:
    runs.create("r", new_record("r", "{}", execution="r"))
    before = runs.get("r")
    with pytest.raises(ConditionFailed, match="run r is not in the state this needs") as refused:
        runs.update("r", {"status": "FAILED", "error": "E"}, when=when)
    assert "status RUNNING, epoch 0" in str(refused.value)
    assert refused.value.record["status"] == "RUNNING"
    assert runs.get("r") == before


def test_a_replayed_update_whose_values_are_in_place_is_a_no_op(runs: Any, clock: None) -> None:
    runs.create("r", new_record("r", "{}", execution="r"))
    fields = {"status": "FAILED", "error": "E", "cause": "C", "failed_execution": "r"}
    when = {"status": "RUNNING", "execution": ("r", None)}
    runs.update("r", fields, when=when)
    after = runs.get("r")
    assert after["status"] == "FAILED"
    runs.update("r", fields, when=when)  # `when` holds no more; every value is in place
    runs.update("r", {"status": "FAILED"})
    runs.update("r", {"error": "E", "cause": "C"}, when={"status": "RUNNING"})
    assert runs.get("r") == after  # updated_at unchanged: nothing was written
    # ... but a different value is refused, and half a replay is not a replay
    with pytest.raises(ConditionFailed, match="status FAILED"):
        runs.update("r", {"error": "other"}, when=when)
    with pytest.raises(ConditionFailed):
        runs.update("r", {"error": "E", "cause": "other"}, when=when)
    assert runs.get("r") == after


def test_claim_first_wins(runs: Any) -> None:
    assert runs.claim("r", "token-a") is True
    assert runs.claim("r", "token-a") is True  # the same starter again
    assert runs.claim("r", "token-b") is False
    assert runs.claim("r", "token-a") is True  # the loser changed nothing
    assert runs.claim("s", "token-b") is True  # another run id is another claim


def test_each_series_is_kept_apart_exactly(runs: Any) -> None:
    """Costs of epochs, summed costs of mini-batches (steps), validation costs: each series is
    recorded once per number, read by range, and never mixed with another."""
    runs.create("r", new_record("r", "{}"))
    runs.create("s", new_record("s", "{}"))
    for k in range(12):
        runs.record("r", "loss", k, k + 0.1)
    for e in range(3):
        runs.record_cost("r", e, e + 0.2)
        runs.record("r", "valid", e, e + 0.3)
    runs.record("s", "loss", 0, 99.0)
    assert runs.values("r", "loss", range(4, 8)) == {k: k + 0.1 for k in range(4, 8)}
    assert runs.values("r", "loss", range(0, 100)) == {k: k + 0.1 for k in range(12)}
    assert runs.values("r", "valid", range(0, 3)) == {e: e + 0.3 for e in range(3)}
    assert runs.values("r", "cost", range(0, 3)) == runs.costs("r", range(0, 3))
    assert runs.costs("r", range(0, 3)) == {e: e + 0.2 for e in range(3)}
    assert runs.values("r", "loss", range(12, 12)) == {}
    assert costs_in_order(runs.get("r")) == [0.2, 1.2, 2.2]  # the record's costs: epochs only
    runs.record("r", "loss", 11, 11.1)  # the same value again: a retry
    with pytest.raises(ConditionFailed, match=r"run r: loss#000000011 is already 11\.1, not 11\.2"):
        runs.record("r", "loss", 11, 11.2)
    with pytest.raises(ConditionFailed, match=r"valid#0000000 is already"):
        runs.record("r", "valid", 0, 5.0)
    assert runs.values("r", "valid", range(0, 1)) == {0: 0.3}
    assert runs.values("s", "loss", range(0, 12)) == {0: 99.0}


def test_a_claim_is_not_a_run(runs: Any) -> None:
    runs.claim("r", "token")
    assert runs.get("r") is None
    runs.create("r", new_record("r", "{}"))
    runs.record_cost("r", 0, 0.5)
    record = runs.get("r")
    assert record["costs"] == {"0": "0.5"} and "token" not in record
    assert runs.costs("r", range(0, 10)) == {0: 0.5}


# --- DynamoDB, item by item ----------------------------------------------------------------------


def test_dynamodb_keeps_the_record_small_and_costs_as_exact_text(dynamodb: Table) -> None:
    table = DynamoRunTable(dynamodb.name, dynamodb.client)
    table.create("r", new_record("r", "{}"))
    for epoch in range(50):
        table.record_cost("r", epoch, 0.1 + 0.2 + epoch)
    table.claim("r", "token")
    item = dynamodb.item("r")
    assert "costs" not in item and item["committed_epoch"] == {"N": "0"}
    assert item["entry"] == {"S": "run"}
    assert dynamodb.item("r", keys.cost_entry(0))["value"] == {"S": "0.30000000000000004"}
    assert dynamodb.item("r", keys.CLAIM_ENTRY)["token"] == {"S": "token"}
    entries = dynamodb.client.scan(TableName=dynamodb.name)["Items"]
    assert len(entries) == 1 + 50 + 1


def test_dynamodb_stores_floats_of_the_record_exactly(dynamodb: Table) -> None:
    table = DynamoRunTable(dynamodb.name, dynamodb.client)
    table.create("r", new_record("r", "{}"))
    table.update("r", {"train_accuracy": 0.1 + 0.2})
    item = dynamodb.item("r")
    assert item["train_accuracy"] == {"N": "0.30000000000000004"}  # 17 digits: exact
    assert table.get("r")["train_accuracy"] == 0.1 + 0.2
    table.update("r", {"train_accuracy": 0.1 + 0.2}, when={"status": "FAILED"})  # a replay
    with pytest.raises(TypeError, match="cannot store"):
        table.update("r", {"bad": object()})
