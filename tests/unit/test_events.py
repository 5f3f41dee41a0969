"""The sample events of events/: one per Lambda function, each accepted by its handler on the run
they target ("sample", prepared from the real data set as events/README.md says), and the README
true to them. The env files (events/env.*.json) are SAM's environment files, not events."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from snn import keys
from snn.data import SHA256, TEST_FILE, TRAIN_FILE
from snn.engines.follow import Follower
from snn.errors import EventError
from snn.sources import open_source
from snn.template import Template
from tests.helpers import (
    OUTSIDE_TRAINING,
    ROOT,
    STAGES,
    Snapshot,
    epoch_events,
    handler,
    tiny_parameters,
)

EVENTS = ROOT / "events"
ENV_FILES = ("env.aws.json", "env.emulator.json")
NOT_EVENTS = {*ENV_FILES, "README.md"}
README = (EVENTS / "README.md").read_text(encoding="utf-8")
SAMPLE_INPUT = {
    "run_id": "sample",
    "parameters_key": "runs/sample/parameters.json",
    "train_key": f"uploads/{SHA256[TRAIN_FILE]}/{TRAIN_FILE}",
    "test_key": f"uploads/{SHA256[TEST_FILE]}/{TEST_FILE}",
}
EPOCH_STAGES = ("forward_linear", "activation", "loss", "backward", "update", "commit")


def event_files() -> list[Path]:
    return sorted(p for p in EVENTS.iterdir() if p.name not in NOT_EVENTS)


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))


# --- the files -----------------------------------------------------------------------------------


def test_one_event_per_function() -> None:
    files = event_files()
    assert all(p.suffix == ".json" for p in files), files
    assert sorted(p.stem for p in files) == sorted((*STAGES, *OUTSIDE_TRAINING))
    for p in files:
        assert importlib.util.find_spec(f"snn.handlers.{p.stem}") is not None, p.name
        assert isinstance(json.loads(p.read_text(encoding="utf-8")), dict), p.name
    handlers = {f.handler for f in Template.load(ROOT / "template.yaml").functions().values()}
    assert handlers == {f"snn.handlers.{p.stem}.handler" for p in files}


def test_events_target_the_sample_run() -> None:
    for p in event_files():
        event = json.loads(p.read_text(encoding="utf-8"))
        if p.stem == "execution_failed":
            continue  # EventBridge's shape: below
        if p.stem == "init":  # the execution's input, and its name
            event = {**event["input"], "execution_name": event["execution_name"]}
        assert event["run_id"] == "sample", p.name
        assert event.get("epoch", 0) == 0 and event.get("batch", 0) == 0, p.name
        assert event.get("layer", 1) == 1, p.name
        assert event.get("shard", 0) == 0, p.name
        assert event.get("execution_name", "sample") == "sample", p.name
    assert load("init") == {"input": SAMPLE_INPUT, "execution_name": "sample"}
    assert load("record_failure") == {
        "run_id": "sample",
        "execution_name": "sample",
        "error": "States.TaskFailed",
        "cause": "an example failure",
    }
    assert load("continue_as_new")["execution_input"] == SAMPLE_INPUT
    detail = load("execution_failed")["detail"]
    assert detail["name"] == "sample" and json.loads(detail["input"]) == SAMPLE_INPUT
    assert detail["executionArn"].endswith(":execution:snn-training:sample")
    assert detail["stateMachineArn"] == load("continue_as_new")["state_machine_arn"]


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
    checked = []
    for p in event_files():
        if p.stem in OUTSIDE_TRAINING:
            continue
        function_id = handlers[f"snn.handlers.{p.stem}.handler"]
        fields = _payload_fields(definition, f"${{{function_id}Arn}}")
        assert fields is not None, f"the state machine never invokes {function_id}"
        assert set(json.loads(p.read_text(encoding="utf-8"))) == fields, p.name
        checked.append(p.stem)
    assert sorted(checked) == sorted(STAGES)


def test_execution_failed_is_the_event_the_rule_delivers(aws_env: None) -> None:
    """The shape the embedded stack sends the rule's function, which the rule matches."""
    from snn.engines.local.embedded import status_change_event
    from snn.engines.stack import Stack
    from snn.handlers.execution_failed import parse

    event = load("execution_failed")
    template = Template.load(ROOT / "template.yaml")
    rule = template.execution_status_rule()
    assert rule.matches(event["detail"]["status"])
    assert template.functions()[rule.function].handler == "snn.handlers.execution_failed.handler"
    ((_, pattern),) = [
        (k, v["Properties"]["EventPattern"])
        for k, v in template.of_type("AWS::Events::Rule").items()
        if k == rule.logical_id
    ]
    assert event["source"] in pattern["source"]
    assert event["detail-type"] in pattern["detail-type"]

    detail = event["detail"]
    st = Stack("b", "t", detail["stateMachineArn"], None, None, None)
    description = {
        "executionArn": detail["executionArn"],
        "name": detail["name"],
        "status": detail["status"],
        "input": detail["input"],
        "error": detail["error"],
        "cause": detail["cause"],
    }
    emulated = status_change_event(st, description)
    assert set(event) == set(emulated)
    assert set(detail) == set(emulated["detail"])
    assert event["resources"] == emulated["resources"] == [detail["executionArn"]]
    assert parse(event) == {
        "run_id": "sample",
        "execution_name": "sample",
        "error": "States.Runtime",
        "cause": "The execution reached the maximum number of history events (25000).",
    }


def test_env_files_are_in_sam_format() -> None:
    declared = Template.load(ROOT / "template.yaml").raw["Globals"]["Function"]["Environment"][
        "Variables"
    ]
    found = {}
    for name in ENV_FILES:
        env = json.loads((EVENTS / name).read_text(encoding="utf-8"))
        assert list(env) == ["Parameters"], name
        assert all(isinstance(v, str) for v in env["Parameters"].values()), name
        assert set(env["Parameters"]) <= set(declared), name  # SAM sets only declared ones
        found[name] = set(env["Parameters"])
    assert found["env.aws.json"] == {"SNN_BUCKET", "SNN_TABLE"}
    assert found["env.emulator.json"] == {"SNN_BUCKET", "SNN_TABLE", "AWS_ENDPOINT_URL"}
    for name in ENV_FILES:
        assert re.search(
            rf"sam local invoke \w+Function -e events/\w+\.json --env-vars events/{name}", README
        ), name


# --- the README ----------------------------------------------------------------------------------


def test_the_readme_has_one_paragraph_per_event() -> None:
    paragraphs = [p.strip() for p in README.split("\n\n")]
    for p in event_files():
        opening = [x for x in paragraphs if x.startswith(f"`{p.name}`")]
        assert len(opening) == 1, p.name
    named = set(re.findall(r"`(\w+\.json)`", README)) | set(
        re.findall(r"events/(\w+\.json)", README)
    )
    assert named <= {p.name for p in EVENTS.iterdir()}, named


def readme_preparation() -> tuple[set[str], str]:
    """The keys the README's preparation uploads to, and the parameters it uploads."""
    targets = set(re.findall(r"s3://<bucket>/(\S+)", README))
    (code,) = re.findall(r"python3 -c '([^']+)' \| aws s3 cp - s3://<bucket>/", README)
    parameters = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    return targets, parameters


def test_the_readme_prepares_what_init_json_names() -> None:
    targets, parameters = readme_preparation()
    assert targets == {SAMPLE_INPUT[k] for k in ("parameters_key", "train_key", "test_key")}
    seed = json.loads((ROOT / "parameters.json").read_text())
    assert json.loads(parameters) == {**seed, "epochs": 1}


# --- on the sample run ---------------------------------------------------------------------------


def prepare(st: Any, data_dir: Path) -> None:
    """What events/README.md tells the user to do: the two uploads and the parameters."""
    targets, parameters = readme_preparation()
    for key, data in open_source(data_dir).uploads(tiny_parameters().training).values():
        assert key in targets
        st.store.put_bytes(key, data)
    st.store.put_bytes(SAMPLE_INPUT["parameters_key"], parameters.encode())


def invoke(name: str, event: dict[str, Any]) -> dict[str, Any]:
    result = handler(name)(event, None)
    text = json.dumps(result)
    assert isinstance(result, dict) and len(text.encode()) < 1024, text[:200]
    return result


@pytest.mark.slow
def test_every_event_runs_on_the_sample_run(embedded_stack: Any, data_dir: Path) -> None:
    st = embedded_stack.stack
    snap = Snapshot(st)
    prepare(st, data_dir)

    plan = invoke("init", load("init"))
    assert plan["forward"] == [{"layer": 1, "shards": [0, 1, 2]}, {"layer": 2, "shards": [0]}]
    assert (plan["epochs"], plan["batches"], plan["steps"]) == (1, 1, 1)
    assert plan["progress"] == {"epoch": 0, "batch": 0, "step": 0, "stopped": False}
    before = snap()
    assert invoke("init", load("init")) == plan  # again while RUNNING: nothing changes
    assert snap() == before
    assert st.runs.get("sample")["execution"] == "sample"

    # one epoch, in the state machine's order: the files' events where they are the step's
    used = []
    for stage, event in epoch_events(plan, 0):
        if stage in EPOCH_STAGES and event == load(stage):
            used.append(stage)
        result = invoke(stage, event)
    assert sorted(used) == sorted(EPOCH_STAGES)  # each file is one step of the epoch
    assert result == {"epoch": 1, "batch": 0, "step": 1, "stopped": False}
    assert st.runs.get("sample")["costs"].keys() == {"0"}

    evaluation = invoke("evaluate", load("evaluate"))
    assert set(evaluation) >= {"train_accuracy", "test_accuracy", "model_key"}
    assert st.runs.get("sample")["status"] == "SUCCEEDED"
    before = snap()
    assert keys.model_key("sample") in before[0]
    answer = invoke("predict", load("predict"))
    assert answer["run_id"] == "sample" and answer["label"] in ("cat", "non-cat")
    assert 0 < answer["probability"] < 1
    assert snap() == before  # it reads only

    # On the finished run: commit.json is a no-op duplicate, evaluate.json writes the same
    # bytes, and the failure events are accepted and change nothing ...
    assert invoke("commit", load("commit")) == result
    assert invoke("evaluate", load("evaluate")) == evaluation
    not_recorded = {"recorded": False, "status": "SUCCEEDED"}
    assert invoke("record_failure", load("record_failure")) == not_recorded
    assert invoke("execution_failed", load("execution_failed")) == not_recorded
    assert snap() == before
    # ... while every event that would change the run is rejected, with nothing changed.
    for name in ("init", "forward_linear", "activation", "loss", "backward", "update"):
        with pytest.raises(EventError, match="run sample is SUCCEEDED, not RUNNING"):
            handler(name)(load(name), None)
    with pytest.raises(EventError, match="SUCCEEDED"):
        handler("continue_as_new")(load("continue_as_new"), None)
    assert snap() == before
    assert st.sfn.list_executions(stateMachineArn=st.state_machine_arn)["executions"] == []


@pytest.mark.parametrize("name", ["record_failure", "execution_failed"])
def test_a_failure_event_fails_the_running_sample_run(
    embedded_stack: Any, data_dir: Path, name: str
) -> None:
    st = embedded_stack.stack
    prepare(st, data_dir)
    invoke("init", load("init"))
    assert invoke(name, load(name)) == {"recorded": True, "status": "FAILED"}
    record = st.runs.get("sample")
    want = load("record_failure") if name == "record_failure" else load(name)["detail"]
    assert (record["status"], record["error"], record["cause"]) == (
        "FAILED",
        want["error"],
        want["cause"],
    )
    assert record["failed_execution"] == "sample"
    snap = Snapshot(st)
    before = snap()
    # a duplicate (a retry, say) answers the same and changes nothing
    assert invoke(name, load(name)) == {"recorded": True, "status": "FAILED"}
    other = "record_failure" if name == "execution_failed" else "execution_failed"
    assert invoke(other, load(other)) == {"recorded": False, "status": "FAILED"}
    with pytest.raises(EventError, match="run sample is FAILED, not RUNNING"):
        handler("forward_linear")(load("forward_linear"), None)
    assert snap() == before


@pytest.mark.slow
def test_continue_as_new_event_starts_the_next_execution(
    embedded_stack: Any, data_dir: Path
) -> None:
    """Right after Init, continue_as_new.json (pointed at this stack's state machine) starts the
    execution that carries the run on; it trains the run to its end, and a repeat of the event
    starts nothing new."""
    st = embedded_stack.stack
    prepare(st, data_dir)
    invoke("init", load("init"))
    event = {**load("continue_as_new"), "state_machine_arn": st.state_machine_arn}

    def executions() -> list[str]:
        listed = st.sfn.list_executions(stateMachineArn=st.state_machine_arn)["executions"]
        return [e["name"] for e in listed]

    for bad, message in (
        ({"execution_input": {**SAMPLE_INPUT, "run_id": "other"}}, "the run's own input"),
        ({"execution_name": "another"}, "carried by execution sample, not another"),
        ({"epoch": 1}, "epoch 1 is not in 0..0"),
        ({"batch": 1}, "batch 1 is not in 0..0"),
    ):
        with pytest.raises(EventError, match=message):
            handler("continue_as_new")({**event, **bad}, None)
    assert executions() == [] and st.runs.get("sample")["execution"] == "sample"

    assert invoke("continue_as_new", event) == {"execution_name": "sample-e0000000"}
    assert st.runs.get("sample")["execution"] == "sample-e0000000"
    (execution,) = Follower(st, "sample").follow(st.execution_arn("sample-e0000000"))
    assert execution.succeeded and st.runs.get("sample")["status"] == "SUCCEEDED"
    assert (execution.stats["first_epoch"], execution.stats["last_epoch"]) == (0, 0)
    assert invoke("continue_as_new", event) == {"execution_name": "sample-e0000000"}
    assert executions() == ["sample-e0000000"]
    # a repeat that conflicts with the hand-over is refused, not answered as done
    with pytest.raises(EventError, match="the run's own input"):
        handler("continue_as_new")(
            {**event, "execution_input": {**SAMPLE_INPUT, "run_id": "other"}}, None
        )
