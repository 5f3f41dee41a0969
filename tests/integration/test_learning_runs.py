"""Beyond full-batch gradient descent, every option runs the SNN way: each engine (direct, local,
AWS on the emulated stack) gives the same costs and weights at the same sharding; a run with
Adam and mini-batches resumed after a failure, or hit by injected faults, ends bit-identical to a
clean one; early stopping stops when the validation cost rises and keeps the best epoch; and a
folder of pictures trains a model that predicts with the folder's class names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from snn import network as nn
from snn.cli import main
from snn.data import write_h5_pair
from snn.engines import aws, direct, local
from snn.errors import RunFailed
from snn.run_folder import RunFolder
from tests.helpers import ROOT, assert_same_run, deployed, network, spec, with_handler

pytestmark = pytest.mark.xdist_group("embedded")

EVERYTHING = {
    "batch_size": 16,
    "optimizer": {"name": "adam"},
    "l2": 0.1,
    "learning_rate_decay": {"rate": 0.5, "every": 2},
    "validation": 0.2,
}


def learner(**fields: Any) -> Any:
    return network(
        [5, 3, 1],
        ["relu", "tanh", "sigmoid"],
        epochs=4,
        initialization="xavier",
        neurons_per_task=2,
        **fields,
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"batch_size": 7},
        {"optimizer": {"name": "momentum", "beta": 0.8}, "batch_size": 16},
        {"optimizer": {"name": "rmsprop"}},
        {"l2": 0.7, "learning_rate_decay": {"rate": 1.0, "every": 1}},
        EVERYTHING,
    ],
    ids=["mini-batches", "momentum", "rmsprop", "l2-decay", "everything"],
)
@pytest.mark.slow
def test_local_equals_direct(fields: dict[str, Any], synthetic_dir: Path) -> None:
    p = learner(**fields)
    assert_same_run(local.train(spec(p, synthetic_dir)), direct.train(spec(p, synthetic_dir)))


@pytest.mark.parametrize(
    "fields",
    [
        EVERYTHING,
        {
            "optimizer": {"name": "momentum"},
            "batch_size": 10,
            "validation": 0.25,
            "early_stopping": {"patience": 1},
        },
    ],
    ids=["adam-l2-decay-validation", "momentum-early-stopping"],
)
@pytest.mark.slow
def test_aws_engine_equals_direct(
    fields: dict[str, Any], synthetic_dir: Path, aws_env: None
) -> None:
    """The AWS engine on a stack whose outputs come from CloudFormation (emulated)."""
    from snn.engines.local import EmbeddedStack

    p = learner(**fields)
    with EmbeddedStack(ROOT / "template.yaml") as embedded:
        on_aws = aws.train(spec(p, synthetic_dir, "on-aws"), deployed(embedded, "snn"))
    assert_same_run(on_aws, direct.train(spec(p, synthetic_dir, "on-aws")))


@pytest.mark.slow
def test_adam_and_mini_batches_resume_bit_identical(tmp_path: Path, synthetic_dir: Path) -> None:
    """Commit breaks at epoch 2 (mid-run, after a mini-batch of that epoch): the run saved there
    resumes with the optimizer's state and the epoch's batch costs, and ends as a clean run."""
    template = with_handler(tmp_path, "commit", "tests.faulty_handlers.commit_fails_at_epoch_2")
    p = learner(**EVERYTHING)
    with RunFolder(tmp_path / "run") as folder, pytest.raises(RunFailed):
        local.train(spec(p, synthetic_dir, folder=folder), template)
    saved = json.loads((tmp_path / "run" / "resume" / "state.json").read_text())
    assert saved["record"]["committed_epoch"] == 2
    with RunFolder(tmp_path / "run", new=False) as folder:
        resumed = local.resume(spec(p, synthetic_dir, folder=folder), ROOT / "template.yaml")
    assert_same_run(resumed, direct.train(spec(p, synthetic_dir)))


@pytest.mark.slow
def test_adam_and_mini_batches_under_injected_faults(synthetic_dir: Path) -> None:
    p = learner(**EVERYTHING)
    faulty = local.train(spec(p, synthetic_dir), ROOT / "template.yaml", fault_rate=0.05)
    assert sum(faulty.extra["injected_faults"].values()) > 0
    assert_same_run(faulty, direct.train(spec(p, synthetic_dir)))


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    """The validation examples are labelled against the pattern the training examples teach:
    the better the network learns, the worse the validation cost, so it is best after the first
    epoch, the run stops `patience` epochs later, and the model kept is the first epoch's."""
    rng = np.random.default_rng(4)
    m, size = 60, 4
    labels = np.arange(m) % 2
    means = np.array([60.0, 190.0])
    images = np.clip(
        means[labels][:, None, None, None] + rng.normal(0, 8, (m, size, size, 3)), 0, 255
    ).astype(np.uint8)
    fields = {"validation": 0.25, "early_stopping": {"patience": 3}, "shuffle_seed": 7}
    _, held = nn.validation_split(m, 0.25, 7)
    flipped = labels.copy()
    flipped[held] = 1 - flipped[held]
    data = write_h5_pair(
        tmp_path / "data", images.astype(np.uint8), flipped, images[:8].astype(np.uint8), labels[:8]
    )
    p = network([4, 1], epochs=40, learning_rate=0.05, initialization="xavier", **fields)
    result = direct.train(spec(p, data))
    costs = result.extra["validation_costs"]
    best = int(np.argmin(costs))
    assert costs[-1] > costs[best]  # it rose
    assert result.extra["best_epoch"] == best
    assert len(result.costs) == best + 1 + 3 < 40  # stopped patience epochs after the best
    assert "early stopping" in result.extra["stopped_early"]
    assert result.extra["model_epoch"] == best
    # the model kept is the best epoch's: its validation cost is the best one
    X, Y = images[held].reshape(len(held), -1).T / 255.0, flipped[held].reshape(1, -1).astype(float)
    activations = ("relu", "sigmoid")
    assert nn.cost(nn.forward(result.weights, activations, X), Y) == pytest.approx(
        costs[best], rel=1e-12
    )
    assert_same_run(local.train(spec(p, data)), result)


def write_pictures(folder: Path, data_dir: Path) -> None:
    """The real test set's pictures as PNG files in class folders, train/ and test/."""
    import h5py

    with h5py.File(data_dir / "test_catvnoncat.h5") as h5:
        images, labels = h5["test_set_x"][()], h5["test_set_y"][()]
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        split = "test" if k % 5 == 0 else "train"
        target = folder / split / ("cat" if label else "not-a-cat")
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{k:02d}.png")


@pytest.mark.slow
def test_a_folder_of_pictures_trains_and_predicts_with_its_class_names(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pictures = tmp_path / "pictures"
    write_pictures(pictures, data_dir)
    params = tmp_path / "p.json"
    params.write_text(
        network([4, 1], epochs=20, learning_rate=0.01, image_size=32, batch_size=16).to_json()
    )
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--params",
            str(params),
            "--data",
            str(pictures),
            "--out",
            str(out),
            "--quiet",
            "--template",
            str(ROOT / "template.yaml"),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["costs"]) == 20
    capsys.readouterr()
    cat, other = (
        sorted((pictures / "test" / "cat").iterdir())[0],
        sorted((pictures / "test" / "not-a-cat").iterdir())[0],
    )
    assert main(["predict", "--model", str(out), "--json", str(cat), str(other)]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert {a["label"] for a in answers} <= {"cat", "not-a-cat"}
    # evaluate and inspect read the folder as the run did: its test split, its picture size
    assert main(["evaluate", "--model", str(out), "--data", str(pictures)]) == 0
    assert "not-a-cat as cat" in capsys.readouterr().out
    evaluation = json.loads((out / "metrics.json").read_text())["evaluation"]
    assert evaluation["train"]["accuracy"] == metrics["train_accuracy"]
    assert evaluation["test"]["accuracy"] == metrics["test_accuracy"]
    assert main(["inspect", str(out), "--data", str(pictures), "--layer", "1"]) == 0
    assert (out / "inspect" / "layer1_weights.png").is_file()
    # a folder with a file that is not a picture: one line naming it, and no run
    (pictures / "train" / "cat" / "notes.txt").write_text("not a picture")
    assert (
        main(
            [
                "train",
                "--params",
                str(params),
                "--data",
                str(pictures),
                "--out",
                str(tmp_path / "no"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "notes.txt" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_an_npz_of_values_trains_the_same_on_every_engine_and_is_evaluated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Numbers, not pictures: the seeded test split is the same on both engines; evaluate reads
    the file as the run did; pictures are refused by a model of values."""
    rng = np.random.default_rng(4)
    y = np.arange(60) % 2
    data = tmp_path / "mine.npz"
    np.savez(data, train_x=rng.normal(size=(60, 6)) + y[:, None], train_y=y)
    p = network([3, 1], epochs=6, learning_rate=0.1, batch_size=16, shuffle_seed=5)
    embedded = local.train(spec(p, data))
    assert_same_run(embedded, direct.train(spec(p, data)))
    out = tmp_path / "run"
    params = tmp_path / "p.json"
    params.write_text(p.to_json())
    assert main(["train", "--params", str(params), "--data", str(data), "--out", str(out),
                 "--engine", "direct", "--quiet"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_split"] == {"fraction": 0.2, "seed": 5, "examples": 12}
    assert metrics["costs"] == embedded.costs
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(data)]) == 0
    evaluation = json.loads((out / "metrics.json").read_text())["evaluation"]
    assert evaluation["test"]["examples"] == 12
    assert evaluation["test"]["accuracy"] == metrics["test_accuracy"]
    assert main(["inspect", str(out), "--data", str(data)]) == 0
    assert not (out / "inspect" / "layer1_weights.png").exists()  # values, not pictures
    picture = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(picture)
    capsys.readouterr()
    assert main(["predict", "--model", str(out), str(picture)]) != 0
    assert "not pictures" in capsys.readouterr().err


def confident_data(path: Path) -> Path:
    """Two classes far apart: one step of learning rate 10 makes a 2-1 network's margins over
    90, its outputs exactly 1 (and near 0), 100 % right."""
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = rng.uniform(5, 10, size=(40, 2)) * np.where(y[:, None] == 1, 1.0, -1.0)
    np.savez(path, train_x=x, train_y=y, test_x=x[:10], test_y=y[:10])
    return path


CONFIDENT = {
    "full-batch": {},
    "mini-batches-and-validation": {"batch_size": 16, "validation": 0.25},
}


@pytest.mark.parametrize("fields", CONFIDENT.values(), ids=CONFIDENT.keys())
def test_a_correct_confident_model_trains_on_and_is_kept(
    tmp_path: Path, fields: dict[str, Any]
) -> None:
    """Its cost, 0 log 0 in the textbook formula, is computed from Z: finite and tiny, not a
    divergence."""
    data = confident_data(tmp_path / "far.npz")
    p = network([1], ["sigmoid"], epochs=4, learning_rate=10, **fields)
    result = direct.train(spec(p, data))
    assert all(np.isfinite(result.costs)) and result.costs[-1] < 1e-100
    assert result.train_accuracy == 1.0 and result.test_accuracy == 1.0
    W, b = result.weights[0]
    X = np.load(data)["train_x"].T
    assert np.max(nn.sigmoid(W @ X + b)) == 1.0  # the outputs are saturated
    if "validation" in fields:
        assert len(result.extra["validation_costs"]) == 4
        assert all(np.isfinite(result.extra["validation_costs"]))


@pytest.mark.slow
def test_a_correct_confident_model_is_the_same_on_the_local_engine(tmp_path: Path) -> None:
    """The Loss function reads Z[L] from the bucket when the output is saturated."""
    data = confident_data(tmp_path / "far.npz")
    p = network([1], ["sigmoid"], epochs=3, learning_rate=10)
    assert_same_run(local.train(spec(p, data)), direct.train(spec(p, data)))
