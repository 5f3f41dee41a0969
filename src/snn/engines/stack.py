"""A stack (deployed on AWS, or embedded in an emulator) driven through its public APIs: create a
run (claim its id, upload its inputs), start an execution, collect the run folder's contents.
The local and AWS engines run this same code; only the clients' endpoint differs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snn import keys
from snn.engines import results
from snn.errors import SnnError
from snn.parameters import Parameters
from snn.report import RunResult
from snn.sources import DataSource, open_source
from snn.stores import DynamoRunTable, S3Store

Events = list[dict[str, Any]]


@dataclass
class Stack:
    bucket: str
    table: str
    state_machine_arn: str
    s3: Any
    dynamodb: Any
    sfn: Any
    # Where execution histories come from, if not the public API (the local engine reads them
    # from its emulator directly, which is much cheaper for long histories).
    history_source: Callable[[str], Events] | None = None

    @property
    def runs(self) -> DynamoRunTable:
        return DynamoRunTable(self.table, self.dynamodb)

    @property
    def store(self) -> S3Store:
        return S3Store(self.bucket, self.s3)

    def execution_arn(self, name: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + ":" + name

    def history(self, execution_arn: str) -> Events:
        if self.history_source:
            return self.history_source(execution_arn)
        events: Events = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = self.sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            token = page.get("nextToken")
            if not token:
                return events
            kwargs["nextToken"] = token


def create_run(stack: Stack, run_id: str, p: Parameters, data: Path | DataSource) -> dict[str, str]:
    """Claim the run id (one conditional write: of two starters, one wins and the other is told
    so, before either has written anything), upload the inputs, and return the execution input:
    the run id and the S3 keys of its parameters and data. The h5 files are stored by content
    (sha256), so runs on the same data share one copy."""
    keys.check_run_id(run_id)
    if not stack.runs.claim(run_id, uuid.uuid4().hex):
        raise SnnError(
            f"run {run_id} already exists in table {stack.table}; choose another --run-id"
        )
    event = {"run_id": run_id, "parameters_key": keys.parameters_key(run_id)}
    source = data if isinstance(data, DataSource) else open_source(data)
    for field, (key, content) in source.uploads(p.training).items():
        stack.store.put_bytes(key, content)
        event[field] = key
    stack.store.put_bytes(event["parameters_key"], p.to_json().encode())
    return event


def start(stack: Stack, event: dict[str, str], name: str) -> str:
    response = stack.sfn.start_execution(
        stateMachineArn=stack.state_machine_arn, name=name, input=json.dumps(event)
    )
    return response["executionArn"]


def collect(
    stack: Stack, run_id: str, engine: str, wall_seconds: float, extra: dict[str, Any]
) -> RunResult:
    """The run folder's contents, from a run that has succeeded."""
    return results.collect(stack.store, stack.runs, run_id, engine, wall_seconds, extra)
