"""Following a run across its executions (snn.engines.follow), against a stack of canned
answers: the chain of executions is the one the executions themselves hand over."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from snn.engines.follow import Execution, Follower

ARN = "arn:aws:states:us-east-1:123456789012:execution:training:"


def ended(name: str, successor: str | None) -> dict[str, Any]:
    output = {"run_id": "r"} | ({"continued": {"execution_name": successor}} if successor else {})
    return {"name": name, "status": "SUCCEEDED", "output": json.dumps(output)}


@dataclass
class CannedStack:
    """Executions a -> b -> c, all ended; the run record names `names_now` as its execution,
    with `status_now` (RUNNING: until the follower has seen c)."""

    names_now: str
    descriptions: dict[str, dict[str, Any]]
    status_now: str = "RUNNING"
    seen: list[str] = field(default_factory=list)

    @property
    def sfn(self) -> CannedStack:
        return self

    @property
    def runs(self) -> CannedStack:
        return self

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        name = executionArn.removeprefix(ARN)
        self.seen.append(name)
        return self.descriptions[name]

    def history(self, arn: str) -> list[dict[str, Any]]:
        return []

    def execution_arn(self, name: str) -> str:
        return ARN + name

    def get(self, run_id: str, names: tuple[str, ...]) -> dict[str, Any]:
        status = "SUCCEEDED" if "c" in self.seen else self.status_now
        return {"status": status, "execution": self.names_now}


@pytest.mark.parametrize("status_now", ["RUNNING", "SUCCEEDED"])
def test_executions_that_ended_before_the_follower_looked_are_followed(status_now: str) -> None:
    """By the time a has ended and the record is read, b has already handed the run to c (and c
    may have ended the run): the follower still follows b, the execution a handed it to, then
    c."""
    stack = CannedStack(
        names_now="c",
        descriptions={"a": ended("a", "b"), "b": ended("b", "c"), "c": ended("c", None)},
        status_now=status_now,
    )
    followed = Follower(stack, "r").follow(ARN + "a")  # type: ignore[arg-type]
    assert [e.name for e in followed] == ["a", "b", "c"]


def test_the_successor_is_read_from_the_output_and_nothing_else() -> None:
    assert Execution(ended("a", "b"), {}, None).successor == "b"
    assert Execution(ended("c", None), {}, None).successor is None
    for output in ("not json", '{"continued": 3}', '{"continued": {"execution_name": ""}}', None):
        assert Execution({"name": "x", "output": output}, {}, None).successor is None
