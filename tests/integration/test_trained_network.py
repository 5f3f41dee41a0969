"""Acceptance: the reference network, trained through the command line, classifies the test set's
pictures as PNG files exactly as `snn evaluate` counts them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snn.cli import main
from tests.helpers import export_test_pictures, reference


@pytest.mark.slow
def test_predict_on_the_test_pictures_agrees_with_evaluate(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "reference.json"
    params.write_text(reference().to_json())  # 12288-7-1, 2,500 epochs, 7 neurons per task
    run = tmp_path / "run"
    train = ["train", "--engine", "direct", "--params", str(params), "--data", str(data_dir)]
    assert main([*train, "--out", str(run), "--quiet"]) == 0

    paths, _, labels = export_test_pictures(data_dir, tmp_path / "pictures")
    capsys.readouterr()
    assert main(["predict", "--model", str(run), "--json", *map(str, paths)]) == 0
    predictions = json.loads(capsys.readouterr().out)
    truth = ["cat" if y == 1 else "non-cat" for y in labels]
    correct = sum(p["label"] == t for p, t in zip(predictions, truth, strict=True))
    assert (correct, len(predictions)) == (36, 50)

    assert main(["evaluate", "--model", str(run), "--data", str(data_dir)]) == 0
    evaluation = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert evaluation["test"]["correct"] == correct
    assert evaluation["test"]["accuracy"] == 0.72
    assert evaluation["train"]["accuracy"] == 1.0
