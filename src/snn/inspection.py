"""What each neuron of a trained network does: the numbers behind `snn inspect` and `snn serve`.

Pure functions over a model, a data set and a run's neurons.npz: no printing, no files written.
Per layer and per neuron: its weights (layer 1's as pictures in the layout of the inputs), the
distribution of its Z and A over the training set (one forward pass of the model), and its
gradient norms at the epochs the run recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snn import network as nn
from snn.errors import SnnError
from snn.npz import NpzError, read_npz

Weights = list[tuple[np.ndarray, np.ndarray]]
HISTOGRAM_BINS = 50
# neurons.npz: "epochs" and one (sampled epochs, neurons) array per statistic and layer.
_HISTORY_MEMBER = re.compile(r"epochs|[A-Za-z][A-Za-z_]*_layer([1-9][0-9]{0,2})")


class InspectError(SnnError):
    """The run cannot be inspected as asked (a layer or neuron it does not have, a model whose
    values are not finite over the data set)."""


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

    @property
    def neurons(self) -> int:
        return int(self.W.shape[0])


def forward_layers(
    weights: Weights, activations: tuple[str, ...], X: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(Z, A) of every layer for the inputs X, as `network.forward` computes them."""
    out = []
    A = X
    for (W, b), g in zip(weights, activations, strict=True):
        Z = nn.linear_forward(W, b, A)
        A = nn.activate(Z, g)
        out.append((Z, A))
    return out


def layers(
    weights: Weights,
    activations: tuple[str, ...],
    X: np.ndarray,
    history: list[dict[str, np.ndarray]] | None,
) -> list[Layer]:
    """Every layer over the inputs X, with its history (from `read_history`) if any. Finite
    weights can still overflow (a Z of 1e308 and more): that is refused here, in one line."""
    with np.errstate(over="ignore", invalid="ignore"):  # refused below, in one line
        passes = forward_layers(weights, activations, X)
    found = []
    for number, ((W, b), (Z, A), g) in enumerate(zip(weights, passes, activations, strict=True), 1):
        for name, M in (("Z", Z), ("A", A)):
            if not np.isfinite(M).all():
                raise InspectError(
                    f"layer {number}: {name} is not finite over the data set (the weights are "
                    "too large): nothing to draw"
                )
        found.append(Layer(number, g, W, b, Z, A, history[number - 1] if history else None))
    return found


def read_history(
    path: Path, neurons: list[int], data: bytes | None = None
) -> tuple[np.ndarray, list[dict] | None, str]:
    """The sampled epochs and, per layer, {"dW_norm", "db_abs"} from neurons.npz (or from data,
    its bytes read already); None (with the reason) when the file is missing or does not match
    the model (neurons: per layer)."""
    none = np.array([], dtype=np.int64)
    if data is None and not path.is_file():
        return none, None, f"{path.name} not found"

    def valid(key: str) -> bool:
        match = _HISTORY_MEMBER.fullmatch(key)
        return match is not None and (match[1] is None or int(match[1]) <= len(neurons))

    try:
        arrays = read_npz(path if data is None else data, path.name, valid)
    except NpzError as exc:
        return none, None, f"{path.name} cannot be read ({exc})"
    epochs = arrays.get("epochs")
    if epochs is None or epochs.ndim != 1 or epochs.dtype.kind not in "iu":
        return none, None, f"{path.name} has no 1-d integer 'epochs'"
    found = []
    for layer, n in enumerate(neurons, 1):
        entry = {s: arrays.get(f"{s}_layer{layer}") for s in ("dW_norm", "db_abs")}
        if any(a is None or a.shape != (len(epochs), n) for a in entry.values()):
            return epochs, None, f"{path.name} does not match the model's layer {layer}"
        found.append(entry)
    return epochs, found, ""


def sampled(epochs: np.ndarray) -> list[int]:
    """Indices of the first, middle and last recorded epochs (the tables' gradient columns)."""
    return [0, (len(epochs) - 1) // 2, len(epochs) - 1] if len(epochs) else []


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
    picks = sampled(epochs)
    rows = []
    for i in neurons:
        w = layer.W[i]
        rows.append(
            {
                "neuron": i,
                "w_norm": float(np.linalg.norm(w)),
                "w_mean": float(w.mean()),
                "w_std": float(w.std()),
                "b": float(layer.b[i, 0]),
                "Z": _stats(layer.Z[i]),
                "A": _stats(layer.A[i]),
                "active": float(np.mean(layer.Z[i] > 0)) if layer.activation == "relu" else None,
                "dW_norm": [float(layer.history["dW_norm"][k, i]) for k in picks]
                if layer.history
                else None,
            }
        )
    return rows


def histograms(
    layer: Layer, neurons: list[int], bins: int = HISTOGRAM_BINS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"Z": (edges, counts), "A": (edges, counts)}: counts (len(neurons), bins) over the
    training set. The same bins for every neuron of a layer, so that a narrow distribution (a
    relu that is almost never active) still shows as a bar, not as a sliver."""
    out = {}
    for name, M in (("Z", layer.Z), ("A", layer.A)):
        edges = np.histogram_bin_edges(M[neurons], bins=bins)
        counts = np.array([np.histogram(M[i], bins=edges)[0] for i in neurons], dtype=np.int64)
        out[name] = (edges, counts.reshape(len(neurons), bins))
    return out


def choose(layer: int | None, neuron: list[int] | None, widths: list[int]) -> dict[int, list[int]]:
    """{layer: [neuron, ...]} to inspect: every neuron of every layer, or of one layer, or the
    given neurons of one layer (widths: the neurons of each layer)."""
    count = len(widths)
    if layer is not None and not 1 <= layer <= count:
        raise InspectError(f"--layer {layer} is not a layer of this network: 1..{count}")
    if neuron and layer is None:
        raise InspectError("--neuron needs --layer, to say which layer's neuron")
    chosen = {}
    for number in [layer] if layer is not None else range(1, count + 1):
        n = widths[number - 1]
        picks = list(dict.fromkeys(neuron)) if neuron else list(range(n))
        for i in picks:
            if not 0 <= i < n:
                raise InspectError(f"--neuron {i}: layer {number} has neurons 0..{n - 1}")
        chosen[number] = picks
    return chosen
