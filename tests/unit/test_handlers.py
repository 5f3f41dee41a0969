"""The Lambda handlers on the embedded stack (moto): each stage's happy path, the events each one
must reject (with EventError, writing nothing at all), replays (a stage invoked twice with the
same event leaves exactly what one invocation left) and events out of order or in conflict with
the run (refused, with nothing lost or changed)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from snn import keys, stages
from snn import network as nn
from snn.data import TRAIN_FILE, read_h5_pair
from snn.engines import direct
from snn.engines.stack import create_run
from snn.epoch import plan as make_plan
from snn.errors import EventError
from snn.parameters import Parameters
from snn.predict import read_weights
from snn.stores import costs_in_order, runs
from tests.helpers import (
    ROOT,
    Snapshot,
    epoch_events,
    handler,
    init_event,
    run_events,
    spec,
    start_run,
)

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


def prepare(st: Any, data_dir: Path, p: Parameters, stage: str, run_id: str = RUN) -> Any:
    """Bring a new run to the moment just before the first invocation of `stage` in the state
    machine's order, and return that invocation's event."""
    event = create_run(st, run_id, p, data_dir)
    if stage == "init":
        return {**event, "execution_name": run_id}  # flat: see init_event
    plan = handler("init")(init_event({**event, "execution_name": run_id}), None)
    if stage == "record_failure":
        return {"run_id": run_id, "execution_name": run_id, "error": "E", "cause": "C"}
    if stage == "evaluate":
        run_events(plan)
        return {"run_id": run_id}
    for name, call in epoch_events(plan, 0):
        if name == stage:
            return call
        handler(name)(call, None)
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
        "epoch not reached": {**good, "epoch": 1},
        "batch beyond the epoch's": {**good, "batch": 1},
        "string batch": {**good, "batch": "0"},
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


def expect_rejections(snap: Snapshot, name: str, bad: dict[str, Any]) -> Any:
    """Every bad event is rejected with EventError and leaves the stack exactly as it was."""
    before = snap()
    for why, event in bad.items():
        try:
            handler(name)(event, None)
        except EventError:
            pass
        else:
            pytest.fail(f"{name}: the event was accepted ({why})")
        assert snap() == before, f"{name}: the rejected event ({why}) wrote something"
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
    assert items == before[1]  # the shard stages never touch the run table
    assert len(json.dumps(result)) < 200
    get = st.store.get
    layer, shard = good["layer"], good["shard"]
    s = params.shard(layer, shard)

    def key(name: str, step: int = 0) -> str:
        return keys.matrix_key(RUN, step, name, layer, shard)

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
        # the first layer's shards write no dA_prev: the gradient of the images is not needed
        handler("backward")(good, None)
        for shard1 in range(len(params.shards(1))):
            handler("backward")({**good, "layer": 1, "shard": shard1}, None)
        assert not any("dA_prev/layer001" in k for k in snap()[0])
    elif stage == "update":
        assert written == [key("W", 1), key("b", 1)]
        expected = get(key("W")) - params.learning_rate * get(key("dW"))
        assert np.array_equal(get(key("W", 1)), expected)
    assert {k: objects[k] for k in before[0]} == before[0]  # nothing else changed


def test_init(st: Any, synthetic_dir: Path, params: Parameters, tmp_path: Path) -> None:
    good = prepare(st, synthetic_dir, params, "init")
    # Runs that init must refuse to touch: other parameters, other data, one that has failed.
    other = create_run(st, "other", params, synthetic_dir)
    handler("init")(init_event({**other, "execution_name": "other"}), None)
    changed = Parameters.from_dict({**params.to_dict(), "learning_rate": 0.5})
    st.store.put_bytes(other["parameters_key"], changed.to_json().encode())
    failed = create_run(st, "failed", params, synthetic_dir)
    handler("init")(init_event({**failed, "execution_name": "failed"}), None)
    handler("record_failure")(
        {"run_id": "failed", "execution_name": "failed", "error": "E", "cause": "C"}, None
    )
    # Inputs that are there but wrong.
    st.store.put_bytes("runs/badp/parameters.json", b'{"epochs": 0}')
    twice = params.to_json()[:-1] + ', "learning_rate": 0.5}'  # json.loads keeps the last
    st.store.put_bytes("runs/twice/parameters.json", twice.encode())
    junk = b"<html>not found</html>"
    junk_key = f"uploads/{hashlib.sha256(junk).hexdigest()}/{TRAIN_FILE}"
    st.store.put_bytes(junk_key, junk)
    lying_key = f"uploads/{'1' * 64}/{TRAIN_FILE}"  # content that is not what its key says
    st.store.put_bytes(lying_key, st.store.get_bytes(good["train_key"]))
    from snn.data import synthetic_images, write_h5_pair

    other_data = write_h5_pair(tmp_path / "other", *synthetic_images(seed=5))
    other_upload = create_run(st, "unused", params, other_data)

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
        "parameters with a field named twice": {
            **good,
            "run_id": "twice",
            "parameters_key": "runs/twice/parameters.json",
        },
        "train_key not an upload key": {**good, "train_key": "runs/r/data/train_x.npy"},
        "train_key with a short hash": {**good, "train_key": "uploads/abc/train_catvnoncat.h5"},
        "train_key with a newline": {**good, "train_key": good["train_key"] + "\n"},
        "train_key up a folder": {**good, "train_key": "uploads/../runs/r/parameters.json"},
        "train_key whose content is not its sha256": {**good, "train_key": lying_key},
        "test_key absent": {**good, "test_key": absent},
        "train and test swapped": {
            **good,
            "train_key": good["test_key"],
            "test_key": good["train_key"],
        },
        "train file not HDF5": {**good, "train_key": junk_key},
        "parameters_key not a string": {**good, "parameters_key": 5},
        "execution_name with a slash": {**good, "execution_name": "a/b"},
        "run exists with other parameters": {**other, "execution_name": "other"},
        "run has failed": {**failed, "execution_name": "failed"},
    }
    bad = {why: init_event(event) for why, event in bad.items()}
    bad |= {
        "input not an object": {"input": [good], "execution_name": RUN},
        "a field beside input": {**init_event(good), "run_id": RUN},
        "execution_name inside input": {"input": good},
    }
    before = expect_rejections(snap, "init", bad)

    plan = handler("init")(init_event(good), None)
    assert plan == make_plan(params, RUN, 0)
    objects, _ = snap()
    record = st.runs.get(RUN)
    assert record is not None
    assert (record["status"], record["committed_epoch"], record["n_x"]) == ("RUNNING", 0, 48)
    assert (record["train_key"], record["execution"]) == (good["train_key"], RUN)
    assert Parameters.from_json(record["parameters"]) == params
    expected = {keys.data_key(RUN, split, part) for split in ("train", "test") for part in "xy"}
    expected |= stages.next_weights(params, RUN, -1)
    assert set(objects) - set(before[0]) == expected
    dataset = read_h5_pair(synthetic_dir)
    assert np.array_equal(st.store.get(keys.data_key(RUN, "train", "x")), dataset.train_x)
    W1 = nn.initialize([48, 3, 1], seed=1)[0][0]
    assert np.array_equal(st.store.get(keys.matrix_key(RUN, 0, "W", 1, 1)), W1[2:3])

    # Init again: the same run is carried on as it is; the same run id with other data is
    # refused, and nothing changes (the data a warm container holds stays the run's data).
    after = snap()
    assert handler("init")(init_event(good), None) == plan
    assert snap() == after
    with pytest.raises(EventError, match="other data"):
        handler("init")(init_event({**good, "train_key": other_upload["train_key"]}), None)
    assert snap() == after


def test_init_never_takes_a_running_run_from_its_execution(
    st: Any, synthetic_dir: Path, params: Parameters
) -> None:
    """A replayed Init naming another execution is refused with nothing changed: the carrying
    execution can still fail the run. Init hands the run over only to the successor that
    ContinueAsNew starts at the committed step (it may begin before ContinueAsNew names it)."""
    good = prepare(st, synthetic_dir, params, "init")
    plan = handler("init")(init_event(good), None)
    run_events(plan, range(1))  # epoch 0 committed: the run is at step 1
    snap = Snapshot(st)
    before = snap()
    for intruder in ("intruder", f"{RUN}-e0000000", f"{RUN}-e0000002", f"{RUN}-r1700000000"):
        with pytest.raises(EventError, match=f"carried by execution {RUN}, not {intruder}"):
            handler("init")(init_event({**good, "execution_name": intruder}), None)
        assert snap() == before, intruder
    assert st.runs.get(RUN)["execution"] == RUN
    assert handler("init")(init_event(good), None) == make_plan(params, RUN, 1)  # a retry
    assert snap() == before

    successor = keys.execution_name(RUN, 1)
    assert handler("init")(init_event({**good, "execution_name": successor}), None) == make_plan(
        params, RUN, 1
    )
    assert st.runs.get(RUN)["execution"] == successor
    with pytest.raises(EventError, match=f"carried by execution {successor}, not {RUN}"):
        handler("init")(init_event(good), None)  # the predecessor cannot take it back
    failure = {"run_id": RUN, "execution_name": successor, "error": "E", "cause": "C"}
    assert handler("record_failure")(failure, None) == {"recorded": True, "status": "FAILED"}


def test_loss(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "loss")
    snap = Snapshot(st)
    expect_rejections(snap, "loss", common_bad_events(good) | epoch_bad_events(good, params))
    result = handler("loss")(good, None)
    record = st.runs.get(RUN)
    assert costs_in_order(record) == [result["cost"]]
    AL = st.store.get(keys.matrix_key(RUN, 0, "A", 2, 0))
    Y = st.store.get(keys.data_key(RUN, "train", "y"))
    assert result["cost"] == nn.cost(AL, Y)
    assert np.array_equal(st.store.get(keys.output_gradient_key(RUN, 0)), nn.cost_gradient(AL, Y))


def test_commit(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "commit")
    snap = Snapshot(st)
    expect_rejections(snap, "commit", common_bad_events(good) | epoch_bad_events(good, params))
    assert handler("commit")(good, None) == {"epoch": 1, "batch": 0, "step": 1, "stopped": False}
    record = st.runs.get(RUN)
    assert (record["committed_epoch"], record["committed_step"]) == (1, 1)


def test_evaluate(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "evaluate")
    early = create_run(st, "early", params, synthetic_dir)
    handler("init")(init_event({**early, "execution_name": "early"}), None)  # nothing to evaluate
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
    model = read_weights(objects[keys.model_key(RUN)])
    ctx = stages.Context(st.store, st.runs)
    for (W, b), (W_, b_) in zip(model, stages.final_weights(ctx, RUN), strict=True):
        assert np.array_equal(W, W_) and np.array_equal(b, b_)
    record = st.runs.get(RUN)
    assert record["status"] == "SUCCEEDED"
    assert float(record["test_accuracy"]) == result["test_accuracy"]


def test_evaluate_reads_the_neuron_statistics_side_by_side(
    st: Any, synthetic_dir: Path, params: Parameters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluate reads one object per sampled epoch and shard: read one at a time at S3's
    latency, a wide network's would pass the function's timeout. It reads them all, in one
    concurrent batch per layer, and nothing more than it needs."""
    good = prepare(st, synthetic_dir, params, "evaluate")
    gets: list[str] = []
    batches: list[int] = []
    original_get, original_many = type(st.store).get, type(st.store).get_many
    monkeypatch.setattr(
        type(st.store), "get", lambda self, key: gets.append(key) or original_get(self, key)
    )
    monkeypatch.setattr(
        type(st.store),
        "get_many",
        lambda self, many: batches.append(len(many)) or original_many(self, many),
    )
    handler("evaluate")(good, None)
    sampled = stages.sampled_epochs(params)
    shards = [len(params.shards(layer)) for layer in (1, 2)]
    assert batches == [len(sampled) * n for n in shards]
    stats = [k for k in gets if "/neurons/" in k]
    weights = [k for k in gets if "/step/" in k]
    assert len(stats) == len(sampled) * sum(shards)
    assert len(weights) == 2 * sum(shards)  # W and b of every shard, entering the last epoch


def test_record_failure(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "record_failure")
    snap = Snapshot(st)
    bad = common_bad_events(good) | {
        "error not a string": {**good, "error": 5},
        "cause null": {**good, "cause": None},
        "execution_name invalid": {**good, "execution_name": "x y"},
    }
    del bad["unknown run"]  # a run Init never created: nothing to mark, not an error
    before = expect_rejections(snap, "record_failure", bad)
    assert handler("record_failure")({**good, "run_id": "nobody"}, None) == {
        "recorded": False,
        "status": None,
    }
    # An execution that does not carry the run cannot fail it.
    assert handler("record_failure")({**good, "execution_name": "stale"}, None) == {
        "recorded": False,
        "status": "RUNNING",
    }
    assert snap() == before
    assert handler("record_failure")(good, None) == {"recorded": True, "status": "FAILED"}
    objects, _ = snap()
    assert objects == before[0]
    record = st.runs.get(RUN)
    assert (record["status"], record["error"], record["cause"]) == ("FAILED", "E", "C")
    assert record["failed_execution"] == RUN


def test_record_failure_keeps_a_long_error_short(
    st: Any, synthetic_dir: Path, params: Parameters
) -> None:
    good = prepare(st, synthetic_dir, params, "record_failure")
    handler("record_failure")({**good, "error": "E" * 300, "cause": "C" * 5000}, None)
    record = st.runs.get(RUN)
    assert (len(record["error"]), len(record["cause"])) == (256, 4096)


def test_a_finished_run_cannot_be_failed(st: Any, synthetic_dir: Path, params: Parameters) -> None:
    good = prepare(st, synthetic_dir, params, "evaluate")
    handler("evaluate")(good, None)
    snap = Snapshot(st)
    before = snap()
    failure = {"run_id": RUN, "execution_name": RUN, "error": "E", "cause": "late"}
    assert handler("record_failure")(failure, None) == {"recorded": False, "status": "SUCCEEDED"}
    assert snap() == before
    assert st.runs.get(RUN)["status"] == "SUCCEEDED"


# --- ContinueAsNew ------------------------------------------------------------------------------


@pytest.fixture
def noop_machine(st: Any) -> str:
    """A state machine that does nothing, to receive ContinueAsNew's executions in these tests
    (the training state machine would start training in the background)."""
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
    return st.sfn.create_state_machine(
        name="noop",
        definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/noop",
    )["stateMachineArn"]


def continue_event(st: Any, run_id: str, machine: str, epoch: int = 0) -> dict[str, Any]:
    record = st.runs.get(run_id)
    return {
        "run_id": run_id,
        "epoch": epoch,
        "batch": 0,
        "execution_name": record["execution"],
        "state_machine_arn": machine,
        "execution_input": {
            "run_id": run_id,
            "parameters_key": keys.parameters_key(run_id),
            "train_key": record["train_key"],
            "test_key": record["test_key"],
        },
    }


def test_continue_as_new(
    st: Any, synthetic_dir: Path, params: Parameters, noop_machine: str
) -> None:
    prepare(st, synthetic_dir, params, "forward_linear")
    good = continue_event(st, RUN, noop_machine)
    snap = Snapshot(st)
    swapped = {**good["execution_input"], "train_key": good["execution_input"]["test_key"]}
    bad = common_bad_events(good) | {
        "a swapped train_key": {**good, "execution_input": swapped},
        "another run's input": {
            **good,
            "execution_input": {**good["execution_input"], "run_id": "x"},
        },
        "an input with more fields": {
            **good,
            "execution_input": {**good["execution_input"], "x": 1},
        },
        "not the committed epoch": {**good, "epoch": 1},
        "called by an execution that does not carry the run": {**good, "execution_name": "stale"},
        "a state machine ARN that is not one": {**good, "state_machine_arn": "arn:aws:s3:::x"},
    }
    before = expect_rejections(snap, "continue_as_new", bad)
    assert st.sfn.list_executions(stateMachineArn=noop_machine)["executions"] == []

    assert handler("continue_as_new")(good, None) == {"execution_name": "r-e0000000"}
    assert st.runs.get(RUN)["execution"] == "r-e0000000"
    (started,) = st.sfn.list_executions(stateMachineArn=noop_machine)["executions"]
    assert started["name"] == "r-e0000000"
    assert (
        json.loads(st.sfn.describe_execution(executionArn=started["executionArn"])["input"])
        == good["execution_input"]
    )
    assert {k: v for k, v in snap()[0].items()} == before[0]  # no object written

    # A retry after the hand-over (here: after the successor has ended) succeeds and starts
    # nothing, even once the successor has moved the run on.
    assert handler("continue_as_new")(good, None) == {"execution_name": "r-e0000000"}
    assert len(st.sfn.list_executions(stateMachineArn=noop_machine)["executions"]) == 1


def test_continue_as_new_names_the_next_execution_only_once_it_exists(
    st: Any, synthetic_dir: Path, params: Parameters, noop_machine: str
) -> None:
    prepare(st, synthetic_dir, params, "forward_linear")
    good = continue_event(st, RUN, noop_machine)
    snap = Snapshot(st)
    before = snap()
    missing = noop_machine.replace(":noop", ":gone")  # StartExecution fails
    with pytest.raises(Exception, match=r"StateMachineDoesNotExist|does not exist"):
        handler("continue_as_new")({**good, "state_machine_arn": missing}, None)
    assert snap() == before
    assert st.runs.get(RUN)["execution"] == RUN


def test_continue_as_new_meets_an_execution_of_that_name(
    st: Any, synthetic_dir: Path, params: Parameters, noop_machine: str
) -> None:
    """StartExecution with a name taken by an ended execution answers ExecutionAlreadyExists:
    with the same input it is the successor (done already); with another, a conflict."""
    prepare(st, synthetic_dir, params, "forward_linear")
    good = continue_event(st, RUN, noop_machine)
    st.sfn.start_execution(
        stateMachineArn=noop_machine,
        name="r-e0000000",
        input=json.dumps(good["execution_input"], sort_keys=True),
    )
    assert handler("continue_as_new")(good, None) == {"execution_name": "r-e0000000"}
    assert st.runs.get(RUN)["execution"] == "r-e0000000"

    prepare(st, synthetic_dir, params, "forward_linear", run_id="q")
    other = continue_event(st, "q", noop_machine)
    st.sfn.start_execution(stateMachineArn=noop_machine, name="q-e0000000", input="{}")
    with pytest.raises(EventError, match="another input"):
        handler("continue_as_new")(other, None)
    assert st.runs.get("q")["execution"] == "q"


# --- replays and events out of order -------------------------------------------------------------


def test_every_stage_is_idempotent(
    st: Any, synthetic_dir: Path, params: Parameters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each invocation, in the state machine's order, is made twice in a row; the second must
    leave exactly what the first left. The clock ticks at every reading, so a duplicate that
    rewrites a timestamp cannot go unnoticed."""
    ticks = itertools.count()
    monkeypatch.setattr(runs, "now", lambda: f"2030-01-01T00:00:00.{next(ticks):06d}Z")
    p = params.with_epochs(3)  # the commit of epoch 2 deletes epoch 1 (not a checkpoint)
    snap = Snapshot(st)
    first = init_event({**create_run(st, RUN, p, synthetic_dir), "execution_name": RUN})

    def twice(stage: str, event: dict[str, Any]) -> Any:
        first = handler(stage)(event, None)
        after_first = snap()
        second = handler(stage)(event, None)
        after_second = snap()
        assert second == first, f"{stage} {event}: the duplicate answered differently"
        assert after_second[0] == after_first[0], f"{stage} {event}: S3 objects changed"
        assert after_second[1] == after_first[1], f"{stage} {event}: the run table changed"
        return first

    plan = twice("init", first)
    for epoch in range(p.epochs):
        for stage, event in epoch_events(plan, epoch):
            result = twice(stage, event)
            if stage == "commit":
                assert result == {
                    "epoch": epoch + 1,
                    "batch": 0,
                    "step": epoch + 1,
                    "stopped": False,
                }
                assert st.runs.get(RUN)["committed_epoch"] == epoch + 1  # advanced once
    assert not any(k.startswith(keys.step_prefix(RUN, 1)) for k in snap()[0])
    twice("evaluate", {"run_id": RUN})
    twice("record_failure", {"run_id": RUN, "execution_name": RUN, "error": "E", "cause": "C"})

    # The duplicates changed nothing: the run is the direct engine's, bit for bit.
    reference = direct.train(spec(p, synthetic_dir, RUN))
    assert costs_in_order(st.runs.get(RUN)) == reference.costs
    model = read_weights(st.store.get_bytes(keys.model_key(RUN)))
    for (W, b), (W_, b_) in zip(model, reference.weights, strict=True):
        assert np.array_equal(W, W_) and np.array_equal(b, b_)


def test_events_out_of_order_change_nothing(
    st: Any, synthetic_dir: Path, params: Parameters
) -> None:
    """A commit before the epoch's updates (twice), a stage of the next epoch before the
    commit, a late stage of an epoch already committed: each is refused with nothing written,
    and the run, carried on in order afterwards, is the direct engine's bit for bit."""
    p = params.with_epochs(3)
    plan = start_run(st, RUN, p, synthetic_dir)
    snap = Snapshot(st)
    steps = list(epoch_events(plan, 0))
    commit0 = {"run_id": RUN, "epoch": 0, "batch": 0}
    for stage, event in steps[: [s for s, _ in steps].index("update")]:
        handler(stage)(event, None)

    def refused(stage: str, event: dict[str, Any]) -> None:
        before = snap()
        with pytest.raises(EventError):
            handler(stage)(event, None)
        assert snap() == before, f"{stage} {event} changed something"

    refused("commit", commit0)  # no update has run: the next weights are missing
    refused("commit", commit0)
    first_shard_update = next(e for s, e in steps if s == "update")
    handler("update")(first_shard_update, None)
    refused("commit", commit0)  # some next weights, not all
    refused("forward_linear", {"run_id": RUN, "epoch": 1, "batch": 0, "layer": 1, "shard": 0})
    for stage, event in steps:
        if stage in ("update", "commit"):
            handler(stage)(event, None)
    refused("update", first_shard_update)  # a late replay of a committed epoch's stage
    refused("loss", {"run_id": RUN, "epoch": 0, "batch": 0})
    refused("commit", {"run_id": RUN, "epoch": 2, "batch": 0})
    run_events(plan, range(1, p.epochs))
    handler("evaluate")({"run_id": RUN}, None)
    reference = direct.train(spec(p, synthetic_dir, RUN))
    assert costs_in_order(st.runs.get(RUN)) == reference.costs
    model = read_weights(st.store.get_bytes(keys.model_key(RUN)))
    for (W, _), (W_, _) in zip(model, reference.weights, strict=True):
        assert np.array_equal(W, W_)


def test_a_stage_of_a_failed_run_is_refused(
    st: Any, synthetic_dir: Path, params: Parameters
) -> None:
    good = prepare(st, synthetic_dir, params, "forward_linear")
    handler("record_failure")(
        {"run_id": RUN, "execution_name": RUN, "error": "E", "cause": "C"}, None
    )
    snap = Snapshot(st)
    before = snap()
    with pytest.raises(EventError, match="FAILED, not RUNNING"):
        handler("forward_linear")(good, None)
    assert snap() == before


def test_a_loss_that_would_record_another_cost_is_refused(
    st: Any, synthetic_dir: Path, params: Parameters
) -> None:
    """Once an epoch's cost is recorded, no event can record another for it."""
    good = prepare(st, synthetic_dir, params, "loss")
    handler("loss")(good, None)
    st.runs.client.put_item(  # the cost item, as if another computation had written it
        TableName=st.table,
        Item={**keys.item_key(RUN, keys.cost_entry(0)), "value": {"S": "0.5"}},
    )
    with pytest.raises(EventError, match=r"cost#0000000 is already 0\.5"):
        handler("loss")(good, None)
