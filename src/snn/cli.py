"""The `snn` command.

    snn train [--engine local|direct|aws] [--params FILE] [--data PATH] [--epochs N] [--out DIR]
    snn predict | evaluate | inspect | bill | serve | emulator ...   (see snn.commands)

Expected failures (bad input, missing data, a failed run) print one line and exit non-zero: 2 for
bad input, 1 for a run that failed (or a picture that `snn predict` could not classify), 128 +
the signal for a run stopped by a signal. Never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from rich.console import Console

from snn import __version__
from snn.errors import Interrupted, SnnError

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

# Signals that stop a run the way Ctrl-C (SIGINT) does: saved, and resumable.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class UsageError(SnnError):
    pass


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise `Interrupted` in the main thread, as
    SIGINT raises KeyboardInterrupt, so a run stopped by any of them ends the same way."""

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, raise_interrupted) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def defer_signals() -> Iterator[list[str]]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP are noted, not acted on: what it does
    (putting a run's results in place) ends whole. The list names the signals that came."""
    came: list[str] = []

    def note(signum: int, frame: FrameType | None) -> None:
        came.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield came
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snn",
        description="SNN, the Serverless Neural Network: train and use a cat/non-cat "
        "classifier whose every step of maths is a Lambda function.",
    )
    parser.add_argument("--version", action="version", version=f"snn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
        return 128 + signal.SIGINT
    except Interrupted as exc:
        err.print(f"snn: stopped by signal {signal.Signals(exc.signum).name}", markup=False)
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
