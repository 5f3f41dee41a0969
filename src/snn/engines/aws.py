"""The AWS engine: a run on a deployed stack (`sam deploy`), followed from this machine.

It finds the bucket, table and state machine in the stack's outputs, then runs the same code
as the local engine (`snn.engines.stack`): upload, start, follow the run record, collect."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from snn.engines import OnEpoch, stack
from snn.errors import SnnError
from snn.parameters import Parameters
from snn.report import RunResult

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
    description = stack.follow(st, run_id, execution_arn, on_epoch, poll_seconds=2.0)
    if description["status"] != "SUCCEEDED":
        raise stack.failure_cause(st, run_id, description)
    events = stack.history(st, execution_arn)
    return stack.collect(
        st,
        run_id,
        "aws",
        time.perf_counter() - start,
        stack.run_summary(st, run_id, description, events),
    )
