"""parameters.json: the network to train, in the seed's format, validated before anything runs.

The seed's format, accepted exactly as it is:

    {"epochs": 10, "layers": 2,
     "activations": {"layer1": "relu", "layer2": "sigmoid"},
     "neurons": {"layer1": 3, "layer2": 1},
     "learning_rate": 0.0075}

Optional fields, whose defaults keep the seed's behaviour: `seed` (1), `initialization`
("scaled"), `neurons_per_task` (1: one Lambda invocation per neuron), and how the network learns
(mini-batches, optimizer, L2, learning-rate decay, validation, early stopping: `snn.training`).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from snn import training
from snn.errors import ParametersError
from snn.network import ACTIVATIONS, INITIALIZATIONS
from snn.training import Training

REQUIRED = ("epochs", "layers", "activations", "neurons", "learning_rate")
OPTIONAL = {"seed": 1, "initialization": "scaled", "neurons_per_task": 1}
MAX_EPOCHS = 1_000_000
MAX_LAYERS = 32
MAX_NEURONS = 4096


@dataclass(frozen=True)
class Shard:
    """Neurons lo..hi-1 of one layer, computed by one Lambda invocation; `index` counts the
    layer's shards from 0, in neuron order."""

    layer: int
    index: int
    lo: int
    hi: int


@dataclass(frozen=True)
class Parameters:
    epochs: int
    layers: int
    activations: tuple[str, ...]  # activations[l - 1] is layer l's
    neurons: tuple[int, ...]  # neurons[l - 1] is layer l's
    learning_rate: float
    seed: int = 1
    initialization: str = "scaled"
    neurons_per_task: int = 1
    training: Training = field(default_factory=Training)

    # --- the seed's format ----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Any) -> Parameters:
        return _validate(raw)

    @classmethod
    def from_json(cls, text: str, source: str = "parameters.json") -> Parameters:
        try:
            raw = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise ParametersError(
                f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None
        except ParametersError as exc:
            raise ParametersError(f"{source}: {exc}") from None
        try:
            return _validate(raw)
        except ParametersError as exc:
            raise ParametersError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Parameters:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ParametersError(f"{path}: no such parameters file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ParametersError(f"{path}: cannot be read ({exc})") from None
        return cls.from_json(text, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The seed's format again (plus the optional fields), so the file round-trips."""
        d = asdict(self)
        del d["training"]
        d["activations"] = {f"layer{i}": a for i, a in enumerate(self.activations, 1)}
        d["neurons"] = {f"layer{i}": n for i, n in enumerate(self.neurons, 1)}
        return {**d, **self.training.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_epochs(self, epochs: int) -> Parameters:
        d = self.to_dict()
        d["epochs"] = epochs
        return _validate(d)

    # --- the shape of the work ------------------------------------------------------------------

    def layer_dims(self, n_x: int) -> list[int]:
        return [n_x, *self.neurons]

    def shards(self, layer: int) -> tuple[Shard, ...]:
        """The shards of `layer` (1-based) that the state machine fans out, in neuron order."""
        return _shards(layer, self.neurons[layer - 1], self.neurons_per_task)

    def shard(self, layer: int, shard: int) -> Shard:
        if not 1 <= layer <= self.layers:
            raise IndexError(f"layer {layer} is not in 1..{self.layers}")
        shards = self.shards(layer)
        if not 0 <= shard < len(shards):
            raise IndexError(f"shard {shard} of layer {layer} is not in 0..{len(shards) - 1}")
        return shards[shard]


@functools.lru_cache(maxsize=256)
def _shards(layer: int, n: int, per_task: int) -> tuple[Shard, ...]:
    """Made once per layer and kept (every stage of every step asks for them)."""
    return tuple(
        Shard(layer, i, lo, min(lo + per_task, n)) for i, lo in enumerate(range(0, n, per_task))
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused if it names a field twice (json.loads would keep the last one
    without a word, as a typo's default would)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ParametersError(f"the field {json.dumps(key)} appears twice in one object")
        out[key] = value
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(raw: dict, key: str, upper: int) -> int:
    v = raw[key]
    if not _is_int(v) or not 1 <= v <= upper:
        raise ParametersError(f'"{key}" must be a whole number from 1 to {upper}, got {v!r}')
    return v


def _layer_map(raw: dict, key: str, layers: int) -> dict[str, Any]:
    v = raw[key]
    if not isinstance(v, dict):
        raise ParametersError(
            f'"{key}" must be an object {{"layer1": ..., "layer{layers}": ...}}, got {v!r}'
        )
    expected = [f"layer{i}" for i in range(1, layers + 1)]
    if sorted(v, key=str) != sorted(expected):
        missing = [k for k in expected if k not in v]
        unexpected = [k for k in v if k not in expected]
        what = []
        if missing:
            what.append("missing " + ", ".join(missing))
        if unexpected:
            what.append("unexpected " + ", ".join(map(str, unexpected)))
        raise ParametersError(
            f'"{key}" must name exactly layer1..layer{layers} ("layers" is {layers}): '
            + "; ".join(what)
        )
    return v


def _validate(raw: Any) -> Parameters:
    if not isinstance(raw, dict):
        raise ParametersError(f"expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ParametersError("missing required field(s): " + ", ".join(f'"{k}"' for k in missing))
    unknown = [
        k for k in raw if k not in REQUIRED and k not in OPTIONAL and k not in training.FIELDS
    ]
    if unknown:
        raise ParametersError(
            "unknown field(s): "
            + ", ".join(f'"{k}"' for k in unknown)
            + " (allowed: "
            + ", ".join([*REQUIRED, *OPTIONAL, *training.FIELDS])
            + ")"
        )

    epochs = _positive_int(raw, "epochs", MAX_EPOCHS)
    layers = _positive_int(raw, "layers", MAX_LAYERS)
    acts = _layer_map(raw, "activations", layers)
    neurons_map = _layer_map(raw, "neurons", layers)

    activations = []
    neurons = []
    for i in range(1, layers + 1):
        a = acts[f"layer{i}"]
        if a not in ACTIVATIONS:
            raise ParametersError(
                f'"activations.layer{i}" must be one of {", ".join(ACTIVATIONS)}, got {a!r}'
            )
        n = neurons_map[f"layer{i}"]
        if not _is_int(n) or not 1 <= n <= MAX_NEURONS:
            raise ParametersError(
                f'"neurons.layer{i}" must be a whole number from 1 to {MAX_NEURONS}, got {n!r}'
            )
        activations.append(a)
        neurons.append(n)
    if activations[-1] != "sigmoid" or neurons[-1] != 1:
        raise ParametersError(
            f'the last layer (layer{layers}) must be 1 "sigmoid" neuron for this binary task, '
            f"got {neurons[-1]} {activations[-1]!r}"
        )

    lr = raw["learning_rate"]
    if (
        not isinstance(lr, int | float)
        or isinstance(lr, bool)
        or not math.isfinite(lr)
        or not 0 < lr <= 10
    ):
        raise ParametersError(f'"learning_rate" must be a number in (0, 10], got {lr!r}')

    seed = raw.get("seed", OPTIONAL["seed"])
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ParametersError(f'"seed" must be a whole number from 0 to 2**32 - 1, got {seed!r}')
    init = raw.get("initialization", OPTIONAL["initialization"])
    if init not in INITIALIZATIONS:
        raise ParametersError(
            f'"initialization" must be one of {", ".join(INITIALIZATIONS)}, got {init!r}'
        )
    per_task = raw.get("neurons_per_task", OPTIONAL["neurons_per_task"])
    if not _is_int(per_task) or not 1 <= per_task <= MAX_NEURONS:
        raise ParametersError(
            f'"neurons_per_task" must be a whole number from 1 to {MAX_NEURONS}, got {per_task!r}'
        )

    p = Parameters(
        epochs=epochs,
        layers=layers,
        activations=tuple(activations),
        neurons=tuple(neurons),
        learning_rate=float(lr),
        seed=seed,
        initialization=init,
        neurons_per_task=per_task,
        training=training.parse(raw),
    )
    from snn.epoch import check_fits

    check_fits(p)
    return p
