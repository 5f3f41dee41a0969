"""Tests for snn.parameters: the seed file, every validation error, shards, round trips."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from snn.errors import ParametersError
from snn.parameters import Parameters, Shard

ROOT = Path(__file__).parents[2]
SEED_FILE = ROOT / "parameters.json"

SEED: dict[str, Any] = {
    "epochs": 10,
    "layers": 2,
    "activations": {"layer1": "relu", "layer2": "sigmoid"},
    "neurons": {"layer1": 3, "layer2": 1},
    "learning_rate": 0.0075,
}


def test_seed_file_loads_with_defaults() -> None:
    p = Parameters.load(SEED_FILE)
    assert p == Parameters(
        epochs=10,
        layers=2,
        activations=("relu", "sigmoid"),
        neurons=(3, 1),
        learning_rate=0.0075,
    )
    assert (p.seed, p.initialization, p.neurons_per_task) == (1, "scaled", 1)
    assert p.layer_dims(12288) == [12288, 3, 1]
    assert json.loads(SEED_FILE.read_text(encoding="utf-8")) == SEED


def _with(**changes: Any) -> dict[str, Any]:
    """The seed's parameters with top-level changes; a value of ... removes the key."""
    raw = copy.deepcopy(SEED)
    for k, v in changes.items():
        if v is ...:
            del raw[k]
        else:
            raw[k] = v
    return raw


def _map(key: str, **layers: Any) -> dict[str, Any]:
    """The seed's parameters with one layer map changed; a value of ... removes the layer."""
    raw = copy.deepcopy(SEED)
    for k, v in layers.items():
        if v is ...:
            del raw[key][k]
        else:
            raw[key][k] = v
    return raw


# (raw parameters, fragments the message must contain: the field's name first)
INVALID: dict[str, tuple[Any, list[str]]] = {
    "missing-epochs": (_with(epochs=...), ['"epochs"', "missing"]),
    "missing-two": (_with(neurons=..., learning_rate=...), ['"neurons"', '"learning_rate"']),
    "unknown-key": (_with(momentum=0.9), ['"momentum"', "unknown"]),
    "activations-missing-layer2": (_map("activations", layer2=...), ['"activations"', "layer2"]),
    "neurons-extra-layer3": (_map("neurons", layer3=4), ['"neurons"', "unexpected layer3"]),
    "activations-not-a-map": (_with(activations=["relu", "sigmoid"]), ['"activations"']),
    "layers-disagree": (_with(layers=3), ['"activations"', "missing layer3"]),
    "unknown-activation": (_map("activations", layer1="swish"), ['"activations.layer1"', "swish"]),
    "neurons-zero": (_map("neurons", layer1=0), ['"neurons.layer1"', "0"]),
    "neurons-negative": (_map("neurons", layer1=-3), ['"neurons.layer1"', "-3"]),
    "neurons-float": (_map("neurons", layer1=2.5), ['"neurons.layer1"', "2.5"]),
    "neurons-bool": (_map("neurons", layer1=True), ['"neurons.layer1"', "True"]),
    "epochs-zero": (_with(epochs=0), ['"epochs"', "got 0"]),
    "epochs-negative": (_with(epochs=-1), ['"epochs"', "got -1"]),
    "epochs-bool": (_with(epochs=True), ['"epochs"', "True"]),
    "epochs-string": (_with(epochs="10"), ['"epochs"', "'10'"]),
    "layers-zero": (_with(layers=0), ['"layers"', "got 0"]),
    "layers-negative": (_with(layers=-2), ['"layers"', "got -2"]),
    "layers-bool": (_with(layers=True), ['"layers"', "True"]),
    "lr-zero": (_with(learning_rate=0), ['"learning_rate"', "got 0"]),
    "lr-negative": (_with(learning_rate=-0.01), ['"learning_rate"', "-0.01"]),
    "lr-eleven": (_with(learning_rate=11), ['"learning_rate"', "got 11"]),
    "lr-nan": (_with(learning_rate=math.nan), ['"learning_rate"', "nan"]),
    "lr-inf": (_with(learning_rate=math.inf), ['"learning_rate"', "inf"]),
    "lr-string": (_with(learning_rate="0.01"), ['"learning_rate"', "'0.01'"]),
    "lr-bool": (_with(learning_rate=True), ['"learning_rate"', "True"]),
    "last-layer-relu": (_map("activations", layer2="relu"), ["last layer", "layer2", "sigmoid"]),
    "last-layer-two-neurons": (_map("neurons", layer2=2), ["last layer", "got 2"]),
    "per-task-zero": (_with(neurons_per_task=0), ['"neurons_per_task"', "got 0"]),
    "per-task-bool": (_with(neurons_per_task=True), ['"neurons_per_task"', "True"]),
    "seed-negative": (_with(seed=-1), ['"seed"', "-1"]),
    "seed-bool": (_with(seed=False), ['"seed"', "False"]),
    "initialization-unknown": (_with(initialization="glorot"), ['"initialization"', "glorot"]),
    "batch-zero": (_with(batch_size=0), ['"batch_size"', "got 0"]),
    "batch-float": (_with(batch_size=16.5), ['"batch_size"', "16.5"]),
    "shuffle-seed-negative": (_with(shuffle_seed=-1), ['"shuffle_seed"', "-1"]),
    "optimizer-unknown": (_with(optimizer={"name": "adagrad"}), ['"optimizer"', "adagrad"]),
    "optimizer-a-string": (_with(optimizer="adam"), ['"optimizer"', "'adam'"]),
    "optimizer-beta-one": (_with(optimizer={"name": "momentum", "beta": 1}), ['"optimizer.beta"']),
    "optimizer-epsilon-zero": (
        _with(optimizer={"name": "adam", "epsilon": 0}),
        ['"optimizer.epsilon"', "got 0"],
    ),
    "optimizer-field-of-another": (
        _with(optimizer={"name": "momentum", "beta1": 0.9}),
        ['"optimizer"', "'beta1'"],
    ),
    "l2-negative": (_with(l2=-0.1), ['"l2"', "-0.1"]),
    "l2-nan": (_with(l2=math.nan), ['"l2"', "nan"]),
    "decay-no-rate": (_with(learning_rate_decay={"every": 10}), ['"learning_rate_decay.rate"']),
    "decay-every-zero": (
        _with(learning_rate_decay={"rate": 1, "every": 0}),
        ['"learning_rate_decay.every"', "got 0"],
    ),
    "validation-zero": (_with(validation=0), ['"validation"', "got 0"]),
    "validation-too-large": (_with(validation=0.6), ['"validation"', "0.6"]),
    "early-stopping-without-validation": (
        _with(early_stopping={"patience": 5}),
        ['"early_stopping"', '"validation"'],
    ),
    "patience-zero": (
        _with(validation=0.2, early_stopping={"patience": 0}),
        ['"early_stopping.patience"', "got 0"],
    ),
    "image-size-zero": (_with(image_size=0), ['"image_size"', "got 0"]),
    "a-list": ([SEED], ["expected a JSON object", "list"]),
    "a-number": (3, ["expected a JSON object", "int"]),
}


@pytest.mark.parametrize(("raw", "fragments"), INVALID.values(), ids=INVALID.keys())
def test_invalid_parameters_name_the_field(raw: Any, fragments: list[str]) -> None:
    with pytest.raises(ParametersError) as info:
        Parameters.from_dict(raw)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(("raw", "fragments"), INVALID.values(), ids=INVALID.keys())
def test_invalid_file_is_named_in_the_message(
    tmp_path: Path, raw: Any, fragments: list[str]
) -> None:
    path = tmp_path / "params.json"
    path.write_text(json.dumps(raw), encoding="utf-8")  # NaN and Infinity as Python writes them
    with pytest.raises(ParametersError) as info:
        Parameters.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON (line 1, column 1"),
        ('{"epochs": 10,', "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('"text"', "expected a JSON object, got str"),
        ("null", "expected a JSON object, got NoneType"),
    ],
)
def test_wrong_json_text(text: str, fragment: str) -> None:
    with pytest.raises(ParametersError) as info:
        Parameters.from_json(text, source="p.json")
    assert str(info.value).startswith("p.json: ")
    assert fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(ParametersError, match="no such parameters file") as info:
        Parameters.load(path)
    assert str(path) in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    # A folder where a file is expected: cannot be read, whoever runs the test (root included).
    with pytest.raises(ParametersError, match="cannot be read") as info:
        Parameters.load(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"epochs": 10, "\xe9": 1}')
    with pytest.raises(ParametersError, match="cannot be read"):
        Parameters.load(path)


def test_optional_fields_are_accepted() -> None:
    p = Parameters.from_dict(
        _with(seed=0, initialization="he", neurons_per_task=4, learning_rate=10)
    )
    assert (p.seed, p.initialization, p.neurons_per_task, p.learning_rate) == (0, "he", 4, 10.0)
    assert isinstance(p.learning_rate, float)


# --- shards ----------------------------------------------------------------------------------


def _net(neurons: int, per_task: int) -> Parameters:
    raw = _map("neurons", layer1=neurons)
    raw["neurons_per_task"] = per_task
    return Parameters.from_dict(raw)


def test_shards_cover_the_layer_in_neuron_order() -> None:
    p = _net(7, 3)
    assert p.shards(1) == (Shard(1, 0, 0, 3), Shard(1, 1, 3, 6), Shard(1, 2, 6, 7))
    assert p.shards(2) == (Shard(2, 0, 0, 1),)
    assert p.shard(1, 2) == Shard(1, 2, 6, 7)


@pytest.mark.parametrize(
    ("neurons", "per_task", "count"), [(3, 1, 3), (3, 3, 1), (3, 5, 1), (10, 4, 3), (4096, 8, 512)]
)
def test_shards_partition_the_layer(neurons: int, per_task: int, count: int) -> None:
    shards = _net(neurons, per_task).shards(1)
    assert len(shards) == count
    assert [s.index for s in shards] == list(range(count))
    assert shards[0].lo == 0 and shards[-1].hi == neurons
    assert all(a.hi == b.lo for a, b in itertools.pairwise(shards))
    assert all(0 < s.hi - s.lo <= per_task for s in shards)


@pytest.mark.parametrize(("layer", "shard"), [(0, 0), (3, 0), (-1, 0), (1, 3), (1, -1), (2, 1)])
def test_shard_out_of_range(layer: int, shard: int) -> None:
    with pytest.raises(IndexError):
        _net(7, 3).shard(layer, shard)


# --- round trips -----------------------------------------------------------------------------


def test_round_trip_to_dict_and_json() -> None:
    p = Parameters.from_dict(
        _with(seed=5, initialization="xavier", neurons_per_task=2, learning_rate=0.1 + 0.2)
    )
    d = p.to_dict()
    assert d["activations"] == SEED["activations"] and d["neurons"] == SEED["neurons"]
    assert Parameters.from_dict(d) == p
    assert Parameters.from_json(p.to_json()) == p
    assert Parameters.from_json(p.to_json()).learning_rate == 0.1 + 0.2  # bit for bit


def test_seed_file_round_trips() -> None:
    p = Parameters.load(SEED_FILE)
    assert p.to_dict() == {**SEED, "seed": 1, "initialization": "scaled", "neurons_per_task": 1}
    assert Parameters.from_json(p.to_json()) == p


def test_with_epochs_changes_only_epochs_and_validates() -> None:
    p = Parameters.load(SEED_FILE)
    q = p.with_epochs(2)
    assert q.epochs == 2 and q.to_dict() == {**p.to_dict(), "epochs": 2}
    with pytest.raises(ParametersError, match='"epochs"'):
        p.with_epochs(0)


def test_learning_fields_round_trip_and_absent_ones_stay_absent() -> None:
    raw = _with(
        batch_size=64,
        shuffle_seed=3,
        optimizer={"name": "adam", "beta1": 0.8},
        l2=0.7,
        learning_rate_decay={"rate": 1, "every": 100},
        validation=0.2,
        early_stopping={"patience": 10},
        image_size=32,
    )
    p = Parameters.from_dict(raw)
    assert p.training.optimizer.beta1 == 0.8 and p.training.optimizer.beta2 == 0.999
    assert Parameters.from_json(p.to_json()) == p
    assert p.to_dict()["optimizer"] == {
        "name": "adam",
        "beta1": 0.8,
        "beta2": 0.999,
        "epsilon": 1e-8,
    }
    assert p.training.learning_rate(0.1, 250) == pytest.approx(0.1 / 3)
    seed = Parameters.from_dict(SEED)
    assert set(seed.to_dict()) == {*SEED, "seed", "initialization", "neurons_per_task"}
    assert seed.training.learning_rate(0.0075, 10**6) == 0.0075  # the same float, no decay


def test_a_step_that_cannot_fit_one_execution_is_refused() -> None:
    """One step of 4,096 one-neuron shards is far over an execution's event budget; the error
    names the limit, the shard count and a neurons_per_task that would fit."""
    raw = _with(layers=2, neurons={"layer1": 4096, "layer2": 1})
    with pytest.raises(ParametersError) as info:
        Parameters.from_dict(raw)
    message = str(info.value)
    assert "4097 shards" in message and "15000-event budget" in message
    fits = int(message.rsplit('"neurons_per_task": ', 1)[1].split()[0])
    Parameters.from_dict({**raw, "neurons_per_task": fits})  # that one fits
    with pytest.raises(ParametersError):
        Parameters.from_dict({**raw, "neurons_per_task": fits - 1})


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"epochs": 10, "epochs": 20}', '"epochs"'),
        ('{"neurons": {"layer1": 3, "layer1": 4}}', '"layer1"'),
    ],
)
def test_a_field_named_twice_is_refused(text: str, field: str) -> None:
    """json.loads would keep the last value without a word."""
    raw = json.dumps(SEED)[:-1] + ", " + text[1:]  # the seed, then the repeated fields
    with pytest.raises(ParametersError) as info:
        Parameters.from_json(raw, source="p.json")
    message = str(info.value)
    assert message.startswith("p.json: ") and field in message and "twice" in message


def test_the_documented_shuffle_seed_range_is_the_validated_one() -> None:
    """docs/parameters.md states the largest shuffle_seed; that one is accepted, the next is
    refused, and every epoch's seed (shuffle_seed + e + 1) is one numpy accepts."""
    import re

    import numpy as np

    from snn.training import MAX_SHUFFLE_SEED

    docs = (ROOT / "docs" / "parameters.md").read_text(encoding="utf-8")
    row = next(line for line in docs.splitlines() if line.startswith("| `shuffle_seed` |"))
    found = re.search(r"0 to ([\d,]+)", row)
    assert found is not None, row
    largest = int(found.group(1).replace(",", ""))
    assert largest == MAX_SHUFFLE_SEED
    assert Parameters.from_dict({**SEED, "shuffle_seed": largest}).training.shuffle_seed == largest
    with pytest.raises(ParametersError, match='"shuffle_seed"'):
        Parameters.from_dict({**SEED, "shuffle_seed": largest + 1})
    np.random.RandomState(largest + 1_000_000)  # the last epoch's seed of the longest run
