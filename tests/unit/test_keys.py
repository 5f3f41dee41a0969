"""The key layout (snn.keys): where each object of a run lives in S3 (what it keeps under runs/,
each step's work under scratch/), the run table's item keys, the names of a run's executions, and
the validation of every part that comes from outside."""

from __future__ import annotations

from typing import Any

import pytest

from snn import keys
from snn.errors import EventError

SHA = "0123456789abcdef" * 4


def test_what_a_run_keeps_is_under_runs() -> None:
    assert keys.run_prefix("run-1") == "runs/run-1/"
    assert keys.parameters_key("r") == "runs/r/parameters.json"
    assert keys.data_key("run-1", "train", "x") == "runs/run-1/data/train_x.npy"
    assert keys.data_key("run-1", "test", "y") == "runs/run-1/data/test_y.npy"
    assert (
        keys.neuron_stats_key("r", 42, 2, 7)
        == "runs/r/neurons/epoch0000042/layer002/shard00007.npy"
    )
    assert keys.model_key("r") == "runs/r/model.npz"
    assert keys.neurons_key("r") == "runs/r/neurons.npz"


def test_each_steps_work_is_under_scratch() -> None:
    assert keys.scratch_prefix("run-1") == "scratch/run-1/"
    assert keys.step_prefix("run-1", 12) == "scratch/run-1/step/000000012/"
    assert (
        keys.matrix_key("run-1", 3, "W", 2, 5)
        == "scratch/run-1/step/000000003/W/layer002/shard00005.npy"
    )
    assert (
        keys.matrix_key("r", 0, "dA_prev", 10, 0)
        == "scratch/r/step/000000000/dA_prev/layer010/shard00000.npy"
    )
    assert (
        keys.matrix_key("r", 123_456_789, "sW", 1, 2)
        == "scratch/r/step/123456789/sW/layer001/shard00002.npy"
    )
    assert keys.output_gradient_key("r", 7) == "scratch/r/step/000000007/dAL.npy"


def test_uploads_are_content_addressed() -> None:
    assert keys.upload_key(SHA, "train_catvnoncat.h5") == f"uploads/{SHA}/train_catvnoncat.h5"
    assert keys.check_upload_key("train_key", f"uploads/{SHA}/train_catvnoncat.h5") == SHA


def test_scratch_and_runs_never_overlap() -> None:
    """A lifecycle rule on scratch/ must never reach what a run keeps, and Commit's deletions
    of old epochs (under scratch/) never reach runs/."""
    kept = [
        keys.parameters_key("r"),
        *(keys.data_key("r", split, part) for split in keys.SPLITS for part in "xy"),
        keys.neuron_stats_key("r", 0, 1, 0),
        keys.model_key("r"),
        keys.neurons_key("r"),
    ]
    work = [keys.matrix_key("r", 0, n, 1, 0) for n in keys.MATRIX_NAMES]
    work.append(keys.output_gradient_key("r", 0))
    for key in kept:
        assert key.startswith(keys.run_prefix("r")) and not key.startswith("scratch/"), key
    for key in work:
        assert key.startswith(keys.step_prefix("r", 0)), key
        assert key.startswith(keys.scratch_prefix("r")) and not key.startswith("runs/"), key


def test_matrix_keys_are_under_their_step_prefix_only() -> None:
    for name in keys.MATRIX_NAMES:
        assert keys.matrix_key("r", 4, name, 1, 0).startswith(keys.step_prefix("r", 4))
    assert keys.output_gradient_key("r", 4).startswith(keys.step_prefix("r", 4))
    # 000000001/ is not a prefix of 000000010/ nor of 000000011/
    assert not keys.matrix_key("r", 10, "W", 1, 0).startswith(keys.step_prefix("r", 1))
    assert not keys.matrix_key("r", 11, "W", 1, 0).startswith(keys.step_prefix("r", 1))
    # nor is one run's prefix another's
    assert not keys.matrix_key("r2", 1, "W", 1, 0).startswith(keys.scratch_prefix("r"))
    assert not keys.model_key("r2").startswith(keys.run_prefix("r"))


def test_shard_step_and_epoch_keys_sort_in_numeric_order() -> None:
    shards = [100, 2, 10, 0, 99_999]
    by_key = sorted(shards, key=lambda s: keys.matrix_key("r", 0, "A", 1, s))
    assert by_key == sorted(shards)
    steps = [10, 2, 100, 9_999_999, keys.MAX_STEP]
    by_key = sorted(steps, key=lambda k: keys.matrix_key("r", k, "A", 1, 0))
    assert by_key == sorted(steps)
    epochs = [10, 2, 100, 9_999_999]
    by_key = sorted(epochs, key=lambda e: keys.neuron_stats_key("r", e, 1, 0))
    assert by_key == sorted(epochs)


@pytest.mark.parametrize(
    "run_id", ["", "a/b", "..", "../x", "a b", "x" * 61, "-a", "_a", "a.b", "a\n", None, 7, b"ab"]
)
def test_check_run_id_rejects(run_id: Any) -> None:
    with pytest.raises(EventError, match="invalid run_id"):
        keys.check_run_id(run_id)
    for make in (
        lambda: keys.matrix_key(run_id, 0, "W", 1, 0),
        lambda: keys.parameters_key(run_id),
        lambda: keys.scratch_prefix(run_id),
        lambda: keys.item_key(run_id),
        lambda: keys.execution_name(run_id, 0),
    ):
        with pytest.raises(EventError, match="invalid run_id"):
            make()


@pytest.mark.parametrize("run_id", ["run-1_A", "a", "0", "x" * 60, "A" + "-" * 59])
def test_check_run_id_accepts_1_to_60_characters(run_id: str) -> None:
    assert keys.check_run_id(run_id) == run_id


@pytest.mark.parametrize("epoch", [-1, True, False, 1.0, "0", None, 10_000_000])
def test_bad_epochs_are_rejected(epoch: Any) -> None:
    for make in (
        lambda: keys.cost_entry(epoch),
        lambda: keys.validation_entry(epoch),
        lambda: keys.neuron_stats_key("r", epoch, 1, 0),
        lambda: keys.execution_name("r", epoch),
    ):
        with pytest.raises(EventError, match="invalid epoch"):
            make()


@pytest.mark.parametrize("step", [-1, True, False, 1.0, "0", None, 1_000_000_000])
def test_bad_steps_are_rejected(step: Any) -> None:
    for make in (
        lambda: keys.matrix_key("r", step, "W", 1, 0),
        lambda: keys.step_prefix("r", step),
        lambda: keys.output_gradient_key("r", step),
        lambda: keys.loss_entry(step),
    ):
        with pytest.raises(EventError, match="invalid step"):
            make()


def test_the_largest_indices_are_accepted() -> None:
    assert keys.step_prefix("r", keys.MAX_STEP) == "scratch/r/step/999999999/"
    assert keys.loss_entry(keys.MAX_STEP) == "loss#999999999"
    assert keys.cost_entry(keys.MAX_INDEX) == "cost#9999999"
    assert keys.validation_entry(keys.MAX_INDEX) == "valid#9999999"
    assert keys.execution_name("r", keys.MAX_INDEX, 99_999) == "r-e9999999b99999"


@pytest.mark.parametrize(("layer", "shard"), [(0, 0), (-1, 0), (True, 0), (1, -1), (1, False)])
def test_bad_layers_and_shards_are_rejected(layer: Any, shard: Any) -> None:
    with pytest.raises(EventError):
        keys.matrix_key("r", 0, "W", layer, shard)
    with pytest.raises(EventError):
        keys.neuron_stats_key("r", 0, layer, shard)


def test_the_optimizer_state_and_the_validation_set_have_keys() -> None:
    for name in ("vW", "vb", "sW", "sb"):
        assert keys.matrix_key("r", 1, name, 1, 0).endswith(f"/{name}/layer001/shard00000.npy")
    assert keys.data_key("r", "valid", "y") == "runs/r/data/valid_y.npy"


def test_unknown_names_are_rejected() -> None:
    for name in ("V", "w", "vw", "dZ", "../W", ""):
        with pytest.raises(ValueError, match="unknown matrix"):
            keys.matrix_key("r", 0, name, 1, 0)
    with pytest.raises(ValueError, match="unknown data part"):
        keys.data_key("r", "dev", "x")
    with pytest.raises(ValueError, match="unknown data part"):
        keys.data_key("r", "train", "z")


@pytest.mark.parametrize(
    ("sha256", "name"),
    [
        ("A" * 64, "f.h5"),  # upper-case hex
        ("a" * 63, "f.h5"),  # too short
        ("g" * 64, "f.h5"),  # not hex
        ("a" * 64, "../f.h5"),
        ("a" * 64, "a/b.h5"),
        ("a" * 64, ""),
        ("a" * 64, "x" * 101),
    ],
)
def test_bad_upload_keys_are_rejected(sha256: str, name: str) -> None:
    with pytest.raises(ValueError, match="bad upload key"):
        keys.upload_key(sha256, name)
    with pytest.raises(EventError, match="is not an upload key"):
        keys.check_upload_key("image_key", f"uploads/{sha256}/{name}")


@pytest.mark.parametrize(
    "key",
    [
        keys.model_key("r"),
        f"uploads/{SHA}",
        f"uploads/{SHA}/",
        f"uploads/{SHA}/../runs/r/model.npz",
        f"/uploads/{SHA}/f.h5",
        f"uploads/{SHA}/f.h5\n",
        None,
        7,
    ],
)
def test_check_upload_key_names_the_field(key: Any) -> None:
    with pytest.raises(EventError, match=r"^train_key .* is not an upload key"):
        keys.check_upload_key("train_key", key)


# --- the run table -------------------------------------------------------------------------------


def test_item_keys() -> None:
    assert keys.item_key("r") == {"run_id": {"S": "r"}, "entry": {"S": "run"}}
    assert keys.item_key("r", keys.CLAIM_ENTRY) == {"run_id": {"S": "r"}, "entry": {"S": "claim"}}
    assert keys.item_key("r", keys.cost_entry(3)) == {
        "run_id": {"S": "r"},
        "entry": {"S": "cost#0000003"},
    }


def test_series_entries_sort_by_number_and_read_back() -> None:
    epochs = [12, 3, 0, 2499, 10, 9_999_999]
    for entry in (keys.cost_entry, keys.validation_entry):
        assert sorted(epochs, key=entry) == sorted(epochs)
        assert [keys.number_of_entry(entry(e)) for e in epochs] == epochs
    steps = [*epochs, keys.MAX_STEP]
    assert sorted(steps, key=keys.loss_entry) == sorted(steps)
    assert [keys.number_of_entry(keys.loss_entry(k)) for k in steps] == steps
    assert keys.loss_entry(42) == "loss#000000042"
    assert keys.validation_entry(42) == "valid#0000042"


def test_each_series_is_a_range_that_holds_nothing_else() -> None:
    """A series is read as the range of its entries from the first number to the last: no
    other series, nor the run record, nor the claim, may fall in it."""
    ranges = {
        "cost": (keys.cost_entry(0), keys.cost_entry(keys.MAX_INDEX)),
        "loss": (keys.loss_entry(0), keys.loss_entry(keys.MAX_STEP)),
        "valid": (keys.validation_entry(0), keys.validation_entry(keys.MAX_INDEX)),
    }
    samples = {
        "cost": keys.cost_entry(5),
        "loss": keys.loss_entry(5),
        "valid": keys.validation_entry(5),
        "run": keys.RUN_ENTRY,
        "claim": keys.CLAIM_ENTRY,
    }
    for series, (first, last) in ranges.items():
        inside = {name for name, entry in samples.items() if first <= entry <= last}
        assert inside == {series}, series


# --- executions ----------------------------------------------------------------------------------


def test_execution_names() -> None:
    assert keys.execution_name("run-1", 58) == "run-1-e0000058"
    assert keys.execution_name("run-1", 58, 0) == "run-1-e0000058"
    assert keys.execution_name("run-1", 58, 3) == "run-1-e0000058b00003"
    with pytest.raises(EventError, match="invalid batch"):
        keys.execution_name("r", 0, 100_000)
    assert keys.resumed_execution_name("run-1", 1_700_000_000) == "run-1-r1700000000"
    with pytest.raises(ValueError, match="bad time stamp"):
        keys.resumed_execution_name("r", -1)
    with pytest.raises(ValueError, match="bad time stamp"):
        keys.resumed_execution_name("r", 10**10)
    with pytest.raises(EventError, match="epoch"):
        keys.execution_name("r", -1)


def test_the_longest_run_id_makes_valid_execution_names() -> None:
    """Run ids stop at 60 characters so that the names of its executions stay within the 80
    Step Functions allows."""
    run_id = "x" * 60
    for name in (
        run_id,
        keys.execution_name(run_id, keys.MAX_INDEX),
        keys.execution_name(run_id, keys.MAX_INDEX, 99_999),
        keys.resumed_execution_name(run_id, 10**10 - 1),
    ):
        assert len(name) <= 80
        assert keys.check_execution_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 81, "a b", "a/b", "a:b", None, 3])
def test_check_execution_name_rejects(name: Any) -> None:
    with pytest.raises(EventError, match="invalid execution name"):
        keys.check_execution_name(name)


def test_an_execution_name_leads_back_to_its_run() -> None:
    """ExecutionFailed finds the run of an execution from its name when EventBridge leaves the
    input out of a large event."""
    from snn.handlers.execution_failed import SUFFIX

    for run_id in ("sample", "run-e0000001x", "r-r5", "x" * 60):
        for name in (
            run_id,
            keys.execution_name(run_id, 58),
            keys.execution_name(run_id, 58, 7),
            keys.resumed_execution_name(run_id, 1_700_000_000),
        ):
            if name == run_id and SUFFIX.search(run_id):
                continue  # a run id that itself ends like a suffix: the input names it
            assert SUFFIX.sub("", name) == run_id, name
