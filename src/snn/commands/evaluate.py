"""`snn evaluate [--model ...] [--data PATH]`: how well a trained model classifies the data set.

Accuracy, the confusion matrix and the rates derived from it, on the training and the test set.
For a run folder, the numbers are also written into its metrics.json under "evaluation".
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snn.commands.predict import DATA_HELP, MODEL_HELP

if TYPE_CHECKING:
    from snn.data import Dataset
    from snn.predict import Model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy, confusion matrix, sensitivity, specificity, precision and F1",
        description="Evaluate a trained model on the training and test sets. With a run folder "
        "(or a model.npz that has a metrics.json beside it), the results are also stored in "
        'its metrics.json under "evaluation".',
    )
    parser.add_argument("--model", metavar="RUN_FOLDER_OR_model.npz", help=MODEL_HELP)
    parser.add_argument(
        "--data",
        help=DATA_HELP,
    )
    parser.set_defaults(func=run)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def scores(AL: np.ndarray, Y: np.ndarray) -> dict[str, Any]:
    """The numbers of one split, from the network's output A[L] (1, m) and the labels Y (1, m).
    A rate whose denominator is zero (no cat in the split, say) is None."""
    from snn import network as nn
    from snn.stages import confusion_matrix

    cm = confusion_matrix(nn.predict(AL), Y)
    tp, fp = cm["true_positive"], cm["false_positive"]
    tn, fn = cm["true_negative"], cm["false_negative"]
    return {
        "examples": int(Y.shape[1]),
        "correct": tp + tn,
        "accuracy": nn.accuracy(AL, Y),
        "confusion_matrix": cm,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),  # the harmonic mean of precision and recall
    }


def evaluate(model: Model, dataset: Dataset) -> dict[str, Any]:
    """{"train": scores, "test": scores} of a model on a data set."""
    from snn import network as nn
    from snn.errors import DataError

    if dataset.n_x != model.n_x:
        raise DataError(
            f"the data set's pictures have {dataset.n_x} values but the model takes {model.n_x}"
        )
    return {
        split: scores(nn.forward(model.weights, model.activations, X), Y)
        for split, X, Y in (
            ("train", dataset.train_x, dataset.train_y),
            ("test", dataset.test_x, dataset.test_y),
        )
    }


def write_evaluation(folder: Path, evaluation: dict[str, Any]) -> None:
    """Add "evaluation" to the folder's metrics.json: a new file that replaces the old one, so
    an interruption leaves either."""
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics["evaluation"] = evaluation
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".metrics.", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(metrics, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def trained_on(model: Model) -> str | None:
    """The data its run was given with --data (metrics.json's "data"), if any: evaluated on it
    rather than on the default data set."""
    from snn.errors import DataError

    if model.run_folder is None:
        return None
    try:
        data = json.loads((model.run_folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    given = data.get("data") if isinstance(data, dict) else None
    if not isinstance(given, str):
        return None
    if not Path(given).exists():
        raise DataError(
            f"{model.run_folder}: its run was trained on {given}, which is no longer there; "
            "give the data with --data"
        )
    return given


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from snn.cli import out
    from snn.data import resolve_data_dir
    from snn.predict import load_model
    from snn.sources import model_dataset

    model = load_model(args.model)
    data_dir = resolve_data_dir(args.data if args.data else trained_on(model))
    results = evaluate(model, model_dataset(data_dir, model))

    table = Table(
        title=f"evaluation of {model.path}",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    negative, positive = model.classes
    rows = [
        ("examples", "examples"),
        ("correct", "correct"),
        ("accuracy", "accuracy"),
        (f"true positives ({positive} as {positive})", "true_positive"),
        (f"false positives ({negative} as {positive})", "false_positive"),
        (f"true negatives ({negative} as {negative})", "true_negative"),
        (f"false negatives ({positive} missed)", "false_negative"),
        ("sensitivity (recall)", "sensitivity"),
        ("specificity", "specificity"),
        ("precision", "precision"),
        ("F1", "f1"),
    ]
    for title, key in rows:
        values = [
            r["confusion_matrix"][key] if key in r["confusion_matrix"] else r[key]
            for r in (results["train"], results["test"])
        ]
        table.add_row(title, *map(_cell, values))
    out.print(table)
    if model.run_folder is not None:
        write_evaluation(model.run_folder, {"data": str(data_dir), **results})
        out.print(f'written to {model.run_folder / "metrics.json"} under "evaluation"')
    return 0
