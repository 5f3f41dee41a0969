"""What every stage works with (the stores, what it knows of each run) and the checks they share:
the run's state before a stage writes, finite numbers after it computes, and whole layers and
mini-batches assembled from what the store holds."""

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


@dataclass(frozen=True)
class Run:
    """What never changes about a run once Init has created it: its parameters, how many
    training examples it learns from and how many mini-batches an epoch has."""

    run_id: str
    parameters: Parameters
    examples: int
    batches: int

    @property
    def steps(self) -> int:
        return self.parameters.epochs * self.batches


@dataclass(frozen=True)
class Step:
    """One gradient step of a run: batch `batch` of epoch `epoch`, step number `k`."""

    run: Run
    epoch: int
    batch: int

    @property
    def k(self) -> int:
        return self.epoch * self.run.batches + self.batch

    @property
    def p(self) -> Parameters:
        return self.run.parameters

    @property
    def last_of_epoch(self) -> bool:
        return self.batch == self.run.batches - 1


@dataclass
class Context:
    """What a stage works with: the matrix store, the run table, the state machine's executions,
    and what it knows of each run (which never changes, so a warm function keeps it)."""

    store: MatrixStore
    runs: RunTable
    executions: Executions | None = None
    _runs: dict[str, Run] = field(default_factory=dict)
    _batches: dict[tuple[str, int], list[np.ndarray]] = field(default_factory=dict)

    def record(self, run_id: str, fields: tuple[str, ...]) -> dict[str, Any]:
        """The named fields of the run record (and what never changes, the first time)."""
        keys.check_run_id(run_id)
        known = run_id in self._runs
        fixed = () if known else ("parameters", "examples", "batches")
        record = self.runs.get(run_id, (*fields, *fixed))
        if record is None:
            raise EventError(f"unknown run {run_id!r}: no record in the run table")
        if not known:
            p = Parameters.from_json(record["parameters"])
            examples, batches = int(record.get("examples", 0)), int(record.get("batches", 1))
            self._runs[run_id] = Run(run_id, p, examples, batches)
        return record

    def run(self, run_id: str) -> Run:
        if run_id not in self._runs:
            self.record(run_id, ("status",))
        return self._runs[run_id]

    def parameters(self, run_id: str) -> Parameters:
        return self.run(run_id).parameters

    def step(self, run_id: str, epoch: int, batch: int) -> Step:
        """The step, once `epoch` and `batch` are one of the run's."""
        run = self.run(run_id)
        if not 0 <= epoch < run.parameters.epochs:
            raise EventError(
                f"run {run_id}: epoch {epoch} is not in 0..{run.parameters.epochs - 1}"
            )
        if not 0 <= batch < run.batches:
            raise EventError(f"run {run_id}: batch {batch} is not in 0..{run.batches - 1}")
        return Step(run, epoch, batch)

    def running(self, run_id: str, epoch: int, batch: int) -> Step:
        """The step, once the run record says the run is RUNNING at it: the precondition of
        every stage of a step."""
        record = self.record(run_id, ("status", "committed_step"))
        return self.check_running(self.step(run_id, epoch, batch), record)

    def check_running(self, step: Step, record: dict[str, Any]) -> Step:
        run_id = step.run.run_id
        if record["status"] != "RUNNING":
            raise EventError(f"run {run_id} is {record['status']}, not RUNNING")
        if int(record["committed_step"]) != step.k:
            at = nn_position(int(record["committed_step"]), step.run.batches)
            raise EventError(
                f"run {run_id} is at {at}, not at {nn_position(step.k, step.run.batches)}"
            )
        return step

    def shard(
        self, run_id: str, epoch: int, batch: int, layer: int, shard: int
    ) -> tuple[Step, Shard]:
        step = self.running(run_id, epoch, batch)
        try:
            return step, step.p.shard(layer, shard)
        except IndexError as exc:
            raise EventError(f"run {run_id}: {exc}") from None

    def columns(self, step: Step) -> np.ndarray | None:
        """The training examples of the step's mini-batch (column indices), or None: the whole
        training set. (Stages of several runs share this cache in threads of one process: what
        is computed here is used from here, not read back after another may have cleared it.)"""
        training = step.p.training
        if training.batch_size is None:
            return None
        key = (step.run.run_id, step.epoch)
        batches = self._batches.get(key)
        if batches is None:
            if len(self._batches) > 4:
                self._batches.clear()
            seed = training.shuffle_seed + step.epoch + 1
            batches = nn.batch_columns(step.run.examples, training.batch_size, seed)
            self._batches[key] = batches
        return batches[step.batch]


def nn_position(k: int, batches: int) -> str:
    epoch, batch = divmod(k, batches)
    return f"epoch {epoch}" if batches == 1 else f"epoch {epoch} batch {batch}"


# --- numbers that must stay finite ---------------------------------------------------------------


def numbers_checked(stage: Callable[..., T]) -> Callable[..., T]:
    """Run a stage with numpy's floating-point warnings off: what it stores is checked by
    `finite`, which fails the run in one line instead of a warning per overflow."""

    @functools.wraps(stage)
    def quiet(*args: Any, **kwargs: Any) -> T:
        with np.errstate(all="ignore"):
            return stage(*args, **kwargs)

    return quiet


def finite(array: np.ndarray, what: str, step: Step, layer: int) -> np.ndarray:
    """`array`, if every value is a finite number; else the run has diverged."""
    if not np.isfinite(array).all():
        where = nn_position(step.k, step.run.batches)
        raise NumericalError(
            f"{where}, layer {layer}: {what} is no longer finite (NaN or infinity): training "
            f"diverged; the learning rate ({step.p.learning_rate}) is probably too large"
        )
    return array


# --- assembling layers and mini-batches ----------------------------------------------------------


def layer_matrix(
    ctx: Context, step: Step, name: str, layer: int, k: int | None = None
) -> np.ndarray:
    """A whole layer's matrix from its shards (of step k, by default the step's own), stacked in
    neuron (index) order."""
    run_id, at = step.run.run_id, step.k if k is None else k
    parts = [
        ctx.store.get(keys.matrix_key(run_id, at, name, layer, s.index))
        for s in step.p.shards(layer)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def training_data(ctx: Context, step: Step, part: str) -> np.ndarray:
    """The step's training examples (x) or labels (y): its mini-batch's columns, or all."""
    data = ctx.store.get_cached(keys.data_key(step.run.run_id, "train", part))
    columns = ctx.columns(step)
    return data if columns is None else np.ascontiguousarray(data[:, columns])


def layer_input(ctx: Context, step: Step, layer: int) -> np.ndarray:
    """A[layer - 1]: the step's training examples for layer 1, else the previous layer's
    activations."""
    if layer == 1:
        return training_data(ctx, step, "x")
    return layer_matrix(ctx, step, "A", layer - 1)


def layer_gradient(ctx: Context, step: Step, s: Shard) -> np.ndarray:
    """dA for the rows of shard s: from the loss for the last layer, else the sum of the next
    layer's partial dA_prev, added in shard order as they are read (each one's rows of s: the
    rows of a sum are the sums of the rows, bit for bit), so that no more than one partial is
    held at a time."""
    run_id, p = step.run.run_id, step.p
    if s.layer == p.layers:
        return ctx.store.get(keys.output_gradient_key(run_id, step.k))[s.lo : s.hi]
    nxt = s.layer + 1
    partials = (
        ctx.store.get(keys.matrix_key(run_id, step.k, "dA_prev", nxt, t.index))[s.lo : s.hi]
        for t in p.shards(nxt)
    )
    return nn.sum_partials(partials)
