"""`snn train` refuses bad input with one line, exit code 2, and no run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snn.cli import main

SEED = {
    "epochs": 2,
    "layers": 2,
    "activations": {"layer1": "relu", "layer2": "sigmoid"},
    "neurons": {"layer1": 3, "layer2": 1},
    "learning_rate": 0.0075,
}


def train(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["train", "--engine", "direct", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({**SEED, "layers": 3}), '"activations" must name exactly layer1..layer3'),
        (json.dumps({**SEED, "learning_rate": 0}), '"learning_rate" must be a number in (0, 10]'),
        (
            json.dumps({**SEED, "activations": {"layer1": "relu", "layer2": "softmax"}}),
            '"activations.layer2" must be one of',
        ),
        (json.dumps({k: v for k, v in SEED.items() if k != "epochs"}), "missing required field"),
    ],
)
def test_malformed_parameters(tmp_path, capsys, synthetic_dir, content, named) -> None:
    params = tmp_path / "p.json"
    params.write_text(content)
    code, err = train(tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir))
    assert code == 2
    assert named in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_missing_parameters_file(tmp_path, capsys) -> None:
    code, err = train(tmp_path, capsys, "--params", str(tmp_path / "nope.json"))
    assert code == 2 and "no such parameters file" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make", ["missing", "empty", "not_h5"])
def test_bad_data_folder(tmp_path, capsys, make) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps(SEED))
    data = tmp_path / "data"
    if make != "missing":
        data.mkdir()
    if make == "not_h5":
        (data / "train_catvnoncat.h5").write_text("hello")
        (data / "test_catvnoncat.h5").write_text("hello")
    code, err = train(tmp_path, capsys, "--params", str(params), "--data", str(data))
    assert code == 2
    assert "train_catvnoncat.h5" in err or str(data) in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--run-id", "../escape"], "invalid run_id"),
        (["--run-id", "a/b"], "invalid run_id"),
    ],
)
def test_bad_flags(tmp_path, capsys, synthetic_dir, args, named) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps(SEED))
    code, err = train(
        tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir), *args
    )
    assert code == 2 and named in err
    assert not (tmp_path / "run").exists()


def test_an_existing_run_folder_is_not_overwritten(tmp_path, capsys, synthetic_dir) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps(SEED))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    code, err = train(tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir))
    assert code == 2 and "exists and is not empty" in err
    assert (tmp_path / "run" / "metrics.json").read_text() == "{}"


def test_a_good_run_writes_the_whole_folder(tmp_path, capsys, synthetic_dir) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps(SEED))
    code, _ = train(
        tmp_path, capsys, "--params", str(params), "--data", str(synthetic_dir), "--quiet"
    )
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["cost.png", "metrics.json", "model.npz", "neurons.npz"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in (
        "run_id",
        "engine",
        "parameters",
        "costs",
        "train_accuracy",
        "test_accuracy",
        "confusion_matrix",
        "wall_seconds",
    ):
        assert key in metrics
    assert len(metrics["costs"]) == 2
