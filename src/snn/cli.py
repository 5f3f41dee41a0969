"""The `snn` command.

    snn train [--engine local|direct|aws] [--params FILE] [--data DIR] [--epochs N] [--out DIR]
    snn predict IMAGE... | evaluate | inspect RUN_FOLDER | cost     (see snn.commands)

Expected failures (bad input, missing data, a failed run) print one line (or a few, for a failed
run) and exit non-zero: 2 for bad input, 1 for a run that failed (or a picture that `snn
predict` could not classify). Never a traceback.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from snn import __version__
from snn.errors import SnnError
from snn.parameters import Parameters
from snn.report import RunResult
from snn.store import check_run_id

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


class UsageError(SnnError):
    pass


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def _run_folder(path: str | None, run_id: str) -> Path:
    folder = Path(path) if path else Path("runs") / run_id
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder}: the run folder exists and is not empty; choose another --out")
    return folder


@contextmanager
def progress(total: int, first: int, quiet: bool) -> Iterator[Callable[[int, float], None]]:
    """Epoch and cost as the run goes: a live bar on a terminal, a line per tenth elsewhere."""
    if quiet:
        yield lambda epoch, cost: None
        return
    if not err.is_terminal:
        step = max(1, total // 10)

        def line(epoch: int, cost: float) -> None:
            if (epoch + 1) % step == 0 or epoch + 1 == total or epoch == first:
                err.print(f"epoch {epoch + 1}/{total}  cost {cost:.6f}")

        yield line
        return

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs  cost {task.fields[cost]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=err,
    )
    with bar:
        task = bar.add_task("train", total=total, completed=first, cost="-")

        def update(epoch: int, cost: float) -> None:
            bar.update(task, completed=epoch + 1, cost=f"{cost:.6f}")

        yield update


def cmd_train(args: argparse.Namespace) -> int:
    from snn.data import load_dataset, resolve_data_dir

    if not 0 <= args.inject_faults <= 0.5:
        raise UsageError(
            f"--inject-faults must be a fraction from 0 to 0.5, got {args.inject_faults}"
        )
    if args.inject_faults and args.engine != "local":
        raise UsageError("--inject-faults works with the local engine only")
    if args.engine == "aws" and not args.stack:
        raise UsageError("--engine aws needs the deployed stack's name: --stack NAME")
    if args.resume:
        return _resume(args)

    p = Parameters.load(args.params)
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
        p = p.with_epochs(args.epochs)
    run_id = check_run_id(args.run_id) if args.run_id else new_run_id()
    folder = _run_folder(args.out, run_id)
    data_dir = resolve_data_dir(args.data)
    dataset = load_dataset(data_dir)  # validates the data before any run starts

    if not args.quiet:
        dims = "-".join(str(n) for n in p.layer_dims(dataset.n_x))
        err.print(
            f"run {run_id}: {dims} network, {p.epochs} epochs, {args.engine} engine, "
            f"{p.neurons_per_task} neuron(s) per task"
        )
    with progress(p.epochs, 0, args.quiet) as on_epoch:
        if args.engine == "direct":
            from snn.engines import direct

            result = direct.train(p, dataset, run_id, on_epoch)
        elif args.engine == "local":
            from snn.engines import local

            result = local.train(
                p,
                data_dir,
                run_id,
                on_epoch,
                template_path=args.template,
                fault_rate=args.inject_faults,
                resume_dir=folder / "resume",
            )
        else:
            from snn.engines import aws

            result = aws.train(p, data_dir, run_id, args.stack, on_epoch)
    return _finish(folder, result, args.quiet)


def _resume(args: argparse.Namespace) -> int:
    """--resume: a local run folder (saved when the run failed or was interrupted), or, with
    --engine aws, the id of a run on the deployed stack."""
    target = Path(args.resume)
    if args.engine == "aws":
        from snn.engines import aws

        run_id = check_run_id(args.resume)
        folder = _run_folder(args.out, run_id)
        with progress(1, 0, True) as on_epoch:  # the total is known once the record is read
            result = aws.resume(run_id, args.stack, on_epoch)
        return _finish(folder, result, args.quiet)
    if args.engine != "local":
        raise UsageError("--resume works with the local engine (a run folder) or --engine aws")
    from snn.engines import local

    resume_dir = target / "resume"
    run_id, committed, epochs = local.saved_run(resume_dir)
    if not args.quiet:
        err.print(f"run {run_id}: resuming at epoch {committed} of {epochs}, local engine")
    with progress(epochs, committed, args.quiet) as on_epoch:
        result = local.resume(
            resume_dir, on_epoch, template_path=args.template, fault_rate=args.inject_faults
        )
    _finish(target, result, args.quiet)
    shutil.rmtree(resume_dir, ignore_errors=True)
    return 0


def _finish(folder: Path, result: RunResult, quiet: bool) -> int:
    from snn.report import write_run_folder

    write_run_folder(folder, result)
    if not quiet:
        out.print(
            f"final cost {result.costs[-1]:.6f}  train accuracy {result.train_accuracy:.2f}  "
            f"test accuracy {result.test_accuracy:.2f}  ({result.wall_seconds:.1f} s)"
        )
        out.print(f"run folder: {folder}  (metrics.json, model.npz, neurons.npz, cost.png)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snn",
        description="SNN, the Serverless Neural Network: train and use a cat/non-cat "
        "classifier whose every step of maths is a Lambda function.",
    )
    parser.add_argument("--version", action="version", version=f"snn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train the network of parameters.json")
    train.add_argument(
        "--engine",
        choices=("local", "direct", "aws"),
        default="local",
        help="local: the state machine on an embedded emulator (default); "
        "direct: the stages in a plain loop; aws: a deployed stack",
    )
    train.add_argument("--params", default="parameters.json", help="default: ./parameters.json")
    train.add_argument(
        "--data",
        help="folder with the two h5 files (default: $SNN_DATA_DIR, "
        "else a downloaded, checksummed copy in the user cache)",
    )
    train.add_argument("--epochs", type=int, help="override the file's epochs")
    train.add_argument("--out", help="the run folder (default: runs/<run_id>)")
    train.add_argument("--run-id", help="name the run (letters, digits, '-', '_')")
    train.add_argument("--stack", help="with --engine aws: the stack name given to sam deploy")
    train.add_argument(
        "--template",
        default="template.yaml",
        help="the SAM template the local engine stands up (default: ./template.yaml)",
    )
    train.add_argument(
        "--resume",
        metavar="RUN",
        help="carry on a failed or interrupted run from its last committed epoch: "
        "its run folder (local engine), or its run id with --engine aws",
    )
    train.add_argument(
        "--inject-faults",
        type=float,
        default=0.0,
        metavar="RATE",
        help="local engine: make this fraction of Lambda invocations fail, half "
        "before the handler runs and half after (the response is lost)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.set_defaults(func=cmd_train)

    from snn.commands import register_all

    register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SnnError as exc:
        err.print(f"snn: error: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("snn: interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
