"""What every engine leaves behind, in the same form (the folder itself: `snn.run_folder`).

metrics.json   run_id, engine, parameters, costs (every epoch), accuracies, confusion matrix,
               wall time, and engine-specific counts (executions, transitions, ...)
model.npz      W1, b1, ..., WL, bL
neurons.npz    every neuron's recorded statistics
cost.png       the cost curve
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snn.stores import to_npy

Weights = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class RunResult:
    run_id: str
    engine: str
    parameters: dict[str, Any]
    costs: list[float]
    weights: Weights
    train_accuracy: float
    test_accuracy: float
    confusion_matrix: dict[str, int]
    wall_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    neurons: bytes | None = None  # neurons.npz: what each neuron did during training
    model: bytes | None = None  # model.npz as the run stored it (else written from weights)

    def metrics(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "engine": self.engine,
            "parameters": self.parameters,
            "epochs": len(self.costs),
            "costs": self.costs,
            "final_cost": self.costs[-1] if self.costs else None,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "confusion_matrix": self.confusion_matrix,
            "wall_seconds": self.wall_seconds,
            **self.extra,
        }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive whose bytes depend only on the arrays (np.savez stamps the time), so a
    stage that writes one again writes the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, to_npy(np.asarray(array)))
    return buf.getvalue()


def model_arrays(weights: Weights) -> dict[str, np.ndarray]:
    arrays = {}
    for layer, (W, b) in enumerate(weights, 1):
        arrays[f"W{layer}"] = W
        arrays[f"b{layer}"] = b
    return arrays


def model_bytes(weights: Weights, info: dict[str, Any] | None = None) -> bytes:
    """model.npz: W1, b1, ..., WL, bL, and `info` (what the model takes and the names of its
    classes, as JSON bytes) when given."""
    arrays = model_arrays(weights)
    if info is not None:
        arrays["info"] = np.frombuffer(json.dumps(info, sort_keys=True).encode(), dtype=np.uint8)
    return npz_bytes(arrays)


def plot_costs(path: Path, costs: list[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(range(len(costs)), costs, color="tab:blue", linewidth=1.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost (binary cross-entropy)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(folder: Path, result: RunResult) -> None:
    """The result files, into `folder` (which must exist). metrics.json is strict JSON."""
    folder = Path(folder)
    text = json.dumps(result.metrics(), indent=2, allow_nan=False) + "\n"
    (folder / "metrics.json").write_text(text, encoding="utf-8")
    (folder / "model.npz").write_bytes(result.model or model_bytes(result.weights))
    if result.neurons:
        (folder / "neurons.npz").write_bytes(result.neurons)
    plot_costs(
        folder / "cost.png", result.costs, f"SNN run {result.run_id} ({result.engine} engine)"
    )
