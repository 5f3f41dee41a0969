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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snn.errors import SnnError

MAX_HISTOGRAM_ROWS = 32  # neurons per activations figure; more would not be readable


class InspectError(SnnError):
    pass


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
        help="folder with the two h5 files (default: $SNN_DATA_DIR, else the downloaded cache)",
    )
    parser.set_defaults(func=run)


# --- the numbers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer seen over the training set: its weights, Z and A, and the recorded history."""

    number: int  # 1-based
    activation: str
    W: np.ndarray  # (n, n_prev)
    b: np.ndarray  # (n, 1)
    Z: np.ndarray  # (n, m)
    A: np.ndarray  # (n, m)
    history: dict[str, np.ndarray] | None  # {"dW_norm": (k, n), "db_abs": (k, n)}


def forward_layers(
    weights: list[tuple[np.ndarray, np.ndarray]], activations: tuple[str, ...], X: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(Z, A) of every layer for the inputs X, as `network.forward` computes them."""
    from snn import network as nn

    out = []
    A = X
    for (W, b), g in zip(weights, activations, strict=True):
        Z = nn.linear_forward(W, b, A)
        A = nn.activate(Z, g)
        out.append((Z, A))
    return out


def read_history(path: Path, neurons: list[int]) -> tuple[np.ndarray, list[dict] | None, str]:
    """The sampled epochs and, per layer, {"dW_norm", "db_abs"} from neurons.npz; None (with
    the reason) when the file is missing or does not match the model."""
    if not path.is_file():
        return np.array([], dtype=int), None, f"{path.name} not found"
    try:
        with np.load(path, allow_pickle=False) as z:
            epochs = z["epochs"]
            layers = []
            for layer, n in enumerate(neurons, 1):
                entry = {s: z[f"{s}_layer{layer}"] for s in ("dW_norm", "db_abs")}
                if any(a.shape != (len(epochs), n) for a in entry.values()):
                    return epochs, None, f"{path.name} does not match the model's layer {layer}"
                layers.append(entry)
    except Exception as exc:  # a corrupt file: say so, and inspect the rest
        return np.array([], dtype=int), None, f"{path.name} cannot be read ({exc})"
    return epochs, layers, ""


def weight_pictures(W: np.ndarray, side: int) -> np.ndarray:
    """Each neuron's weights as an RGB picture (n, side, side, 3) in [0, 1], normalised per
    neuron (its smallest weight black, its largest white), in the layout of the inputs."""
    pictures = W.reshape(W.shape[0], side, side, 3)
    low = pictures.min(axis=(1, 2, 3), keepdims=True)
    span = pictures.max(axis=(1, 2, 3), keepdims=True) - low
    return np.where(span > 0, (pictures - low) / np.where(span > 0, span, 1), 0.5)


def _stats(row: np.ndarray) -> tuple[float, float, float, float]:
    return float(row.mean()), float(row.std()), float(row.min()), float(row.max())


def neuron_rows(layer: Layer, neurons: list[int], epochs: np.ndarray) -> list[dict[str, Any]]:
    """The tables' numbers for the chosen neurons of a layer."""
    picks = [0, (len(epochs) - 1) // 2, len(epochs) - 1] if len(epochs) else []
    rows = []
    for i in neurons:
        w = layer.W[i]
        z_mean, z_std, z_min, z_max = _stats(layer.Z[i])
        a_mean, a_std, a_min, a_max = _stats(layer.A[i])
        rows.append(
            {
                "neuron": i,
                "w_norm": float(np.linalg.norm(w)),
                "w_mean": float(w.mean()),
                "w_std": float(w.std()),
                "b": float(layer.b[i, 0]),
                "Z": (z_mean, z_std, z_min, z_max),
                "A": (a_mean, a_std, a_min, a_max),
                "active": float(np.mean(layer.Z[i] > 0)) if layer.activation == "relu" else None,
                "dW_norm": [float(layer.history["dW_norm"][k, i]) for k in picks]
                if layer.history
                else None,
            }
        )
    return rows


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
    # The same bins for every neuron of a column, so that a narrow distribution (a relu that
    # is almost never active) still shows as a bar, not as a sliver.
    bins = [np.histogram_bin_edges(M[shown], bins=50) for M in (layer.Z, layer.A)]
    for row, i in zip(axes, shown, strict=True):
        for ax, values, edges, name, color in (
            (row[0], layer.Z[i], bins[0], "Z", "tab:blue"),
            (row[1], layer.A[i], bins[1], f"A = {layer.activation}(Z)", "tab:orange"),
        ):
            ax.hist(values, bins=edges, color=color)
            ax.set_ylabel(f"neuron {i}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == shown[0]:
                ax.set_title(name, fontsize=9)
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


def _choose(args: argparse.Namespace, neurons: list[int]) -> dict[int, list[int]]:
    """{layer: [neuron, ...]} to inspect, from --layer and --neuron."""
    layers = len(neurons)
    if args.layer is not None and not 1 <= args.layer <= layers:
        raise InspectError(f"--layer {args.layer} is not a layer of this network: 1..{layers}")
    if args.neuron and args.layer is None:
        raise InspectError("--neuron needs --layer, to say which layer's neuron")
    chosen = {}
    for layer in [args.layer] if args.layer is not None else range(1, layers + 1):
        n = neurons[layer - 1]
        picks = list(dict.fromkeys(args.neuron)) if args.neuron else list(range(n))
        for i in picks:
            if not 0 <= i < n:
                raise InspectError(f"--neuron {i}: layer {layer} has neurons 0..{n - 1}")
        chosen[layer] = picks
    return chosen


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}"


def run(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from snn.cli import err, out
    from snn.data import load_dataset
    from snn.errors import DataError
    from snn.predict import ModelError, load_model

    folder = Path(args.run_folder)
    if not folder.is_dir():
        raise InspectError(f"{folder}: not a run folder (a folder with model.npz)")
    model = load_model(folder)
    if model.run_folder is None:
        raise ModelError(f"{folder}: no metrics.json, so not a run folder of `snn train`")
    widths = [W.shape[0] for W, _ in model.weights]
    chosen = _choose(args, widths)
    dataset = load_dataset(args.data)
    if dataset.n_x != model.n_x:
        raise DataError(
            f"the data set's pictures have {dataset.n_x} values but the model takes {model.n_x}"
        )
    epochs, history, why = read_history(folder / "neurons.npz", widths)
    if history is None:
        err.print(f"snn: note: no gradient history ({why})", markup=False)
    passes = forward_layers(model.weights, model.activations, dataset.train_x)

    target = folder / "inspect"
    target.mkdir(exist_ok=True)
    written: list[Path] = []
    picks = [0, (len(epochs) - 1) // 2, len(epochs) - 1] if len(epochs) else []
    m = dataset.train_x.shape[1]
    for number, neurons in chosen.items():
        W, b = model.weights[number - 1]
        Z, A = passes[number - 1]
        layer = Layer(
            number, model.activations[number - 1], W, b, Z, A, history and history[number - 1]
        )
        rows = neuron_rows(layer, neurons, epochs)

        weights = Table(
            title=f"layer {number} ({layer.activation}, {W.shape[0]} neuron(s)): weights, bias, "
            "gradient norm at epochs",
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
            title=f"layer {number}: Z and A over the training set ({m} pictures)",
            box=box.SIMPLE_HEAD,
            collapse_padding=True,
            pad_edge=False,
        )
        for name in ("neuron", "Z mean", "Z std", "Z min", "Z max"):
            values.add_column(name, justify="right")
        for name in ("A mean", "A std", "A min", "A max", "active"):
            values.add_column(name, justify="right")
        for r in rows:
            values.add_row(
                str(r["neuron"]), *map(_num, r["Z"]), *map(_num, r["A"]), _num(r["active"])
            )
        out.print(values)

        if number == 1:
            written += write_weight_pictures(target, W, model.image_size, neurons)
        written.append(write_activation_histograms(target, layer, neurons))
        curve = write_gradient_curves(target, layer, neurons, epochs)
        if curve:
            written.append(curve)
    out.print(
        f"figures in {target}: "
        + ", ".join(p.name for p in written if "_neuron" not in p.name)
        + (
            " and one layer1_neuron<i>.png per neuron"
            if any("_neuron" in p.name for p in written)
            else ""
        )
    )
    return 0
