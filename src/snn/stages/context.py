"""What every stage works with (the stores, the run's parameters) and the checks they share:
the run's state before a stage writes, finite numbers after it computes, and whole layers
assembled from their shards."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from snn import keys
from snn import network as nn
from snn.errors import EventError, NumericalError
from snn.parameters import Parameters, Shard
from snn.stores import MatrixStore, RunTable

T = TypeVar("T")


class Executions(Protocol):
    """Starting executions of the state machine (ContinueAsNew)."""

    def start(self, state_machine_arn: str, name: str, execution_input: str) -> None: ...


@dataclass
class Context:
    """What a stage works with: the matrix store, the run table, the state machine's executions,
    and what it knows of each run. A run's parameters never change, so a warm function keeps
    them."""

    store: MatrixStore
    runs: RunTable
    executions: Executions | None = None
    _parameters: dict[str, Parameters] = field(default_factory=dict)

    def record(self, run_id: str, fields: tuple[str, ...]) -> dict[str, Any]:
        """The named fields of the run record (the parameters too, the first time)."""
        keys.check_run_id(run_id)
        known = run_id in self._parameters
        record = self.runs.get(run_id, fields if known else (*fields, "parameters"))
        if record is None:
            raise EventError(f"unknown run {run_id!r}: no record in the run table")
        if not known:
            self._parameters[run_id] = Parameters.from_json(record["parameters"])
        return record

    def parameters(self, run_id: str) -> Parameters:
        if run_id not in self._parameters:
            self.record(run_id, ("status",))
        return self._parameters[run_id]

    def running(self, run_id: str, epoch: int) -> Parameters:
        """The run's parameters, once its record says it is RUNNING at `epoch`: the
        precondition of every stage of an epoch."""
        return self.check_running(run_id, epoch, self.record(run_id, ("status", "committed_epoch")))

    def check_running(self, run_id: str, epoch: int, record: dict[str, Any]) -> Parameters:
        p = self.epoch(run_id, epoch)
        if record["status"] != "RUNNING":
            raise EventError(f"run {run_id} is {record['status']}, not RUNNING")
        if int(record["committed_epoch"]) != epoch:
            raise EventError(
                f"run {run_id} is at epoch {record['committed_epoch']}, not at epoch {epoch}"
            )
        return p

    def epoch(self, run_id: str, epoch: int) -> Parameters:
        """The run's parameters, once `epoch` is one of its epochs."""
        p = self.parameters(run_id)
        if not 0 <= epoch < p.epochs:
            raise EventError(f"run {run_id}: epoch {epoch} is not in 0..{p.epochs - 1}")
        return p

    def shard(self, run_id: str, epoch: int, layer: int, shard: int) -> tuple[Parameters, Shard]:
        p = self.running(run_id, epoch)
        try:
            return p, p.shard(layer, shard)
        except IndexError as exc:
            raise EventError(f"run {run_id}: {exc}") from None


# --- numbers that must stay finite ---------------------------------------------------------------


def numbers_checked(stage: Callable[..., T]) -> Callable[..., T]:
    """Run a stage with numpy's floating-point warnings off: what it stores is checked by
    `finite`, which fails the run in one line instead of a warning per overflow."""

    @functools.wraps(stage)
    def quiet(*args: Any, **kwargs: Any) -> T:
        with np.errstate(all="ignore"):
            return stage(*args, **kwargs)

    return quiet


def finite(array: np.ndarray, what: str, p: Parameters, epoch: int, layer: int) -> np.ndarray:
    """`array`, if every value is a finite number; else the run has diverged."""
    if not np.isfinite(array).all():
        raise NumericalError(
            f"epoch {epoch}, layer {layer}: {what} is no longer finite (NaN or infinity): "
            f"training diverged; the learning rate ({p.learning_rate}) is probably too large"
        )
    return array


# --- assembling a layer from its shards ----------------------------------------------------------


def layer_matrix(
    ctx: Context, p: Parameters, run_id: str, epoch: int, name: str, layer: int
) -> np.ndarray:
    """A whole layer's matrix from its shards, stacked in neuron (index) order."""
    parts = [
        ctx.store.get(keys.matrix_key(run_id, epoch, name, layer, s.index)) for s in p.shards(layer)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def layer_input(ctx: Context, p: Parameters, run_id: str, epoch: int, layer: int) -> np.ndarray:
    """A[layer - 1]: the training images for layer 1, else the previous layer's activations."""
    if layer == 1:
        return ctx.store.get_cached(keys.data_key(run_id, "train", "x"))
    return layer_matrix(ctx, p, run_id, epoch, "A", layer - 1)


def layer_gradient(ctx: Context, p: Parameters, run_id: str, epoch: int, s: Shard) -> np.ndarray:
    """dA for the rows of shard s: from the loss for the last layer, else the sum of the next
    layer's partial dA_prev, added in shard order."""
    if s.layer == p.layers:
        return ctx.store.get(keys.output_gradient_key(run_id, epoch))[s.lo : s.hi]
    nxt = s.layer + 1
    partials = [
        ctx.store.get(keys.matrix_key(run_id, epoch, "dA_prev", nxt, t.index))
        for t in p.shards(nxt)
    ]
    return nn.sum_partials(partials)[s.lo : s.hi]
