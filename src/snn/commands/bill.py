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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snn.errors import SnnError
from snn.metering import SHORT_RUN, base_memory_mb, measure

if TYPE_CHECKING:
    from snn.billing import Latencies, Prices
    from snn.parameters import Parameters

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
        dataset = open_source(folder).dataset(p.training)  # checked before any run starts
        return Path(folder), f"data from {folder}", dataset.n_x, dataset.train_x.shape[1]
    images = synthetic_images(size=64, m_train=209, m_test=50)
    folder = write_h5_pair(tmp / "data", *images)
    return folder, "synthetic 64x64 pictures, 209 + 50", 12288, 209
