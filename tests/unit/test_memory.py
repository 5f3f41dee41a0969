"""The working set of each stage (snn.memory) against the peak of its allocations as tracemalloc
measures them (numpy reports its arrays to it), on a store that keeps objects as bytes, as S3
does, and a cold function (nothing cached)."""

from __future__ import annotations

import gc
import re
import shutil
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from snn import epoch as epochs
from snn import keys, memory, stages
from snn import network as nn
from snn.data import Dataset
from snn.errors import DataError, ParametersError
from snn.parameters import MAX_NEURONS, Parameters
from snn.predict import read_model
from snn.stores import MemoryRunTable, MissingObject, from_npy, to_npy
from snn.template import Template
from tests.helpers import ROOT

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

    def model() -> None:  # what Predict reads before it classifies a picture
        read_model(store.get_bytes(keys.model_key("r")), "model.npz")

    out[("Predict", None)] = (memory.predict(p, data), peak(model))
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
            [128, 40, 1],
            ["tanh", "relu", "sigmoid"],
            64,
            optimizer={"name": "adam"},
            batch_size=128,
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


# The cat/non-cat set: 12,288 values per example, 209 training and 50 test examples, 3.1 MB of
# h5 files.
CATS = memory.Data(12288, 209, 0, 50, 3_000_000)
LIMITS = Template.load(ROOT / "template.yaml").memory_limits()


def wide(neurons: list[int], per_task: int, **fields: Any) -> Parameters:
    acts = ["relu"] * (len(neurons) - 1) + ["sigmoid"]
    return Parameters.from_dict(network(neurons, acts, per_task, **fields))


def test_the_templates_memory_is_what_the_check_uses() -> None:
    assert {stage: 1024 for stage in memory.FUNCTIONS} | {"Evaluate": 2048} == LIMITS


def test_backward_holds_one_partial_of_the_next_layer_not_all_of_them() -> None:
    """[4096, 4096, 1] at 16 neurons per task: layer 1's Backward reads 256 partials of 4096 x
    209 floats (6.85 MB each); added as they are read, it holds two of them at most."""
    p = wide([4096, 4096, 1], 16)
    partial = 4096 * 209 * memory.FLOAT
    need = memory.backward(p, CATS, 1)
    assert 2 * partial < need < 8 * partial  # not 256 of them
    sets = memory.working_sets(p, CATS)
    over = {s for s, (b, _) in sets.items() if b > (LIMITS[s] - memory.RUNTIME_MB) * memory.MB}
    assert over == {"Predict"}  # every stage of training fits


def test_4096_4096_1_at_16_per_task_is_refused_for_its_model() -> None:
    """Its weights are 537 MB: Predict holds model.npz and the arrays read from it, 1,040 MB,
    whatever the sharding: the deployed stack could not use the trained network."""
    with pytest.raises(ParametersError) as refused:
        memory.check(wide([4096, 4096, 1], 16), CATS, LIMITS, source="p.json")
    assert str(refused.value) == (
        "p.json: Predict needs 1,040 MB at 16 neurons per task, over the 924 MB its function "
        "has (1,024 MB MemorySize less 100 MB for the runtime); no neurons_per_task fits: "
        "narrow the layers or give the function more memory"
    )


def test_a_network_over_its_functions_memory_is_refused_in_one_line() -> None:
    p = wide([4096, 1], 4096, optimizer={"name": "adam"})
    with pytest.raises(ParametersError) as refused:
        memory.check(p, CATS, LIMITS, source="p.json")
    message = str(refused.value)
    assert "\n" not in message
    match = re.fullmatch(
        r"p\.json: Update \(layer 1\) needs ([\d,]+) MB at 4096 neurons per task, over the 924 "
        r"MB its function has \(1,024 MB MemorySize less 100 MB for the runtime\); "
        r'"neurons_per_task": (\d+) fits',
        message,
    )
    assert match, message
    fits = int(match.group(2))
    assert memory.over_limit(replace(p, neurons_per_task=fits), CATS, LIMITS) is None
    assert memory.over_limit(replace(p, neurons_per_task=fits + 1), CATS, LIMITS) is not None
    # Adam holds W, dW, v, s and four arrays more of the shard's size: 8 x 4096 x 12288 floats
    assert int(match.group(1).replace(",", "")) == 8 * 4096 * 12288 * 8 // memory.MB


def test_h5_uploads_over_init_ephemeral_storage_are_refused() -> None:
    memory.check_storage(512 * memory.MB, 512)
    with pytest.raises(DataError, match=r"513 MB of h5 files to /tmp, over the 512 MB"):
        memory.check_storage(513 * memory.MB, 512)


@pytest.mark.parametrize(
    ("neurons", "per_task", "refusal"),
    [
        ([4096, 1], 4096, r'Update \(layer 1\) needs 3,072 MB .*; "neurons_per_task": 1232 fits'),
        ([4096, 4096, 1], 16, r"Predict needs 1,040 MB at 16 neurons per task, .*; no .* fits: .*"),
    ],
)
def test_snn_train_refuses_a_network_over_memory_before_anything_runs(
    neurons: list[int],
    per_task: int,
    refusal: str,
    tmp_path: Path,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from snn.cli import main

    params = tmp_path / "p.json"
    params.write_text(wide(neurons, per_task, optimizer={"name": "adam"}).to_json())
    out = tmp_path / "run"
    template = str(ROOT / "template.yaml")
    args = ["--params", str(params), "--data", str(data_dir), "--template", template]
    code = main(["train", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert re.fullmatch(rf"snn: error: {re.escape(str(params))}: {refusal}", lines[0]), lines[0]
    assert not out.exists()


def _fits(n: int, deep: bool, per_task: int, optimizer: str) -> bool:
    """[n, 1] or [n, n, 1] validates (history events) and fits the template's memory."""
    neurons = [n, n, 1] if deep else [n, 1]
    try:
        p = wide(neurons, per_task, optimizer={"name": optimizer})
    except ParametersError:
        return False
    return memory.over_limit(p, CATS, LIMITS) is None


def _widest(deep: bool, per_task: int, optimizer: str) -> int:
    lo, hi = 0, MAX_NEURONS  # fitting is monotonic in n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _fits(mid, deep, per_task, optimizer) else (lo, mid - 1)
    return lo


def test_the_docs_table_of_the_widest_layer_is_the_formulas() -> None:
    text = (ROOT / "docs" / "parameters.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", text, re.MULTILINE)
    assert len(rows) >= 4
    for per_task, *cells in rows:
        columns = [(False, "gd"), (False, "adam"), (True, "gd"), (True, "adam")]
        expected = [_widest(deep, int(per_task), opt) for deep, opt in columns]
        assert [int(c) for c in cells] == expected, per_task


def test_partials_added_as_read_give_the_bits_of_the_whole_sum_sliced() -> None:
    """Backward adds each partial's rows as it reads it: the same additions, in the same order,
    as adding the whole partials first and taking the rows after."""
    rng = np.random.default_rng(7)
    partials = [rng.standard_normal((9, 13)) * 10.0 ** rng.integers(-8, 8) for _ in range(6)]
    whole = partials[0]
    for part in partials[1:]:
        whole = whole + part
    for lo, hi in ((0, 2), (2, 4), (8, 9)):
        rows = nn.sum_partials(part[lo:hi] for part in partials)
        assert rows.tobytes() == whole[lo:hi].tobytes()
    assert nn.sum_partials(iter(partials)).tobytes() == whole.tobytes()
