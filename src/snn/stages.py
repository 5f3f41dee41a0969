"""The stages of one training run, each the body of one Lambda function.

A stage reads its inputs from the matrix store (objects of its own epoch only), calls the maths
in `snn.network`, writes new keys, and returns a small dict of keys, shapes and scalars. The
Lambda handlers wrap these for S3 and DynamoDB; the direct engine calls them in a plain loop on
in-memory stores. One epoch, in the order of the state machine:

    for each layer l = 1..L:  for each shard:  forward_linear, then activation
    loss
    for each layer l = L..1:  for each shard:  backward
    for each (layer, shard):  update
    commit
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snn import network as nn
from snn import store as keys
from snn.data import Dataset
from snn.errors import EventError
from snn.parameters import Parameters, Shard
from snn.report import model_bytes, npz_bytes
from snn.store import MatrixStore, MissingObject, RunTable

# Per-neuron statistics are recorded at about this many epochs of a run (and at its last).
NEURON_SAMPLES = 100
NEURON_STATS = ("dW_norm", "db_abs", "Z_mean", "Z_std", "A_mean", "A_std")

# How many old epochs survive a commit: the committed one and the one before, plus a checkpoint
# every CHECKPOINT_EVERY epochs, so storage stays bounded however long the run.
CHECKPOINT_EVERY = 500


@dataclass
class Context:
    """What a stage works with: the matrix store, the run table, and what it knows of each run.
    A run's parameters never change, so a warm function keeps them."""

    store: MatrixStore
    runs: RunTable
    _parameters: dict[str, Parameters] = field(default_factory=dict)

    def parameters(self, run_id: str) -> Parameters:
        p = self._parameters.get(run_id)
        if p is None:
            record = self.runs.get(keys.check_run_id(run_id), ("parameters",))
            if record is None:
                raise EventError(f"unknown run {run_id!r}: no record in the run table")
            p = self._parameters[run_id] = Parameters.from_json(record["parameters"])
        return p

    def shard(self, run_id: str, layer: int, shard: int) -> tuple[Parameters, Shard]:
        p = self.parameters(run_id)
        try:
            return p, p.shard(layer, shard)
        except IndexError as exc:
            raise EventError(f"run {run_id}: {exc}") from None

    def epoch(self, run_id: str, epoch: int) -> Parameters:
        p = self.parameters(run_id)
        if not 0 <= epoch < p.epochs:
            raise EventError(f"run {run_id}: epoch {epoch} is not in 0..{p.epochs - 1}")
        return p


# --- assembling a layer from its shards ----------------------------------------------------------


def _layer_matrix(ctx: Context, p: Parameters, run_id: str, epoch: int, name: str, layer: int):
    """A whole layer's matrix from its shards, stacked in neuron (index) order."""
    parts = [
        ctx.store.get(keys.matrix_key(run_id, epoch, name, layer, s.shard)) for s in p.shards(layer)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def _layer_input(ctx: Context, p: Parameters, run_id: str, epoch: int, layer: int) -> np.ndarray:
    """A[layer - 1]: the training images for layer 1, else the previous layer's activations."""
    if layer == 1:
        return ctx.store.get_cached(keys.data_key(run_id, "train", "x"))
    return _layer_matrix(ctx, p, run_id, epoch, "A", layer - 1)


def _dA(ctx: Context, p: Parameters, run_id: str, epoch: int, s: Shard) -> np.ndarray:
    """dA for the rows of shard s: from the loss for the last layer, else the sum of the next
    layer's partial dA_prev, added in shard order."""
    if s.layer == p.layers:
        return ctx.store.get(keys.output_gradient_key(run_id, epoch))[s.lo : s.hi]
    nxt = s.layer + 1
    partials = [
        ctx.store.get(keys.matrix_key(run_id, epoch, "dA_prev", nxt, t.shard))
        for t in p.shards(nxt)
    ]
    return nn.sum_partials(partials)[s.lo : s.hi]


# --- the stages --------------------------------------------------------------------------------


# A Standard execution fails at 25,000 history events. A run is cut into executions of at most
# this many planned events, which leaves room for retries (about 3 events each) and margin.
EXECUTION_EVENT_BUDGET = 15_000
EXECUTION_FIXED_EVENTS = 32  # start, Init, the last Choice, Evaluate or ContinueAsNew, end


def events_per_epoch(p: Parameters) -> int:
    """History events of one fault-free epoch of statemachine/training.asl.json: a Task is 5
    events, a Map 4 plus 2 per iteration, a Choice 2. With L layers and S shards in all:
    Choice 2, Forward 4 + sum(6 + 12 s_l), Loss 5, Backward 4 + sum(6 + 7 s_l),
    Update 4 + 7 S, Commit 5; that is 24 + 12 L + 26 S."""
    shards = sum(len(p.shards(layer)) for layer in range(1, p.layers + 1))
    return 24 + 12 * p.layers + 26 * shards


def epochs_per_execution(p: Parameters) -> int:
    return max(1, (EXECUTION_EVENT_BUDGET - EXECUTION_FIXED_EVENTS) // events_per_epoch(p))


def plan(p: Parameters, run_id: str, epoch: int) -> dict[str, Any]:
    """What the state machine loops over, from `epoch` to `chunk_end` in this execution: small,
    so it travels in the execution's state."""
    layers = range(1, p.layers + 1)
    forward = [{"layer": n, "shards": [s.shard for s in p.shards(n)]} for n in layers]
    return {
        "run_id": run_id,
        "epochs": p.epochs,
        "chunk_end": min(p.epochs, epoch + epochs_per_execution(p)),
        "progress": {"epoch": epoch},
        "forward": forward,
        "backward": forward[::-1],
        "update": [{"layer": n, "shard": s.shard} for n in layers for s in p.shards(n)],
    }


def init(
    ctx: Context, run_id: str, p: Parameters, dataset: Dataset, execution_name: str = ""
) -> dict[str, Any]:
    """Create the run: its record, its data, the weights entering epoch 0. Idempotent: a run that
    exists with the same parameters is returned as it is (at its committed epoch), so the next
    execution of a long run starts here too."""
    keys.check_run_id(run_id)
    record = ctx.runs.create(run_id, keys.new_record(run_id, p.to_json(), n_x=int(dataset.n_x)))
    if Parameters.from_json(record["parameters"]) != p:
        raise EventError(f"run {run_id} exists with other parameters")
    if record["status"] != "RUNNING":
        raise EventError(f"run {run_id} is {record['status']}, not RUNNING")
    epoch = int(record["committed_epoch"])
    if execution_name:
        ctx.runs.update(run_id, {"execution": execution_name})
    for split, x, y in (
        ("train", dataset.train_x, dataset.train_y),
        ("test", dataset.test_x, dataset.test_y),
    ):
        ctx.store.put(keys.data_key(run_id, split, "x"), x)
        ctx.store.put(keys.data_key(run_id, split, "y"), y)
    if epoch == 0:
        weights = nn.initialize(p.layer_dims(dataset.n_x), p.seed, p.initialization)
        for layer, (W, b) in enumerate(weights, 1):
            for s in p.shards(layer):
                ctx.store.put(keys.matrix_key(run_id, 0, "W", layer, s.shard), W[s.lo : s.hi])
                ctx.store.put(keys.matrix_key(run_id, 0, "b", layer, s.shard), b[s.lo : s.hi])
    return plan(p, run_id, epoch)


def forward_linear(ctx: Context, run_id: str, epoch: int, layer: int, shard: int) -> dict:
    p, _ = ctx.shard(run_id, layer, shard)
    ctx.epoch(run_id, epoch)
    W = ctx.store.get(keys.matrix_key(run_id, epoch, "W", layer, shard))
    b = ctx.store.get(keys.matrix_key(run_id, epoch, "b", layer, shard))
    Z = nn.linear_forward(W, b, _layer_input(ctx, p, run_id, epoch, layer))
    key = keys.matrix_key(run_id, epoch, "Z", layer, shard)
    ctx.store.put(key, Z)
    return {"key": key, "shape": list(Z.shape)}


def activation(ctx: Context, run_id: str, epoch: int, layer: int, shard: int) -> dict:
    p, _ = ctx.shard(run_id, layer, shard)
    ctx.epoch(run_id, epoch)
    Z = ctx.store.get(keys.matrix_key(run_id, epoch, "Z", layer, shard))
    A = nn.activate(Z, p.activations[layer - 1])
    key = keys.matrix_key(run_id, epoch, "A", layer, shard)
    ctx.store.put(key, A)
    return {"key": key, "shape": list(A.shape)}


def loss(ctx: Context, run_id: str, epoch: int) -> dict:
    p = ctx.epoch(run_id, epoch)
    AL = _layer_matrix(ctx, p, run_id, epoch, "A", p.layers)
    Y = ctx.store.get_cached(keys.data_key(run_id, "train", "y"))
    c = nn.cost(AL, Y)
    ctx.store.put(keys.output_gradient_key(run_id, epoch), nn.cost_gradient(AL, Y))
    ctx.runs.record_cost(run_id, epoch, c)
    return {"cost": c}


def backward(ctx: Context, run_id: str, epoch: int, layer: int, shard: int) -> dict:
    p, s = ctx.shard(run_id, layer, shard)
    ctx.epoch(run_id, epoch)
    dA = _dA(ctx, p, run_id, epoch, s)
    Z = ctx.store.get(keys.matrix_key(run_id, epoch, "Z", layer, shard))
    W = ctx.store.get(keys.matrix_key(run_id, epoch, "W", layer, shard))
    dZ = nn.activation_backward(dA, Z, p.activations[layer - 1])
    A_prev = _layer_input(ctx, p, run_id, epoch, layer)
    dW, db, dA_prev = nn.linear_backward(dZ, A_prev, W)
    ctx.store.put(keys.matrix_key(run_id, epoch, "dW", layer, shard), dW)
    ctx.store.put(keys.matrix_key(run_id, epoch, "db", layer, shard), db)
    if layer > 1:  # layer 1's dA_prev would be the gradient of the images: nobody needs it
        ctx.store.put(keys.matrix_key(run_id, epoch, "dA_prev", layer, shard), dA_prev)
    if is_sampled(p, epoch):
        A = nn.activate(Z, p.activations[layer - 1])
        stats = np.column_stack(
            [
                np.linalg.norm(dW, axis=1),
                np.abs(db[:, 0]),
                Z.mean(axis=1),
                Z.std(axis=1),
                A.mean(axis=1),
                A.std(axis=1),
            ]
        )
        ctx.store.put(keys.neuron_stats_key(run_id, epoch, layer, shard), stats)
    return {"dW_norm": float(np.linalg.norm(dW)), "db_norm": float(np.linalg.norm(db))}


def sampled_epochs(p: Parameters) -> list[int]:
    """The epochs at which each neuron's statistics are recorded: evenly spaced, and the last."""
    every = max(1, p.epochs // NEURON_SAMPLES)
    return sorted({*range(0, p.epochs, every), p.epochs - 1})


def is_sampled(p: Parameters, epoch: int) -> bool:
    every = max(1, p.epochs // NEURON_SAMPLES)
    return epoch % every == 0 or epoch == p.epochs - 1


def neuron_history(ctx: Context, run_id: str) -> dict[str, np.ndarray]:
    """All recorded statistics: `epochs` (k,), and for each layer l and statistic s an array
    `{s}_layer{l}` of shape (k, neurons of layer l)."""
    p = ctx.parameters(run_id)
    epochs = sampled_epochs(p)
    out: dict[str, np.ndarray] = {"epochs": np.array(epochs)}
    for layer in range(1, p.layers + 1):
        per_epoch = [
            np.concatenate(
                [
                    ctx.store.get(keys.neuron_stats_key(run_id, e, layer, s.shard))
                    for s in p.shards(layer)
                ]
            )
            for e in epochs
        ]
        stacked = np.stack(per_epoch)  # (k, neurons, stats)
        for i, name in enumerate(NEURON_STATS):
            out[f"{name}_layer{layer}"] = stacked[:, :, i]
    return out


def update(ctx: Context, run_id: str, epoch: int, layer: int, shard: int) -> dict:
    p, _ = ctx.shard(run_id, layer, shard)
    ctx.epoch(run_id, epoch)
    get = ctx.store.get
    W, b = nn.update(
        get(keys.matrix_key(run_id, epoch, "W", layer, shard)),
        get(keys.matrix_key(run_id, epoch, "b", layer, shard)),
        get(keys.matrix_key(run_id, epoch, "dW", layer, shard)),
        get(keys.matrix_key(run_id, epoch, "db", layer, shard)),
        p.learning_rate,
    )
    ctx.store.put(keys.matrix_key(run_id, epoch + 1, "W", layer, shard), W)
    ctx.store.put(keys.matrix_key(run_id, epoch + 1, "b", layer, shard), b)
    return {"key": keys.matrix_key(run_id, epoch + 1, "W", layer, shard)}


def commit(ctx: Context, run_id: str, epoch: int) -> dict:
    """Advance the run to epoch + 1 (one conditional write: a duplicate is a no-op), then delete
    what no stage will read again: the epoch before the one just finished, unless a checkpoint."""
    ctx.epoch(run_id, epoch)
    next_epoch = ctx.runs.commit(run_id, epoch)
    old = epoch - 1
    if old >= 0 and old % CHECKPOINT_EVERY != 0:
        ctx.store.delete_prefix(keys.epoch_prefix(run_id, old))
    return {"epoch": next_epoch}


def final_weights(ctx: Context, run_id: str) -> list[tuple[np.ndarray, np.ndarray]]:
    p = ctx.parameters(run_id)
    return [
        (
            _layer_matrix(ctx, p, run_id, p.epochs, "W", layer),
            _layer_matrix(ctx, p, run_id, p.epochs, "b", layer),
        )
        for layer in range(1, p.layers + 1)
    ]


def evaluate(ctx: Context, run_id: str) -> dict:
    """Accuracies of the trained network, and the model as one .npz object."""
    p = ctx.parameters(run_id)
    record = ctx.runs.get(run_id, ("committed_epoch",)) or {}
    if int(record.get("committed_epoch", -1)) != p.epochs:
        raise EventError(
            f"run {run_id} is at epoch {record.get('committed_epoch')}, not at its last "
            f"epoch {p.epochs}: nothing to evaluate yet"
        )
    try:
        weights = final_weights(ctx, run_id)
    except MissingObject as exc:
        raise EventError(f"run {run_id}: final weights missing ({exc})") from None
    result: dict[str, Any] = {}
    for split in ("train", "test"):
        X = ctx.store.get_cached(keys.data_key(run_id, split, "x"))
        Y = ctx.store.get_cached(keys.data_key(run_id, split, "y"))
        AL = nn.forward(weights, p.activations, X)
        result[f"{split}_accuracy"] = nn.accuracy(AL, Y)
        if split == "test":
            result["confusion_matrix"] = confusion_matrix(nn.predict(AL), Y)
    ctx.store.put_bytes(keys.model_key(run_id), model_bytes(weights))
    ctx.store.put_bytes(keys.neurons_key(run_id), npz_bytes(neuron_history(ctx, run_id)))
    ctx.runs.update(run_id, {"status": "SUCCEEDED", **result})
    return {**result, "model_key": keys.model_key(run_id), "neurons_key": keys.neurons_key(run_id)}


def record_failure(ctx: Context, run_id: str, error: str, cause: str) -> dict:
    keys.check_run_id(run_id)
    if ctx.runs.get(run_id, ("status",)) is None:
        raise EventError(f"unknown run {run_id!r}: no record in the run table")
    ctx.runs.update(run_id, {"status": "FAILED", "error": error[:256], "cause": cause[:4096]})
    return {"status": "FAILED"}


# --- outputs ------------------------------------------------------------------------------------


def confusion_matrix(predicted: np.ndarray, Y: np.ndarray) -> dict[str, int]:
    y = Y.astype(np.int64).ravel()
    yhat = predicted.ravel()
    return {
        "true_positive": int(np.sum((yhat == 1) & (y == 1))),
        "false_positive": int(np.sum((yhat == 1) & (y == 0))),
        "true_negative": int(np.sum((yhat == 0) & (y == 0))),
        "false_negative": int(np.sum((yhat == 0) & (y == 1))),
    }
