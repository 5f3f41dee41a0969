"""statemachine/training.asl.json is the one truth of the loop: the calls of an epoch that the
direct engine and the tests make (snn.epoch) are the ones the definition makes, walked from the
file itself; every Task retries the same Lambda errors; every stage's failure is caught and
recorded; every Task is named after the function it calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from snn import asl
from snn.epoch import calls, plan
from snn.template import Template
from tests.helpers import ROOT, network, reference, three_layers

DEFINITION = json.loads((ROOT / "statemachine" / "training.asl.json").read_text())
LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
}


def all_states(states: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, state in states.items():
        out.append((f"{path}{name}", state))
        processor = state.get("ItemProcessor")
        if processor:
            out += all_states(processor["States"], f"{path}{name}/")
    return out


TASKS = [(p, s) for p, s in all_states(DEFINITION["States"]) if s["Type"] == "Task"]


@pytest.mark.parametrize(
    "p",
    [
        reference(epochs=3, neurons_per_task=7),
        reference(epochs=3, neurons_per_task=1),
        three_layers(neurons_per_task=2),
        three_layers(neurons_per_task=1),
        network([100, 45, 1], neurons_per_task=1),  # Maps wider than 40 iterations
    ],
    ids=["reference-layer", "reference-neuron", "3-layers-by-2", "3-layers-by-1", "wide"],
)
@pytest.mark.parametrize("epoch", [0, 2])
def test_the_epoch_the_engines_walk_is_the_definitions(p: Any, epoch: int) -> None:
    the_plan = plan(p, "r", epoch)
    walked = asl.step_path(DEFINITION, the_plan)
    assert walked.phases == calls(the_plan, epoch)
    # with mini-batches: step 3 epoch + 2 is batch 2 of epoch `epoch`
    batched = plan(p, "r", 3 * epoch + 2, batches=3)
    assert asl.step_path(DEFINITION, batched).phases == calls(batched, epoch, 2)
    # and the calls are every stage of every shard: forward twice, backward and update once
    shards = sum(len(p.shards(layer)) for layer in range(1, p.layers + 1))
    assert walked.total.invocations == 4 * shards + 2


def test_the_walk_follows_an_edited_definition() -> None:
    """The walk reads the file, not a copy of the loop: swap two states and it sees it."""
    edited = json.loads(json.dumps(DEFINITION))
    states = edited["States"]
    states["Loss"]["Next"], states["BackwardLayers"]["Next"] = "UpdateShards", "Commit"
    states["UpdateShards"]["Next"] = "BackwardLayers"
    p = three_layers(neurons_per_task=2)
    phases = asl.step_path(edited, plan(p, "r", 0)).phases
    stages = [lane[0].stage for phase in phases for lane in phase[:1]]
    assert stages.index("update") < stages.index("backward")
    assert phases != calls(plan(p, "r", 0), 0)


def test_every_task_retries_the_same_lambda_errors() -> None:
    retries = {json.dumps(state["Retry"], sort_keys=True) for _, state in TASKS}
    assert len(retries) == 1, "the Tasks' Retry blocks differ"
    (retry,) = TASKS[0][1]["Retry"]
    assert set(retry["ErrorEquals"]) == LAMBDA_ERRORS
    assert retry["MaxAttempts"] == 6 and retry["BackoffRate"] == 2.0
    assert retry["JitterStrategy"] == "FULL"


def test_every_stage_failure_is_caught_and_recorded() -> None:
    states = DEFINITION["States"]
    stages = [n for n, s in states.items() if s["Type"] in ("Task", "Map") and n != "RecordFailure"]
    assert stages == [
        "Init",
        "ForwardLayers",
        "Loss",
        "BackwardLayers",
        "UpdateShards",
        "Commit",
        "ContinueAsNew",
        "Evaluate",
    ]
    for name in stages:
        (catch,) = states[name]["Catch"]
        assert catch == {
            "ErrorEquals": ["States.ALL"],
            "ResultPath": "$.error",
            "Next": "RecordFailure",
        }, name
    assert "Catch" not in states["RecordFailure"]
    assert states["RecordFailure"]["Next"] == "TrainingFailed"
    failed = states["TrainingFailed"]
    assert failed == {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}
    # inner states leave failures to their Map's Catch, so they carry none
    assert all("Catch" not in s for p, s in all_states(states) if "/" in p)


def test_every_task_is_named_after_the_function_it_calls() -> None:
    functions = Template.load(ROOT / "template.yaml").functions()
    for path, state in TASKS:
        name = path.rsplit("/", 1)[-1]
        target = state["Parameters"]["FunctionName"]
        assert target == f"${{{name}FunctionArn}}", path
        assert functions[f"{name}Function"].handler == f"snn.handlers.{asl.stage_of(name)}.handler"
    maps = [p.rsplit("/", 1)[-1] for p, s in all_states(DEFINITION["States"]) if s["Type"] == "Map"]
    assert sorted(maps) == [
        "BackwardLayers",
        "BackwardShards",
        "ForwardLayers",
        "ForwardShards",
        "UpdateShards",
    ]


def test_layers_run_in_order_and_shards_side_by_side() -> None:
    states = DEFINITION["States"]
    for name in ("ForwardLayers", "BackwardLayers"):
        assert states[name]["MaxConcurrency"] == 1, name
        inner = next(iter(states[name]["ItemProcessor"]["States"].values()))
        assert "MaxConcurrency" not in inner
    assert "MaxConcurrency" not in states["UpdateShards"]
