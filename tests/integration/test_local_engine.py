"""The embedded local engine runs the real state machine with the real handlers, gives the direct
engine's numbers bit for bit, and records exactly the history the definition implies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from snn import epoch as epochs
from snn.cli import main
from snn.engines import direct, local
from snn.engines.follow import Follower
from snn.engines.stack import create_run, start
from snn.errors import RunFailed
from snn.parameters import Parameters
from snn.run_folder import RunFolder
from snn.template import TemplateError
from tests.helpers import (
    ROOT,
    assert_same_run,
    network,
    project_copy,
    reference,
    spec,
    three_layers,
    tiny_parameters,
)

pytestmark = pytest.mark.xdist_group("embedded")

TEMPLATE = ROOT / "template.yaml"
RESULTS = ["cost.png", "metrics.json", "model.npz", "neurons.npz", "progress.json"]

# The history events of an execution besides its epochs, derived from the definition: the
# execution's start (1), Init (a Task: entered, scheduled, started, succeeded, exited: 5), the
# last StepsLeft? choice (entered, exited: 2), then Evaluate (a Task: 5) and the execution's
# end (1); or, for an execution that hands the run over, ContinueAsNew (5), the
# ContinuedInNewExecution Succeed state (entered, exited: 2) and the end (1).
FIXED_EVENTS_EVALUATE = 1 + 5 + 2 + 5 + 1
FIXED_EVENTS_CONTINUE = 1 + 5 + 2 + 5 + 2 + 1


@pytest.mark.slow
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
    assert sorted(p.name for p in a.iterdir()) == RESULTS
    assert (a / "neurons.npz").read_bytes() == (b / "neurons.npz").read_bytes()
    # progress.json tells the finished run, every state of it counted from the history
    progress = json.loads((a / "progress.json").read_text())
    assert (progress["status"], progress["epoch"], progress["costs"]) == (
        "succeeded",
        10,
        ma["costs"],
    )
    shards = 3 + 1  # the seed's 3 hidden neurons and 1 output, one neuron per task
    entered = {name: s["entered"] for name, s in progress["states"].items()}
    for state, times in {
        "Init": 1,
        "StepsLeft?": 11,
        "ForwardLinear": 10 * shards,
        "Activation": 10 * shards,
        "Loss": 10,
        "Backward": 10 * shards,
        "Update": 10 * shards,
        "Commit": 10,
        "Evaluate": 1,
    }.items():
        assert entered[state] == times, state
    assert progress["active"] == []
    assert [e["status"] for e in progress["executions"]] == ["SUCCEEDED"]


@pytest.mark.parametrize("neurons_per_task", [1, 2])
def test_three_layers_on_synthetic_data_equal_direct(
    synthetic_dir: Path, neurons_per_task: int
) -> None:
    p = three_layers(neurons_per_task, epochs=2)
    reported: list[tuple[int, float]] = []
    got = local.train(
        spec(p, synthetic_dir, "three", on_epoch=lambda e, c: reported.append((e, c))),
        template=TEMPLATE,
    )
    want = direct.train(spec(p, synthetic_dir, "three"))
    assert_same_run(got, want)
    assert got.neurons == want.neurons
    assert got.confusion_matrix == want.confusion_matrix
    assert reported == list(enumerate(want.costs))  # every epoch, once, in order
    # what ran, counted from the execution's history
    (execution,) = got.extra["executions"]
    shards = epochs.shard_count(p)  # 5 + 3 + 1 neurons: 9 shards, or 3 + 2 + 1
    per_epoch = 2 * shards + 1 + shards + shards + 1  # forward, loss, backward, update, commit
    assert got.extra["lambda_invocations"] == 2 + 2 * per_epoch  # + Init and Evaluate
    assert got.extra["lambda_invocations_served"] == got.extra["lambda_invocations"]
    assert got.extra["failed_invocations"] == 0 and got.extra["injected_faults"] == {}
    assert execution["status"] == "SUCCEEDED" and execution["name"] == "three"
    assert (execution["first_epoch"], execution["last_epoch"]) == (0, 1)
    assert execution["history_events"] == FIXED_EVENTS_EVALUATE + 2 * epochs.events_per_step(p)


@pytest.mark.parametrize(
    ("p", "batches"),
    [
        (tiny_parameters(), 1),
        (three_layers(5), 1),
        (network([4, 3, 2, 1], neurons_per_task=2), 1),
        (network([2, 1], batch_size=16), 3),  # 40 examples: batches of 16, 16 and 8
    ],
    ids=["2 layers, 3 shards", "3 layers, 3 shards", "4 layers, 6 shards", "3 mini-batches"],
)
def test_events_per_epoch_are_exactly_what_an_execution_records(
    embedded_stack: Any, synthetic_dir: Path, p: Parameters, batches: int
) -> None:
    """The chunk size rests on this count: two runs of different lengths (side by side in one
    stack) differ by exactly the formula's events per epoch (B steps of 24 + 12 L + 26 S), and
    what remains is the fixed part derived above. Networks of independent (1, layers, shards)
    pin every term; one with mini-batches, the steps of an epoch."""
    st = embedded_stack.stack
    arns = {}
    for n in (1, 3):
        run_id = f"count{n}"
        arns[n] = start(st, create_run(st, run_id, p.with_epochs(n), synthetic_dir), run_id)
    lengths = {}
    for n, arn in arns.items():
        (execution,) = Follower(st, f"count{n}").follow(arn)
        assert execution.succeeded
        lengths[n] = execution.stats["history_events"]
        assert lengths[n] == len(st.history(arn))
        assert st.runs.get(f"count{n}")["committed_step"] == n * batches
    per_step = epochs.events_per_step(p)
    assert per_step == 24 + 12 * p.layers + 26 * epochs.shard_count(p)
    per_epoch = batches * per_step
    assert lengths[3] - lengths[1] == (3 - 1) * per_epoch
    assert lengths[1] - 1 * per_epoch == FIXED_EVENTS_EVALUATE
    assert FIXED_EVENTS_CONTINUE <= epochs.EXECUTION_FIXED_EVENTS  # the budget's allowance


@pytest.mark.slow
def test_the_engine_runs_the_definition_file_as_it_is(tmp_path: Path, synthetic_dir: Path) -> None:
    """Change the file in a copy: one more state per epoch, and the engine follows it."""
    template = project_copy(tmp_path)
    asl_path = tmp_path / "statemachine" / "training.asl.json"
    asl = json.loads(asl_path.read_text())
    assert asl["States"]["Loss"]["Next"] == "BackwardLayers"
    asl["States"]["Loss"]["Next"] = "Checkpoint"
    asl["States"]["Checkpoint"] = {"Type": "Pass", "Next": "BackwardLayers"}
    asl_path.write_text(json.dumps(asl))
    p = tiny_parameters(epochs=2)
    changed = local.train(spec(p, synthetic_dir, "changed"), template)
    plain = local.train(spec(p, synthetic_dir, "plain"), TEMPLATE)
    assert changed.extra["state_transitions"] == plain.extra["state_transitions"] + 2
    (c,), (q,) = changed.extra["executions"], plain.extra["executions"]
    assert c["history_events"] == q["history_events"] + 2 * 2  # a Pass state: 2 events
    assert_same_run(changed, plain)


@pytest.mark.slow
def test_an_event_out_of_range_fails_the_run_where_it_happens(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    template = project_copy(tmp_path)
    asl_path = tmp_path / "statemachine" / "training.asl.json"
    text = asl_path.read_text()
    assert '"epoch.$": "$.progress.epoch"' in text
    asl_path.write_text(text.replace('"epoch.$": "$.progress.epoch"', '"epoch": 99', 1))
    with pytest.raises(RunFailed) as failure:
        local.train(spec(three_layers(1), synthetic_dir, "doomed"), template)
    message = str(failure.value)
    # the five shards of layer 1 fail alike, side by side: the one named is one of them
    assert re.fullmatch(
        r"run doomed failed at epoch 99 in ForwardLinear \(layer 1, shard [0-4]\): EventError: "
        r"run doomed: epoch 99 is not in 0\.\.3; nothing to resume \(the run had not started\)",
        message,
    ), message


@pytest.mark.slow
def test_cli_reports_a_failed_run_in_one_line(
    tmp_path: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = project_copy(tmp_path)
    asl_path = tmp_path / "statemachine" / "training.asl.json"
    asl_path.write_text(asl_path.read_text().replace('"layer.$": "$.layer"', '"layer": 7', 1))
    params = tmp_path / "p.json"
    params.write_text(three_layers(1).to_json())
    out = tmp_path / "run"
    args = ["--params", str(params), "--data", str(synthetic_dir), "--template", str(template)]
    code = main(["train", *args, "--out", str(out), "--run-id", "bad-layer", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.fullmatch(
        r"snn: error: run bad-layer failed at epoch 0 in ForwardLinear \(layer 7, shard [0-4]\): "
        r"EventError: run bad-layer: layer 7 is not in 1\.\.3; resume it from epoch 0 with: "
        rf"snn train --resume {re.escape(str(out))}",
        lines[0],
    ), lines[0]
    # no results: what a resume needs, and progress.json saying how the run ended
    assert sorted(p.name for p in out.iterdir()) == [".lock", "progress.json", "resume"]
    progress = json.loads((out / "progress.json").read_text())
    assert progress["status"] == "failed" and progress["error"] == lines[0].removeprefix(
        "snn: error: "
    )
    assert progress["resumable_from"] == 0
    record = json.loads((out / "resume" / "state.json").read_text())["record"]
    assert (record["status"], record["error"]) == ("FAILED", "EventError")


@pytest.mark.slow
def test_a_state_output_over_256_kb_fails_as_on_aws(tmp_path: Path, synthetic_dir: Path) -> None:
    """A state's own output (no Lambda in it) over the limit fails the execution, as AWS would
    (moto does this itself for a Pass state), and no Catch can catch it."""
    template = project_copy(tmp_path)
    asl_path = tmp_path / "statemachine" / "training.asl.json"
    asl = json.loads(asl_path.read_text())
    asl["States"]["Loss"]["Next"] = "Bloat"
    asl["States"]["Bloat"] = {
        "Type": "Pass",
        "Result": "x" * (300 * 1024),
        "ResultPath": "$.bloat",
        "Next": "BackwardLayers",
    }
    asl_path.write_text(json.dumps(asl))
    with RunFolder(tmp_path / "run") as folder, pytest.raises(RunFailed) as failure:
        local.train(spec(tiny_parameters(epochs=1), synthetic_dir, "big", folder=folder), template)
    message = str(failure.value)
    assert message.startswith("run big failed: States.DataLimitExceeded: "), message
    assert "'Bloat'" in message
    record = json.loads((tmp_path / "run" / "resume" / "state.json").read_text())["record"]
    assert (record["status"], record["error"]) == ("FAILED", "States.DataLimitExceeded")
    assert record["failed_execution"] == "big"  # by the execution-status rule: no Catch ran


def test_functions_with_different_environments_are_refused(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    template = project_copy(tmp_path)
    text = template.read_text()
    assert "Handler: snn.handlers.loss.handler" in text
    text = text.replace(
        "Handler: snn.handlers.loss.handler",
        "Handler: snn.handlers.loss.handler\n      Environment:\n        Variables:\n"
        "          LOG_LEVEL: DEBUG",
    )
    template.write_text(text)
    with pytest.raises(TemplateError, match="LOG_LEVEL"):
        local.train(spec(three_layers(1), synthetic_dir, "env"), template)


@pytest.mark.slow
@pytest.mark.parametrize("neurons_per_task", [7, 1])
def test_reference_network_100_epochs_matches_direct(data_dir: Path, neurons_per_task: int):
    p = reference(epochs=100, neurons_per_task=neurons_per_task)
    got = local.train(spec(p, data_dir, f"ref-{neurons_per_task}"), TEMPLATE)
    whole_layer = direct.train(spec(reference(epochs=100, neurons_per_task=7), data_dir, "ref"))
    if neurons_per_task == 7:
        assert_same_run(got, whole_layer)  # bit for bit with a whole layer per task
    else:
        # against the whole-layer baseline: 1e-9 relative (sliced sums round differently) ...
        np.testing.assert_allclose(got.costs, whole_layer.costs, rtol=1e-9, atol=0)
        # ... and bit for bit against the direct engine with the same slicing
        assert_same_run(got, direct.train(spec(p, data_dir, "ref")))
    assert got.costs[0] == pytest.approx(0.693049735659989, rel=1e-9)
    assert got.costs[100 - 1] < got.costs[0]
