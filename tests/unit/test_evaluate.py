"""`snn evaluate`: accuracy and the confusion matrix's rates on both splits, the same numbers as
training reported, stored in the run folder's metrics.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from snn.cli import main
from snn.commands.evaluate import scores
from snn.data import synthetic_images, write_h5_pair
from snn.parameters import Parameters
from snn.predict import read_weights
from snn.report import model_bytes
from tests.helpers import huge_h5_pair, train_run


def small_network(epochs: int = 30) -> Parameters:
    return Parameters.from_dict(
        {
            "epochs": epochs,
            "layers": 2,
            "activations": {"layer1": "relu", "layer2": "sigmoid"},
            "neurons": {"layer1": 4, "layer2": 1},
            "learning_rate": 0.5,
            "initialization": "xavier",
        }
    )


@pytest.fixture
def run(tmp_path: Path, synthetic_dir: Path) -> Path:
    return train_run(tmp_path / "run", small_network(), synthetic_dir, "evaluated")


def test_scores_from_a_known_confusion_matrix() -> None:
    Y = np.array([[1, 1, 1, 0, 0, 0, 0, 1]], dtype=float)
    AL = np.array([[0.9, 0.8, 0.2, 0.7, 0.1, 0.4, 0.3, 0.6]])  # TP 3, FN 1, FP 1, TN 3
    s = scores(AL, Y)
    assert s["confusion_matrix"] == {
        "true_positive": 3,
        "false_positive": 1,
        "true_negative": 3,
        "false_negative": 1,
    }
    assert (s["examples"], s["correct"], s["accuracy"]) == (8, 6, 0.75)
    assert s["sensitivity"] == 3 / 4 and s["specificity"] == 3 / 4
    assert s["precision"] == 3 / 4 and s["f1"] == pytest.approx(0.75)


def test_rates_without_a_denominator_are_none() -> None:
    Y = np.zeros((1, 4))
    s = scores(np.full((1, 4), 0.1), Y)  # no cats, none predicted
    assert s["sensitivity"] is None and s["precision"] is None and s["f1"] is None
    assert s["specificity"] == 1.0 and s["accuracy"] == 1.0


def test_evaluate_matches_training_and_writes_metrics(
    run: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", "--model", str(run), "--data", str(synthetic_dir)]) == 0
    out = capsys.readouterr().out
    assert "sensitivity (recall)" in out and "specificity" in out and "F1" in out
    metrics = json.loads((run / "metrics.json").read_text())
    evaluation = metrics.pop("evaluation")
    assert metrics == before  # nothing else changed
    assert evaluation["data"] == str(synthetic_dir)
    assert evaluation["train"]["accuracy"] == before["train_accuracy"]
    assert evaluation["test"]["accuracy"] == before["test_accuracy"]
    assert evaluation["test"]["confusion_matrix"] == before["confusion_matrix"]
    assert evaluation["train"]["examples"] == 40 and evaluation["test"]["examples"] == 12
    # again: the same numbers, replaced in place
    assert main(["evaluate", "--model", str(run / "model.npz"), "--data", str(synthetic_dir)]) == 0
    assert json.loads((run / "metrics.json").read_text())["evaluation"] == evaluation


def test_a_bare_model_is_evaluated_but_nothing_written(
    run: Path, tmp_path: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "elsewhere" / "model.npz"
    bare.parent.mkdir()
    shutil.copy(run / "model.npz", bare)
    assert main(["evaluate", "--model", str(bare), "--data", str(synthetic_dir)]) == 0
    assert "written to" not in capsys.readouterr().out
    assert sorted(p.name for p in bare.parent.iterdir()) == ["model.npz"]


def test_bad_inputs_are_one_line_errors(
    run: Path,
    tmp_path: Path,
    synthetic_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    other_size = write_h5_pair(tmp_path / "five", *synthetic_images(size=5))
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not an npz")
    huge = huge_h5_pair(tmp_path / "huge")  # declares 114 GiB of pictures in a few KB
    cases = [
        (["evaluate", "--data", str(synthetic_dir)], "no model"),  # no runs/ here
        (["evaluate", "--model", str(empty), "--data", str(synthetic_dir)], "no model.npz"),
        (["evaluate", "--model", str(corrupt), "--data", str(synthetic_dir)], "not a readable"),
        (["evaluate", "--model", str(run), "--data", str(tmp_path / "nodata")], "no such data"),
        (["evaluate", "--model", str(run), "--data", str(other_size)], "the model takes 48"),
        (["evaluate", "--model", str(run), "--data", str(huge)], "over the limit"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert "evaluation" not in json.loads((run / "metrics.json").read_text())


def test_a_diverged_model_is_refused_and_nothing_written(
    run: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = read_weights(run / "model.npz")
    weights[0][1][2, 0] = np.nan
    (run / "model.npz").write_bytes(model_bytes(weights))
    before = (run / "metrics.json").read_bytes()
    assert main(["evaluate", "--model", str(run), "--data", str(synthetic_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"snn: error: {run / 'model.npz'}: b1 holds NaN")
    assert len(captured.err.strip().splitlines()) == 1
    assert (run / "metrics.json").read_bytes() == before
