"""What the pages of `snn serve` show, computed from the run folders (read, never written):
a run's details, what its neurons do (`snn.inspection`, as `snn inspect`), a picture classified
(`snn.predict`, as `snn predict`), and a run's progress for the live page."""

from __future__ import annotations

import base64
import io
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from snn.serve.runs import Run, RunError, Runs, _regular, open_regular, read_bytes

MAX_NEURONS_SHOWN = 32  # per layer on a run's page: tables, histograms, weight pictures
MAX_MODELS = 4  # models kept in memory
MAX_DATASETS = 2  # data sets kept in memory, each read as one run read it
LIVE_POINTS = 2000  # at most this many costs of a run on its live page: every k-th epoch's
ZIP_SLACK = 2**20  # an .npz file's bytes beyond its arrays' (the zip's headers and directory)


def text(value: str) -> str:
    """A string that can be sent as UTF-8: a name read from a file system that is not UTF-8
    (its bytes kept as lone surrogates) shows its undecodable bytes as \\xNN."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def clean(value: Any) -> Any:
    """Strict JSON, UTF-8: NaN and infinities (an old run's diverged costs) become null, names
    that are not UTF-8 are shown escaped."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.generic):
        return clean(value.item())
    return value


class Server:
    """What the pages show, from the run folders under `runs`."""

    def __init__(self, runs: Path, data: str | None, definition: Path | None) -> None:
        self.runs = Runs(runs)
        self.data = data
        self.definition = definition
        self._lock = threading.Lock()
        self.stopping = False  # set when the server shuts down: open event streams end
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self._datasets: OrderedDict[tuple, Any] = OrderedDict()

    # --- models and data (cached: a model changes only if its file does) --------------------

    def model(self, run: Run) -> Any:
        """The run's model, as `snn predict` reads it, from the run folder's own files only:
        model.npz opened without following a link and up to the model reader's limit, the
        parameters from the metrics.json already read so."""
        from snn import npz
        from snn.errors import ParametersError
        from snn.parameters import Parameters
        from snn.predict import Model, ModelError, check_model, default_activations, read_model

        if run.status == "unreadable":
            raise ModelError(f"run {run.name} cannot be read: {run.error}")
        if not run.has_model:
            raise ModelError(f"run {run.name} has no model (yet): it is written when training ends")
        path = run.folder / "model.npz"
        with open_regular(path) as f:
            found = os.fstat(f.fileno())
            metrics = _regular(run.folder / "metrics.json")
            key = (
                str(path),
                *(found.st_ino, found.st_mtime_ns, found.st_size),
                *((metrics.st_ino, metrics.st_mtime_ns, metrics.st_size) if metrics else ()),
            )
            with self._lock:
                if key in self._models:
                    self._models.move_to_end(key)
                    return self._models[key]
            if found.st_size > npz.MAX_NPZ_BYTES + ZIP_SLACK:
                limit = npz.MAX_NPZ_BYTES + ZIP_SLACK
                raise ModelError(f"run {run.name}: model.npz is over {limit:,} bytes")
            data = f.read()
        weights, info = read_model(data, "model.npz")
        del data
        parameters = None
        if run.metrics is not None:
            try:
                parameters = Parameters.from_dict(run.metrics["parameters"])
            except (KeyError, TypeError, ParametersError):
                raise ModelError(
                    f'run {run.name}: its metrics.json has no valid "parameters"'
                ) from None
        activations = parameters.activations if parameters else default_activations(len(weights))
        check_model(weights, activations, "model.npz")
        model = Model(
            weights,
            activations,
            path,
            run.folder if parameters else None,
            tuple(info["classes"]),
            info["input"],
            parameters,
        )
        with self._lock:
            self._models[key] = model
            while len(self._models) > MAX_MODELS:
                self._models.popitem(last=False)
        return model

    def dataset(self, model: Any) -> Any:
        """The training data, read as the model's run read it (cached per way of reading)."""
        from snn.sources import model_dataset

        training = model.parameters.training if model.parameters is not None else None
        key = (repr(training), model.classes, model.n_x)
        with self._lock:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key]
        dataset = model_dataset(self.data, model)
        with self._lock:
            self._datasets[key] = dataset
            while len(self._datasets) > MAX_DATASETS:
                self._datasets.popitem(last=False)
        return dataset

    # --- the API ---------------------------------------------------------------------------

    def run_detail(self, name: str) -> dict[str, Any]:
        run = self.runs.get(name)
        metrics, progress = run.metrics or {}, run.progress or {}
        return clean(
            {
                **run.summary(),
                "parameters": run.parameters,
                "costs": run.costs,
                "validation_costs": metrics.get("validation_costs"),
                "model_epoch": metrics.get("model_epoch"),
                "stopped_early": metrics.get("stopped_early"),
                "confusion_matrix": metrics.get("confusion_matrix"),
                "wall_seconds": metrics.get("wall_seconds"),
                "executions": metrics.get("executions") or progress.get("executions") or [],
                "state_transitions": metrics.get("state_transitions"),
                "lambda_invocations": metrics.get("lambda_invocations"),
                "evaluation": metrics.get("evaluation"),
                "started_at": progress.get("started_at"),
                "updated_at": progress.get("updated_at"),
            }
        )

    def inspection(self, name: str) -> dict[str, Any]:
        """Per layer, what `snn inspect` computes, for the first MAX_NEURONS_SHOWN neurons."""
        from snn import inspection, npz

        run = self.runs.get(name, whole=False)
        model = self.model(run)
        dataset = self.dataset(model)
        widths = [W.shape[0] for W, _ in model.weights]
        history_file = run.folder / "neurons.npz"
        try:
            history_bytes = read_bytes(history_file, npz.MAX_NPZ_BYTES + ZIP_SLACK)
            epochs, history, why = inspection.read_history(history_file, widths, history_bytes)
        except RunError as exc:  # missing, a link, or too big: no gradient history
            epochs, history, why = np.array([], dtype=np.int64), None, str(exc)
        layers = []
        for layer in inspection.layers(model.weights, model.activations, dataset.train_x, history):
            shown = list(range(min(layer.neurons, MAX_NEURONS_SHOWN)))
            counted = inspection.histograms(layer, shown)
            layers.append(
                {
                    "number": layer.number,
                    "activation": layer.activation,
                    "neurons": layer.neurons,
                    "inputs": int(layer.W.shape[1]),
                    "shown": shown,
                    "rows": inspection.neuron_rows(layer, shown, epochs),
                    "histograms": {
                        k: {"edges": edges, "counts": counts}
                        for k, (edges, counts) in counted.items()
                    },
                    "gradients": {k: v[:, shown].T for k, v in layer.history.items()}
                    if layer.history
                    else None,
                }
            )
        return clean(
            {
                "name": name,
                "examples": int(dataset.train_x.shape[1]),
                "image_size": model.image_size if model.takes_pictures else None,
                "epochs": epochs,
                "sampled": [int(epochs[k]) for k in inspection.sampled(epochs)],
                "history_note": why,
                "layers": layers,
            }
        )

    def weight_picture(self, name: str, neuron: int) -> bytes:
        """Neuron `neuron` of layer 1's weights as a PNG, S x S, scaled to its own min..max."""
        from snn.inspection import weight_pictures

        model = self.model(self.runs.get(name, whole=False))
        W = model.weights[0][0]
        if not 0 <= neuron < W.shape[0]:
            raise RunError(f"layer 1 of run {name} has neurons 0..{W.shape[0] - 1}")
        picture = weight_pictures(W[[neuron]], model.image_size)[0]
        return _png(np.rint(picture * 255).astype(np.uint8))

    def predict(self, name: str, data: bytes) -> dict[str, Any]:
        """The same answer as `snn predict --json` on the same file, through the same code."""
        from snn.predict import classify, load_image

        run = self.runs.get(name, whole=False)
        model = self.model(run)
        x = load_image(data, model.image_size, name="the picture")
        (result,) = classify(model, [x])
        side = model.image_size
        seen = np.rint(x.reshape(side, side, 3) * 255).astype(np.uint8)  # x is pixels / 255
        return clean(
            {
                "run": name,
                **result,
                "input": "data:image/png;base64," + base64.b64encode(_png(seen)).decode(),
                "input_size": side,
            }
        )

    def live(self, run: Run, sent: int) -> dict[str, Any]:
        """A run's progress for the live page, with the costs of the epochs from `sent` on
        (the epochs done when it last sent some): those of every `costs_step`-th epoch, so that
        a long run sends at most LIVE_POINTS of them. A run with fewer costs than that (a new
        run of the same name) sends them all again."""
        progress = run.progress or {}
        costs = run.costs
        start = sent if len(costs) >= sent else 0
        running = run.status == "running"
        step = live_step(run)
        start = -(-start // step) * step  # the next epoch on the grid
        return clean(
            {
                **run.summary(),
                "costs_from": start,
                "costs_step": step,
                "costs": costs[start::step],
                "execution": progress.get("execution") if running else None,
                "executions": (run.metrics or {}).get("executions")
                or progress.get("executions")
                or [],
                "states": progress.get("states") or {},
                "active": (progress.get("active") or []) if running else [],
                "started_at": progress.get("started_at"),
                "updated_at": progress.get("updated_at"),
            }
        )


def live_step(run: Run) -> int:
    """Every how many epochs a cost is sent to a live page: 1 up to LIVE_POINTS epochs."""
    planned = run.parameters.get("epochs") if run.metrics else run.source.get("epochs")
    epochs = max(planned if isinstance(planned, int) else 0, run.epoch)
    return max(1, -(-epochs // LIVE_POINTS))


def best_model(runs: list[Run]) -> str | None:
    """The finished run with a model whose test accuracy is highest (the newest of equals):
    the model the predict page offers first."""

    def accuracy(run: Run) -> float:
        value = (run.metrics or {}).get("test_accuracy")
        ok = isinstance(value, int | float) and math.isfinite(value)
        return float(value) if ok else -1.0

    done = [r for r in runs if r.status == "finished" and r.has_model]
    return max(done, key=lambda r: (accuracy(r), r.changed, r.name)).name if done else None


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return buf.getvalue()
