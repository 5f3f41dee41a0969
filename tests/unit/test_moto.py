"""What the local engine relies on in moto, pinned: the version, the gaps of its Step Functions
interpreter that the definition avoids, the two narrow speed-ups, and the history it reads from
the emulator's backend. If moto changes, these fail loudly: revisit the engine then."""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import boto3
import moto
import pytest

from snn.engines import local, stack

from ..conftest import ROOT

ASL = (ROOT / "statemachine" / "training.asl.json").read_text()


def test_moto_is_the_version_the_engine_was_verified_against() -> None:
    assert moto.__version__ == local.MOTO_VERSION
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("moto[") and d.endswith(f"=={local.MOTO_VERSION}") for d in deps)


@pytest.fixture
def sfn(aws_env: None) -> Iterator[Any]:
    with moto.mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield boto3.client("stepfunctions")


def run(sfn: Any, definition: dict, given: dict | None = None) -> dict:
    arn = sfn.create_state_machine(
        name=f"gap{time.time_ns()}",
        definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/r",
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name="gap", input=json.dumps(given or {}))
    for _ in range(200):
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.02)
    raise AssertionError("execution did not end")


# --- the gaps, as they are in this version; the definition keeps clear of each ------------------


def test_gap_jsonata_does_not_run(sfn: Any) -> None:
    d = run(
        sfn,
        {
            "QueryLanguage": "JSONata",
            "StartAt": "P",
            "States": {"P": {"Type": "Pass", "Output": {"x": "{% 1 + 2 %}"}, "End": True}},
        },
    )
    assert (d["status"], d["error"]) == ("FAILED", "States.Runtime")
    assert "JSONata" not in ASL and '"Output"' not in ASL and '"Arguments"' not in ASL


def test_gap_variables_do_not_run(sfn: Any) -> None:
    d = run(
        sfn,
        {
            "StartAt": "P",
            "States": {
                "P": {"Type": "Pass", "Assign": {"v": 3}, "Next": "Q"},
                "Q": {"Type": "Pass", "Parameters": {"x.$": "$v"}, "End": True},
            },
        },
    )
    assert (d["status"], d["error"]) == ("FAILED", "States.Runtime")
    assert '"Assign"' not in ASL


def test_gap_index_then_field_yields_a_list(sfn: Any) -> None:
    d = run(
        sfn,
        {
            "StartAt": "P",
            "States": {"P": {"Type": "Pass", "Parameters": {"v.$": "$.a[0].v"}, "End": True}},
        },
        {"a": [{"v": 7}]},
    )
    assert json.loads(d["output"]) == {"v": [7]}  # AWS gives 7
    assert not re.search(r"\[\d+\]\.", ASL)


@pytest.mark.parametrize(
    "resource",
    ["arn:aws:states:::states:startExecution", "arn:aws:states:::states:startExecution.sync:2"],
)
def test_gap_start_execution_integration_fails(sfn: Any, resource: str) -> None:
    d = run(
        sfn,
        {
            "StartAt": "S",
            "States": {
                "S": {
                    "Type": "Task",
                    "Resource": resource,
                    "End": True,
                    "Parameters": {
                        "StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:x",
                        "Input": {},
                    },
                }
            },
        },
    )
    assert (d["status"], d["error"]) == ("FAILED", "States.Runtime")
    assert "'StateMachineArn'" in d["cause"]
    assert "states:::states:" not in ASL  # ContinueAsNew starts executions from a Lambda


def test_the_context_object_fields_the_definition_uses(sfn: Any) -> None:
    d = run(
        sfn,
        {
            "StartAt": "P",
            "States": {
                "P": {
                    "Type": "Pass",
                    "End": True,
                    "Parameters": {
                        "sm.$": "$$.StateMachine.Id",
                        "input.$": "$$.Execution.Input",
                        "name.$": "$$.Execution.Name",
                    },
                }
            },
        },
        {"k": 1},
    )
    out = json.loads(d["output"])
    assert out["sm"].startswith("arn:aws:states:") and out["input"] == {"k": 1}
    assert out["name"] == "gap"  # (null when an execution is started without a name)
    for used in ("$$.StateMachine.Id", "$$.Execution.Input", "$$.Execution.Name"):
        assert used in ASL


# --- the speed-ups and the backend history ----------------------------------------------


def test_speed_ups_are_applied_inside_the_stack_only(aws_env: None) -> None:
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.utils import json_path

    before = (lambda_eval_utils.boto_client_for, json_path.parse, result_path.parse)
    with local.EmbeddedStack(ROOT / "template.yaml"):
        assert lambda_eval_utils.boto_client_for is not before[0]
        assert json_path.parse is not before[1] and result_path.parse is not before[2]
        assert json_path.parse("$.a.b") is json_path.parse("$.a.b")  # parsed once
        assert result_path.parse("$.r") is result_path.parse("$.r")
    assert (lambda_eval_utils.boto_client_for, json_path.parse, result_path.parse) == before


def test_backend_history_equals_the_public_api(embedded_stack: Any, synthetic_dir) -> None:
    from .handler_steps import tiny_parameters

    st = embedded_stack.stack
    arn = stack.start(st, stack.upload_inputs(st, "hist", tiny_parameters(), synthetic_dir), "hist")
    (execution,) = stack.follow_run(st, "hist", arn)
    public = []
    kwargs: dict[str, Any] = {"executionArn": arn}
    while True:
        page = st.sfn.get_execution_history(**kwargs)
        public.extend(page["events"])
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    backend = embedded_stack.history(arn)
    assert [(e["id"], e["type"]) for e in backend] == [(e["id"], e["type"]) for e in public]
    assert execution.stats["history_events"] == len(backend)
    assert stack.execution_stats(backend) == stack.execution_stats(public)
