"""The sample events of events/: one per handler, each accepted by its handler on the run they
target ("sample", prepared from the real data set as events/README.md says)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from snn import store as keys
from snn.data import SHA256, TEST_FILE, TRAIN_FILE
from snn.engines.stack import upload_inputs
from snn.errors import EventError
from snn.parameters import Parameters
from snn.template import Template
from tests.unit.handler_steps import OUTSIDE_TRAINING, STAGES, Snapshot, handler

ROOT = Path(__file__).parents[2]
EVENTS = ROOT / "events"
NOT_EVENTS = {"env.json", "README.md"}


def event_files() -> list[Path]:
    return sorted(p for p in EVENTS.iterdir() if p.name not in NOT_EVENTS)


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))


def test_one_event_per_handler_module() -> None:
    files = event_files()
    assert all(p.suffix == ".json" for p in files), files
    assert sorted(p.stem for p in files) == sorted((*STAGES, *OUTSIDE_TRAINING))
    for p in files:
        assert importlib.util.find_spec(f"snn.handlers.{p.stem}") is not None, p.name
        assert isinstance(json.loads(p.read_text(encoding="utf-8")), dict), p.name


def test_events_target_the_sample_run() -> None:
    for p in event_files():
        event = json.loads(p.read_text(encoding="utf-8"))
        assert event["run_id"] == "sample", p.name
        assert event.get("epoch", 0) == 0 and event.get("layer", 1) == 1, p.name
        assert event.get("shard", 0) == 0, p.name
    assert load("init") == {
        "run_id": "sample",
        "parameters_key": "runs/sample/parameters.json",
        "train_key": f"uploads/{SHA256[TRAIN_FILE]}/{TRAIN_FILE}",
        "test_key": f"uploads/{SHA256[TEST_FILE]}/{TEST_FILE}",
        "execution_name": "sample",
    }
    assert load("record_failure") == {
        "run_id": "sample",
        "error": "States.TaskFailed",
        "cause": "an example failure",
    }


def _payload_fields(node: Any, function_arn: str) -> set[str] | None:
    """The Payload field names of the Task state that invokes `function_arn`."""
    if isinstance(node, dict):
        parameters = node.get("Parameters")
        if isinstance(parameters, dict) and parameters.get("FunctionName") == function_arn:
            return {k.removesuffix(".$") for k in parameters["Payload"]}
        for value in node.values():
            found = _payload_fields(value, function_arn)
            if found is not None:
                return found
    return None


def test_events_have_the_fields_the_state_machine_sends() -> None:
    template = Template.load(ROOT / "template.yaml")
    definition = json.loads((ROOT / "statemachine" / "training.asl.json").read_text("utf-8"))
    handlers = {f.handler: fid for fid, f in template.functions().items()}
    for p in event_files():
        if p.stem in OUTSIDE_TRAINING:
            continue
        function_id = handlers[f"snn.handlers.{p.stem}.handler"]
        fields = _payload_fields(definition, f"${{{function_id}Arn}}")
        assert fields is not None, f"the state machine never invokes {function_id}"
        assert set(json.loads(p.read_text(encoding="utf-8"))) == fields, p.name


def test_env_file_is_in_sam_format() -> None:
    env = json.loads((EVENTS / "env.json").read_text(encoding="utf-8"))
    assert list(env) == ["Parameters"]
    assert set(env["Parameters"]) == {"SNN_BUCKET", "SNN_TABLE", "AWS_ENDPOINT_URL"}
    assert all(isinstance(v, str) for v in env["Parameters"].values())
    readme = (EVENTS / "README.md").read_text(encoding="utf-8")
    assert "snn train --engine aws --stack <stack> --run-id sample --epochs 1" in readme
    assert re.search(
        r"sam local invoke \w+Function -e events/\w+\.json --env-vars events/env.json", readme
    )


def _small(result: Any) -> None:
    text = json.dumps(result)
    assert isinstance(result, dict) and len(text.encode()) < 1024, text[:200]


def test_every_event_runs_on_the_sample_run(embedded_stack: Any, data_dir: Path) -> None:
    st = embedded_stack.stack
    # What `snn train --run-id sample --epochs 1` (events/README.md) prepares.
    p = Parameters.load(ROOT / "parameters.json").with_epochs(1)
    assert {**upload_inputs(st, "sample", p, data_dir), "execution_name": "sample"} == load("init")

    plan = handler("init")(load("init"), None)
    _small(plan)

    def shard_event(stage: str, layer: int, shard: int) -> dict[str, Any]:
        return {**load(stage), "layer": layer, "shard": shard}

    def run(stage: str, event: dict[str, Any]) -> Any:
        result = handler(stage)(event, None)
        _small(result)
        return result

    for item in plan["forward"]:
        for shard in item["shards"]:
            for stage in ("forward_linear", "activation"):
                run(stage, shard_event(stage, item["layer"], shard))
    assert run("loss", load("loss"))["cost"] > 0
    for item in plan["backward"]:
        for shard in item["shards"]:
            run("backward", shard_event("backward", item["layer"], shard))
    for item in plan["update"]:
        run("update", shard_event("update", item["layer"], item["shard"]))
    assert run("commit", load("commit")) == {"epoch": 1}
    assert set(run("evaluate", load("evaluate"))) >= {"train_accuracy", "test_accuracy"}

    # What events/README.md promises of the finished run: each stage event may be invoked
    # again and rewrites the same bytes; commit.json is a no-op duplicate.
    snap = Snapshot(st)
    before = snap()
    for stage in ("forward_linear", "activation", "loss", "backward", "update", "commit"):
        run(stage, load(stage))
    # continue_as_new.json asks to carry on from epoch 0, which this run has left behind
    with pytest.raises(EventError, match="cannot continue it from epoch 0"):
        handler("continue_as_new")(load("continue_as_new"), None)
    assert snap() == before
    assert st.runs.get("sample")["committed_epoch"] == 1
    # ... init.json is rejected once the run is no longer RUNNING ...
    with pytest.raises(EventError, match="SUCCEEDED, not RUNNING"):
        handler("init")(load("init"), None)
    assert snap() == before
    # ... record_failure.json really marks it FAILED, and evaluate.json marks it SUCCEEDED again.
    assert run("record_failure", load("record_failure")) == {"status": "FAILED"}
    assert st.runs.get("sample")["status"] == "FAILED"
    run("evaluate", load("evaluate"))
    assert st.runs.get("sample")["status"] == "SUCCEEDED"
    assert keys.model_key("sample") in snap()[0]
    # ... and predict.json classifies its picture with the trained model.
    before = snap()
    answer = run("predict", load("predict"))
    assert answer["run_id"] == "sample" and answer["label"] in ("cat", "non-cat")
    assert 0 < answer["probability"] < 1
    assert snap() == before  # it reads only


def test_continue_as_new_event_starts_the_next_execution(embedded_stack: Any, data_dir) -> None:
    """Right after Init, continue_as_new.json (pointed at this stack's state machine) starts the
    execution that carries the run on; it trains the run to its end, and a repeat of the event
    starts nothing new."""
    from snn.engines import stack

    st = embedded_stack.stack
    p = Parameters.load(ROOT / "parameters.json").with_epochs(1)
    upload_inputs(st, "sample", p, data_dir)
    handler("init")(load("init"), None)
    event = {**load("continue_as_new"), "state_machine_arn": st.state_machine_arn}
    assert handler("continue_as_new")(event, None) == {"execution_name": "sample-e0000000"}
    assert st.runs.get("sample")["execution"] == "sample-e0000000"
    arn = stack.execution_arn(st.state_machine_arn, "sample-e0000000")
    (execution,) = stack.follow_run(st, "sample", arn)
    assert execution.succeeded and st.runs.get("sample")["status"] == "SUCCEEDED"
    listed = st.sfn.list_executions(stateMachineArn=st.state_machine_arn)["executions"]
    assert [e["name"] for e in listed] == ["sample-e0000000"]
    bad = {**event, "execution_input": {**event["execution_input"], "run_id": "other"}}
    with pytest.raises(EventError, match="execution_input must be the run's own input"):
        handler("continue_as_new")(bad, None)
