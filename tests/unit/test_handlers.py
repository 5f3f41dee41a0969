"""The Lambda handlers on the embedded stack (moto): each stage's happy path, the events each one
must reject (with EventError, writing nothing at all), and idempotency (a stage invoked twice
with the same event leaves exactly what one invocation left)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from snn import network as nn
from snn import stages
from snn import store as keys
from snn.data import TRAIN_FILE, read_h5_pair
from snn.engines import direct
from snn.engines.stack import upload_inputs
from snn.errors import EventError
from snn.parameters import Parameters
from snn.report import load_model
from tests.unit.handler_steps import Snapshot, epoch_events, handler, run_events

ROOT = Path(__file__).parents[2]
RUN = "r"
SHARD_STAGES = ("forward_linear", "activation", "backward", "update")


@pytest.fixture
def st(embedded_stack: Any) -> Any:
    return embedded_stack.stack


@pytest.fixture
def params() -> Parameters:
    """The seed's network, 2 epochs, its 3 hidden neurons in uneven shards of 2 and 1."""
    raw = Parameters.load(ROOT / "parameters.json").to_dict()
    return Parameters.from_dict({**raw, "epochs": 2, "neurons_per_task": 2})


def prepare(st: Any, data_dir: Path, p: Parameters, stage: str, run_id: str = RUN):
    """Bring a new run to the moment just before the first invocation of `stage` in the state
    machine's order, and return that invocation's event."""
    event = upload_inputs(st, run_id, p, data_dir)
    if stage == "init":
        return event
    plan = handler("init")(event, None)
    if stage == "record_failure":
        return {"run_id": run_id, "error": "States.TaskFailed", "cause": "an example failure"}
    if stage == "evaluate":
        run_events(plan)
        return {"run_id": run_id}
    for name, event in epoch_events(plan, 0):
        if name == stage:
            return event
        handler(name)(event, None)
    raise AssertionError(f"no stage {stage}")


# --- the events every stage must reject ----------------------------------------------------------

BAD_RUN_IDS = ["r/x", "..", "../r", "", "r\n", "r r", 7, None]


def common_bad_events(good: dict[str, Any]) -> dict[str, Any]:
    bad: dict[str, Any] = {"unknown run": {**good, "run_id": "nobody"}}
    bad |= {f"run_id {r!r}": {**good, "run_id": r} for r in BAD_RUN_IDS}
    bad |= {f"missing {k}": {n: v for n, v in good.items() if n != k} for k in good}
    bad |= {"not an object": [good], "null": None}
    return bad


def epoch_bad_events(good: dict[str, Any], p: Parameters) -> dict[str, Any]:
    return {
        "epoch == epochs": {**good, "epoch": p.epochs},
        "epoch far beyond": {**good, "epoch": 10**7},
        "epoch not reached (its inputs are absent)": {**good, "epoch": 1},
        "negative epoch": {**good, "epoch": -1},
        "string epoch": {**good, "epoch": "0"},
        "bool epoch": {**good, "epoch": False},
        "float epoch": {**good, "epoch": 0.0},
    }


def shard_bad_events(good: dict[str, Any], p: Parameters) -> dict[str, Any]:
    layer = good["layer"]
    return {
        "layer 0": {**good, "layer": 0},
        "layer beyond the last": {**good, "layer": p.layers + 1},
        "shard beyond the layer's": {**good, "shard": len(p.shards(layer))},
        "shard far beyond": {**good, "shard": 10**6},
        "string layer": {**good, "layer": str(layer)},
        "bool layer": {**good, "layer": True},
        "null shard": {**good, "shard": None},
        "negative shard": {**good, "shard": -1},
    }


def expect_rejections(snap: Snapshot, stage: str, bad: dict[str, Any]) -> Any:
    """Every bad event is rejected with EventError and leaves the stack exactly as it was."""
    before = snap()
    for name, event in bad.items():
        with pytest.raises(EventError):
            handler(stage)(event, None)
        assert snap() == before, f"{stage}: the rejected event ({name}) wrote something"
    return before


# --- one test per stage: bad events first, then the good one ------------------------------------


@pytest.mark.parametrize("stage", SHARD_STAGES)
def test_shard_stage(st: Any, synthetic_dir: Path, params: Parameters, stage: str) -> None:
    good = prepare(st, synthetic_dir, params, stage)
    snap = Snapshot(st)
    bad = common_bad_events(good) | epoch_bad_events(good, params) | shard_bad_events(good, params)
    before = expect_rejections(snap, stage, bad)

    result = handler(stage)(good, None)
    objects, items = snap()
    written = sorted(set(objects) - set(before[0]))
    assert items == before[1]  # the shard stages never touch the run record
    assert len(json.dumps(result)) < 200
    get = st.objects.get
    layer, shard = good["layer"], good["shard"]
    s = params.shard(layer, shard)

    def key(name: str, epoch: int = 0) -> str:
        return keys.matrix_key(RUN, epoch, name, layer, shard)

    if stage == "forward_linear":
        assert written == [key("Z")]
        assert result == {"key": key("Z"), "shape": [s.hi - s.lo, 40]}
        X = get(keys.data_key(RUN, "train", "x"))
        assert np.array_equal(get(key("Z")), nn.linear_forward(get(key("W")), get(key("b")), X))
    elif stage == "activation":
        assert written == [key("A")]
        assert np.array_equal(get(key("A")), nn.relu(get(key("Z"))))
    elif stage == "backward":  # the last layer comes first: its dA_prev is written too
        assert (layer, shard) == (2, 0)
        stats_key = keys.neuron_stats_key(RUN, 0, layer, shard)  # epoch 0 is always sampled
        assert written == sorted([key("dA_prev"), key("dW"), key("db"), stats_key])
        assert set(result) == {"dW_norm", "db_norm"}
        assert result["dW_norm"] == float(np.linalg.norm(get(key("dW"))))
        stats = get(stats_key)  # one row per neuron: |dW row|, |db|, Z mean, std, A mean, std
        assert stats.shape == (s.hi - s.lo, 6)
        assert stats[0, 0] == np.linalg.norm(get(key("dW"))[0])
        assert stats[0, 2] == get(key("Z"))[0].mean()
    elif stage == "update":
        assert written == [key("W", 1), key("b", 1)]
        expected = get(key("W")) - params.learning_rate * get(key("dW"))
        assert np.array_equal(get(key("W", 1)), expected)
    assert {k: objects[k] for k in before[0]} == before[0]  # nothing else changed


def test_init(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "init")
    # Runs that init must refuse to touch: one with other parameters, one that has failed.
    other = upload_inputs(st, "other", params, synthetic_dir)
    handler("init")(other, None)
    changed = Parameters.from_dict({**params.to_dict(), "learning_rate": 0.5})
    st.objects.put_bytes(other["parameters_key"], changed.to_json().encode())
    failed = upload_inputs(st, "failed", params, synthetic_dir)
    handler("init")(failed, None)
    handler("record_failure")({"run_id": "failed", "error": "E", "cause": "C"}, None)
    # Inputs that are there but wrong.
    st.objects.put_bytes("runs/badp/parameters.json", b'{"epochs": 0}')
    junk = b"<html>not found</html>"
    junk_key = f"uploads/{hashlib.sha256(junk).hexdigest()}/{TRAIN_FILE}"
    st.objects.put_bytes(junk_key, junk)

    snap = Snapshot(st)
    absent = "uploads/" + "0" * 64 + "/test_catvnoncat.h5"
    bad = common_bad_events(good)
    del bad["unknown run"]  # init creates runs: its own "unknown" cases follow
    bad |= {
        "parameters of another run": {**good, "parameters_key": other["parameters_key"]},
        "parameters absent": {
            **good,
            "run_id": "fresh",
            "parameters_key": "runs/fresh/parameters.json",
        },
        "invalid parameters": {
            **good,
            "run_id": "badp",
            "parameters_key": "runs/badp/parameters.json",
        },
        "train_key not an upload key": {**good, "train_key": "runs/r/data/train_x.npy"},
        "train_key with a short hash": {**good, "train_key": "uploads/abc/train_catvnoncat.h5"},
        "train_key with a newline": {**good, "train_key": good["train_key"] + "\n"},
        "train_key up a folder": {**good, "train_key": "uploads/../runs/r/parameters.json"},
        "test_key absent": {**good, "test_key": absent},
        "train and test swapped": {
            **good,
            "train_key": good["test_key"],
            "test_key": good["train_key"],
        },
        "train file not HDF5": {**good, "train_key": junk_key},
        "parameters_key not a string": {**good, "parameters_key": 5},
        "run exists with other parameters": other,
        "run has failed": failed,
    }
    before = expect_rejections(snap, "init", bad)

    plan = handler("init")(good, None)
    assert plan == stages.plan(params, RUN, 0)
    objects, _ = snap()
    record = keys.DynamoRunTable(st.table, st.dynamodb).get(RUN)
    assert record is not None
    assert (record["status"], record["committed_epoch"], record["n_x"]) == ("RUNNING", 0, 48)
    assert Parameters.from_json(record["parameters"]) == params
    expected = {keys.data_key(RUN, split, part) for split in ("train", "test") for part in "xy"}
    expected |= {
        keys.matrix_key(RUN, 0, name, s.layer, s.shard)
        for layer in (1, 2)
        for s in params.shards(layer)
        for name in ("W", "b")
    }
    assert set(objects) - set(before[0]) == expected
    dataset = read_h5_pair(synthetic_dir)
    assert np.array_equal(st.objects.get(keys.data_key(RUN, "train", "x")), dataset.train_x)
    W1 = nn.initialize([48, 3, 1], seed=1)[0][0]
    assert np.array_equal(st.objects.get(keys.matrix_key(RUN, 0, "W", 1, 1)), W1[2:3])


def test_loss(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "loss")
    snap = Snapshot(st)
    expect_rejections(snap, "loss", common_bad_events(good) | epoch_bad_events(good, params))
    result = handler("loss")(good, None)
    record = st.runs.get(RUN)
    assert keys.costs_in_order(record) == [result["cost"]]
    AL = st.objects.get(keys.matrix_key(RUN, 0, "A", 2, 0))
    Y = st.objects.get(keys.data_key(RUN, "train", "y"))
    assert result["cost"] == nn.cost(AL, Y)
    assert np.array_equal(st.objects.get(keys.output_gradient_key(RUN, 0)), nn.cost_gradient(AL, Y))


def test_commit(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "commit")
    snap = Snapshot(st)
    expect_rejections(snap, "commit", common_bad_events(good) | epoch_bad_events(good, params))
    assert handler("commit")(good, None) == {"epoch": 1}
    assert st.runs.get(RUN)["committed_epoch"] == 1


def test_evaluate(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "evaluate")
    early = upload_inputs(st, "early", params, synthetic_dir)
    handler("init")(early, None)  # at epoch 0 of 2: nothing to evaluate yet
    snap = Snapshot(st)
    bad = common_bad_events(good) | {"run not finished": {"run_id": "early"}}
    before = expect_rejections(snap, "evaluate", bad)

    result = handler("evaluate")(good, None)
    assert result["model_key"] == keys.model_key(RUN)
    assert 0 <= result["train_accuracy"] <= 1 and 0 <= result["test_accuracy"] <= 1
    assert sum(result["confusion_matrix"].values()) == 12
    objects, _ = snap()
    assert set(objects) - set(before[0]) == {keys.model_key(RUN), keys.neurons_key(RUN)}
    neurons = np.load(io.BytesIO(objects[keys.neurons_key(RUN)]))
    assert neurons["epochs"].tolist() == list(range(params.epochs))  # few epochs: all sampled
    assert neurons["dW_norm_layer1"].shape == (params.epochs, params.neurons[0])
    model = load_model(io.BytesIO(objects[keys.model_key(RUN)]))
    ctx = stages.Context(st.objects, st.runs)
    for (W, b), (W_, b_) in zip(model, stages.final_weights(ctx, RUN), strict=True):
        assert np.array_equal(W, W_) and np.array_equal(b, b_)
    record = st.runs.get(RUN)
    assert record["status"] == "SUCCEEDED"
    assert float(record["test_accuracy"]) == result["test_accuracy"]


def test_record_failure(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "record_failure")
    snap = Snapshot(st)
    bad = common_bad_events(good) | {
        "error not a string": {**good, "error": 5},
        "cause null": {**good, "cause": None},
    }
    before = expect_rejections(snap, "record_failure", bad)
    assert handler("record_failure")(good, None) == {"status": "FAILED"}
    objects, _ = snap()
    assert objects == before[0]
    record = st.runs.get(RUN)
    assert (record["status"], record["error"], record["cause"]) == (
        "FAILED",
        "States.TaskFailed",
        "an example failure",
    )
    handler("record_failure")({**good, "error": "E" * 300, "cause": "C" * 5000}, None)
    record = st.runs.get(RUN)
    assert (len(record["error"]), len(record["cause"])) == (256, 4096)


# --- idempotency ---------------------------------------------------------------------------------


def test_every_stage_is_idempotent(
    st: Any, synthetic_dir: Path, params: Parameters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each invocation, in the state machine's order, is made twice in a row; the second must
    leave exactly what the first left. The clock ticks at every reading, so a duplicate that
    rewrites a timestamp cannot go unnoticed."""
    ticks = itertools.count()
    monkeypatch.setattr(keys, "_now", lambda: f"2030-01-01T00:00:00.{next(ticks):06d}Z")
    p = params.with_epochs(3)  # the commit of epoch 2 deletes epoch 1 (not a checkpoint)
    snap = Snapshot(st)
    init_event = upload_inputs(st, RUN, p, synthetic_dir)

    def twice(stage: str, event: dict[str, Any]) -> Any:
        first = handler(stage)(event, None)
        after_first = snap()
        second = handler(stage)(event, None)
        after_second = snap()
        assert second == first, f"{stage} {event}: the duplicate answered differently"
        assert after_second[0] == after_first[0], f"{stage} {event}: S3 objects changed"
        assert after_second[1] == after_first[1], f"{stage} {event}: the run record changed"
        return first

    plan = twice("init", init_event)
    for epoch in range(p.epochs):
        for stage, event in epoch_events(plan, epoch):
            result = twice(stage, event)
            if stage == "commit":
                assert result == {"epoch": epoch + 1}
                assert st.runs.get(RUN)["committed_epoch"] == epoch + 1  # advanced once
    assert not any(k.startswith(keys.epoch_prefix(RUN, 1)) for k in snap()[0])
    twice("evaluate", {"run_id": RUN})
    twice("record_failure", {"run_id": RUN, "error": "States.TaskFailed", "cause": "failure"})

    # The duplicates changed nothing: the run is the direct engine's, bit for bit.
    reference = direct.train(p, read_h5_pair(synthetic_dir), RUN)
    assert keys.costs_in_order(st.runs.get(RUN)) == reference.costs
    model = load_model(io.BytesIO(st.objects.get_bytes(keys.model_key(RUN))))
    for (W, b), (W_, b_) in zip(model, reference.weights, strict=True):
        assert np.array_equal(W, W_) and np.array_equal(b, b_)
