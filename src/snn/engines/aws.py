"""The AWS engine: a run on a deployed stack (`sam deploy`), followed from this machine.

It finds the bucket, table and state machine in the stack's outputs, then runs the same code
as the local engine (`snn.engines.stack`): upload, start, follow the run record, collect."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from snn.engines import OnEpoch, stack
from snn.errors import SnnError
from snn.parameters import Parameters
from snn.report import RunResult
from snn.store import check_run_id

OUTPUTS = ("BucketName", "TableName", "StateMachineArn")


def connect(stack_name: str, session: Any = None) -> stack.Stack:
    """The deployed stack's resources, from its CloudFormation outputs."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = session or boto3.Session()
    try:
        described = session.client("cloudformation").describe_stacks(StackName=stack_name)
    except (ClientError, BotoCoreError) as exc:
        raise SnnError(f"cannot read stack {stack_name!r}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Stacks"][0].get("Outputs", [])}
    missing = [k for k in OUTPUTS if k not in outputs]
    if missing:
        raise SnnError(
            f"stack {stack_name!r} has no output(s) {', '.join(missing)}: is it an SNN stack?"
        )
    return stack.Stack(
        outputs["BucketName"],
        outputs["TableName"],
        outputs["StateMachineArn"],
        session.client("s3"),
        session.client("dynamodb"),
        session.client("stepfunctions"),
    )


def train(
    p: Parameters,
    data_dir: Path,
    run_id: str,
    stack_name: str,
    on_epoch: OnEpoch | None = None,
    session: Any = None,
) -> RunResult:
    start = time.perf_counter()
    st = connect(stack_name, session)
    event = stack.upload_inputs(st, run_id, p, data_dir)
    execution_arn = stack.start(st, event, name=run_id)
    return _follow(st, run_id, execution_arn, on_epoch, 0, start)


def resume(
    run_id: str, stack_name: str, on_epoch: OnEpoch | None = None, session: Any = None
) -> RunResult:
    """Carry on a run that failed or was stopped, from its last committed epoch, in a new
    execution of the deployed state machine."""
    start = time.perf_counter()
    st = connect(stack_name, session)
    record = st.runs.get(check_run_id(run_id))
    if record is None:
        raise SnnError(f"unknown run {run_id!r} in table {st.table}")
    if record["status"] == "SUCCEEDED":
        raise SnnError(f"run {run_id} has finished: nothing to resume")
    current = record.get("execution") or run_id
    description = st.sfn.describe_execution(
        executionArn=stack.execution_arn(st.state_machine_arn, current)
    )
    if description["status"] == "RUNNING":
        raise SnnError(f"run {run_id} is still running in execution {current}")
    event = json.loads(description["input"])
    st.runs.update(run_id, {"status": "RUNNING"})
    arn = stack.start(st, event, name=f"{run_id}-r{int(time.time())}")
    return _follow(st, run_id, arn, on_epoch, int(record["committed_epoch"]), start)


def _follow(
    st: stack.Stack,
    run_id: str,
    arn: str,
    on_epoch: OnEpoch | None,
    reported: int,
    start: float,
) -> RunResult:
    executions = stack.follow_run(st, run_id, arn, on_epoch, poll_seconds=2.0, reported=reported)
    if not executions[-1].succeeded:
        raise stack.failure_cause(st, run_id, executions[-1].description)
    return stack.collect(
        st, run_id, "aws", time.perf_counter() - start, stack.run_summary(executions)
    )
