"""The networks the benches train, and the textbook numpy loop that trains them as a floor."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_X = 12288  # 64 x 64 x 3 pixels of a cat/non-cat picture
REFERENCE = "12288-7-1"
DEEP = "12288-20-7-5-1"
LEARNING_RATE = 0.0075

Weights = list[tuple[np.ndarray, np.ndarray]]


def dims_of(name: str) -> list[int]:
    """[12288, 7, 1] from "12288-7-1": the input, each layer's width, one output neuron."""
    try:
        dims = [int(part) for part in name.split("-")]
    except ValueError:
        raise ValueError(f"a network is widths joined by '-', like {REFERENCE}: {name!r}") from None
    if len(dims) < 2 or dims[0] != N_X or dims[-1] != 1 or min(dims) < 1:
        raise ValueError(f"a network takes {N_X} inputs and ends in one neuron: {name!r}")
    return dims


def network(name: str, epochs: int) -> dict[str, Any]:
    """parameters.json of a network named by its widths: relu layers, a sigmoid output, the
    learning rate of the reference; scaled initialisation for two layers, xavier for deeper
    ones (as the reference notebooks do)."""
    widths = dims_of(name)[1:]
    layers = len(widths)
    return {
        "epochs": epochs,
        "layers": layers,
        "activations": {f"layer{i}": "relu" for i in range(1, layers)}
        | {f"layer{layers}": "sigmoid"},
        "neurons": {f"layer{i}": n for i, n in enumerate(widths, 1)},
        "learning_rate": LEARNING_RATE,
        "initialization": "scaled" if layers == 2 else "xavier",
    }


def reference(epochs: int, hidden: int = 7, layers: int = 2) -> dict[str, Any]:
    """The reference network (12288-7-1), or one with `layers - 1` hidden layers of `hidden`."""
    return network("-".join([str(N_X)] + [str(hidden)] * (layers - 1) + ["1"]), epochs)


def name_of(params: dict[str, Any]) -> str:
    widths = [params["neurons"][f"layer{i}"] for i in range(1, params["layers"] + 1)]
    return "-".join(str(n) for n in [N_X, *widths])


def weights_digest(weights: Sequence[tuple[np.ndarray, np.ndarray]]) -> str:
    """The first 12 hex digits of a sha256 over every weight's bytes, layer by layer."""
    digest = hashlib.sha256()
    for W, b in weights:
        digest.update(np.ascontiguousarray(W).tobytes())
        digest.update(np.ascontiguousarray(b).tobytes())
    return digest.hexdigest()[:12]


def textbook(
    params: dict[str, Any], X: np.ndarray, Y: np.ndarray, neurons_per_task: int | None = None
) -> tuple[list[float], Weights]:
    """Forward, cost, backward and update with plain numpy: the floor any engine is measured
    against. Returns the costs and the final weights.

    A whole layer at a time by default. With `neurons_per_task`, each layer's products are made
    shard by shard, as the engines' stages make them (rows of W, partial dA_prev added in shard
    order): the arithmetic of that grain with nothing else, so it ends with the engines' bits."""
    L = params["layers"]
    dims = [X.shape[0]] + [params["neurons"][f"layer{i}"] for i in range(1, L + 1)]
    np.random.seed(params.get("seed", 1))
    scaled = params["initialization"] == "scaled"
    W = []
    for i in range(1, L + 1):
        w = np.random.randn(dims[i], dims[i - 1])
        W.append(w * 0.01 if scaled else w / np.sqrt(dims[i - 1]))
    b = [np.zeros((dims[i], 1)) for i in range(1, L + 1)]
    shards = [_shards(n, neurons_per_task or n) for n in dims[1:]]
    m, lr, costs = X.shape[1], params["learning_rate"], []
    for _ in range(params["epochs"]):
        A, Zs, As = X, [], [X]
        for i in range(L):
            Z = _rows(lambda lo, hi, i=i, A=A: W[i][lo:hi].dot(A) + b[i][lo:hi], shards[i])
            A = 1 / (1 + np.exp(-Z)) if i == L - 1 else np.maximum(0, Z)
            Zs.append(Z)
            As.append(A)
        cost = (1.0 / m) * (-np.dot(Y, np.log(A).T) - np.dot(1 - Y, np.log(1 - A).T))
        costs.append(float(np.squeeze(cost)))
        dA = -(np.divide(Y, A) - np.divide(1 - Y, 1 - A))
        for i in reversed(range(L)):
            if i == L - 1:
                s = 1 / (1 + np.exp(-Zs[i]))
                dZ = dA * s * (1 - s)
            else:
                dZ = np.array(dA, copy=True)
                dZ[Zs[i] <= 0] = 0
            A_prev = As[i]
            dW = _rows(lambda lo, hi, dZ=dZ, A=A_prev: 1.0 / m * np.dot(dZ[lo:hi], A.T), shards[i])
            db = 1.0 / m * np.sum(dZ, axis=1, keepdims=True)
            if i > 0:  # the images' gradient is not needed
                partials = [np.dot(W[i][lo:hi].T, dZ[lo:hi]) for lo, hi in shards[i]]
                dA = partials[0]
                for part in partials[1:]:
                    dA = dA + part
            W[i] = W[i] - lr * dW
            b[i] = b[i] - lr * db
    return costs, list(zip(W, b, strict=True))


def _shards(neurons: int, per_task: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + per_task, neurons)) for lo in range(0, neurons, per_task)]


def _rows(part: Any, shards: list[tuple[int, int]]) -> np.ndarray:
    """A layer's matrix from its shards' rows (one shard: the whole, as it is)."""
    if len(shards) == 1:
        return part(*shards[0])
    return np.concatenate([part(lo, hi) for lo, hi in shards], axis=0)
