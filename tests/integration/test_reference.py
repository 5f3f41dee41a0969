"""The published reference run (12288-7-1, lr 0.0075, 2,500 epochs, seed 1, randn * 0.01),
reproduced through the command line with the direct engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from snn.cli import main
from snn.engines import direct
from tests.helpers import reference, spec

REFERENCE_COSTS = {
    0: 0.693049735659989,
    100: 0.6464320953428849,
    200: 0.6325140647912677,
    500: 0.515830477276473,
    1000: 0.33942815383664116,
    1500: 0.1744831811255665,
    2000: 0.07439078704319078,
    2400: 0.04855478562877014,
}


def assert_reference_costs(costs: list[float]) -> None:
    for epoch, expected in REFERENCE_COSTS.items():
        assert costs[epoch] == pytest.approx(expected, rel=1e-9, abs=0), epoch


def test_the_reference_is_the_published_network() -> None:
    p = reference()
    assert (p.epochs, p.layers, p.neurons, p.learning_rate) == (2500, 2, (7, 1), 0.0075)
    assert p.activations == ("relu", "sigmoid") and p.neurons_per_task == 7


@pytest.mark.slow
def test_cli_direct_engine_reproduces_the_reference(tmp_path: Path, data_dir: Path) -> None:
    params = tmp_path / "reference.json"
    params.write_text(reference().to_json())
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--engine",
            "direct",
            "--params",
            str(params),
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["costs"]) == 2500
    assert_reference_costs(metrics["costs"])
    assert metrics["train_accuracy"] == 1.0
    assert metrics["test_accuracy"] == 0.72
    cm = metrics["confusion_matrix"]
    assert cm["true_positive"] + cm["true_negative"] == 36
    assert sum(cm.values()) == 50
    with np.load(out / "model.npz") as model:
        assert sorted(model.files) == ["W1", "W2", "b1", "b2", "info"]  # info: what it takes
        assert model["W1"].shape == (7, 12288)
    assert (out / "cost.png").stat().st_size > 1000


@pytest.mark.slow
def test_one_neuron_per_task_reproduces_the_reference(data_dir: Path) -> None:
    """Slicing a layer into single neurons changes the order of some sums (see network.py), so
    the costs agree with the reference to 1e-9 relative, not bit for bit."""
    result = direct.train(spec(reference(neurons_per_task=1), data_dir, "ref1"))
    assert_reference_costs(result.costs)
    assert (result.train_accuracy, result.test_accuracy) == (1.0, 0.72)
