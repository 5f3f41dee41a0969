"""Run folders as the engines leave them, written by hand for the tests of `snn serve`: a
finished run (metrics.json, model.npz, neurons.npz), a run in progress or stopped
(progress.json, resume/state.json). The model takes 4 x 4 RGB pictures, as the synthetic data set
of `snn.data.synthetic_images` has them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from snn.parameters import Parameters
from snn.report import model_bytes, npz_bytes

SIZE = 4
PARAMETERS = Parameters.from_dict(
    {
        "epochs": 12,
        "layers": 2,
        "activations": {"layer1": "tanh", "layer2": "sigmoid"},
        "neurons": {"layer1": 3, "layer2": 1},
        "learning_rate": 0.1,
        "initialization": "xavier",
    }
).to_dict()
COSTS = [0.69 - 0.03 * e for e in range(12)]


def weights(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(0, 0.5, (3, SIZE * SIZE * 3)), rng.normal(0, 0.1, (3, 1))),
        (rng.normal(0, 1, (1, 3)), np.zeros((1, 1))),
    ]


def neurons_npz(epochs: int = 12, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"epochs": np.arange(epochs, dtype=np.int64)}
    for layer, n in ((1, 3), (2, 1)):
        for stat in ("dW_norm", "db_abs", "Z_mean", "Z_std", "A_mean", "A_std"):
            arrays[f"{stat}_layer{layer}"] = rng.uniform(0.01, 1.0, (epochs, n))
    return npz_bytes(arrays)


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def finished(runs: Path, name: str, engine: str = "local", **metrics: Any) -> Path:
    """A run that succeeded, as `snn train` leaves it."""
    folder = runs / name
    folder.mkdir(parents=True)
    costs = metrics.pop("costs", COSTS)
    record = {
        "run_id": name,
        "engine": engine,
        "parameters": PARAMETERS,
        "epochs": len(costs),
        "costs": costs,
        "final_cost": costs[-1],
        "train_accuracy": 0.75,
        "test_accuracy": 0.5,
        "confusion_matrix": {
            "true_positive": 3,
            "false_positive": 2,
            "true_negative": 3,
            "false_negative": 4,
        },
        "wall_seconds": 4.5,
        "executions": [
            {
                "name": name,
                "status": "SUCCEEDED",
                "history_events": 1234,
                "first_epoch": 0,
                "last_epoch": len(costs) - 1,
            }
        ],
        **metrics,
    }
    (folder / "metrics.json").write_text(json.dumps(record), encoding="utf-8")
    (folder / "model.npz").write_bytes(model_bytes(weights()))
    (folder / "neurons.npz").write_bytes(neurons_npz())
    return folder


def progress(name: str, status: str = "running", epoch: int = 3, **fields: Any) -> dict[str, Any]:
    """A progress.json of the documented format."""
    now = time.time()
    return {
        "format": 1,
        "run_id": name,
        "engine": "local",
        "pid": os.getpid(),
        "status": status,
        "started_at": iso(now - 60),
        "updated_at": iso(now),
        "parameters": PARAMETERS,
        "inputs": SIZE * SIZE * 3,
        "epochs": 12,
        "epoch": epoch,
        "costs": COSTS[:epoch],
        "execution": {"name": name, "status": "RUNNING", "history_events": 300 * epoch},
        "executions": [],
        "states": {
            "Init": {"entered": 1, "running": 0, "mean_ms": 610.5},
            "Commit": {"entered": epoch, "running": 0, "mean_ms": 12.0},
            "ForwardLinear": {"entered": 3 * epoch + 1, "running": 1, "mean_ms": 8.25},
        },
        "active": ["ForwardLayers", "ForwardShards", "ForwardLinear"],
        "error": None,
        **fields,
    }


def write_progress(folder: Path, data: dict[str, Any]) -> None:
    """Atomically, as the engine writes it: a temporary file renamed over progress.json."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".progress.json.tmp"
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, folder / "progress.json")


def in_progress(runs: Path, name: str, resumable: bool = False, **fields: Any) -> Path:
    folder = runs / name
    write_progress(folder, progress(name, **fields))
    if resumable:
        (folder / "resume").mkdir()
        (folder / "resume" / "state.json").write_text("{}", encoding="utf-8")
    return folder


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root with its mtime and bytes: to show that nothing was written."""
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        found[str(path.relative_to(root))] = (stat.st_mtime_ns, data)
    return found
