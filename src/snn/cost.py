"""What a training run would cost on AWS, from what a short run on the local engine used.

Pure arithmetic over counts: `snn cost` measures two short runs (see `snn.commands.cost`),
`from_runs` splits what they used into a part per run, a part per epoch and a part per epoch
whose neuron statistics are recorded, and `estimate` scales that to N epochs and prices it.

The prices are us-east-1 list prices as of 2025, without free tiers: assumptions, each of which
can be overridden (`Prices`, and the command's flags).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

# Express executions may run for at most five minutes.
EXPRESS_MAX_SECONDS = 300.0
WRITE_UNIT_BYTES = 1024  # one write request unit writes up to 1 KB of item
READ_UNIT_BYTES = 4096  # one (strongly consistent) read request unit reads up to 4 KB


@dataclass(frozen=True)
class Prices:
    """Dollars. Step Functions Express and Lambda bill memory x time; the memory sizes are the
    template's (1024 MB functions) and Express's smallest unit (64 MB)."""

    sfn_standard_per_1k_transitions: float = 0.025
    sfn_express_per_1m_requests: float = 1.00
    sfn_express_per_gb_second: float = 0.00001667
    lambda_per_1m_requests: float = 0.20
    lambda_per_gb_second: float = 0.0000133334  # arm64
    s3_put_per_1k: float = 0.005  # PUT, COPY, POST, LIST
    s3_get_per_1k: float = 0.0004  # GET and all other requests (DELETE is free)
    dynamodb_per_1m_write_units: float = 0.625  # on-demand
    dynamodb_per_1m_read_units: float = 0.125  # on-demand
    lambda_memory_mb: float = 1024
    express_memory_mb: float = 64

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def with_overrides(self, **values: float) -> Prices:
        for name, value in values.items():
            if name not in self.names():
                raise ValueError(f"unknown price {name}")
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        return replace(self, **values)


@dataclass(frozen=True)
class Usage:
    """What (a part of) a run uses. Floats, because per-epoch parts are averages."""

    state_transitions: float = 0.0
    lambda_invocations: float = 0.0
    lambda_seconds: float = 0.0  # the sum of the invocations' durations
    s3_put: float = 0.0  # PUT, COPY, POST and LIST requests
    s3_get: float = 0.0  # GET and HEAD requests
    dynamodb_writes: float = 0.0  # write requests (each costs units by the item's size)
    dynamodb_reads: float = 0.0  # strongly consistent read requests

    def _combine(self, other: Usage, sign: float) -> Usage:
        return Usage(
            **{f.name: getattr(self, f.name) + sign * getattr(other, f.name) for f in fields(self)}
        )

    def __add__(self, other: Usage) -> Usage:
        return self._combine(other, 1.0)

    def __sub__(self, other: Usage) -> Usage:
        return self._combine(other, -1.0)

    def scaled(self, k: float) -> Usage:
        return Usage(**{f.name: k * getattr(self, f.name) for f in fields(self)})

    def clipped(self) -> Usage:
        """Negative parts (timing noise in a difference) as zero."""
        return Usage(**{f.name: max(0.0, getattr(self, f.name)) for f in fields(self)})


@dataclass(frozen=True)
class Measurement:
    """A run's usage in three parts, and the size of its DynamoDB record (which grows by one
    cost per epoch, and a write is billed by the size of the item it writes)."""

    per_run: Usage  # Init, Evaluate, the uploads: once per run
    per_epoch: Usage  # the forward and backward passes, the update, the commit
    per_sample: Usage  # an epoch whose per-neuron statistics are recorded (about 100 per run)
    record_bytes: float  # the run record with an empty map of costs
    record_bytes_per_epoch: float  # what each epoch's cost adds to the map, besides its key


def from_runs(
    short: tuple[int, Usage, Usage],
    long: tuple[int, Usage, Usage],
    record_bytes: float,
    record_bytes_per_epoch: float,
) -> Measurement:
    """Split two measured runs into parts. Each run is (epochs, usage without the neuron
    statistics, usage of the neuron statistics), both run with every epoch sampled. What grows
    with the epochs between the two runs is the per-epoch part; the rest is the per-run part,
    which also takes what only the first epoch of a fresh stack pays (cold caches)."""
    (a, usage_a, stats_a), (b, usage_b, stats_b) = short, long
    if not 0 < a < b:
        raise ValueError(f"need two runs of 0 < a < b epochs, got {a} and {b}")
    per_epoch = (usage_b - usage_a).scaled(1 / (b - a)).clipped()
    per_sample = (stats_b - stats_a).scaled(1 / (b - a)).clipped()
    per_run = (usage_b - per_epoch.scaled(b)).clipped() + (stats_b - per_sample.scaled(b)).clipped()
    return Measurement(per_run, per_epoch, per_sample, record_bytes, record_bytes_per_epoch)


def item_bytes(item: dict[str, Any]) -> int:
    """The size DynamoDB bills for an item given in its wire format ({"S": ...}, {"N": ...},
    {"M": {...}}, ...): names plus values, with the documented overheads, roughly."""

    def value_bytes(value: dict[str, Any]) -> int:
        ((kind, x),) = value.items()
        if kind in ("S", "B"):
            return len(x.encode() if isinstance(x, str) else x)
        if kind == "N":
            return len(x.lstrip("-").replace(".", "")) // 2 + 2
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "M":
            return 3 + sum(len(k.encode()) + value_bytes(v) + 1 for k, v in x.items())
        if kind == "L":
            return 3 + sum(value_bytes(v) + 1 for v in x)
        return len(str(x))

    return sum(len(k.encode()) + value_bytes(v) for k, v in item.items())


@dataclass(frozen=True)
class Line:
    """One row of the estimate: a quantity (with its unit) and its dollars, for the whole run;
    per epoch is the run's average."""

    item: str
    unit: str
    quantity: float
    dollars: float


@dataclass(frozen=True)
class Estimate:
    epochs: int
    standard: Line
    express: Line
    express_executions: int
    express_epochs_per_execution: int | None  # None: one epoch alone takes over 5 minutes
    shared: list[Line]  # what both kinds of workflow pay: Lambda, S3, DynamoDB

    @property
    def shared_dollars(self) -> float:
        return sum(line.dollars for line in self.shared)

    @property
    def total_standard(self) -> float:
        return self.standard.dollars + self.shared_dollars

    @property
    def total_express(self) -> float:
        return self.express.dollars + self.shared_dollars


def record_sizes(m: Measurement, epochs: int) -> np.ndarray:
    """The run record's size once each epoch 0..epochs-1 has recorded its cost under its key,
    the epoch number as text."""
    e = np.arange(epochs)
    digits = np.floor(np.log10(np.maximum(e, 1))) + 1
    return m.record_bytes + np.cumsum(m.record_bytes_per_epoch + digits)


def _write_units(m: Measurement, epochs: int, writes_per_epoch: float, fixed: float) -> float:
    """Write units: each epoch's writes at that epoch's record size, the fixed writes at the
    final size (an upper bound: Init writes the smallest record)."""
    sizes = record_sizes(m, epochs)
    per_epoch = float(np.ceil(sizes / WRITE_UNIT_BYTES).sum())
    final = math.ceil(max(1.0, sizes[-1]) / WRITE_UNIT_BYTES)
    return writes_per_epoch * per_epoch + fixed * final


def estimate(m: Measurement, epochs: int, samples: int, prices: Prices = Prices()) -> Estimate:
    """The cost of a run of `epochs` epochs, `samples` of which record neuron statistics."""
    if epochs < 1 or not 0 <= samples <= epochs:
        raise ValueError(f"need epochs >= 1 and 0 <= samples <= epochs, got {epochs}, {samples}")
    run = m.per_run + m.per_epoch.scaled(epochs) + m.per_sample.scaled(samples)

    standard = Line(
        "SFN Standard",
        "transitions",
        run.state_transitions,
        run.state_transitions / 1000 * prices.sfn_standard_per_1k_transitions,
    )
    # Express: the execution lasts as long as its tasks (assumed run one after the other), and
    # the run is cut into executions of at most five minutes, whole epochs each.
    epoch_seconds = m.per_epoch.lambda_seconds + m.per_sample.lambda_seconds * samples / epochs
    if epoch_seconds > EXPRESS_MAX_SECONDS:
        per_execution = None
        executions = epochs
    else:
        per_execution = max(1, int(EXPRESS_MAX_SECONDS // max(epoch_seconds, 1e-9)))
        executions = math.ceil(epochs / per_execution)
    express_gb_seconds = run.lambda_seconds * prices.express_memory_mb / 1024
    express = Line(
        "SFN Express",
        "GB-seconds",
        express_gb_seconds,
        executions / 1e6 * prices.sfn_express_per_1m_requests
        + express_gb_seconds * prices.sfn_express_per_gb_second,
    )

    lambda_gb_seconds = run.lambda_seconds * prices.lambda_memory_mb / 1024
    final_bytes = max(1.0, float(record_sizes(m, epochs)[-1]))
    fixed_writes = m.per_run.dynamodb_writes + m.per_sample.dynamodb_writes * samples
    write_units = _write_units(m, epochs, m.per_epoch.dynamodb_writes, fixed_writes)
    read_units = run.dynamodb_reads * math.ceil(final_bytes / READ_UNIT_BYTES)
    shared = [
        Line(
            "Lambda requests",
            "invocations",
            run.lambda_invocations,
            run.lambda_invocations / 1e6 * prices.lambda_per_1m_requests,
        ),
        Line(
            "Lambda compute",
            "GB-seconds",
            lambda_gb_seconds,
            lambda_gb_seconds * prices.lambda_per_gb_second,
        ),
        Line("S3 PUT, LIST", "requests", run.s3_put, run.s3_put / 1000 * prices.s3_put_per_1k),
        Line("S3 GET", "requests", run.s3_get, run.s3_get / 1000 * prices.s3_get_per_1k),
        Line(
            "DynamoDB write",
            "write units",
            write_units,
            write_units / 1e6 * prices.dynamodb_per_1m_write_units,
        ),
        Line(
            "DynamoDB read",
            "read units",
            read_units,
            read_units / 1e6 * prices.dynamodb_per_1m_read_units,
        ),
    ]
    return Estimate(epochs, standard, express, executions, per_execution, shared)
