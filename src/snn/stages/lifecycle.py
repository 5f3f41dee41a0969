"""The stages that begin, hand over and end a run: Init, ContinueAsNew, Evaluate and
RecordFailure. Their preconditions, each checked before anything is written:

- Init: no run yet, or the identical run (same parameters, same data) still RUNNING, carried by
  no execution yet, by the calling one, or handed over to it (the successor that ContinueAsNew
  starts at the committed step; a resumed run's new execution, which the resuming engine names
  in the record first); a run id taken by another run, or a run that another execution carries,
  is refused with nothing changed.
- ContinueAsNew: the run is RUNNING at the event's step and names the calling execution; the
  run record names the next execution only once that execution exists. A retry that finds its
  successor already named succeeds without starting anything.
- Evaluate: the run is RUNNING at its last step, or stopped early (or has succeeded: a replay
  writes the same).
- RecordFailure: only a RUNNING run, and only for the execution that carries it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from snn import epoch as epochs
from snn import keys
from snn import network as nn
from snn.data import Dataset
from snn.errors import EventError
from snn.parameters import Parameters
from snn.report import model_bytes, npz_bytes
from snn.stages.context import Context, Step, layer_matrix, numbers_checked
from snn.stages.training import NEURON_STATS, best_step, sampled_epochs
from snn.stores import ConditionFailed, MissingObject, new_record

# The execution input's fields that name a run's data (two h5 files, or one .npz).
DATA_FIELDS = ("train_key", "test_key", "data_key")


def init(
    ctx: Context,
    run_id: str,
    p: Parameters,
    dataset: Dataset,
    data_keys: dict[str, str],
    execution_name: str = "",
) -> dict[str, Any]:
    """Create the run (its record, then its data and the weights entering step 0) and return
    the plan the state machine loops over, from the run's committed step. `data_keys` are the
    upload keys of the run's data. The record is created first, conditionally, so two
    different runs under one id cannot both write; an Init that stopped half-way is completed by
    its retry. A validation set, if asked for, is held out of the training set here."""
    keys.check_run_id(run_id)
    splits = _splits(p, dataset)
    examples = splits["train"][0].shape[1]
    batches = epochs.batches_per_epoch(p, examples)
    if p.epochs * batches > keys.MAX_STEP:
        raise EventError(f"{p.epochs} epochs of {batches} batches is over {keys.MAX_STEP} steps")
    record = ctx.runs.create(
        run_id,
        new_record(
            run_id,
            p.to_json(),
            n_x=int(dataset.n_x),
            examples=examples,
            batches=batches,
            classes=json.dumps(list(dataset.classes)),
            inputs=json.dumps(dataset.inputs, sort_keys=True),
            test_split=json.dumps(dataset.test_split),
            **data_keys,
        ),
    )
    if Parameters.from_json(record["parameters"]) != p:
        raise EventError(f"run {run_id} exists with other parameters; choose another run id")
    if any(record.get(k) != v for k, v in data_keys.items()):
        raise EventError(f"run {run_id} exists with other data; choose another run id")
    if record["status"] != "RUNNING":
        raise EventError(f"run {run_id} is {record['status']}, not RUNNING")
    carriers = _carriers(run_id, record, execution_name) if execution_name else None
    step = int(record.get("committed_step", 0))
    if step == 0:  # written again by a retry, with the same bytes
        for split, (x, y) in splits.items():
            ctx.store.put(keys.data_key(run_id, split, "x"), x)
            ctx.store.put(keys.data_key(run_id, split, "y"), y)
        weights = nn.initialize(p.layer_dims(dataset.n_x), p.seed, p.initialization)
        for layer, (W, b) in enumerate(weights, 1):
            for s in p.shards(layer):
                ctx.store.put(keys.matrix_key(run_id, 0, "W", layer, s.index), W[s.lo : s.hi])
                ctx.store.put(keys.matrix_key(run_id, 0, "b", layer, s.index), b[s.lo : s.hi])
    if carriers is not None:
        ctx.runs.update(
            run_id, {"execution": execution_name}, when={"status": "RUNNING", "execution": carriers}
        )
    return epochs.plan(p, run_id, step, batches)


def _carriers(run_id: str, record: dict[str, Any], execution_name: str) -> tuple[str | None, ...]:
    """The executions (None: none yet) from which `execution_name` may take the run on, else
    EventError: it takes on a run that no execution carries yet, carries on its own (a retry),
    or is the successor that the carrying execution's ContinueAsNew starts at the committed
    step, which may begin before ContinueAsNew names it in the record. A resumed run is named
    in the record by whoever resumes it, before its execution starts. Any other execution would
    take the run away from the one carrying it (whose ContinueAsNew and RecordFailure would then
    be refused)."""
    current = record.get("execution")
    if current is None or current == execution_name:
        return (execution_name, None)
    step = int(record.get("committed_step", 0))
    epoch, batch = divmod(step, int(record.get("batches", 1)))
    if execution_name == keys.execution_name(run_id, epoch, batch):
        return (current, execution_name)
    raise EventError(f"run {run_id} is carried by execution {current}, not {execution_name}")


def _splits(p: Parameters, dataset: Dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The data the run keeps: train and test, and a validation set held out of train."""
    out = {"train": (dataset.train_x, dataset.train_y), "test": (dataset.test_x, dataset.test_y)}
    fraction = p.training.validation
    if fraction is not None:
        m = dataset.train_x.shape[1]
        if m < 2:
            raise EventError("a validation set needs at least 2 training examples")
        train, valid = nn.validation_split(m, fraction, p.training.shuffle_seed)
        x, y = dataset.train_x, dataset.train_y
        out["train"] = (np.ascontiguousarray(x[:, train]), np.ascontiguousarray(y[:, train]))
        out["valid"] = (np.ascontiguousarray(x[:, valid]), np.ascontiguousarray(y[:, valid]))
    return out


def continue_as_new(
    ctx: Context,
    run_id: str,
    epoch: int,
    batch: int,
    execution_name: str,
    state_machine_arn: str,
    execution_input: dict[str, Any],
) -> dict[str, Any]:
    """Hand the run over to the next execution of the state machine, named after its position
    and given the same input (its Init returns the plan from the committed step)."""
    if ctx.executions is None:
        raise EventError("this engine starts no executions")
    successor = keys.execution_name(run_id, epoch, batch)
    record = ctx.record(run_id, ("status", "committed_step", "execution", *DATA_FIELDS))
    expected = {
        "run_id": run_id,
        "parameters_key": keys.parameters_key(run_id),
        **{k: record[k] for k in DATA_FIELDS if k in record},
    }
    if execution_input != expected:
        raise EventError("execution_input must be the run's own input: " + json.dumps(expected))
    if record.get("execution") == successor and execution_name != successor:
        return {"execution_name": successor}  # a retry: the hand-over is done
    ctx.check_running(ctx.step(run_id, epoch, batch), record)
    if record.get("execution") != execution_name:
        raise EventError(
            f"run {run_id} is carried by execution {record.get('execution')}, not {execution_name}"
        )
    ctx.executions.start(state_machine_arn, successor, json.dumps(expected, sort_keys=True))
    ctx.runs.update(
        run_id,
        {"execution": successor},
        when={"status": "RUNNING", "execution": (execution_name, successor)},
    )
    return {"execution_name": successor}


@numbers_checked
def evaluate(ctx: Context, run_id: str) -> dict[str, Any]:
    """Accuracies of the trained network, the model as one .npz object, and every neuron's
    recorded statistics as another. The model is the last step's, or with early stopping the
    best epoch's."""
    record = ctx.record(
        run_id, ("status", "committed_step", "committed_epoch", "stopped", "best_epoch")
    )
    run = ctx.run(run_id)
    p = run.parameters
    done = int(record["committed_step"]) == run.steps or bool(record.get("stopped"))
    if not done or record["status"] not in ("RUNNING", "SUCCEEDED"):
        raise EventError(
            f"run {run_id} is {record['status']} at step {record['committed_step']} of "
            f"{run.steps}: nothing to evaluate"
        )
    at = int(record["committed_step"])
    model_epoch = int(record["committed_epoch"]) - 1
    if p.training.patience is not None and record.get("best_epoch") is not None:
        model_epoch = int(record["best_epoch"])
        at = best_step(run, model_epoch) or at
    try:
        weights = final_weights(ctx, run_id, at)
    except MissingObject as exc:
        raise EventError(f"run {run_id}: the model's weights are missing ({exc})") from None
    result: dict[str, Any] = {"model_epoch": model_epoch}
    splits = ("train", "valid", "test") if p.training.validation is not None else ("train", "test")
    for split in splits:
        X = ctx.store.get_cached(keys.data_key(run_id, split, "x"))
        Y = ctx.store.get_cached(keys.data_key(run_id, split, "y"))
        AL = nn.forward(weights, p.activations, X)
        result[f"{split}_accuracy"] = nn.accuracy(AL, Y)
        if split == "test":
            result["confusion_matrix"] = confusion_matrix(nn.predict(AL), Y)
    info_record = ctx.record(run_id, ("classes", "inputs"))
    info = {
        "classes": json.loads(info_record.get("classes") or '["non-cat", "cat"]'),
        "input": json.loads(info_record.get("inputs") or '{"kind": "values"}'),
    }
    ctx.store.put_bytes(keys.model_key(run_id), model_bytes(weights, info))
    done_epochs = int(record["committed_epoch"])
    ctx.store.put_bytes(
        keys.neurons_key(run_id), npz_bytes(neuron_history(ctx, run_id, done_epochs))
    )
    ctx.runs.update(run_id, {"status": "SUCCEEDED", **result}, when={"status": "RUNNING"})
    return {**result, "model_key": keys.model_key(run_id), "neurons_key": keys.neurons_key(run_id)}


def record_failure(
    ctx: Context, run_id: str, execution_name: str, error: str, cause: str
) -> dict[str, Any]:
    """Mark the run FAILED with the error that ended `execution_name`, if that execution carries
    the run and the run is RUNNING. Anything else changes nothing: a run that has finished, is
    carried by another execution, or was never created (an Init that failed) keeps its state,
    and the execution still fails with its own error."""
    record = ctx.runs.get(keys.check_run_id(run_id), ("status", "execution"))
    if record is None:
        return {"recorded": False, "status": None}
    fields = {
        "status": "FAILED",
        "error": error[:256],
        "cause": cause[:4096],
        "failed_execution": execution_name,
    }
    try:
        ctx.runs.update(
            run_id, fields, when={"status": "RUNNING", "execution": (execution_name, None)}
        )
    except ConditionFailed as exc:
        return {"recorded": False, "status": exc.record.get("status")}
    return {"recorded": True, "status": "FAILED"}


# --- what a finished run leaves ------------------------------------------------------------------


def final_weights(
    ctx: Context, run_id: str, k: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The weights entering step k (by default the run's last step): the trained model."""
    run = ctx.run(run_id)
    at = run.steps if k is None else k
    first = Step(run, 0, 0)
    return [
        (layer_matrix(ctx, first, "W", layer, at), layer_matrix(ctx, first, "b", layer, at))
        for layer in range(1, run.parameters.layers + 1)
    ]


def neuron_history(
    ctx: Context, run_id: str, epochs_done: int | None = None
) -> dict[str, np.ndarray]:
    """All recorded statistics: `epochs` (k,), and for each layer l and statistic s an array
    `{s}_layer{l}` of shape (k, neurons of layer l), for the sampled epochs the run did. Read
    side by side (there are k x shards objects)."""
    p = ctx.parameters(run_id)
    done = p.epochs if epochs_done is None else epochs_done
    sampled = [e for e in sampled_epochs(p) if e < done]
    out: dict[str, np.ndarray] = {"epochs": np.array(sampled)}
    for layer in range(1, p.layers + 1):
        shards = p.shards(layer)
        parts = ctx.store.get_many(
            [keys.neuron_stats_key(run_id, e, layer, s.index) for e in sampled for s in shards]
        )
        per_epoch = [
            np.concatenate(parts[i * len(shards) : (i + 1) * len(shards)])
            for i in range(len(sampled))
        ]
        stacked = np.stack(per_epoch)  # (k, neurons, stats)
        for i, name in enumerate(NEURON_STATS):
            out[f"{name}_layer{layer}"] = stacked[:, :, i]
    return out


def confusion_matrix(predicted: np.ndarray, Y: np.ndarray) -> dict[str, int]:
    y = Y.astype(np.int64).ravel()
    yhat = predicted.ravel()
    return {
        "true_positive": int(np.sum((yhat == 1) & (y == 1))),
        "false_positive": int(np.sum((yhat == 1) & (y == 0))),
        "true_negative": int(np.sum((yhat == 0) & (y == 0))),
        "false_negative": int(np.sum((yhat == 0) & (y == 1))),
    }
