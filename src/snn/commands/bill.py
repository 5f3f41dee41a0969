"""`snn bill [--params FILE] [--epochs N] [--price-... X]`: what a run would cost on AWS, in money.

Two short runs of the network on the local engine (the real state machine and handlers, on an
emulator) are metered: state transitions and Lambda invocations from the execution history;
S3 and DynamoDB requests, and the time each Lambda invocation takes, through botocore's events
on boto3's default session, which every client of the run is made from. `snn.billing` turns
the difference between the runs into a part per epoch and a part per run, scales it to N epochs
and prices it, and walks one epoch of the state machine's definition for the wall time.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snn.errors import SnnError

if TYPE_CHECKING:
    from snn.billing import Latencies, Measurement, Prices, Usage
    from snn.parameters import Parameters

# S3 operations billed as PUT requests (the others, but DELETE, are billed as GET requests).
S3_PUT_CLASS = {
    "PutObject",
    "CopyObject",
    "PostObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "ListBuckets",
}
S3_FREE = {"DeleteObject", "DeleteObjects"}
# The shorter metered run. From its third epoch on, a run is in its steady state: Commit then
# deletes the epoch before last (epoch 0 is kept as a checkpoint), so two runs of 2 and K epochs
# differ by exactly K - 2 steady epochs.
SHORT_RUN = 2
DYNAMODB_READS = {"GetItem", "Query", "Scan", "BatchGetItem"}
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}

PRICE_FLAGS: dict[str, tuple[str, str]] = {
    # Prices field: (flag, help)
    "sfn_standard_per_1k_transitions": ("--price-sfn-standard", "$ per 1,000 state transitions"),
    "sfn_express_per_1m_requests": ("--price-sfn-express-requests", "$ per 1M executions"),
    "sfn_express_per_gb_second": ("--price-sfn-express-gb-second", "$ per GB-second"),
    "lambda_per_1m_requests": ("--price-lambda-requests", "$ per 1M invocations"),
    "lambda_per_gb_second": ("--price-lambda-gb-second", "$ per GB-second (arm64)"),
    "s3_put_per_1k": ("--price-s3-put", "$ per 1,000 PUT, COPY, POST or LIST requests"),
    "s3_get_per_1k": ("--price-s3-get", "$ per 1,000 GET requests"),
    "dynamodb_per_1m_write_units": ("--price-dynamodb-write", "$ per 1M write request units"),
    "dynamodb_per_1m_read_units": ("--price-dynamodb-read", "$ per 1M read request units"),
    "lambda_memory_mb": (
        "--lambda-memory-mb",
        "memory of a function (the template's Globals; a function with more counts its seconds "
        "in proportion)",
    ),
    "express_memory_mb": ("--express-memory-mb", "memory billed for an Express execution"),
}

# Latencies of the wall-time projection, in milliseconds on the command line.
LATENCY_FLAGS = {
    "s3_request": ("--latency-s3-ms", "one S3 request"),
    "dynamodb_request": ("--latency-dynamodb-ms", "one DynamoDB request"),
    "state_transition": ("--latency-state-ms", "one Step Functions state transition"),
    "lambda_invoke": ("--latency-invoke-ms", "one Lambda invoke, besides the handler's time"),
}


class BillError(SnnError):
    pass


def register(subparsers: argparse._SubParsersAction) -> None:
    from snn.billing import Prices

    parser = subparsers.add_parser(
        "bill",
        help="estimate what training a network would cost on AWS, in dollars",
        description="Estimate the AWS bill of a run: two short runs on the local engine are "
        "metered (state transitions, Lambda invocations and their time, S3 and DynamoDB "
        "requests), scaled to the run's epochs and priced with us-east-1 list prices (2025, "
        "no free tier). The prices are assumptions: override any of them with its flag. The "
        "wall time on AWS is projected along one epoch of the state machine's definition, "
        "where an inline Map runs at most 40 iterations at once.",
    )
    parser.add_argument("--params", default="parameters.json", help="default: ./parameters.json")
    parser.add_argument("--epochs", type=int, help="the run's epochs (default: the file's)")
    parser.add_argument(
        "--data",
        help="folder with the two h5 files to meter on (default: $SNN_DATA_DIR; without it, "
        "synthetic pictures of the real data set's size and count)",
    )
    parser.add_argument(
        "--sample-epochs",
        type=int,
        default=4,
        metavar="K",
        help=f"epochs of the longer metered run, {SHORT_RUN + 1} to 100; the shorter one has "
        f"{SHORT_RUN} (default: 4)",
    )
    parser.add_argument(
        "--template",
        default="template.yaml",
        help="the SAM template the local engine stands up, and whose state machine the wall "
        "time is projected on (default: ./template.yaml)",
    )
    defaults = Prices()
    prices = parser.add_argument_group("prices (assumptions; default in brackets)")
    for name, (flag, text) in PRICE_FLAGS.items():
        prices.add_argument(
            flag, dest=f"price_{name}", metavar="X", help=f"{text} [{getattr(defaults, name)}]"
        )
    from snn.billing import Latencies

    assumed = Latencies()
    latencies = parser.add_argument_group(
        "latencies of the wall-time projection (assumptions; default in brackets)"
    )
    for name, (flag, text) in LATENCY_FLAGS.items():
        latencies.add_argument(
            flag,
            dest=f"latency_{name}",
            metavar="MS",
            help=f"{text} [{1000 * getattr(assumed, name):g}]",
        )
    parser.set_defaults(func=run)


# --- metering ------------------------------------------------------------------------------------


@contextmanager
def invocations_reach_thread_pools(local: threading.local) -> Iterator[None]:
    """While it lasts, work that an invocation hands to a thread pool (a function reading many
    objects side by side) runs as part of it: `local.function`, the invoked function as set in
    the invoking thread, is carried into the worker thread with each task."""
    original = ThreadPoolExecutor.submit

    def submit(pool: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        function = getattr(local, "function", None)
        if function is None:
            return original(pool, fn, *args, **kwargs)

        def carried(*a: Any, **k: Any) -> Any:
            local.function = function
            try:
                return fn(*a, **k)
            finally:
                local.function = None

        return original(pool, carried, *args, **kwargs)

    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]
    try:
        yield
    finally:
        ThreadPoolExecutor.submit = original  # type: ignore[method-assign]


@dataclass
class Meter:
    """Counts what the Lambda handlers ask of S3 and DynamoDB, and times each invocation.

    Requests made inside an invocation (or by the thread pools it uses, see `worker_threads`)
    are the function's; requests outside one are the client's (uploads, polling): of those,
    only the uploads (S3 PUTs) are counted, since polling is how this machine follows the run,
    not part of the run. The events are registered on the emulator's boto3 session before any
    client is made from it, so they reach every client of the run: the engine's, the handlers'
    and the interpreter's."""

    requests: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    # A function's MemorySize over the template's Globals MemorySize: Lambda bills memory x time.
    memory_scale: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] | None = None  # the last run record read (the final one, at the end)
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    HOOKS = (
        ("before-call.lambda.Invoke", "_invoke_starts"),
        ("after-call.lambda.Invoke", "_invoke_ends"),
        ("before-call.s3", "_request"),
        ("before-call.dynamodb", "_request"),
        ("after-call.dynamodb.GetItem", "_item"),
    )

    def install(self, session: Any) -> None:
        for event, method in self.HOOKS:
            session.events.register(event, getattr(self, method), unique_id=f"snn-bill-{event}")

    def worker_threads(self) -> AbstractContextManager[None]:
        return invocations_reach_thread_pools(self._local)

    def _invoke_starts(self, params: dict[str, Any], **_: Any) -> None:
        from snn.engines.local import invoked_function

        self._local.function = invoked_function(params)
        self._local.started = time.perf_counter()

    def _invoke_ends(self, **_: Any) -> None:
        function = getattr(self._local, "function", None)
        if function is not None:
            with self._lock:
                self.seconds[function] += time.perf_counter() - self._local.started
            self._local.function = None

    def _request(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        function = getattr(self._local, "function", None)
        if function is None and not (service == "s3" and model.name == "PutObject"):
            return
        # Neuron statistics are recorded at about 100 epochs of any run: counted apart.
        stats = "/neurons/epoch" in params.get("url_path", "")
        with self._lock:
            self.requests[(service, model.name, stats)] += 1

    def _item(self, parsed: dict[str, Any], **_: Any) -> None:
        if "Item" in parsed and getattr(self._local, "function", None) is None:
            self.record = parsed["Item"]

    def usage(self, transitions: int, invocations: int, stats: bool) -> Usage:
        """The run's usage (of the neuron statistics alone, or of the rest)."""
        from snn.billing import Usage

        def count(service: str, ops: set[str] | None, exclude: set[str] = frozenset()) -> float:
            return float(
                sum(
                    n
                    for (s, op, st), n in self.requests.items()
                    if s == service
                    and st == stats
                    and (ops is None or op in ops)
                    and op not in exclude
                )
            )

        requests = Usage(
            s3_put=count("s3", S3_PUT_CLASS),
            s3_get=count("s3", None, S3_PUT_CLASS | S3_FREE),
            dynamodb_writes=count("dynamodb", DYNAMODB_WRITES),
            dynamodb_reads=count("dynamodb", DYNAMODB_READS),
        )
        if stats:
            return requests
        return requests + Usage(
            state_transitions=float(transitions),
            lambda_invocations=float(invocations),
            lambda_seconds=float(
                sum(s * self.memory_scale.get(f, 1.0) for f, s in self.seconds.items())
            ),
        )


def meter_run(
    p: Parameters, data_dir: Path, run_id: str, template: str | Path
) -> tuple[Usage, Usage, Meter]:
    """Train on the local engine with a meter on its emulator's session: (usage, usage of the
    neuron statistics, the meter)."""
    from snn.engines import RunSpec, local

    meter = Meter(memory_scale=memory_scale(template))
    local.SESSION_HOOKS.append(meter.install)
    try:
        with meter.worker_threads():
            result = local.train(RunSpec(p, data_dir, run_id), template)
    finally:
        local.SESSION_HOOKS.remove(meter.install)
    transitions = int(result.extra["state_transitions"])
    invocations = int(result.extra["lambda_invocations"])
    return (
        meter.usage(transitions, invocations, stats=False),
        meter.usage(transitions, invocations, stats=True),
        meter,
    )


def base_memory_mb(template: str | Path) -> int:
    """The template's Globals MemorySize: the memory of a function that sets none."""
    from snn.template import LAMBDA_DEFAULT_MEMORY_MB, Template

    glob = Template.load(template).raw.get("Globals", {}).get("Function", {})
    return int(glob.get("MemorySize", LAMBDA_DEFAULT_MEMORY_MB))


def memory_scale(template: str | Path) -> dict[str, float]:
    """Each function's memory over the Globals memory (Evaluate, with more, counts more)."""
    from snn.template import Template

    base = base_memory_mb(template)
    return {fid: f.memory_mb / base for fid, f in Template.load(template).functions().items()}


def record_size(record: dict[str, Any] | None) -> float:
    """Bytes of the run record, from the record as DynamoDB returned it."""
    from snn.billing import item_bytes

    return float(item_bytes(record)) if record else 1024.0


def measure(p: Parameters, data_dir: Path, template: str | Path, sample_epochs: int) -> Measurement:
    from snn.billing import from_runs

    a, b = SHORT_RUN, sample_epochs
    usage_a, stats_a, _ = meter_run(p.with_epochs(a), data_dir, "cost-short", template)
    usage_b, stats_b, meter = meter_run(p.with_epochs(b), data_dir, "cost-long", template)
    return from_runs((a, usage_a, stats_a), (b, usage_b, stats_b), record_size(meter.record))


# --- the command ---------------------------------------------------------------------------------


def _overrides(
    args: argparse.Namespace, flags: dict[str, tuple[str, str]], prefix: str, unit: str = ""
) -> dict[str, float]:
    """The values given on the command line for `flags` (each a number >= 0)."""
    overrides = {}
    for name, (flag, _) in flags.items():
        raw = getattr(args, f"{prefix}{name}")
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise BillError(f"{flag} must be a number{unit} >= 0, got {raw!r}")
        overrides[name] = value
    return overrides


def _prices(args: argparse.Namespace, template: str | Path | None = None) -> Prices:
    """The prices: the flags given, over the defaults; the memory of a function is the
    template's, unless --lambda-memory-mb says otherwise."""
    from snn.billing import Prices

    given = _overrides(args, PRICE_FLAGS, "price_")
    defaults = {"lambda_memory_mb": float(base_memory_mb(template))} if template else {}
    return Prices().with_overrides(**{**defaults, **given})


def _latencies(args: argparse.Namespace) -> Latencies:
    from snn.billing import Latencies

    given = _overrides(args, LATENCY_FLAGS, "latency_", " of milliseconds")
    return Latencies().with_overrides(**{k: v / 1000 for k, v in given.items()})


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _money(x: float) -> str:
    return f"${x:,.6f}" if x < 0.01 else f"${x:,.4f}" if x < 100 else f"${x:,.2f}"


def _quantity(x: float) -> str:
    if x >= 100 or x == int(x):
        return f"{x:,.0f}"
    return f"{x:.3g}"


def run(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from snn.asl import INLINE_MAP_CONCURRENCY, step_path
    from snn.billing import LATENCY_SOURCES, estimate, project_wall_time
    from snn.cli import err, out
    from snn.epoch import batches_per_epoch, plan, training_examples
    from snn.parameters import Parameters
    from snn.stages import sampled_epochs
    from snn.template import Template

    prices = _prices(args)
    latencies = _latencies(args)
    p = Parameters.load(args.params)
    epochs = p.epochs if args.epochs is None else args.epochs
    if epochs < 1:
        raise BillError(f"--epochs must be at least 1, got {epochs}")
    if not SHORT_RUN < args.sample_epochs <= 100:
        raise BillError(
            f"--sample-epochs must be from {SHORT_RUN + 1} to 100, got {args.sample_epochs}"
        )
    if not Path(args.template).is_file():
        raise BillError(f"{args.template}: no such template (run from the project folder)")
    prices = _prices(args, args.template)
    with tempfile.TemporaryDirectory(prefix="snn-cost-") as tmp:
        data_dir, what, n_x, examples = _data(args.data, Path(tmp), p)
        batches = batches_per_epoch(p, training_examples(p, examples))
        path = step_path(
            Template.load(args.template).definition_document(),
            plan(p.with_epochs(epochs), "bill", 0, batches),
        )
        err.print(
            f"metering runs of {SHORT_RUN} and {args.sample_epochs} epochs on the local engine "
            f"({what})..."
        )
        m = measure(p, data_dir, args.template, args.sample_epochs)
    samples = len(sampled_epochs(p.with_epochs(epochs)))
    wall = project_wall_time(m, path, epochs, latencies, batches)
    e = estimate(m, epochs, samples, prices, epoch_wall_seconds=wall.epoch_seconds)

    dims = "-".join(str(n) for n in p.layer_dims(n_x))
    table = Table(
        title=f"AWS cost of a run: {dims} network ({p.layers} layers), {p.neurons_per_task} "
        f"neuron(s) per task, {epochs:,} epochs",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for name, justify in (
        ("", "left"),
        ("unit", "left"),
        ("per epoch", "right"),
        ("per run", "right"),
        ("$ per epoch", "right"),
        ("$ per run", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]

    def row(item: str, unit: str, quantity: float, dollars: float, style: str = "") -> None:
        table.add_row(
            item,
            unit,
            _quantity(quantity / epochs) if unit else "",
            _quantity(quantity) if unit else "",
            _money(dollars / epochs),
            _money(dollars),
            style=style,
        )

    for line in (e.standard, e.express, *e.shared):
        row(line.item, line.unit, line.quantity, line.dollars)
    table.add_section()
    row("total with Standard", "", 0, e.total_standard, "bold")
    row("total with Express", "", 0, e.total_express, "bold")
    out.print(table)

    if e.express_epochs_per_execution is None:
        split = "one epoch alone takes longer than 5 minutes: Express cannot run this network"
    else:
        split = (
            f"{e.express_executions:,} Express execution(s) of up to "
            f"{e.express_epochs_per_execution:,} epochs each"
        )
    notes = [
        f"Express executions last at most 5 minutes, so the run would be split: {split}. "
        "Express runs each state at least once, not exactly once; that is safe here because "
        "every stage is idempotent (it rewrites the same keys with the same bytes, and a "
        "commit is conditional).",
        "Lambda time is the handlers' time measured on this machine, against an in-memory S3 "
        "and DynamoDB; on AWS each request adds network latency, so Lambda compute may be "
        "several times higher. Each function is billed at its own memory (the template's "
        "MemorySize). An Express execution is billed for as long as it runs: the projected "
        "wall time (below).",
        "DynamoDB writes are billed by the size of the item written: the run record and each "
        "epoch's cost item are under 1 KB, one write unit each. "
        "Storage, data transfer, CloudWatch and free tiers are left out.",
    ]
    for note in notes:
        out.print(f"- {note}")
    out.print(
        _assumptions(
            "assumed prices: us-east-1 list prices, 2025 (override with flags)",
            ("value", "unit"),
            [(flag, f"{getattr(prices, n):g}", text) for n, (flag, text) in PRICE_FLAGS.items()],
        )
    )

    states, invocations = path.critical.states, path.critical.invocations
    out.print(
        f"\nprojected wall time on AWS (Standard): [bold]{_duration(wall.run_seconds)}[/bold] for "
        f"{epochs:,} epochs, {wall.epoch_seconds:.2f} s per epoch along its critical path of "
        f"{states} states and {invocations} invocations: transitions "
        f"{wall.transitions_seconds:.2f} s, invokes {wall.invokes_seconds:.2f} s, handlers "
        f"{wall.handler_seconds:.2f} s (as measured here), S3 {wall.s3_seconds:.2f} s, DynamoDB "
        f"{wall.dynamodb_seconds:.2f} s"
    )
    out.print(
        f"- The path is one epoch of the state machine's definition, walked with this network's "
        f"plan. Layers run one after the other; an inline Map runs at most "
        f"{INLINE_MAP_CONCURRENCY} iterations at once, so a Map over S shards takes "
        f"ceil(S / {INLINE_MAP_CONCURRENCY}) waves, one after the other (here at most "
        f"{path.waves}). Step Functions Standard bills every transition: {path.total.states:,} "
        "per epoch."
    )
    out.print(
        _assumptions(
            "assumed latencies (override with flags)",
            ("ms", "source"),
            [
                (flag, f"{1000 * getattr(latencies, n):g}", LATENCY_SOURCES[n])
                for n, (flag, _) in LATENCY_FLAGS.items()
            ],
        )
    )
    return 0


def _assumptions(title: str, columns: tuple[str, str], rows: list[tuple[str, str, str]]) -> Any:
    """A table of assumptions: flag, value, and what it is."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("flag")
    table.add_column(columns[0], justify="right")
    table.add_column(columns[1])
    for row in rows:
        table.add_row(*row)
    return table


def _data(data: str | None, tmp: Path, p: Parameters) -> tuple[Path, str, int, int]:
    """The data to meter on: --data, else $SNN_DATA_DIR, else synthetic pictures of the real
    size and count (the requests and transitions depend only on the shapes). Returns it, what
    it is, its input width and its training examples."""
    import os

    from snn.data import synthetic_images, write_h5_pair
    from snn.sources import open_source

    folder = data or os.environ.get("SNN_DATA_DIR")
    if folder:
        dataset = open_source(folder).dataset(p)  # checked before any run starts
        return Path(folder), f"data from {folder}", dataset.n_x, dataset.train_x.shape[1]
    images = synthetic_images(size=64, m_train=209, m_test=50)
    folder = write_h5_pair(tmp / "data", *images)
    return folder, "synthetic 64x64 pictures, 209 + 50", 12288, 209
