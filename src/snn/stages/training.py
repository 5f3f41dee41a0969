"""The stages of one epoch: ForwardLinear, Activation, Loss, Backward, Update, Commit (the
order is `snn.epoch`'s). Each checks that the run is RUNNING at its epoch before it writes."""

from __future__ import annotations

import numpy as np

from snn import keys
from snn import network as nn
from snn.errors import EventError
from snn.parameters import Parameters
from snn.stages.context import (
    Context,
    finite,
    layer_gradient,
    layer_input,
    layer_matrix,
    numbers_checked,
)

# Per-neuron statistics are recorded at about this many epochs of a run (and at its last).
NEURON_SAMPLES = 100
NEURON_STATS = ("dW_norm", "db_abs", "Z_mean", "Z_std", "A_mean", "A_std")

# How many old epochs survive a commit: the committed one and the one before, plus a checkpoint
# every CHECKPOINT_EVERY epochs, so storage stays bounded however long the run.
CHECKPOINT_EVERY = 500


# --- the stages of an epoch ----------------------------------------------------------------------


@numbers_checked
def forward_linear(ctx: Context, run_id: str, epoch: int, layer: int, shard: int) -> dict:
    p, _ = ctx.shard(run_id, epoch, layer, shard)
    W = ctx.store.get(keys.matrix_key(run_id, epoch, "W", layer, shard))
    b = ctx.store.get(keys.matrix_key(run_id, epoch, "b", layer, shard))
    Z = nn.linear_forward(W, b, layer_input(ctx, p, run_id, epoch, layer))
    finite(Z, "Z", p, epoch, layer)
    key = keys.matrix_key(run_id, epoch, "Z", layer, shard)
    ctx.store.put(key, Z)
    return {"key": key, "shape": list(Z.shape)}


@numbers_checked
def activation(ctx: Context, run_id: str, epoch: int, layer: int, shard: int) -> dict:
    p, _ = ctx.shard(run_id, epoch, layer, shard)
    Z = ctx.store.get(keys.matrix_key(run_id, epoch, "Z", layer, shard))
    A = nn.activate(Z, p.activations[layer - 1])
    key = keys.matrix_key(run_id, epoch, "A", layer, shard)
    ctx.store.put(key, A)
    return {"key": key, "shape": list(A.shape)}


@numbers_checked
def loss(ctx: Context, run_id: str, epoch: int) -> dict:
    """The epoch's cost (recorded first: once dA[L] exists, so does the cost) and dA[L]."""
    p = ctx.running(run_id, epoch)
    AL = layer_matrix(ctx, p, run_id, epoch, "A", p.layers)
    Y = ctx.store.get_cached(keys.data_key(run_id, "train", "y"))
    c = nn.cost(AL, Y)
    finite(np.asarray(c), "the cost", p, epoch, p.layers)
    dAL = finite(nn.cost_gradient(AL, Y), "dA of the output layer", p, epoch, p.layers)
    ctx.runs.record_cost(run_id, epoch, c)
    ctx.store.put(keys.output_gradient_key(run_id, epoch), dAL)
    return {"cost": c}


@numbers_checked
def backward(ctx: Context, run_id: str, epoch: int, layer: int, shard: int) -> dict:
    p, s = ctx.shard(run_id, epoch, layer, shard)
    dA = layer_gradient(ctx, p, run_id, epoch, s)
    Z = ctx.store.get(keys.matrix_key(run_id, epoch, "Z", layer, shard))
    W = ctx.store.get(keys.matrix_key(run_id, epoch, "W", layer, shard))
    dZ = nn.activation_backward(dA, Z, p.activations[layer - 1])
    A_prev = layer_input(ctx, p, run_id, epoch, layer)
    dW, db, dA_prev = nn.linear_backward(dZ, A_prev, W, with_dA_prev=layer > 1)
    finite(dW, "the gradient dW", p, epoch, layer)
    finite(db, "the gradient db", p, epoch, layer)
    ctx.store.put(keys.matrix_key(run_id, epoch, "dW", layer, shard), dW)
    ctx.store.put(keys.matrix_key(run_id, epoch, "db", layer, shard), db)
    if dA_prev is not None:
        finite(dA_prev, "the gradient dA", p, epoch, layer - 1)
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


@numbers_checked
def update(ctx: Context, run_id: str, epoch: int, layer: int, shard: int) -> dict:
    p, _ = ctx.shard(run_id, epoch, layer, shard)
    get = ctx.store.get
    W, b = nn.update(
        get(keys.matrix_key(run_id, epoch, "W", layer, shard)),
        get(keys.matrix_key(run_id, epoch, "b", layer, shard)),
        get(keys.matrix_key(run_id, epoch, "dW", layer, shard)),
        get(keys.matrix_key(run_id, epoch, "db", layer, shard)),
        p.learning_rate,
    )
    finite(W, "the weights W after the update", p, epoch, layer)
    finite(b, "the biases b after the update", p, epoch, layer)
    ctx.store.put(keys.matrix_key(run_id, epoch + 1, "W", layer, shard), W)
    ctx.store.put(keys.matrix_key(run_id, epoch + 1, "b", layer, shard), b)
    return {"key": keys.matrix_key(run_id, epoch + 1, "W", layer, shard)}


def commit(ctx: Context, run_id: str, epoch: int) -> dict:
    """Advance the run to epoch + 1, once every shard of the next weights exists (one
    conditional write: a duplicate is a no-op), then delete what no stage will read again: the
    epoch before the one just finished, unless it is a checkpoint."""
    record = ctx.record(run_id, ("status", "committed_epoch"))
    p = ctx.epoch(run_id, epoch)
    if int(record["committed_epoch"]) != epoch + 1:  # not a replay of a commit already made
        ctx.check_running(run_id, epoch, record)
        written = ctx.store.keys_under(keys.epoch_prefix(run_id, epoch + 1))
        missing = sorted(next_weights(p, run_id, epoch) - written)
        if missing:
            raise EventError(
                f"run {run_id}: cannot commit epoch {epoch}: {len(missing)} of the next epoch's "
                f"weights are missing ({missing[0]}, ...)"
            )
    next_epoch = ctx.runs.commit(run_id, epoch)
    old = epoch - 1
    if old >= 0 and old % CHECKPOINT_EVERY != 0:
        ctx.store.delete_prefix(keys.epoch_prefix(run_id, old))
    return {"epoch": next_epoch}


def next_weights(p: Parameters, run_id: str, epoch: int) -> set[str]:
    """The keys Update writes in epoch `epoch`: W and b of every shard, entering epoch + 1."""
    return {
        keys.matrix_key(run_id, epoch + 1, name, layer, s.index)
        for layer in range(1, p.layers + 1)
        for s in p.shards(layer)
        for name in ("W", "b")
    }


# --- neuron statistics ---------------------------------------------------------------------------


def sampled_epochs(p: Parameters) -> list[int]:
    """The epochs at which each neuron's statistics are recorded: evenly spaced, and the last."""
    every = max(1, p.epochs // NEURON_SAMPLES)
    return sorted({*range(0, p.epochs, every), p.epochs - 1})


def is_sampled(p: Parameters, epoch: int) -> bool:
    every = max(1, p.epochs // NEURON_SAMPLES)
    return epoch % every == 0 or epoch == p.epochs - 1
