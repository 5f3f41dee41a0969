"""What the local engine relies on in moto, pinned: the version and its gate, the gaps of moto's
Step Functions interpreter that the definition keeps clear of, and every patch of moto's
internals (snn.engines.local.emulator), each tested against the behaviour it exists for: here,
and the DynamoDB requests in test_emulator_dynamodb.py, botocore's short path in
test_emulator_short_path.py, the bounded Maps in test_emulator_bounds.py. If moto changes, these
fail loudly: revisit the emulator package then."""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import moto
import numpy as np
import pytest

from snn.engines.local import emulator
from snn.engines.local.emulator import interpreter, memory
from snn.engines.local.emulator.copies import MODULES as COPY_MODULES
from snn.errors import SnnError
from tests.helpers import ROOT, tiny_parameters

ASL = (ROOT / "statemachine" / "training.asl.json").read_text()
GATE = "snn.engines.local.emulator"
ROLE = "arn:aws:iam::123456789012:role/r"


def test_moto_is_the_version_the_gate_names() -> None:
    assert moto.__version__ == emulator.MOTO_VERSION
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("moto[") and d.endswith(f"=={emulator.MOTO_VERSION}") for d in deps)


# --- a plain emulated Step Functions -------------------------------------------------------------


@pytest.fixture
def sfn(aws_env: None, caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    # The interpreter logs every aborted or failed state at length.
    caplog.set_level(logging.CRITICAL, logger="moto.stepfunctions")
    with moto.mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield boto3.client("stepfunctions")


def machine(sfn: Any, definition: dict[str, Any]) -> str:
    return sfn.create_state_machine(
        name=f"m{time.time_ns()}", definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]


def start(sfn: Any, arn: str, given: dict[str, Any] | None = None, name: str = "gap") -> str:
    return sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(given or {}))[
        "executionArn"
    ]


def ended(sfn: Any, execution_arn: str, seconds: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.02)
    raise AssertionError("execution did not end")


def run(sfn: Any, definition: dict[str, Any], given: dict[str, Any] | None = None) -> dict:
    return ended(sfn, start(sfn, machine(sfn, definition), given))


def until(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# A Map whose three iterations wait a second each (long enough to act on a running Map), with a
# Catch and a next state: an execution failed or stopped meanwhile must enter neither.
WAITING_MAP = {
    "StartAt": "M",
    "States": {
        "M": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "W",
                "States": {
                    "W": {"Type": "Wait", "Seconds": 1, "Next": "P"},
                    "P": {"Type": "Pass", "End": True},
                },
            },
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
            "Next": "After",
        },
        "After": {"Type": "Pass", "End": True},
        "Caught": {"Type": "Pass", "End": True},
    },
}


def waiting_map(sfn: Any, name: str = "waiting") -> str:
    """An execution of WAITING_MAP, once its three iterations are waiting."""
    arn = start(sfn, machine(sfn, WAITING_MAP), {"items": [1, 2, 3]}, name)
    until(lambda: types(interpreter.history(arn)).count("WaitStateEntered") == 3)
    return arn


def types(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["type"].value if hasattr(e["type"], "value") else e["type"]) for e in events]


def entered(events: list[dict[str, Any]]) -> list[str]:
    return [t for t in types(events) if t.endswith("StateEntered")]


def after_the_end(events: list[dict[str, Any]], end: str) -> list[str]:
    """The events after the execution's end (exactly one), which moto may add as the Map's
    iterations wind down (AWS adds none)."""
    kinds = types(events)
    assert kinds.count(end) == 1, kinds
    return kinds[kinds.index(end) + 1 :]


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


def test_gap_a_stopped_map_ends_failed(sfn: Any) -> None:
    """Why `first_end_stands` exists: without it, the iterations of a Map that wind down after
    StopExecution replace the stop with an internal error (AWS ends the execution ABORTED)."""
    arn = waiting_map(sfn)
    sfn.stop_execution(executionArn=arn)
    until(lambda: sfn.describe_execution(executionArn=arn)["status"] == "FAILED")
    assert sfn.describe_execution(executionArn=arn)["error"] == "States.Runtime"


def test_gap_an_execution_failed_from_outside_gets_another_error(sfn: Any) -> None:
    """Why `fail_execution` needs `first_end_stands`: without it, a States.* error set on a
    running Map's execution is replaced as the iterations wind down."""
    arn = waiting_map(sfn)
    assert interpreter.fail_execution(arn, "States.DataLimitExceeded", "too big")
    until(lambda: "ExecutionFailed" in types(interpreter.history(arn)))
    described = sfn.describe_execution(executionArn=arn)
    assert described["status"] == "FAILED"
    assert (described["error"], described["cause"]) != ("States.DataLimitExceeded", "too big")


# --- the version gate ----------------------------------------------------------------------------


def patch_points() -> dict[str, Any]:
    """Every attribute of moto that a patch of the emulator package replaces."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.component.program.program import Program
    from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        inline_iteration_component as inline,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.event import event_manager
    from moto.stepfunctions.parser.asl.utils import json_path
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    return {
        "ExecutionWorker._get_evaluation_entrypoint": ExecutionWorker._get_evaluation_entrypoint,
        **{f"{name}.copy": importlib.import_module(name).copy for name in COPY_MODULES},
        "InlineIterationComponent._eval_body": inline.InlineIterationComponent._eval_body,
        "InlineIterationComponent._launch_worker": inline.InlineIterationComponent._launch_worker,
        "ExecutionState._evaluate_with_timeout": ExecutionState._evaluate_with_timeout,
        "Program.eval": Program.eval,
        "event_manager.iso_8601_datetime_with_milliseconds": (
            event_manager.iso_8601_datetime_with_milliseconds
        ),
        "boto_client_for": lambda_eval_utils.boto_client_for,
        "json_path.parse": json_path.parse,
        "result_path.parse": result_path.parse,
        "Environment.set_error": Environment.set_error,
        "DynamoHandler.call_action": DynamoHandler.call_action,
    }


@pytest.fixture
def unknown_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto claims another version, and the emulator package is imported afresh (its modules
    as imported so far are put back afterwards, so the rest of the session is unaffected)."""
    import snn.engines.local as local_package

    monkeypatch.setattr(moto, "__version__", "9.9.9")
    for name in [n for n in sys.modules if n == GATE or n.startswith(GATE + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(local_package, "emulator")  # else `from ... import emulator` finds it
    yield "9.9.9"


def test_an_unknown_moto_version_is_refused_before_any_patch(unknown_moto: str) -> None:
    before = patch_points()
    with pytest.raises(SnnError) as refused:
        importlib.import_module(GATE)
    assert type(refused.value).__name__ == "UnsupportedEmulator"  # (of the module run afresh)
    message = str(refused.value)
    assert f"needs moto {emulator.MOTO_VERSION}, found {unknown_moto}" in message
    assert f"moto[s3,dynamodb,stepfunctions]=={emulator.MOTO_VERSION}" in message
    assert isinstance(refused.value, SnnError) and refused.value.exit_code == 2
    assert patch_points() == before
    assert not [n for n in sys.modules if n.startswith(GATE)]  # not one of them was imported


def test_the_local_engine_does_not_start_on_an_unknown_moto(
    unknown_moto: str, aws_env: None
) -> None:
    from snn.engines.local import EmbeddedStack

    before = (dict(os.environ), patch_points(), boto3.DEFAULT_SESSION)
    stack = EmbeddedStack(ROOT / "template.yaml")
    with pytest.raises(SnnError, match=f"found {unknown_moto}"):
        stack.__enter__()
    assert (dict(os.environ), patch_points(), boto3.DEFAULT_SESSION) == before


def test_snn_train_says_so_in_one_line(
    unknown_moto: str, tmp_path: Path, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from snn.cli import main

    params = tmp_path / "p.json"
    params.write_text(tiny_parameters(1).to_json())
    out = tmp_path / "run"
    template = str(ROOT / "template.yaml")
    args = ["--params", str(params), "--data", str(synthetic_dir), "--template", template]
    code = main(["train", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"snn: error: the local engine needs moto {emulator.MOTO_VERSION}, found {unknown_moto}: "
        f"pip install 'moto[s3,dynamodb,stepfunctions]=={emulator.MOTO_VERSION}'"
    ]
    assert not out.exists()


# --- each patch ----------------------------------------------------------------------------------


def test_speed_up_caches_parsing_and_shares_one_client_and_undoes(aws_env: None) -> None:
    from moto.stepfunctions.parser.asl.component.common.path import result_path
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.utils import json_path

    before = patch_points()
    # what it saves: a new parse and a new client at every use
    assert json_path.parse("$.a.b") is not json_path.parse("$.a.b")
    with moto.mock_aws():
        new = lambda_eval_utils.boto_client_for(region="us-east-1", service="lambda")
        assert new is not lambda_eval_utils.boto_client_for(region="us-east-1", service="lambda")

    undo = interpreter.speed_up()
    try:
        parsed = json_path.parse("$.a.b")
        assert json_path.parse("$.a.b") is parsed  # parsed once
        assert json_path.parse("$.a.c") is not parsed
        assert str(parsed) == str(before["json_path.parse"]("$.a.b"))
        assert result_path.parse("$.r") is result_path.parse("$.r")
        with moto.mock_aws():
            lam = lambda_eval_utils.boto_client_for(
                region="us-east-1", service="lambda", state_credentials=None
            )
            assert lambda_eval_utils.boto_client_for(region="us-east-1", service="lambda") is lam
            assert (
                lambda_eval_utils.boto_client_for(region="us-west-2", service="lambda") is not lam
            )
            assert lambda_eval_utils.boto_client_for(region="us-east-1", service="s3") is not lam
            assert lam.meta.service_model.service_name == "lambda"
    finally:
        undo()
    assert patch_points() == before


def test_the_stack_applies_every_patch_and_undoes_them(aws_env: None) -> None:
    from snn.engines.local import EmbeddedStack

    before = patch_points()
    with EmbeddedStack(ROOT / "template.yaml"):
        during = patch_points()
        assert all(during[k] is not before[k] for k in before), [
            k for k in before if during[k] is before[k]
        ]
    assert patch_points() == before


def test_first_end_stands_keeps_a_stopped_map_aborted(sfn: Any) -> None:
    before = patch_points()
    undo = interpreter.first_end_stands()
    try:
        arn = waiting_map(sfn)
        at_stop = len(entered(interpreter.history(arn)))
        sfn.stop_execution(executionArn=arn)
        assert ended(sfn, arn)["status"] == "ABORTED"
        time.sleep(1.2)  # the iterations' waits are over: they wind down
        history = interpreter.history(arn)
        assert sfn.describe_execution(executionArn=arn)["status"] == "ABORTED"
        assert set(after_the_end(history, "ExecutionAborted")) <= {"MapIterationAborted"}
        assert len(entered(history)) == at_stop  # neither Caught nor After
    finally:
        undo()
    assert patch_points() == before


def test_fail_execution_ends_a_running_map_with_exactly_that_error(sfn: Any) -> None:
    undo = interpreter.first_end_stands()  # as the local engine runs it
    try:
        arn = waiting_map(sfn)
        at_failure = len(entered(interpreter.history(arn)))
        cause = "state Loss output is 300000 bytes, over the 262144-byte limit"
        assert interpreter.fail_execution(arn, "States.DataLimitExceeded", cause) is True
        described = ended(sfn, arn)
        assert (described["status"], described["error"], described["cause"]) == (
            "FAILED",
            "States.DataLimitExceeded",
            cause,
        )
        time.sleep(1.2)  # the iterations' waits are over: they wind down
        described = sfn.describe_execution(executionArn=arn)
        assert (described["status"], described["error"], described["cause"]) == (
            "FAILED",
            "States.DataLimitExceeded",
            cause,
        )
        history = interpreter.history(arn)
        assert set(after_the_end(history, "ExecutionFailed")) <= {"MapIterationFailed"}
        (end,) = [e for e in history if e.get("executionFailedEventDetails")]
        assert end["executionFailedEventDetails"] == {
            "error": "States.DataLimitExceeded",
            "cause": cause,
        }
        assert len(entered(history)) == at_failure  # the Catch is not taken, nothing follows
        assert interpreter.fail_execution(arn, "Again", "again") is False  # it has ended
    finally:
        undo()
    assert interpreter.fail_execution(arn.replace(":waiting", ":nobody"), "E", "C") is False


def test_fail_execution_of_an_ended_execution_changes_nothing(sfn: Any) -> None:
    arn = start(sfn, machine(sfn, {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))
    assert ended(sfn, arn)["status"] == "SUCCEEDED"
    history = interpreter.history(arn)
    assert interpreter.fail_execution(arn, "States.Runtime", "late") is False
    assert sfn.describe_execution(executionArn=arn)["status"] == "SUCCEEDED"
    assert interpreter.history(arn) == history


def test_forget_execution_removes_only_that_ended_execution(sfn: Any) -> None:
    quick = machine(sfn, {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    a, b = start(sfn, quick, name="a"), start(sfn, quick, name="b")
    ended(sfn, a), ended(sfn, b)
    running = waiting_map(sfn, "running")

    def names() -> set[str]:
        return {
            e["name"]
            for m in sfn.list_state_machines()["stateMachines"]
            for e in sfn.list_executions(stateMachineArn=m["stateMachineArn"])["executions"]
        }

    assert names() == {"a", "b", "running"}
    interpreter.forget_execution(a)
    assert names() == {"b", "running"}
    with pytest.raises(sfn.exceptions.ExecutionDoesNotExist):
        sfn.describe_execution(executionArn=a)
    assert sfn.describe_execution(executionArn=b)["status"] == "SUCCEEDED"
    interpreter.forget_execution(running)  # still running: kept
    interpreter.forget_execution(a)  # gone already
    interpreter.forget_execution(a.replace(":a", ":nobody"))
    assert names() == {"b", "running"}
    sfn.stop_execution(executionArn=running)


def test_backend_history_is_the_public_apis(embedded_stack: Any, synthetic_dir: Path) -> None:
    """The engine reads histories from the backend (a long one is costly to page through
    the API): the same events, field by field."""
    from snn.engines.history import execution_stats
    from snn.engines.stack import create_run
    from snn.engines.stack import start as start_run

    st = embedded_stack.stack
    arn = start_run(st, create_run(st, "hist", tiny_parameters(1), synthetic_dir), "hist")
    assert ended(st.sfn, arn, 60)["status"] == "SUCCEEDED"
    public = _public_history(st, arn)
    backend = embedded_stack.history(arn)
    assert len(backend) == len(public) > 100
    without_time = [{k: v for k, v in e.items() if k != "timestamp"} for e in public]
    assert [{k: v for k, v in e.items() if k != "timestamp"} for e in backend] == without_time
    assert types(backend) == [e["type"] for e in public]
    assert execution_stats(backend) == execution_stats(public)
    assert st.history(arn) == backend  # the stack's history source is the backend


def _public_history(st: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 100}
    while True:
        page = st.sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return events
        kwargs["nextToken"] = page["nextToken"]


def test_backend_history_gives_the_public_apis_durations(sfn: Any) -> None:
    """A state's duration is the difference of its events' timestamps (progress.json's
    mean_ms): read from the backend's own list (ISO text) or from the API (datetimes), a
    one-second Wait lasts a second."""
    from snn.engines.progress import StateTracker

    arn = start(
        sfn,
        machine(
            sfn,
            {
                "StartAt": "W",
                "States": {
                    "W": {"Type": "Wait", "Seconds": 1, "Next": "P"},
                    "P": {"Type": "Pass", "End": True},
                },
            },
        ),
    )
    ended(sfn, arn)
    public = sfn.get_execution_history(executionArn=arn)["events"]
    backend = interpreter.history(arn)
    durations = []
    for events in (public, backend):
        tracker = StateTracker()
        tracker.feed(arn, events)
        durations.append(tracker.states())
    assert durations[0] == durations[1]
    assert 1000 <= durations[0]["W"]["mean_ms"] < 5000


def test_history_from_an_event_on_is_the_tail_of_the_history(sfn: Any) -> None:
    """The follower reads only the events it has not seen yet, while the execution runs and
    once it has ended."""
    arn = waiting_map(sfn)
    running = interpreter.history(arn)
    assert interpreter.history(arn, 4) == running[4:]
    assert interpreter.history(arn, len(running) + 10) == []
    ended(sfn, arn)
    whole = interpreter.history(arn)
    assert len(whole) > len(running) and whole[: len(running)] == running
    assert interpreter.history(arn, len(running)) == whole[len(running) :]


# --- memory --------------------------------------------------------------------------------------


@pytest.fixture
def s3_backend(aws_env: None) -> Iterator[Any]:
    from moto.s3.models import s3_backends

    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="bkt")
        yield s3_backends[emulator.ACCOUNT]["aws"]


def test_compactor_forgets_deleted_and_replaced_keys_only(s3_backend: Any) -> None:
    from moto.s3.models import FakeKey

    def tracked(key: Any) -> bool:
        return any(k is key for k in FakeKey.instances_tracked)

    compactor = memory.Compactor()
    for name in ("kept", "deleted", "replaced"):
        s3_backend.put_object("bkt", name, name.encode())
    old = {name: s3_backend.get_object("bkt", name) for name in ("kept", "deleted", "replaced")}
    s3_backend.delete_object("bkt", "deleted")
    s3_backend.put_object("bkt", "replaced", b"new")
    new = s3_backend.get_object("bkt", "replaced")
    assert all(tracked(key) for key in old.values())  # moto keeps every key ever written
    compactor.compact()
    # a key is tracked a moment before it enters its bucket: forgotten at the next compaction
    assert all(tracked(key) for key in old.values())
    compactor.compact()
    assert not tracked(old["deleted"]) and not tracked(old["replaced"])
    assert old["deleted"].disposed and old["replaced"].disposed
    assert tracked(old["kept"]) and tracked(new)
    assert not old["kept"].disposed and not new.disposed
    assert compactor.disposed == 2
    assert s3_backend.get_object("bkt", "kept").value == b"kept"
    assert s3_backend.get_object("bkt", "replaced").value == b"new"
    compactor.compact()
    assert compactor.disposed == 2  # nothing twice
    assert tracked(old["kept"]) and tracked(new)


def test_compactor_bounds_what_moto_tracks_over_many_writes(aws_env: None) -> None:
    from moto.s3.models import FakeKey, s3_backends

    live = 20
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="bkt")
        ddb = boto3.client("dynamodb")
        ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        backend = s3_backends[emulator.ACCOUNT]["aws"]
        compactor = memory.Compactor()
        compactor.compact()
        counts = []
        for epoch in range(40):  # every epoch writes new keys and deletes the epoch before last
            for i in range(live):
                backend.put_object("bkt", f"e{epoch}/{i}", np.zeros(8).tobytes())
            if epoch >= 2:
                for i in range(live):
                    backend.delete_object("bkt", f"e{epoch - 2}/{i}")
            ddb.put_item(TableName="t", Item={"k": {"S": "run"}, "epoch": {"N": str(epoch)}})
            compactor.compact()
            counts.append(memory.Compactor.tracked_counts())
        in_buckets = sum(len(b.keys) for b in backend.buckets.values())
        assert in_buckets == 2 * live
        # what stays tracked: the live keys and one epoch's deletions awaiting disposal
        assert max(c["s3_keys"] for c in counts[5:]) <= 3 * live + 5
        assert len(FakeKey.instances_tracked) <= 3 * live + 5
        assert compactor.disposed >= 37 * live
        assert all(c["dynamodb_items"] == 0 for c in counts)  # cleared at every compaction
        assert all(c["threads"] == 0 for c in counts)


# --- the interpreter's threads, timestamps and program states ------------------------------------

MISSING = "arn:aws:lambda:us-east-1:123456789012:function:missing"
# Every kind of execution state: a Parallel, a Map of one item, Tasks that fail (no such
# function) into their Catch, one of them with a timeout of its own, a Map of three items one
# at a time.
THREADED = {
    "StartAt": "P",
    "States": {
        "P": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": 1, "End": True}}},
                {
                    "StartAt": "M",
                    "States": {
                        "M": {
                            "Type": "Map",
                            "ItemsPath": "$.items",
                            "ItemProcessor": {
                                "ProcessorConfig": {"Mode": "INLINE"},
                                "StartAt": "B",
                                "States": {"B": {"Type": "Pass", "End": True}},
                            },
                            "End": True,
                        }
                    },
                },
            ],
            "ResultPath": "$.p",
            "Next": "T",
        },
        "T": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": MISSING, "Payload": {}},
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Timed"}],
            "Next": "Timed",
        },
        "Timed": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "TimeoutSeconds": 30,
            "Parameters": {"FunctionName": MISSING, "Payload": {}},
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.late", "Next": "Many"}],
            "Next": "Many",
        },
        "Many": {
            "Type": "Map",
            "ItemsPath": "$.three",
            "MaxConcurrency": 1,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "C",
                "States": {"C": {"Type": "Pass", "End": True}},
            },
            "ResultPath": "$.many",
            "End": True,
        },
    },
}


def without_request_ids(value: Any) -> str:
    return re.sub(r"Request ID: [^;]+", "", json.dumps(value, default=str))


def in_branch_order(events: list[dict[str, Any]]) -> list[str]:
    """The events without their ids, the Parallel's branches one after the other: its two
    branches run side by side in either mode, so their events interleave in any order."""
    first = next(i for i, e in enumerate(events) if e["type"] == "ParallelStateStarted") + 1
    last = next(i for i, e in enumerate(events) if e["type"] == "ParallelStateSucceeded")
    texts = [
        without_request_ids({k: v for k, v in e.items() if k not in ("id", "previousEventId")})
        for e in events
    ]
    branch_a = [t for t in texts[first:last] if '"name": "A"' in t]
    branch_m = [t for t in texts[first:last] if '"name": "A"' not in t]
    return texts[:first] + branch_a + branch_m + texts[last:]


def test_inline_runs_the_same_states_in_fewer_threads_and_undoes(sfn: Any) -> None:
    from moto.stepfunctions.parser.utils import TMP_THREADS

    from snn.engines.local.emulator import inline

    def execute() -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        threads = len(TMP_THREADS)
        arn = start(sfn, machine(sfn, THREADED), {"items": [7], "three": [1, 2, 3]})
        described = ended(sfn, arn)
        assert described["status"] == "SUCCEEDED"
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        untimed = [{k: v for k, v in e.items() if k != "timestamp"} for e in events]
        return json.loads(described["output"]), untimed, len(TMP_THREADS) - threads

    before = patch_points()
    output, events, threads = execute()
    undo = inline.run_inline()
    try:
        inline_output, inline_events, inline_threads = execute()
    finally:
        undo()
    assert patch_points() == before
    assert without_request_ids(inline_output) == without_request_ids(output)
    assert output["many"] == [1, 2, 3] and output["late"]["Error"] == output["error"]["Error"]
    assert in_branch_order(inline_events) == in_branch_order(events)
    # the execution's worker, the Parallel's two branches and the Task with a timeout of its own
    assert (threads, inline_threads) == (17, 4)


def test_never_times_out_only_without_a_timeout_or_heartbeat() -> None:

    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds

    from snn.engines.local.emulator.inline import NEVER, never_times_out

    default = TimeoutSeconds(timeout_seconds=NEVER)
    assert never_times_out(SimpleNamespace(timeout=default, heartbeat=None))
    assert not never_times_out(SimpleNamespace(timeout=default, heartbeat=object()))
    declared = TimeoutSeconds(timeout_seconds=30)
    assert not never_times_out(SimpleNamespace(timeout=declared, heartbeat=None))
    assert not never_times_out(SimpleNamespace(timeout=object(), heartbeat=None))


def test_fast_timestamps_are_moto_text_and_undo() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from moto.core.utils import iso_8601_datetime_with_milliseconds as moto_text
    from moto.stepfunctions.parser.asl.eval.event import event_manager

    before = patch_points()
    undo = interpreter.fast_timestamps()
    try:
        formatted = event_manager.iso_8601_datetime_with_milliseconds
        assert formatted is not moto_text
        for when in (
            datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC),
            datetime(2026, 12, 31, 23, 59, 59, 0, tzinfo=UTC),
            datetime(2026, 6, 1, 0, 0, 0, 1500),
            datetime(2026, 6, 1, 0, 0, 0, 1500, tzinfo=timezone(timedelta(hours=-5))),
            datetime(999, 6, 1, 12, 0, 0, 250000),
            datetime.now(tz=UTC),
        ):
            assert formatted(when) == moto_text(when)
        assert len(formatted()) == len(moto_text()) == 24
    finally:
        undo()
    assert patch_points() == before


def test_program_states_are_copied_as_deepcopy_copies_them() -> None:
    import copy
    from datetime import UTC, datetime

    from moto.stepfunctions.parser.asl.eval import program_state as ps

    from snn.engines.local.emulator.copies import json_copy

    running = ps.ProgramRunning()
    running.next_state_name = "Loss"
    states = [
        running,
        ps.ProgramRunning(),
        ps.ProgramEnded(),
        ps.ProgramTimedOut(),
        ps.ProgramError(error={"error": "E", "cause": "C"}),
        ps.ProgramStopped(stop_date=datetime.now(UTC), error="E", cause=None),
    ]
    for state in states:
        copied, deep = json_copy(state), copy.deepcopy(state)
        assert type(copied) is type(state) and copied is not state
        assert vars(copied) == vars(deep) == vars(state)
    error = json_copy(states[4])
    assert error.error is not states[4].error  # nothing mutable shared


def test_parse_once_parses_a_definition_once_for_the_same_executions(
    sfn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    parses: list[str] = []
    real = AmazonStateLanguageParser.parse

    def counted(definition: str) -> Any:
        parses.append(definition)
        return real(definition)

    monkeypatch.setattr(AmazonStateLanguageParser, "parse", staticmethod(counted))

    def histories(arn: str, names: list[str]) -> list[str]:
        out = []
        for name in names:
            run = start(sfn, arn, {"items": [7], "three": [1, 2, 3]}, name)
            assert ended(sfn, run)["status"] == "SUCCEEDED"
            events = sfn.get_execution_history(executionArn=run, maxResults=1000)["events"]
            out.append("\n".join(in_branch_order([{**e, "timestamp": None} for e in events])))
        return out

    arn = machine(sfn, THREADED)
    parses.clear()
    plain = histories(arn, ["a", "b"])
    assert len(parses) == 2
    before = patch_points()
    undo = interpreter.parse_once()
    try:
        parses.clear()
        once = histories(arn, ["c", "d", "e"])
        assert len(parses) == 1
    finally:
        undo()
    assert patch_points() == before
    assert once == [plain[0]] * 3 and plain[1] == plain[0]
