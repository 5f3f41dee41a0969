"""`snn inspect RUN_FOLDER [--layer L] [--neuron I]`: what each neuron of a trained network does.

For every neuron (or the chosen ones): its weights and bias, the distribution of its Z and A
over the training set (one forward pass of the model), and its gradient norm at the first,
middle and last epoch whose statistics the run recorded (neurons.npz). Figures go to
RUN_FOLDER/inspect/:

    layer1_weights.png       the first layer's weights as pictures, one per neuron
    layer1_neuron{i}.png     neuron i's 12288 weights as a 64 x 64 RGB picture
    layer{l}_activations.png histograms of Z and A of each neuron over the training set
    layer{l}_gradients.png   |dW| and |db| of each neuron over the sampled epochs
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from snn.commands.predict import DATA_HELP
from snn.inspection import (
    InspectError,
    Layer,
    choose,
    histograms,
    layers,
    neuron_rows,
    read_history,
    sampled,
    weight_pictures,
)

MAX_HISTOGRAM_ROWS = 32  # neurons per activations figure; more would not be readable


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="look inside a trained network, neuron by neuron (tables and figures)",
        description="Tables of each neuron's weights, bias, Z and A over the training set and "
        "gradient norms during training; figures in RUN_FOLDER/inspect/.",
    )
    parser.add_argument("run_folder", metavar="RUN_FOLDER", help="a run folder of `snn train`")
    parser.add_argument("--layer", type=int, metavar="L", help="only layer L (1 = first hidden)")
    parser.add_argument(
        "--neuron",
        type=int,
        action="append",
        metavar="I",
        help="only neuron I of --layer (0-based, the row of W[L]); repeat for several",
    )
    parser.add_argument(
        "--data",
        help=DATA_HELP,
    )
    parser.set_defaults(func=run)


# --- the figures ---------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_weight_pictures(folder: Path, W: np.ndarray, side: int, neurons: list[int]) -> list[Path]:
    from PIL import Image

    plt = _pyplot()
    pictures = weight_pictures(W[neurons], side)
    written = []
    for i, picture in zip(neurons, pictures, strict=True):
        path = folder / f"layer1_neuron{i}.png"
        Image.fromarray(np.rint(picture * 255).astype(np.uint8), "RGB").save(path)
        written.append(path)
    cols = min(len(neurons), 8)
    rows = -(-len(neurons) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, picture in zip(axes.flat, neurons, pictures, strict=False):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(f"neuron {i}", fontsize=9)
    fig.suptitle("layer 1 weights, one picture per neuron (each scaled min..max)", fontsize=10)
    fig.tight_layout()
    path = folder / "layer1_weights.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path, *written]


def write_activation_histograms(folder: Path, layer: Layer, neurons: list[int]) -> Path:
    plt = _pyplot()
    shown = neurons[:MAX_HISTOGRAM_ROWS]
    fig, axes = plt.subplots(
        len(shown), 2, figsize=(8, 1.7 * len(shown) + 0.6), squeeze=False, sharex="col"
    )
    counted = histograms(layer, shown)
    for k, (row, i) in enumerate(zip(axes, shown, strict=True)):
        for ax, name, title, color in (
            (row[0], "Z", "Z", "tab:blue"),
            (row[1], "A", f"A = {layer.activation}(Z)", "tab:orange"),
        ):
            edges, counts = counted[name]
            ax.stairs(counts[k], edges, fill=True, color=color)
            ax.set_ylabel(f"neuron {i}", fontsize=8)
            ax.tick_params(labelsize=7)
            if k == 0:
                ax.set_title(title, fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("value over the training set", fontsize=8)
    more = f" (first {len(shown)} of {len(neurons)})" if len(shown) < len(neurons) else ""
    fig.suptitle(f"layer {layer.number}: Z and A per neuron{more}", fontsize=10)
    fig.tight_layout()
    path = folder / f"layer{layer.number}_activations.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_gradient_curves(
    folder: Path, layer: Layer, neurons: list[int], epochs: np.ndarray
) -> Path | None:
    if layer.history is None or not len(epochs):
        return None
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for i in neurons:
        top.plot(epochs, layer.history["dW_norm"][:, i], linewidth=1, label=f"neuron {i}")
        bottom.plot(epochs, layer.history["db_abs"][:, i], linewidth=1)
    for ax, name in ((top, "|dW| of the neuron's row"), (bottom, "|db|")):
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if all(np.all(layer.history[k][:, neurons] > 0) for k in ("dW_norm", "db_abs")):
            ax.set_yscale("log")
    bottom.set_xlabel("epoch")
    if len(neurons) <= 12:
        top.legend(fontsize=7, ncol=2)
    top.set_title(f"layer {layer.number}: gradient of each neuron during training")
    fig.tight_layout()
    path = folder / f"layer{layer.number}_gradients.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the command ---------------------------------------------------------------------------------


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}"


def _print_tables(layer: Layer, rows: list[dict[str, Any]], epochs: np.ndarray, m: int) -> None:
    from rich import box
    from rich.table import Table

    from snn.cli import out

    picks = sampled(epochs)
    weights = Table(
        title=f"layer {layer.number} ({layer.activation}, {layer.neurons} neuron(s)): weights, "
        "bias, gradient norm at epochs",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for name in ("neuron", "|w|", "w mean", "w std", "b"):
        weights.add_column(name, justify="right")
    for k in picks:
        weights.add_column(f"|dW| @{int(epochs[k])}", justify="right")
    for r in rows:
        grads = [_num(g) for g in r["dW_norm"]] if r["dW_norm"] else ["-"] * len(picks)
        weights.add_row(
            str(r["neuron"]), *(_num(r[k]) for k in ("w_norm", "w_mean", "w_std", "b")), *grads
        )
    out.print(weights)

    values = Table(
        title=f"layer {layer.number}: Z and A over the training set ({m} pictures)",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    for name in ("neuron", "Z mean", "Z std", "Z min", "Z max"):
        values.add_column(name, justify="right")
    for name in ("A mean", "A std", "A min", "A max", "active"):
        values.add_column(name, justify="right")
    for r in rows:
        values.add_row(str(r["neuron"]), *map(_num, r["Z"]), *map(_num, r["A"]), _num(r["active"]))
    out.print(values)


def _replace_folder(new: Path, target: Path) -> None:
    """Put the folder `new` in the place of `target` (which may exist): an older target is moved
    aside first and put back if the move fails, so target is always whole, old or new."""
    if not target.exists():
        os.rename(new, target)
        return
    old = target.with_name(f".{target.name}.old.{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_figures(
    folder: Path, shown: list[tuple[Layer, list[int]]], side: int | None, epochs: np.ndarray
) -> list[str]:
    """Every figure into folder/inspect, whole or not at all: drawn in a temporary folder beside
    it, which then replaces it (and an older inspect/). Returns the names written. The first
    layer's weights are drawn as pictures of `side` x `side` (none for a model of values)."""
    target = folder / "inspect"
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".inspect.", dir=folder))
    except OSError as exc:
        raise InspectError(f"cannot write the figures in {folder}: {exc.strerror}") from None
    try:
        written: list[Path] = []
        for layer, neurons in shown:
            if layer.number == 1 and side is not None:
                written += write_weight_pictures(tmp, layer.W, side, neurons)
            written.append(write_activation_histograms(tmp, layer, neurons))
            curve = write_gradient_curves(tmp, layer, neurons, epochs)
            if curve:
                written.append(curve)
        _replace_folder(tmp, target)
    except OSError as exc:
        raise InspectError(f"cannot write the figures in {target}: {exc.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [p.name for p in written]


def run(args: argparse.Namespace) -> int:
    from snn.cli import err, out
    from snn.predict import ModelError, load_model
    from snn.sources import model_dataset

    folder = Path(args.run_folder)
    if not folder.is_dir():
        raise InspectError(f"{folder}: not a run folder (a folder with model.npz)")
    model = load_model(folder)  # refuses a model with NaN or infinite weights
    if model.run_folder is None:
        raise ModelError(f"{folder}: no metrics.json, so not a run folder of `snn train`")
    widths = [W.shape[0] for W, _ in model.weights]
    chosen = choose(args.layer, args.neuron, widths)
    dataset = model_dataset(args.data, model)
    epochs, history, why = read_history(folder / "neurons.npz", widths)
    every = layers(model.weights, model.activations, dataset.train_x, history)
    if history is None:
        err.print(f"snn: note: no gradient history ({why})", markup=False)

    shown = [(every[number - 1], neurons) for number, neurons in chosen.items()]
    for layer, neurons in shown:
        _print_tables(layer, neuron_rows(layer, neurons, epochs), epochs, dataset.train_x.shape[1])
    side = model.image_size if model.takes_pictures else None
    names = write_figures(folder, shown, side, epochs)
    out.print(
        f"figures in {folder / 'inspect'}: "
        + ", ".join(n for n in names if "_neuron" not in n)
        + (" and one layer1_neuron<i>.png per neuron" if any("_neuron" in n for n in names) else "")
    )
    return 0
