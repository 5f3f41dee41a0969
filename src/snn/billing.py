"""The AWS bill of a training run, from what a short run on the local engine used (the money, not
the loss: the loss of an epoch is its "cost" everywhere else in SNN).

Pure arithmetic over counts: `snn bill` measures two short runs (see `snn.commands.bill`),
`from_runs` splits what they used into a part per run, a part per epoch and a part per epoch
whose neuron statistics are recorded, and `estimate` scales that to N epochs and prices it.
`snn.asl.step_path` walks one epoch of the state machine's definition with the plan Init
returns, for the wall-time projection (`project_wall_time`).

The prices are us-east-1 list prices as of 2025, without free tiers: assumptions, each of which
can be overridden (`Prices`, and the command's flags).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from snn.asl import StepPath
from snn.errors import SnnError

# Express executions may run for at most five minutes.
EXPRESS_MAX_SECONDS = 300.0
WRITE_UNIT_BYTES = 1024  # one write request unit writes up to 1 KB of item
READ_UNIT_BYTES = 4096  # one (strongly consistent) read request unit reads up to 4 KB


class BillingError(SnnError):
    """The estimate cannot be made (for example, a state machine whose epoch cannot be walked)."""


class Assumptions:
    """Named non-negative numbers with defaults, any of which can be overridden."""

    KIND = "assumption"

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    def with_overrides(self, **values: float) -> Any:
        for name, value in values.items():
            if name not in self.names():
                raise ValueError(f"unknown {self.KIND} {name}")
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        return replace(self, **values)  # type: ignore[type-var]


@dataclass(frozen=True)
class Prices(Assumptions):
    """Dollars. Step Functions Express and Lambda bill memory x time; the memory sizes are the
    template's (1024 MB functions, its Globals; `snn bill` reads it) and Express's smallest unit
    (64 MB)."""

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

    KIND = "price"


@dataclass(frozen=True)
class Latencies(Assumptions):
    """Seconds AWS adds per step of the critical path, on top of the handlers' own time. The
    sources are printed with the projection (`LATENCY_SOURCES`)."""

    s3_request: float = 0.030
    dynamodb_request: float = 0.005
    state_transition: float = 0.050
    lambda_invoke: float = 0.020

    KIND = "latency"


LATENCY_SOURCES = {
    "s3_request": "AWS whitepaper Optimizing Amazon S3 Performance, 'Timeouts and Retries for "
    "Latency-Sensitive Applications': small requests (under 512 KB) have median latencies "
    "'often in the tens of milliseconds' (docs.aws.amazon.com/whitepapers/latest/"
    "s3-optimizing-performance-best-practices/timeouts-and-retries-for-latency-sensitive-"
    "applications.html)",
    "dynamodb_request": "AWS Knowledge Center, DynamoDB high latency: GetItem and PutItem "
    "average latency 'in single-digit milliseconds' (repost.aws/knowledge-center/"
    "dynamodb-high-latency)",
    "state_transition": "no published figure: an assumption (time from one state's end to the "
    "next state's start in a Standard workflow)",
    "lambda_invoke": "no published figure: an assumption (a warm synchronous invoke, without "
    "the handler's own time)",
}


@dataclass(frozen=True)
class Usage:
    """What (a part of) a run uses. Floats, because per-epoch parts are averages."""

    state_transitions: float = 0.0
    lambda_invocations: float = 0.0
    # The sum of the invocations' durations, each in seconds of a function of the template's
    # Globals memory (Prices.lambda_memory_mb): a function with twice that counts twice.
    lambda_seconds: float = 0.0
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
    """A run's usage in three parts, and the size of its DynamoDB run record (a write is billed
    by the size of the item it writes; the record is the largest item a stage writes, and it
    does not grow with the epochs: each cost is an item of its own)."""

    per_run: Usage  # Init, Evaluate, the uploads: once per run
    per_epoch: Usage  # the forward and backward passes, the update, the commit
    per_sample: Usage  # an epoch whose per-neuron statistics are recorded (about 100 per run)
    record_bytes: float  # the run record, as read back at the end of the run


def from_runs(
    short: tuple[int, Usage, Usage],
    long: tuple[int, Usage, Usage],
    record_bytes: float,
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
    return Measurement(per_run, per_epoch, per_sample, record_bytes)


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
class WallTime:
    """The projected wall time of a run on AWS (Standard), and its parts per epoch."""

    epochs: int
    epoch_seconds: float
    transitions_seconds: float  # per epoch
    invokes_seconds: float
    handler_seconds: float
    s3_seconds: float
    dynamodb_seconds: float

    @property
    def run_seconds(self) -> float:
        return self.epochs * self.epoch_seconds


def project_wall_time(
    m: Measurement,
    path: StepPath,
    epochs: int,
    latencies: Latencies = Latencies(),
    batches: int = 1,
) -> WallTime:
    """An epoch on AWS: its `batches` steps one after the other; each state on a step's
    critical path (`step_path`) costs a transition, each invocation on it an invoke, the
    handler's measured time and the latency of its requests (the epoch's requests and handler
    time shared evenly among its invocations). Init, Evaluate and the neuron statistics are
    left out: they are a few epochs' worth in a run."""
    states, invocations = path.critical.states * batches, path.critical.invocations * batches
    per = m.per_epoch
    n = max(per.lambda_invocations, 1.0)
    share = invocations / n  # the part of the epoch's work that lies on the path
    parts = {
        "transitions_seconds": states * latencies.state_transition,
        "invokes_seconds": invocations * latencies.lambda_invoke,
        "handler_seconds": per.lambda_seconds * share,
        "s3_seconds": (per.s3_put + per.s3_get) * share * latencies.s3_request,
        "dynamodb_seconds": (per.dynamodb_writes + per.dynamodb_reads)
        * share
        * latencies.dynamodb_request,
    }
    return WallTime(epochs, sum(parts.values()), **parts)


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


def estimate(
    m: Measurement,
    epochs: int,
    samples: int,
    prices: Prices = Prices(),
    epoch_wall_seconds: float | None = None,
) -> Estimate:
    """The cost of a run of `epochs` epochs, `samples` of which record neuron statistics. An
    Express execution is billed for as long as it runs: `epoch_wall_seconds` (the projected wall
    time of an epoch on AWS, see `project_wall_time`), or else the sum of the tasks' times."""
    if epochs < 1 or not 0 <= samples <= epochs:
        raise ValueError(f"need epochs >= 1 and 0 <= samples <= epochs, got {epochs}, {samples}")
    run = m.per_run + m.per_epoch.scaled(epochs) + m.per_sample.scaled(samples)

    standard = Line(
        "SFN Standard",
        "transitions",
        run.state_transitions,
        run.state_transitions / 1000 * prices.sfn_standard_per_1k_transitions,
    )
    # Express: the run is cut into executions of at most five minutes, whole epochs each.
    if epoch_wall_seconds is None:
        epoch_seconds = m.per_epoch.lambda_seconds + m.per_sample.lambda_seconds * samples / epochs
        run_seconds = run.lambda_seconds
    else:
        epoch_seconds = epoch_wall_seconds
        run_seconds = epochs * epoch_wall_seconds + m.per_run.lambda_seconds
    if epoch_seconds > EXPRESS_MAX_SECONDS:
        per_execution = None
        executions = epochs
    else:
        per_execution = min(epochs, max(1, int(EXPRESS_MAX_SECONDS // max(epoch_seconds, 1e-9))))
        executions = math.ceil(epochs / per_execution)
    express_gb_seconds = run_seconds * prices.express_memory_mb / 1024
    express = Line(
        "SFN Express",
        "GB-seconds",
        express_gb_seconds,
        executions / 1e6 * prices.sfn_express_per_1m_requests
        + express_gb_seconds * prices.sfn_express_per_gb_second,
    )

    lambda_gb_seconds = run.lambda_seconds * prices.lambda_memory_mb / 1024
    record_bytes = max(1.0, m.record_bytes)
    write_units = run.dynamodb_writes * math.ceil(record_bytes / WRITE_UNIT_BYTES)
    read_units = run.dynamodb_reads * math.ceil(record_bytes / READ_UNIT_BYTES)
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
