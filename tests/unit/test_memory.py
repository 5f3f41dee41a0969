"""The working set of each stage (snn.memory) against the peak of its allocations as tracemalloc
measures them (numpy reports its arrays to it), on a store that keeps objects as bytes, as S3
does, and a cold function (nothing cached)."""

from __future__ import annotations

import gc
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from snn import epoch as epochs
from snn import memory, stages
from snn import network as nn
from snn.data import Dataset
from snn.parameters import Parameters
from snn.stores import MemoryRunTable, MissingObject, from_npy, to_npy

TOLERANCE = 0.20


class FileStore:
    """Objects as .npy bytes in files: every read makes the bytes and then the array, every
    write the bytes, as with S3; nothing stays in memory but what a stage caches."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[str, np.ndarray] = {}

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def put(self, key: str, array: np.ndarray) -> None:
        self.put_bytes(key, to_npy(array))

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise MissingObject(f"no object {key}") from None

    def get(self, key: str) -> np.ndarray:
        return from_npy(self.get_bytes(key), key)

    def get_cached(self, key: str) -> np.ndarray:
        if key not in self.cache:
            self.cache[key] = self.get(key)
        return self.cache[key]

    def get_many(self, keys: list[str]) -> list[np.ndarray]:
        return [self.get(k) for k in keys]

    def keys_under(self, prefix: str) -> set[str]:
        base = self._path(prefix)
        return {str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()}

    def delete_prefix(self, prefix: str) -> int:
        n = len(self.keys_under(prefix))
        shutil.rmtree(self._path(prefix), ignore_errors=True)
        return n


def peak(fn: Callable[[], Any]) -> int:
    """The most bytes `fn` had allocated at once (what it keeps and what passes)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measured(raw: dict[str, Any], n_x: int, m: int, test: int, root: Path) -> dict:
    """{(stage, layer): (predicted, measured)} over a whole run: every invocation of a stage of
    a layer measured, the largest kept."""
    p = Parameters.from_dict(raw)
    rng = np.random.default_rng(0)
    dataset = Dataset(
        rng.random((n_x, m)),
        (rng.random((1, m)) > 0.5).astype(np.float64),
        rng.random((n_x, test)),
        (rng.random((1, test)) > 0.5).astype(np.float64),
        ("a", "b"),
    )
    held = nn.held_out(m, p.training.validation) if p.training.validation else 0
    data = memory.Data(n_x, m - held, held, test)
    store = FileStore(root)
    ctx = stages.Context(store, MemoryRunTable())  # type: ignore[arg-type]
    plan: dict[str, Any] = {}

    def init() -> None:
        plan.update(stages.init(ctx, "r", p, dataset, {"data_key": "uploads/x/data.npz"}))

    # Init's data set is decoded before the stage: counted as held.
    arrays = (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y)
    decoded = sum(a.nbytes for a in arrays)
    out = {("Init", None): (memory.init(p, data), peak(init) + decoded)}
    for k in range(plan["steps"]):
        epoch, batch = divmod(k, plan["batches"])
        for call in epochs.calls_in_order(epochs.calls(plan, epoch, batch)):
            stage = "".join(part.title() for part in call.stage.split("_"))
            layer = call.fields.get("layer")
            store.cache.clear()
            used = peak(lambda c=call: stages.STEP_STAGES[c.stage](ctx, "r", **c.fields))
            before = out.get((stage, layer), (0, 0))[1]
            out[(stage, layer)] = (memory.stage_bytes(stage, p, data, layer), max(before, used))
    store.cache.clear()
    out[("Evaluate", None)] = (memory.evaluate(p, data), peak(lambda: stages.evaluate(ctx, "r")))
    return out


def network(neurons: list[int], activations: list[str], per_task: int, **fields: Any) -> dict:
    return {
        "epochs": 2,
        "layers": len(neurons),
        "activations": {f"layer{i}": a for i, a in enumerate(activations, 1)},
        "neurons": {f"layer{i}": n for i, n in enumerate(neurons, 1)},
        "learning_rate": 0.0001,
        "initialization": "xavier",
        "neurons_per_task": per_task,
        **fields,
    }


# (network, n_x, training examples, test examples): every optimizer and activation, full batch
# and mini-batches, a validation set, L2.
SHAPES = {
    "gd": (network([96, 64, 1], ["relu", "sigmoid", "sigmoid"], 32), 3000, 400, 100),
    "momentum-validation-l2": (
        network(
            [300, 200, 1],
            ["relu", "relu", "sigmoid"],
            100,
            optimizer={"name": "momentum"},
            validation=0.2,
            l2=0.1,
        ),
        1500,
        500,
        80,
    ),
    "rmsprop": (
        network([128, 1], ["relu", "sigmoid"], 64, optimizer={"name": "rmsprop"}),
        2000,
        300,
        50,
    ),
    "adam-batches": (
        network(
            [128, 40, 1], ["tanh", "relu", "sigmoid"], 64, optimizer={"name": "adam"}, batch_size=128
        ),
        2000,
        300,
        50,
    ),
}
# Below this, an invocation's own Python objects (its event, the run record, keys) weigh as
# much as its arrays; they are counted in the runtime's footprint.
FLOOR = 1_000_000


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_each_stage_working_set_is_within_20_percent_of_its_measured_peak(
    shape: str, tmp_path: Path
) -> None:
    raw, n_x, m, test = SHAPES[shape]
    results = measured(raw, n_x, m, test, tmp_path)
    compared = {key: v for key, v in results.items() if v[1] >= FLOOR}
    assert {"Init", "ForwardLinear", "Backward", "Update", "Evaluate"} <= {s for s, _ in compared}
    for (stage, layer), (predicted, used) in compared.items():
        assert abs(predicted - used) <= TOLERANCE * used, (stage, layer, predicted, used)


def test_the_shapes_cover_every_stage_above_the_floor(tmp_path: Path) -> None:
    """Every stage's formula is checked by some shape (Loss with L2, Commit with a validation
    set, Activation of a wide layer): predicted at least FLOOR in one of them."""
    seen = set()
    for raw, n_x, m, test in SHAPES.values():
        p = Parameters.from_dict(raw)
        held = nn.held_out(m, p.training.validation) if p.training.validation else 0
        data = memory.Data(n_x, m - held, held, test)
        seen |= {s for s, (need, _) in memory.working_sets(p, data).items() if need >= FLOOR}
    assert seen == set(memory.FUNCTIONS)
    assert {Parameters.from_dict(r).training.optimizer.name for r, *_ in SHAPES.values()} == {
        "gd",
        "momentum",
        "rmsprop",
        "adam",
    }
