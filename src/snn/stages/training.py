"""The stages of one step (one mini-batch): ForwardLinear, Activation, Loss, Backward, Update,
Commit (the order is `snn.epoch`'s). Each checks that the run is RUNNING at its step before it
writes; Commit of an epoch's last batch also closes the epoch (its cost, its validation cost,
early stopping)."""

from __future__ import annotations

from typing import Any

import numpy as np

from snn import keys
from snn import network as nn
from snn.errors import EventError
from snn.parameters import Parameters
from snn.stages.context import (
    Context,
    Run,
    Step,
    finite,
    layer_gradient,
    layer_input,
    layer_matrix,
    numbers_checked,
    training_data,
)

# Per-neuron statistics are recorded at about this many epochs of a run (and at its last).
NEURON_SAMPLES = 100
NEURON_STATS = ("dW_norm", "db_abs", "Z_mean", "Z_std", "A_mean", "A_std")

# How many old steps survive a commit: the committed one and the one before, plus a checkpoint
# every CHECKPOINT_EVERY steps (and the best epoch's weights, when a validation set is watched),
# so storage stays bounded however long the run.
CHECKPOINT_EVERY = 500


# --- forward ----------------------------------------------------------------------------------


@numbers_checked
def forward_linear(
    ctx: Context, run_id: str, epoch: int, batch: int, layer: int, shard: int
) -> dict:
    step, _ = ctx.shard(run_id, epoch, batch, layer, shard)
    W = ctx.store.get(keys.matrix_key(run_id, step.k, "W", layer, shard))
    b = ctx.store.get(keys.matrix_key(run_id, step.k, "b", layer, shard))
    Z = finite(nn.linear_forward(W, b, layer_input(ctx, step, layer)), "Z", step, layer)
    key = keys.matrix_key(run_id, step.k, "Z", layer, shard)
    ctx.store.put(key, Z)
    return {"key": key, "shape": list(Z.shape)}


@numbers_checked
def activation(ctx: Context, run_id: str, epoch: int, batch: int, layer: int, shard: int) -> dict:
    step, _ = ctx.shard(run_id, epoch, batch, layer, shard)
    Z = ctx.store.get(keys.matrix_key(run_id, step.k, "Z", layer, shard))
    A = nn.activate(Z, step.p.activations[layer - 1])
    key = keys.matrix_key(run_id, step.k, "A", layer, shard)
    ctx.store.put(key, A)
    return {"key": key, "shape": list(A.shape)}


# --- loss ---------------------------------------------------------------------------------------


@numbers_checked
def loss(ctx: Context, run_id: str, epoch: int, batch: int) -> dict:
    """The step's cost (recorded first: once dA[L] exists, so does the cost) and dA[L].

    Full batch: the epoch's cost, -1/m sum(Y log A + (1 - Y) log(1 - A)) (+ L2's share).
    Mini-batches: the batch's summed cost (+ L2's (l2/2) sum W^2), its share of the epoch's
    cost, which Commit adds up at the epoch's end."""
    step = ctx.running(run_id, epoch, batch)
    p = step.p
    AL = layer_matrix(ctx, step, "A", p.layers)
    Y = training_data(ctx, step, "y")
    weights = _weights(ctx, step) if p.training.l2 else []
    # a saturated output (a confident model) has its cost computed from Z[L] (see nn.cost)
    ZL = layer_matrix(ctx, step, "Z", p.layers) if nn.saturated(AL) else None
    if p.training.batch_size is None:
        c = nn.cost(AL, Y, ZL)
        if p.training.l2:
            c = c + nn.l2_cost(weights, p.training.l2, Y.shape[1])
        ctx.runs.record_cost(
            run_id, epoch, float(finite(np.asarray(c), "the cost", step, p.layers))
        )
    else:
        c = nn.summed_cost(AL, Y, ZL)
        if p.training.l2:
            c = c + nn.l2_cost(weights, p.training.l2, 1)
        ctx.runs.record(
            run_id, "loss", step.k, float(finite(np.asarray(c), "the cost", step, p.layers))
        )
    dAL = finite(nn.cost_gradient(AL, Y), "dA of the output layer", step, p.layers)
    ctx.store.put(keys.output_gradient_key(run_id, step.k), dAL)
    return {"cost": float(c)}


def _weights(ctx: Context, step: Step, k: int | None = None) -> list[np.ndarray]:
    return [layer_matrix(ctx, step, "W", layer, k) for layer in range(1, step.p.layers + 1)]


# --- backward -----------------------------------------------------------------------------------


@numbers_checked
def backward(ctx: Context, run_id: str, epoch: int, batch: int, layer: int, shard: int) -> dict:
    step, s = ctx.shard(run_id, epoch, batch, layer, shard)
    p, k = step.p, step.k
    dA = layer_gradient(ctx, step, s)
    Z = ctx.store.get(keys.matrix_key(run_id, k, "Z", layer, shard))
    W = ctx.store.get(keys.matrix_key(run_id, k, "W", layer, shard))
    dZ = nn.activation_backward(dA, Z, p.activations[layer - 1])
    A_prev = layer_input(ctx, step, layer)
    dW, db, dA_prev = nn.linear_backward(dZ, A_prev, W, layer > 1, p.training.l2)
    finite(dW, "the gradient dW", step, layer)
    finite(db, "the gradient db", step, layer)
    ctx.store.put(keys.matrix_key(run_id, k, "dW", layer, shard), dW)
    ctx.store.put(keys.matrix_key(run_id, k, "db", layer, shard), db)
    if dA_prev is not None:
        finite(dA_prev, "the gradient dA", step, layer - 1)
        ctx.store.put(keys.matrix_key(run_id, k, "dA_prev", layer, shard), dA_prev)
    if step.last_of_epoch and is_sampled(p, epoch):
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


# --- update -------------------------------------------------------------------------------------


@numbers_checked
def update(ctx: Context, run_id: str, epoch: int, batch: int, layer: int, shard: int) -> dict:
    """One step of the optimizer for one shard: W and b (and the optimizer's state) entering
    the next step."""
    step, _ = ctx.shard(run_id, epoch, batch, layer, shard)
    p, k = step.p, step.k
    optimizer = p.training.optimizer
    lr = p.training.learning_rate(p.learning_rate, epoch)

    def get(name: str, at: int = k) -> np.ndarray:
        return ctx.store.get(keys.matrix_key(run_id, at, name, layer, shard))

    def state(name: str, like: np.ndarray) -> np.ndarray:
        return get(name) if k > 0 else np.zeros_like(like)  # none before the first step

    out: dict[str, np.ndarray] = {}
    if optimizer.name == "gd":  # the seed's update, exactly
        out["W"], out["b"] = nn.update(get("W"), get("b"), get("dW"), get("db"), lr)
    for P in ("W", "b") if optimizer.name != "gd" else ():
        value, gradient = get(P), get(f"d{P}")
        if optimizer.name == "momentum":
            out[P], out[f"v{P}"] = nn.momentum(
                value, gradient, state(f"v{P}", value), lr, optimizer.beta
            )
        elif optimizer.name == "rmsprop":
            out[P], out[f"s{P}"] = nn.rmsprop(
                value, gradient, state(f"s{P}", value), lr, optimizer.beta, optimizer.epsilon
            )
        else:
            out[P], out[f"v{P}"], out[f"s{P}"] = nn.adam(
                value,
                gradient,
                state(f"v{P}", value),
                state(f"s{P}", value),
                k + 1,
                lr,
                optimizer.beta1,
                optimizer.beta2,
                optimizer.epsilon,
            )
    for name, value in out.items():
        what = {"W": "the weights W", "b": "the biases b"}.get(name, f"the optimizer's {name}")
        finite(value, f"{what} after the update", step, layer)
        ctx.store.put(keys.matrix_key(run_id, k + 1, name, layer, shard), value)
    return {"key": keys.matrix_key(run_id, k + 1, "W", layer, shard)}


def next_weights(p: Parameters, run_id: str, k: int) -> set[str]:
    """The keys Update writes at step k: W and b (and the optimizer's state) of every shard,
    entering step k + 1. For k = -1, what Init writes: the weights entering step 0."""
    state = p.training.optimizer.state if k >= 0 else ()
    names = ("W", "b", *(f"{s}{P}" for s in state for P in "Wb"))
    return {
        keys.matrix_key(run_id, k + 1, name, layer, s.index)
        for layer in range(1, p.layers + 1)
        for s in p.shards(layer)
        for name in names
    }


# --- commit -------------------------------------------------------------------------------------


@numbers_checked
def commit(ctx: Context, run_id: str, epoch: int, batch: int) -> dict:
    """Advance the run to the next step, once every shard of its weights exists (one
    conditional write: a duplicate is a no-op), then delete what no stage will read again. At
    an epoch's last batch, also close the epoch: its cost (mini-batches: the batches' summed
    costs, added in order, over m), its validation cost, and early stopping."""
    fields = ("status", "committed_step", "best_epoch", "best_validation_cost", "stopped")
    record = ctx.record(run_id, fields)
    step = ctx.step(run_id, epoch, batch)
    p, k = step.p, step.k
    if int(record["committed_step"]) == k + 1:  # a replay of a commit already made
        _collect(ctx, step, record.get("best_epoch"))
        return _next(step, bool(record.get("stopped")))
    ctx.check_running(step, record)
    missing = sorted(
        next_weights(p, run_id, k) - ctx.store.keys_under(keys.step_prefix(run_id, k + 1))
    )
    if missing:
        raise EventError(
            f"run {run_id}: cannot commit step {k}: {len(missing)} of the next step's "
            f"matrices are missing ({missing[0]}, ...)"
        )
    fields: dict[str, Any] = {}
    if step.last_of_epoch:
        fields = _close_epoch(ctx, step, record)
    ctx.runs.commit(run_id, k, fields)
    best = fields.get("best_epoch", record.get("best_epoch"))
    _collect(ctx, step, best, previous_best=record.get("best_epoch"))
    return _next(step, "stopped" in fields)


def _close_epoch(ctx: Context, step: Step, record: dict[str, Any]) -> dict[str, Any]:
    """The record's fields that close epoch `step.epoch`."""
    p, run_id, epoch = step.p, step.run.run_id, step.epoch
    fields: dict[str, Any] = {"committed_epoch": epoch + 1}
    if p.training.batch_size is not None:
        first = epoch * step.run.batches
        losses = ctx.runs.values(run_id, "loss", range(first, step.k + 1))
        if sorted(losses) != list(range(first, step.k + 1)):
            raise EventError(f"run {run_id}: epoch {epoch} has batches with no cost recorded")
        total = 0.0
        for k in range(first, step.k + 1):
            total += losses[k]
        ctx.runs.record_cost(run_id, epoch, total / step.run.examples)
    if p.training.validation is not None:
        weights = [
            (
                layer_matrix(ctx, step, "W", layer, step.k + 1),
                layer_matrix(ctx, step, "b", layer, step.k + 1),
            )
            for layer in range(1, p.layers + 1)
        ]
        X = ctx.store.get_cached(keys.data_key(run_id, "valid", "x"))
        Y = ctx.store.get_cached(keys.data_key(run_id, "valid", "y"))
        ZL, AL = nn.forward_output(weights, p.activations, X)
        cost = nn.cost(AL, Y, ZL)
        finite(np.asarray(cost), "the validation cost", step, p.layers)
        ctx.runs.record(run_id, "valid", epoch, cost)
        best = record.get("best_epoch")
        best_cost = float(record["best_validation_cost"]) if best is not None else None
        if best_cost is None or cost < best_cost:
            best, best_cost = epoch, cost
            fields |= {"best_epoch": epoch, "best_validation_cost": cost}
        patience = p.training.patience
        if patience is not None and epoch - best >= patience and epoch + 1 < p.epochs:
            fields["stopped"] = (
                f"early stopping at epoch {epoch}: the validation cost has not improved for "
                f"{patience} epochs since epoch {best} ({best_cost!r})"
            )
    return fields


def best_step(run: Run, best_epoch: int | None) -> int | None:
    """The step whose weights are the best epoch's (those entering the epoch after it)."""
    return None if best_epoch is None else (best_epoch + 1) * run.batches


def _collect(ctx: Context, step: Step, best: int | None, previous_best: int | None = None) -> None:
    """Delete the step before the one just finished, unless a checkpoint or the best epoch's
    weights; and the weights of a best epoch that is best no more."""
    run_id, kept = step.run.run_id, best_step(step.run, best)
    doomed = [step.k - 1]
    if previous_best is not None and previous_best != best:
        doomed.append(best_step(step.run, previous_best))
    for old in doomed:
        if old is not None and 0 <= old < step.k and old % CHECKPOINT_EVERY != 0 and old != kept:
            ctx.store.delete_prefix(keys.step_prefix(run_id, old))


def _next(step: Step, stopped: bool) -> dict[str, Any]:
    k = step.k + 1
    epoch, batch = divmod(k, step.run.batches)
    return {"epoch": epoch, "batch": batch, "step": k, "stopped": stopped}


# --- neuron statistics ---------------------------------------------------------------------------


def sampled_epochs(p: Parameters) -> list[int]:
    """The epochs at which each neuron's statistics are recorded: evenly spaced, and the last."""
    every = max(1, p.epochs // NEURON_SAMPLES)
    return sorted({*range(0, p.epochs, every), p.epochs - 1})


def is_sampled(p: Parameters, epoch: int) -> bool:
    every = max(1, p.epochs // NEURON_SAMPLES)
    return epoch % every == 0 or epoch == p.epochs - 1
