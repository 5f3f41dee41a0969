"""The AWS engine: a run on a deployed stack (`sam deploy`), followed from this machine.

It finds the bucket, table and state machine in the stack's outputs, then runs the same code
as the local engine (`snn.engines.stack`, `snn.engines.follow`): create the run, start, follow
the run record, collect."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from snn import keys
from snn.engines import RunSpec
from snn.engines.follow import Follower, run_summary
from snn.engines.stack import Stack, collect, create_run, start
from snn.errors import Interrupted, RunInterrupted, SnnError
from snn.parameters import Parameters
from snn.report import RunResult
from snn.stores import costs_in_order

OUTPUTS = ("BucketName", "TableName", "StateMachineArn")
FOLLOW_SECONDS = 2.0


def connect(stack_name: str, session: Any = None) -> Stack:
    """The deployed stack's resources, from its CloudFormation outputs."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = session or boto3.Session()
    try:
        described = session.client("cloudformation").describe_stacks(StackName=stack_name)
    except (ClientError, BotoCoreError) as exc:
        region = session.region_name
        raise SnnError(f"cannot read stack {stack_name!r} in {region}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Stacks"][0].get("Outputs", [])}
    missing = [k for k in OUTPUTS if k not in outputs]
    if missing:
        raise SnnError(
            f"stack {stack_name!r} has no output(s) {', '.join(missing)}: is it an SNN stack?"
        )
    return Stack(
        outputs["BucketName"],
        outputs["TableName"],
        outputs["StateMachineArn"],
        session.client("s3"),
        session.client("dynamodb"),
        session.client("stepfunctions"),
    )


def train(spec: RunSpec, stack_name: str, session: Any = None) -> RunResult:
    began = time.perf_counter()
    st = connect(stack_name, session)
    event = create_run(st, spec.run_id, spec.parameters, spec.source())
    arn = start(st, event, name=spec.run_id)
    return _follow(st, spec, arn, 0, began, stack_name)


def resume(spec: RunSpec, stack_name: str, session: Any = None) -> RunResult:
    """Carry on a run that failed or was stopped, from its last committed step, in a new
    execution of the deployed state machine; or follow a run still running (its follower
    stopped, say) to its end."""
    began = time.perf_counter()
    st = connect(stack_name, session)
    run_id = keys.check_run_id(spec.run_id)
    record = st.runs.get(run_id, ("status", "committed_epoch", "execution"))
    if record is None:
        raise SnnError(f"unknown run {run_id!r} in table {st.table}")
    if record["status"] == "SUCCEEDED":
        raise SnnError(f"run {run_id} has finished: nothing to resume")
    current = record.get("execution")
    if not current:
        raise SnnError(f"run {run_id} names no execution: it never started")
    try:
        description = st.sfn.describe_execution(executionArn=st.execution_arn(current))
    except st.sfn.exceptions.ExecutionDoesNotExist:
        raise SnnError(f"run {run_id}: its execution {current} does not exist") from None
    if description["status"] == "RUNNING":
        arn = description["executionArn"]  # nothing to start: follow it
    else:
        event = json.loads(description["input"])
        name = keys.resumed_execution_name(run_id, int(time.time()))
        # handed over to the new execution before it starts: its Init takes on only a run that
        # names it (or no execution)
        st.runs.update(
            run_id,
            {"status": "RUNNING", "execution": name},
            when={"status": ("FAILED", "RUNNING"), "execution": current},
        )
        try:
            arn = start(st, event, name=name)
        except BaseException:
            st.runs.update(run_id, {"execution": current}, when={"execution": name})
            raise
    return _follow(st, spec, arn, int(record["committed_epoch"]), began, stack_name)


def saved_run(stack_name: str, run_id: str, session: Any = None) -> tuple[Parameters, list[float]]:
    """A run's parameters and the costs of its committed epochs, from the deployed stack."""
    st = connect(stack_name, session)
    record = st.runs.get(keys.check_run_id(run_id))
    if record is None:
        raise SnnError(f"unknown run {run_id!r} in table {st.table}")
    committed = int(record["committed_epoch"])
    costs = costs_in_order(record)[:committed]
    return Parameters.from_json(record["parameters"]), costs


def _follow(
    st: Stack, spec: RunSpec, arn: str, reported: int, began: float, stack_name: str
) -> RunResult:
    follower = Follower(st, spec.run_id, spec.epoch_done, FOLLOW_SECONDS, reported=reported)
    region = st.sfn.meta.region_name
    again = f"snn train --engine aws --stack {stack_name} --region {region} --resume {spec.run_id}"
    try:
        executions = follower.follow(arn)
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        raise RunInterrupted(
            f"stopped following run {spec.run_id}, which goes on in stack {stack_name}; "
            f"follow it again with: {again}",
            signum,
        ) from None
    if not executions[-1].succeeded:
        raise follower.failed(f"; resume it with: {again}")
    return collect(st, spec.run_id, "aws", time.perf_counter() - began, run_summary(executions))
