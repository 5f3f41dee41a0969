"""Subcommands of `snn` beyond `train`, one module each. Every module has
`register(subparsers)`, which adds its parser and sets `func` to a function of the parsed
arguments that returns the exit code. Heavy imports happen inside those functions, so `snn
--help` stays fast."""

from __future__ import annotations

import argparse
import importlib

COMMANDS = ("train", "predict", "evaluate", "inspect", "bill", "serve", "emulator")


def register_all(subparsers: argparse._SubParsersAction) -> None:
    for name in COMMANDS:
        importlib.import_module(f"snn.commands.{name}").register(subparsers)
