"""The local limit on how many iterations of an inline Map the emulator runs at once
(snn.engines.local.emulator.map_concurrency), against moto's own behaviour: one worker thread per
iteration without it, at most the limit with it, the same outputs and the same history either
way, the definition's own MaxConcurrency kept when it is smaller, and the undo."""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import boto3
import moto
import pytest
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
    inline_iteration_component as inline,
)

from snn.engines.local.emulator import map_concurrency
from tests.helpers import ROOT

ROLE = "arn:aws:iam::123456789012:role/r"
ITEMS = list(range(30))


def mapping(max_concurrency: int | None = None) -> dict[str, Any]:
    """A Map over $.items whose iterations pass through a Pass state and a zero Wait."""
    state: dict[str, Any] = {
        "Type": "Map",
        "ItemsPath": "$.items",
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "INLINE"},
            "StartAt": "Double",
            "States": {
                "Double": {"Type": "Pass", "Parameters": {"n.$": "$"}, "Next": "Rest"},
                "Rest": {"Type": "Wait", "Seconds": 0, "End": True},
            },
        },
        "End": True,
    }
    if max_concurrency is not None:
        state["MaxConcurrency"] = max_concurrency
    return {"StartAt": "Each", "States": {"Each": state}}


@pytest.fixture
def sfn(aws_env: None, caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    caplog.set_level(logging.CRITICAL, logger="moto.stepfunctions")
    with moto.mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield boto3.client("stepfunctions")


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many worker threads each Map launched, Map by Map (one per iteration running at
    once)."""
    launched: dict[int, int] = {}
    pools: list[Any] = []  # kept, so that no two Maps' pools share an id
    counts: list[int] = []
    original = inline.InlineIterationComponent._launch_worker

    def counted(self: Any, env: Any, eval_input: Any, job_pool: Any) -> Any:
        if id(job_pool) not in launched:
            launched[id(job_pool)] = len(counts)
            pools.append(job_pool)
            counts.append(0)
        counts[launched[id(job_pool)]] += 1
        return original(self, env=env, eval_input=eval_input, job_pool=job_pool)

    monkeypatch.setattr(inline.InlineIterationComponent, "_launch_worker", counted)
    return counts


def execute(sfn: Any, definition: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Run `definition` on {"items": ITEMS}: its output and its history."""
    arn = sfn.create_state_machine(
        name=f"m{time.time_ns()}", definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"items": ITEMS}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if described["status"] != "RUNNING":
            break
        time.sleep(0.02)
    assert described["status"] == "SUCCEEDED", described
    history = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)
    return json.loads(described["output"]), history["events"]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return sorted(e["type"] for e in events)


def test_moto_runs_every_iteration_at_once_without_the_limit(sfn: Any, workers: list) -> None:
    execute(sfn, mapping())
    assert workers == [len(ITEMS)]


def test_the_limit_bounds_the_iterations_at_once_and_changes_no_result(
    sfn: Any, workers: list
) -> None:
    free_output, free_history = execute(sfn, mapping())
    undo = map_concurrency.limit(4)
    try:
        output, history = execute(sfn, mapping())
    finally:
        undo()
    assert workers == [len(ITEMS), 4]
    assert output == free_output == [{"n": i} for i in ITEMS]  # in item order
    assert kinds(history) == kinds(free_history)
    started = [e for e in history if e["type"] == "MapIterationStarted"]
    assert sorted(e["mapIterationStartedEventDetails"]["index"] for e in started) == ITEMS


def test_a_smaller_max_concurrency_of_the_definition_stands(sfn: Any, workers: list) -> None:
    undo = map_concurrency.limit(8)
    try:
        output, _ = execute(sfn, mapping(max_concurrency=3))
        execute(sfn, mapping(max_concurrency=20))
    finally:
        undo()
    assert workers == [3, 8]
    assert output == [{"n": i} for i in ITEMS]


def test_one_at_a_time_runs_a_long_map_without_running_out_of_stack(
    sfn: Any, workers: list
) -> None:
    """moto's worker takes its next iteration one frame deeper: 30 deep at a limit of 1."""
    undo = map_concurrency.limit(1)
    try:
        output, _ = execute(sfn, mapping())
    finally:
        undo()
    assert workers == [1]
    assert output == [{"n": i} for i in ITEMS]


def test_the_undo_restores_moto() -> None:
    before = inline.InlineIterationComponent._eval_body
    undo = map_concurrency.limit(2)
    assert inline.InlineIterationComponent._eval_body is not before
    undo()
    assert inline.InlineIterationComponent._eval_body is before
    with pytest.raises(ValueError):
        map_concurrency.limit(0)


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (None, map_concurrency.DEFAULT_LIMIT),
        ("1", 1),
        ("40", 40),
        ("41", map_concurrency.DEFAULT_LIMIT),
        ("0", map_concurrency.DEFAULT_LIMIT),
        ("many", map_concurrency.DEFAULT_LIMIT),
    ],
)
def test_the_limit_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, limit: int
) -> None:
    if value is None:
        monkeypatch.delenv(map_concurrency.ENV, raising=False)
    else:
        monkeypatch.setenv(map_concurrency.ENV, value)
    assert map_concurrency.from_environment() == limit


def test_the_stack_installs_the_limit_and_undoes_it(aws_env: None) -> None:
    from snn.engines.local import EmbeddedStack

    before = inline.InlineIterationComponent._eval_body
    with EmbeddedStack(ROOT / "template.yaml"):
        assert inline.InlineIterationComponent._eval_body is not before
    assert inline.InlineIterationComponent._eval_body is before


# --- the interpreter's copies of state data ------------------------------------------------------


class Opaque:
    def __init__(self) -> None:
        self.items = [1, 2]


def test_json_copy_is_a_deep_copy_that_shares_nothing_mutable() -> None:
    from snn.engines.local.emulator.copies import json_copy

    value = {"a": [1, 2.5, {"b": None, "c": True}], "d": "text", "e": (1, [2]), "f": Opaque()}
    copied = json_copy(value)
    assert copied == {**value, "f": copied["f"]} and copied["f"].items == [1, 2]
    assert copied is not value and copied["a"] is not value["a"]
    assert copied["a"][2] is not value["a"][2]
    assert copied["e"][1] is not value["e"][1]  # a tuple goes to copy.deepcopy
    assert copied["f"] is not value["f"]  # so does any other object
    copied["a"][2]["b"] = "changed"
    assert value["a"][2]["b"] is None


def test_fast_copies_change_no_result_and_undo(sfn: Any) -> None:
    from snn.engines.local.emulator import copies

    modules = [importlib.import_module(name) for name in copies.MODULES]
    before = [m.copy for m in modules]
    plain_output, plain_history = execute(sfn, mapping())
    undo = copies.fast_copies()
    try:
        assert all(m.copy.deepcopy is copies.json_copy for m in modules)
        output, history = execute(sfn, mapping())
    finally:
        undo()
    assert [m.copy for m in modules] == before
    assert output == plain_output
    assert kinds(history) == kinds(plain_history)
