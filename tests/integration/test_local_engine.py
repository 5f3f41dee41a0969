"""The embedded local engine runs the real state machine with the real handlers, and gives the
direct engine's numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from snn.cli import main
from snn.engines import direct, local, stack
from snn.errors import RunFailed
from snn.parameters import Parameters
from snn.template import TemplateError

from ..conftest import ROOT
from .test_reference import reference


def three_layers(neurons_per_task: int, epochs: int = 4) -> Parameters:
    return Parameters.from_dict(
        {
            "epochs": epochs,
            "layers": 3,
            "activations": {"layer1": "relu", "layer2": "tanh", "layer3": "sigmoid"},
            "neurons": {"layer1": 5, "layer2": 3, "layer3": 1},
            "learning_rate": 0.05,
            "initialization": "xavier",
            "neurons_per_task": neurons_per_task,
        }
    )


def assert_same_run(a, b) -> None:
    assert a.costs == b.costs  # bit for bit
    assert len(a.weights) == len(b.weights)
    for (Wa, ba), (Wb, bb) in zip(a.weights, b.weights, strict=True):
        assert np.array_equal(Wa, Wb)
        assert np.array_equal(ba, bb)
    assert a.train_accuracy == b.train_accuracy
    assert a.test_accuracy == b.test_accuracy


def project_copy(tmp_path: Path) -> Path:
    """template.yaml and statemachine/ in a temporary folder, to change them safely."""
    shutil.copy(ROOT / "template.yaml", tmp_path / "template.yaml")
    shutil.copytree(ROOT / "statemachine", tmp_path / "statemachine")
    return tmp_path / "template.yaml"


def test_cli_default_engine_is_local_and_equals_direct(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the seed's parameters.json and template.yaml, as a user runs it
    a, b = tmp_path / "local", tmp_path / "direct"
    assert main(["train", "--data", str(data_dir), "--out", str(a), "--quiet"]) == 0
    assert (
        main(["train", "--engine", "direct", "--data", str(data_dir), "--out", str(b), "--quiet"])
        == 0
    )
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert ma["engine"] == "local" and mb["engine"] == "direct"
    assert len(ma["costs"]) == 10
    assert ma["costs"] == mb["costs"]
    with np.load(a / "model.npz") as za, np.load(b / "model.npz") as zb:
        for k in ("W1", "b1", "W2", "b2"):
            assert np.array_equal(za[k], zb[k])
    assert sorted(p.name for p in a.iterdir()) == [
        "cost.png",
        "metrics.json",
        "model.npz",
        "neurons.npz",
    ]
    assert (a / "neurons.npz").read_bytes() == (b / "neurons.npz").read_bytes()


@pytest.mark.parametrize("neurons_per_task", [1, 2])
def test_three_layers_on_synthetic_data_equal_direct(
    synthetic_dir: Path, neurons_per_task: int
) -> None:
    from snn.data import load_dataset

    p = three_layers(neurons_per_task)
    got = local.train(p, synthetic_dir, "three", template_path=ROOT / "template.yaml")
    want = direct.train(p, load_dataset(synthetic_dir), "three")
    assert_same_run(got, want)


def test_counts_come_from_the_execution_history(synthetic_dir: Path) -> None:
    p = three_layers(2, epochs=2)
    result = local.train(p, synthetic_dir, "counted", template_path=ROOT / "template.yaml")
    (execution,) = result.extra["executions"]
    # per epoch: shards 3 + 2 + 1 forward (2 tasks each), loss, 6 backward, 6 updates, commit
    per_epoch = 2 * 6 + 1 + 6 + 6 + 1
    assert result.extra["lambda_invocations"] == 2 + 2 * per_epoch  # + init + evaluate
    assert result.extra["lambda_invocations_served"] == result.extra["lambda_invocations"]
    assert execution["status"] == "SUCCEEDED"
    assert (execution["first_epoch"], execution["last_epoch"]) == (0, 1)
    assert execution["history_events"] > result.extra["state_transitions"] > 0


def test_the_engine_runs_the_definition_file_as_it_is(tmp_path: Path, synthetic_dir) -> None:
    """Change the file in a copy: one more state per epoch, and the engine follows it."""
    template = project_copy(tmp_path)
    asl_path = tmp_path / "statemachine" / "training.asl.json"
    asl = json.loads(asl_path.read_text())
    asl["States"]["Loss"]["Next"] = "Checkpoint"
    asl["States"]["Checkpoint"] = {"Type": "Pass", "Next": "Backward"}
    asl_path.write_text(json.dumps(asl))
    p = three_layers(2, epochs=3)
    changed = local.train(p, synthetic_dir, "changed", template_path=template)
    plain = local.train(p, synthetic_dir, "plain", template_path=ROOT / "template.yaml")
    assert changed.extra["state_transitions"] == plain.extra["state_transitions"] + 3
    assert changed.costs == plain.costs


def test_a_failing_stage_fails_the_run_with_its_error(tmp_path: Path, synthetic_dir) -> None:
    template = project_copy(tmp_path)
    asl_path = tmp_path / "statemachine" / "training.asl.json"
    text = asl_path.read_text().replace('"epoch.$": "$.progress.epoch"', '"epoch": 99', 1)
    asl_path.write_text(text)
    with pytest.raises(RunFailed) as failure:
        local.train(three_layers(1), synthetic_dir, "doomed", template_path=template)
    message = str(failure.value)
    assert "run doomed failed" in message
    assert "EventError" in message
    assert "epoch 99" in message
    assert "state: ForwardLinear" in message


def test_cli_reports_a_failed_run_in_a_few_lines(
    tmp_path: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = project_copy(tmp_path)
    asl_path = tmp_path / "statemachine" / "training.asl.json"
    asl_path.write_text(asl_path.read_text().replace('"layer.$": "$.layer"', '"layer": 7', 1))
    params = tmp_path / "p.json"
    params.write_text(three_layers(1).to_json())
    code = main(
        [
            "train",
            "--params",
            str(params),
            "--data",
            str(synthetic_dir),
            "--template",
            str(template),
            "--out",
            str(tmp_path / "run"),
            "--run-id",
            "bad-layer",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    assert "run bad-layer failed" in err and "layer 7" in err
    assert len(err.strip().splitlines()) <= 7
    # no results, only what a resume needs
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["resume"]
    assert "resume it with: snn train --resume" in err


def test_a_state_output_over_256_kb_fails_as_on_aws(tmp_path: Path, synthetic_dir) -> None:
    template = project_copy(tmp_path)
    asl_path = tmp_path / "statemachine" / "training.asl.json"
    asl = json.loads(asl_path.read_text())
    asl["States"]["Loss"]["Next"] = "Bloat"
    asl["States"]["Bloat"] = {
        "Type": "Pass",
        "Result": "x" * (300 * 1024),
        "ResultPath": "$.bloat",
        "Next": "Backward",
    }
    asl_path.write_text(json.dumps(asl))
    with pytest.raises(RunFailed, match=r"States\.DataLimitExceeded"):
        local.train(three_layers(1, epochs=1), synthetic_dir, "big", template_path=template)


def test_the_history_quota_fails_the_run(
    synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "MAX_HISTORY_EVENTS", 200)
    with pytest.raises(RunFailed, match="quota of 200 events"):
        local.train(
            three_layers(1, epochs=50), synthetic_dir, "long", template_path=ROOT / "template.yaml"
        )


def test_functions_with_different_environments_are_refused(tmp_path: Path, synthetic_dir):
    template = project_copy(tmp_path)
    text = template.read_text().replace(
        "Handler: snn.handlers.loss.handler",
        "Handler: snn.handlers.loss.handler\n      Environment:\n        Variables:\n"
        "          LOG_LEVEL: DEBUG",
    )
    template.write_text(text)
    with pytest.raises(TemplateError, match="LOG_LEVEL"):
        local.train(three_layers(1), synthetic_dir, "env", template_path=template)


@pytest.mark.slow
@pytest.mark.parametrize("neurons_per_task", [7, 1])
def test_reference_network_100_epochs_matches_direct(cat_data, data_dir, neurons_per_task):
    p = Parameters.from_dict(reference(epochs=100, neurons_per_task=neurons_per_task))
    got = local.train(p, data_dir, f"ref-{neurons_per_task}", template_path=ROOT / "template.yaml")
    whole_layer = direct.train(p.with_epochs(100), cat_data, "ref")
    if neurons_per_task == 7:
        assert_same_run(got, whole_layer)  # bit for bit with a whole layer per task
    else:
        # against the whole-layer baseline: 1e-9 relative (sliced sums round differently) ...
        np.testing.assert_allclose(got.costs, whole_layer.costs, rtol=1e-9, atol=0)
        # ... and bit for bit against the direct engine with the same slicing
        assert_same_run(got, direct.train(p, cat_data, "ref"))
    assert got.costs[0] == pytest.approx(0.693049735659989, rel=1e-9)
    assert got.costs[100 - 1] < got.costs[0]
