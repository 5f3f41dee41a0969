"""How a network learns, beyond full-batch gradient descent: the optional fields of
parameters.json that choose mini-batches, the optimizer, L2 regularisation, learning-rate decay,
a validation set and early stopping, and the size pictures are brought to. Absent, each keeps
the seed's behaviour exactly (full-batch gradient descent on the whole training set).

    "batch_size": 64                 mini-batches of 64 examples, reshuffled every epoch
    "shuffle_seed": 10               epoch e shuffles with RandomState(shuffle_seed + e + 1)
    "optimizer": {"name": "adam", "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
                 {"name": "momentum", "beta": 0.9} | {"name": "rmsprop", "beta": 0.999,
                 "epsilon": 1e-8} | {"name": "gd"} (the default)
    "l2": 0.7                        L2 regularisation
    "learning_rate_decay": {"rate": 1, "every": 100}   lr / (1 + rate floor(epoch / every))
    "validation": 0.2                hold out this fraction of the training set
    "early_stopping": {"patience": 50}   stop when the validation cost has not improved for
                                     this many epochs; keep the best epoch's model
    "image_size": 64                 pictures of a folder data set are resized to this side
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from snn.errors import ParametersError

FIELDS = (
    "batch_size",
    "shuffle_seed",
    "optimizer",
    "l2",
    "learning_rate_decay",
    "validation",
    "early_stopping",
    "image_size",
)
OPTIMIZERS: dict[str, dict[str, float]] = {
    "gd": {},
    "momentum": {"beta": 0.9},
    "rmsprop": {"beta": 0.999, "epsilon": 1e-8},
    "adam": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}
MAX_BATCH = 1_000_000
MAX_SHUFFLE_SEED = 2**32 - 1_000_002  # + epoch + 1 < 2**32 for a million epochs
DEFAULT_SHUFFLE_SEED = 10
DEFAULT_IMAGE_SIZE = 64


@dataclass(frozen=True)
class Optimizer:
    name: str = "gd"
    settings: tuple[tuple[str, float], ...] = ()  # (name, value), in OPTIMIZERS' order

    def __getattr__(self, item: str) -> float:
        for name, value in self.settings:
            if name == item:
                return value
        raise AttributeError(item)

    @property
    def state(self) -> tuple[str, ...]:
        """The matrices it keeps per parameter between steps: v (momentum, Adam), s (RMSprop,
        Adam)."""
        return {"gd": (), "momentum": ("v",), "rmsprop": ("s",), "adam": ("v", "s")}[self.name]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.settings)}


@dataclass(frozen=True)
class Training:
    batch_size: int | None = None
    shuffle_seed: int = DEFAULT_SHUFFLE_SEED
    optimizer: Optimizer = field(default_factory=Optimizer)
    l2: float = 0.0
    decay: tuple[float, int] | None = None  # (rate, every)
    validation: float | None = None
    patience: int | None = None
    image_size: int = DEFAULT_IMAGE_SIZE

    def to_dict(self) -> dict[str, Any]:
        """The fields that are not at their default (absent ones stay absent)."""
        out: dict[str, Any] = {}
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        if self.shuffle_seed != DEFAULT_SHUFFLE_SEED:
            out["shuffle_seed"] = self.shuffle_seed
        if self.optimizer.name != "gd":
            out["optimizer"] = self.optimizer.to_dict()
        if self.l2:
            out["l2"] = self.l2
        if self.decay is not None:
            out["learning_rate_decay"] = {"rate": self.decay[0], "every": self.decay[1]}
        if self.validation is not None:
            out["validation"] = self.validation
        if self.patience is not None:
            out["early_stopping"] = {"patience": self.patience}
        if self.image_size != DEFAULT_IMAGE_SIZE:
            out["image_size"] = self.image_size
        return out

    def learning_rate(self, base: float, epoch: int) -> float:
        if self.decay is None:
            return base
        rate, every = self.decay
        return float(base / (1 + rate * math.floor(epoch / every)))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _object(raw: dict[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    v = raw[key]
    if not isinstance(v, dict):
        raise ParametersError(f'"{key}" must be an object, got {v!r}')
    unknown = [k for k in v if k not in allowed]
    if unknown:
        raise ParametersError(
            f'"{key}" has unknown field(s) {", ".join(map(repr, unknown))} '
            f"(allowed: {', '.join(allowed)})"
        )
    return v


def _optimizer(raw: dict[str, Any]) -> Optimizer:
    if "optimizer" not in raw:
        return Optimizer()
    v = raw["optimizer"]
    if not isinstance(v, dict) or v.get("name") not in OPTIMIZERS:
        raise ParametersError(
            f'"optimizer" must be an object whose "name" is one of {", ".join(OPTIMIZERS)}, '
            f"got {v!r}"
        )
    defaults = OPTIMIZERS[v["name"]]
    spec = _object(raw, "optimizer", ("name", *defaults))
    settings = []
    for name, default in defaults.items():
        value = spec.get(name, default)
        if name == "epsilon":
            ok = _number(value) and 0 < value < 1
            bound = "a number in (0, 1)"
        else:
            ok = _number(value) and 0 <= value < 1
            bound = "a number in [0, 1)"
        if not ok:
            raise ParametersError(f'"optimizer.{name}" must be {bound}, got {value!r}')
        settings.append((name, float(value)))
    return Optimizer(v["name"], tuple(settings))


def parse(raw: dict[str, Any]) -> Training:
    """The training fields of parameters.json, each validated (one line naming the field)."""
    batch_size = raw.get("batch_size")
    if batch_size is not None and (not _is_int(batch_size) or not 1 <= batch_size <= MAX_BATCH):
        raise ParametersError(
            f'"batch_size" must be a whole number from 1 to {MAX_BATCH}, got {batch_size!r}'
        )
    shuffle_seed = raw.get("shuffle_seed", DEFAULT_SHUFFLE_SEED)
    # epoch e seeds with shuffle_seed + e + 1, which must stay below 2**32 for any epoch count
    if not _is_int(shuffle_seed) or not 0 <= shuffle_seed <= MAX_SHUFFLE_SEED:
        raise ParametersError(
            f'"shuffle_seed" must be a whole number from 0 to {MAX_SHUFFLE_SEED:,}, '
            f"got {shuffle_seed!r}"
        )
    l2 = raw.get("l2", 0.0)
    if not _number(l2) or not 0 <= l2 <= 1e6:
        raise ParametersError(f'"l2" must be a number from 0 to 1e6, got {l2!r}')
    decay = None
    if "learning_rate_decay" in raw:
        spec = _object(raw, "learning_rate_decay", ("rate", "every"))
        rate, every = spec.get("rate"), spec.get("every", 1)
        if not _number(rate) or not 0 <= rate <= 1e6:
            raise ParametersError(f'"learning_rate_decay.rate" must be a number >= 0, got {rate!r}')
        if not _is_int(every) or not 1 <= every <= 1_000_000:
            raise ParametersError(
                f'"learning_rate_decay.every" must be a whole number >= 1, got {every!r}'
            )
        decay = (float(rate), every)
    validation = raw.get("validation")
    if validation is not None and (not _number(validation) or not 0 < validation <= 0.5):
        raise ParametersError(f'"validation" must be a fraction in (0, 0.5], got {validation!r}')
    patience = None
    if "early_stopping" in raw:
        spec = _object(raw, "early_stopping", ("patience",))
        patience = spec.get("patience")
        if not _is_int(patience) or not 1 <= patience <= 1_000_000:
            raise ParametersError(
                f'"early_stopping.patience" must be a whole number >= 1, got {patience!r}'
            )
        if validation is None:
            raise ParametersError('"early_stopping" needs a "validation" set to watch')
    image_size = raw.get("image_size", DEFAULT_IMAGE_SIZE)
    if not _is_int(image_size) or not 1 <= image_size <= 512:
        raise ParametersError(
            f'"image_size" must be a whole number from 1 to 512, got {image_size!r}'
        )
    return Training(
        batch_size=batch_size,
        shuffle_seed=shuffle_seed,
        optimizer=_optimizer(raw),
        l2=float(l2),
        decay=decay,
        validation=None if validation is None else float(validation),
        patience=patience,
        image_size=image_size,
    )
